"""`pubsub.redis` end to end: the real hangard with one `pubsub.redis` component for the node (a redis-server this
module starts on a free loopback port), two tenants using the same topic names, the official SDK's publish,
streaming subscriptions (`client.subscribe`) and declarative `Subscription`s pushed to FastAPI apps
(apps/delivery_app.py). Each tenant receives only its own events; the streams are Dapr's layout under the
tenant's physical topic; a group's blocking read is one connection whatever its topics."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import uuid

import grpc
from pathlib import Path
from typing import Iterator

import pytest

from hangar_e2e import Hangard, expect_quota, free_port, short_tempdir, unique
from pubsub_fixtures import Receiver, subscription
from tenancy_files import STORE, component_yaml, dedent, start_daemon, tenant_yaml, wait_until
from test_pubsub_delivery import SUBSCRIBED_WITHIN, Node, node_files, serve

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
WAIT = 20  # seconds a test waits for an event that must come (a bound against hangs, not a timing assertion)

pytestmark = pytest.mark.skipif(not Path(REDIS_SERVER).exists(), reason="redis-server is not installed")


class RedisServer:
    """A redis-server on a free loopback port, persistence off, in a temporary directory."""

    def __init__(self) -> None:
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="hangar-e2e-redis-"))
        self.start()

    def start(self) -> None:
        """Starts the server (again, after `kill`) on the same port."""
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory), "--logfile", str(self.directory / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self.cli("PING") == "PONG", timeout=10, interval=0.05)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def cli(self, *args: str) -> str:
        result = subprocess.run([REDIS_CLI, "-p", str(self.port), *args], capture_output=True, text=True, timeout=10)
        return result.stdout.strip()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


def tenants() -> dict[str, str]:
    documents = {}
    for namespace in ("team-a", "team-b"):
        documents[f"{namespace}.yaml"] = dedent(f"""
            apiVersion: hangar.dev/v1alpha1
            kind: Tenant
            metadata:
              name: {namespace}
            spec:
              apps:
                - appId: pub
                - appId: web
                  appChannel: {{protocol: http}}
                - appId: streamer
            """)
    return documents


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def node(redis: RedisServer) -> Iterator[Node]:
    root = short_tempdir()
    resources = {
        # One component for the node, shared by both tenants (each on its own physical topics).
        "0-pubsub.yaml": component_yaml("pubsub", "pubsub.redis", {
            "redisHost": f"127.0.0.1:{redis.port}", "processingTimeout": "10s", "redeliverInterval": "2000"}),
        # The same declarative subscription in each tenant: topic `widgets` to `web`'s /widgets.
        "1-a.yaml": subscription("widgets", "widgets", namespace="team-a", scopes=["web"],
                                 spec="routes: {default: /widgets}"),
        "1-b.yaml": subscription("widgets", "widgets", namespace="team-b", scopes=["web"],
                                 spec="routes: {default: /widgets}"),
    }
    tenancy, resource_dir = node_files(root, tenants(), resources)
    daemon = Hangard(root, tenancy=tenancy, resources=resource_dir,
                     apps=tuple((ns, app) for ns in ("team-a", "team-b") for app in ("pub", "web", "streamer")))
    yield from serve(Node(daemon, root), (("team-a", "web"), ("team-b", "web")))


def test_declarative_subscriptions_of_two_tenants_on_the_same_topic_are_isolated(node, redis):
    web_a, web_b = node.apps["team-a/web"], node.apps["team-b/web"]
    node.warm_up("team-a", web_a, "widgets", handler="widgets")
    node.warm_up("team-b", web_b, "widgets", handler="widgets")
    for_a = node.publish("team-a", "widgets", {"for": "a"})
    for_b = node.publish("team-b", "widgets", {"for": "b"})
    [event_a] = web_a.wait_for(for_a, timeout=WAIT)
    [event_b] = web_b.wait_for(for_b, timeout=WAIT)
    assert event_a["data"] == {"for": "a"} and event_a["topic"] == "widgets" and event_a["pubsubname"] == "pubsub"
    assert event_b["data"] == {"for": "b"} and event_b["topic"] == "widgets"
    assert web_a.events(for_b) == [] and web_b.events(for_a) == []

    # On Redis: one stream per tenant's topic, in Dapr's layout (fields data and metadata), one group each.
    assert redis.cli("TYPE", "team-a||widgets") == "stream" and redis.cli("TYPE", "team-b||widgets") == "stream"
    last = subprocess.run([REDIS_CLI, "-p", str(redis.port), "--raw", "XREVRANGE", "team-a||widgets", "+", "-",
                           "COUNT", "1"], capture_output=True, text=True, timeout=10).stdout.splitlines()
    assert "data" in last and "metadata" in last
    envelope = json.loads(last[last.index("data") + 1])
    assert envelope["specversion"] == "1.0" and envelope["topic"] == "widgets"
    groups = redis.cli("XINFO", "GROUPS", "team-a||widgets")
    assert "team-a||web" in groups and "team-b" not in groups


def test_streaming_subscriptions_of_two_tenants_on_the_same_topic_are_isolated(node, redis):
    topic = unique("stream")
    receiver_a = Receiver(node.daemon.client("team-a", "streamer").subscribe("pubsub", topic), wait=WAIT)
    receiver_b = Receiver(node.daemon.client("team-b", "streamer").subscribe("pubsub", topic), wait=WAIT)
    try:
        # The subscriptions' groups exist once the handshake is answered; a warm-up makes sure of it.
        def subscribed(namespace: str) -> bool:
            return f"{namespace}||streamer" in redis.cli("XINFO", "GROUPS", f"{namespace}||{topic}")

        wait_until(lambda: subscribed("team-a") and subscribed("team-b"), timeout=SUBSCRIBED_WITHIN, interval=0.1)
        for namespace in ("team-a", "team-b"):
            publisher = node.daemon.client(namespace, "pub")
            for index in range(3):
                publisher.publish_event("pubsub", topic, f"{namespace} {index}")
        assert receiver_a.texts(3) == [f"team-a {index}" for index in range(3)]
        assert receiver_b.texts(3) == [f"team-b {index}" for index in range(3)]
        with pytest.raises(Exception):
            receiver_a.next(timeout=1)
        with pytest.raises(Exception):
            receiver_b.next(timeout=1)
    finally:
        receiver_a.close()
        receiver_b.close()


def test_one_blocking_connection_per_subscribing_app(node, redis):
    # Subscribing apps on the node: team-a/web, team-b/web (declarative), team-a/streamer, team-b/streamer (a
    # streaming subscription each, which may have ended): at most one blocking read each, whatever their topics.
    topics = [unique("many") for _ in range(4)]
    receivers = [Receiver(node.daemon.client("team-a", "streamer").subscribe("pubsub", topic), wait=WAIT)
                 for topic in topics]
    try:
        wait_until(lambda: all("team-a||streamer" in redis.cli("XINFO", "GROUPS", f"team-a||{topic}")
                               for topic in topics), timeout=SUBSCRIBED_WITHIN, interval=0.1)
        clients = redis.cli("CLIENT", "LIST").splitlines()
        blocking = [line for line in clients if " name=hangard-xreadgroup " in line]
        assert 1 <= len(blocking) <= 4, blocking
        # Every topic of the group is read: a publish to the last one is delivered.
        node.daemon.client("team-a", "pub").publish_event("pubsub", topics[-1], "last")
        assert receivers[-1].texts(1) == ["last"]
    finally:
        for receiver in receivers:
            receiver.close()


def test_events_written_by_a_dapr_sidecar_reach_the_subscriber(node, redis):
    """An event added to the tenant's stream the way daprd's pubsub.redis writes it (XADD data/metadata, no Hangar
    field) is delivered like any other."""
    topic = unique("dapr")
    receiver = Receiver(node.daemon.client("team-b", "streamer").subscribe("pubsub", topic), wait=WAIT)
    try:
        wait_until(lambda: "team-b||streamer" in redis.cli("XINFO", "GROUPS", f"team-b||{topic}"),
                   timeout=SUBSCRIBED_WITHIN, interval=0.1)
        event = {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "daprd-app", "type": "com.dapr.event.sent",
                 "datacontenttype": "text/plain", "data": "from dapr", "topic": topic, "pubsubname": "pubsub"}
        redis.cli("XADD", f"team-b||{topic}", "*", "data", json.dumps(event), "metadata", "{}")
        message = receiver.next()
        assert message.id() == event["id"] and message.source() == "daprd-app"
        assert message.raw_data() == b"from dapr"
    finally:
        receiver.close()


def test_max_pubsub_bytes_holds_on_redis_per_tenant_until_the_subscriber_consumes(hangard_factory, redis):
    """The tenant's `maxPubsubBytes` on a shared `pubsub.redis`: counted in Redis (per tenant, whatever the node),
    refused once full while another tenant publishes on, and room again once its subscriber has consumed and the
    acknowledged entries are trimmed."""
    topic = unique("quota")
    pubsub = component_yaml("pubsub", "pubsub.redis", {"redisHost": f"127.0.0.1:{redis.port}", "cleanupInterval": "1s"})
    daemon = start_daemon(
        hangard_factory,
        {"noisy.yaml": tenant_yaml("noisy", [{"appId": "app"}], quotas={"maxPubsubBytes": 8192}),
         "quiet.yaml": tenant_yaml("quiet", [{"appId": "app"}], quotas={"maxPubsubBytes": 8192})},
        {"store.yaml": component_yaml(STORE, "state.in-memory"), "pubsub.yaml": pubsub},
        apps=(("noisy", "app"), ("quiet", "app")),
    )
    noisy, quiet = daemon.client("noisy", "app"), daemon.client("quiet", "app")
    # Subscribed without answering: the events are delivered and stay pending, so they keep counting.
    receiver = Receiver(noisy.subscribe("pubsub", topic), answer=False, wait=WAIT)
    try:
        wait_until(lambda: "noisy||app" in redis.cli("XINFO", "GROUPS", f"noisy||{topic}"),
                   timeout=SUBSCRIBED_WITHIN, interval=0.1)
        payload = b"p" * 2000
        published = 0
        with pytest.raises(grpc.RpcError) as error:
            for _ in range(10):
                noisy.publish_event("pubsub", topic, payload)
                published += 1
        assert published == 3, published  # each is its ~2.3 KB envelope: never 4 in 8192 bytes
        info = expect_quota(error, "maxPubsubBytes", 8192, "tenant")
        assert info["namespace"] == "noisy"
        counted = int(redis.cli("HGET", "hangar:pubsub:partitions", "noisy"))
        assert 3 * 2000 < counted <= 8192, counted
        assert redis.cli("XLEN", f"noisy||{topic}") == "3", "the refused publishes stored nothing"
        # The other tenant, same component and topic name: its own budget.
        for _ in range(3):
            quiet.publish_event("pubsub", topic, payload)
        assert int(redis.cli("HGET", "hangar:pubsub:partitions", "quiet")) == counted

        # The subscriber consumes; the acknowledged entries are trimmed (every cleanupInterval, or for room): the
        # tenant can publish again.
        events = [receiver.next() for _ in range(published)]
        for event in events:
            receiver.subscription.respond_success(event)

        def publishes() -> bool:
            try:
                noisy.publish_event("pubsub", topic, payload)
            except grpc.RpcError as refused:
                assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused
                return False
            return True

        wait_until(publishes, timeout=10, interval=0.2)
        wait_until(lambda: int(redis.cli("HGET", "hangar:pubsub:partitions", "noisy") or 0) < 2 * 2400,
                   timeout=10, interval=0.2)
    finally:
        receiver.close()


def test_while_redis_is_down_publishes_fail_fast_and_delivery_resumes_when_it_is_back(node, redis):
    """Last in the module: it restarts the server, which comes back empty (no persistence)."""
    topic = unique("outage")
    receiver = Receiver(node.daemon.client("team-a", "streamer").subscribe("pubsub", topic), wait=WAIT)
    publisher = node.daemon.client("team-a", "pub")
    try:
        wait_until(lambda: "team-a||streamer" in redis.cli("XINFO", "GROUPS", f"team-a||{topic}"),
                   timeout=SUBSCRIBED_WITHIN, interval=0.1)
        publisher.publish_event("pubsub", topic, "before")
        assert receiver.texts(1) == ["before"]

        redis.kill()
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as error:
                publisher.publish_event("pubsub", topic, "during")
            assert time.monotonic() - started < 1.0, "a publish fails fast while Redis is down"
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE, error.value
            assert "cannot be reached" in error.value.details()
        started = time.monotonic()
        answer = node.daemon.http("team-a", "pub", "POST", f"/v1.0/publish/pubsub/{topic}", body={"n": 1})
        assert time.monotonic() - started < 1.0
        assert answer.status == 500 and answer.json()["errorCode"] == "ERR_PUBSUB_PUBLISH_MESSAGE", answer
        assert f"127.0.0.1:{redis.port}" in answer.json()["message"]

        redis.start()
        published_after = None

        def publish() -> bool:
            nonlocal published_after
            try:
                publisher.publish_event("pubsub", topic, "after")
            except grpc.RpcError:
                return False
            published_after = time.monotonic()
            return True

        restarted = time.monotonic()
        wait_until(publish, timeout=5, interval=0.1)
        assert published_after - restarted < 5.0, "publishing works again within 5 s, without a restart"
        # The stream and the group were lost with the server's data: hangard made them again; delivery resumes.
        assert receiver.texts(1) == ["after"]
    finally:
        receiver.close()
