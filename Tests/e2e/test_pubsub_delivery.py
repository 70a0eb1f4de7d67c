"""Push delivery of pub/sub events over the app channel, end to end: the real hangard, apps built on the official
SDK (a FastAPI app with dapr.ext.fastapi.DaprApp on a Unix socket, a dapr.ext.grpc.App on loopback TCP), events
published by another app of the tenant with DaprClient.

The apps (apps/delivery_app.py) record every event they receive in a file and answer what the event's data tells
them to (SUCCESS, RETRY, DROP, an HTTP 500, a body that is not JSON, ...). Programmatic subscriptions of an app
started after hangard start when hangard has fetched its list; each test that uses one first publishes warm-up
events until one arrives, so that the consumer exists before what it checks is published.
"""

from __future__ import annotations

import base64
import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from hangar_e2e import Hangard, free_port, short_tempdir
from pubsub_fixtures import AppProcess, subscription
from tenancy_files import component_yaml, dedent, start_daemon, wait_until, write_atomically

# The APP_API_TOKEN hangard sends to team-a's `web` and `grpcapp`.
WEB_APP_TOKEN = "web-app-token-0123456789"
GRPC_APP_TOKEN = "grpc-app-token-0123456789"
# The programmatic list of an app started after hangard is fetched with backoff up to 10 s; leave room for one
# more attempt and the warm-up publishes.
SUBSCRIBED_WITHIN = 30.0
# Ten deliveries one retry delay (1 s) apart, and room for a loaded machine.
TEN_ATTEMPTS_WITHIN = 40.0


class App(AppProcess):
    """A delivery_app.py process and the events it recorded."""

    def __init__(self, kind: str, where: str, record: Path):
        super().__init__("delivery_app.py", kind, where, str(record), socket=where if kind == "fastapi" else None)
        self.kind, self.where, self.record = kind, where, record

    def lines(self) -> list[dict]:
        try:
            text = self.record.read_text()
        except FileNotFoundError:
            return []
        # The app may be writing a line as it is read: only lines that end with a newline are complete.
        complete = text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in complete.splitlines() if line.strip()]

    def events(self, event_id: str | None = None, handler: str | None = None) -> list[dict]:
        return [
            line for line in self.lines()
            if line["kind"] == "event" and (event_id is None or line["id"] == event_id)
            and (handler is None or line["handler"] == handler)
        ]

    def calls(self, method: str | None = None) -> list[dict]:
        return [
            line for line in self.lines() if line["kind"] == "call" and (method is None or line["method"] == method)
        ]

    def wait_for(self, event_id: str, count: int = 1, handler: str | None = None, timeout: float = 15.0) -> list[dict]:
        """The app's deliveries of `event_id` once there are at least `count`."""
        wait_until(lambda: len(self.events(event_id, handler)) >= count, timeout=timeout, interval=0.05)
        return self.events(event_id, handler)


RESOURCES = {
    # One component for the node: both tenants use it, each on its own topics.
    "0-pubsub.yaml": component_yaml("pubsub", "pubsub.in-memory"),
    "1-routed.yaml": subscription("routed", "routed", namespace="team-a", scopes=["web"], spec="""
        routes:
          rules:
          - match: event.type == "widget"
            path: /widgets
          - match: int(event.data.n) > 10
            path: /big
          default: /fallback
        """),
    "2-legacy.yaml": subscription("legacy", "legacy-topic", namespace="team-a", scopes=["web"], version="v1alpha1",
                                  spec="route: /legacy"),
    "3-grpc-bulk.yaml": subscription("grpc-bulk", "grpc-bulk", namespace="team-a", scopes=["grpcapp"], spec="""
        routes: {default: bulk-handler}
        bulkSubscribe: {enabled: true, maxMessagesCount: 10, maxAwaitDurationMs: 100}
        """),
    "4-http-bulk.yaml": subscription("http-bulk", "http-bulk", namespace="team-a", scopes=["web"], spec="""
        routes: {default: /bulk}
        bulkSubscribe: {enabled: true, maxMessagesCount: 10}
        deadLetterTopic: retried-dlq
        """),
    "4-raw-http.yaml": subscription("raw-http", "raw-http", namespace="team-a", scopes=["web"], spec="""
        routes: {default: /raw}
        metadata: {rawPayload: "true"}
        """),
    # dapr.ext.grpc finds a handler by the route when it names a topic it subscribes to.
    "4-raw-grpc.yaml": subscription("raw-grpc", "raw-grpc", namespace="team-a", scopes=["grpcapp"], spec="""
        routes: {default: grpc-orders}
        metadata: {rawPayload: "true"}
        """),
    # The app has no such route (404): dead-lettered.
    "4-lost.yaml": subscription("lost", "lost", namespace="team-a", scopes=["web"], spec="""
        routes: {default: /nowhere}
        deadLetterTopic: retried-dlq
        """),
    # No default route: what no rule matches, and what the rule cannot be evaluated on, is dead-lettered.
    "4-strict.yaml": subscription("strict", "strict", namespace="team-a", scopes=["web"], spec="""
        routes:
          rules:
          - {match: 'event.data.n > 1', path: /big}
        deadLetterTopic: retried-dlq
        """),
    "5-late.yaml": subscription("late", "late-orders", namespace="team-a", scopes=["late"],
                                spec="routes: {default: /late}"),
    "5-grpc-late.yaml": subscription("grpc-late", "grpc-late", namespace="team-a", scopes=["grpclate"],
                                     spec="routes: {default: grpc-orders}"),
    "6-down.yaml": subscription("down", "down-orders", namespace="team-a", scopes=["down"],
                                spec="routes: {default: /late}"),
}


def tenants(grpc_port: int, grpc_late_port: int) -> dict[str, str]:
    team_a = dedent(f"""
        apiVersion: hangar.dev/v1alpha1
        kind: Tenant
        metadata:
          name: team-a
        spec:
          apps:
            - appId: pub
            - appId: web
              appChannel: {{protocol: http, maxConcurrency: 2, appApiToken: {WEB_APP_TOKEN}}}
            - appId: grpcapp
              appChannel: {{protocol: grpc, address: "127.0.0.1:{grpc_port}", appApiToken: {GRPC_APP_TOKEN}}}
            - appId: late
              appChannel:
                protocol: http
                healthCheck: {{path: /healthz, intervalSeconds: 0.2, timeoutSeconds: 1, threshold: 1}}
            - appId: down
              appChannel: {{protocol: http}}
            - appId: grpclate
              appChannel: {{protocol: grpc, address: "127.0.0.1:{grpc_late_port}"}}
        """)
    team_b = dedent("""
        apiVersion: hangar.dev/v1alpha1
        kind: Tenant
        metadata:
          name: team-b
        spec:
          apps:
            - appId: pub
            - appId: web
              appChannel: {protocol: http}
        """)
    return {"team-a.yaml": team_a, "team-b.yaml": team_b}


class Node:
    """The daemon, its apps by `ns/app`, and how the tests publish."""

    def __init__(self, daemon: Hangard, root: Path):
        self.daemon = daemon
        self.root = root
        self.apps: dict[str, App] = {}
        # Where `team-a/grpclate` listens once a test starts it.
        self.grpc_late_port = 0

    def app_socket(self, ns: str, app: str) -> str:
        return str(self.daemon.app_dir(ns, app) / f"app-{app}-http.socket")

    def start_http(self, ns: str, app: str) -> App:
        started = App("fastapi", self.app_socket(ns, app), self.root / f"{ns}-{app}.jsonl").start()
        self.apps[f"{ns}/{app}"] = started
        return started

    def publish(self, ns: str, topic: str, data: dict, metadata: dict[str, str] | None = None) -> str:
        """Publishes `data` as JSON from the tenant's `pub` app; returns the CloudEvent id it was given."""
        event_id = str(uuid.uuid4())
        self.daemon.client(ns, "pub").publish_event(
            "pubsub", topic, json.dumps(data), data_content_type="application/json",
            publish_metadata={"cloudevent.id": event_id, **(metadata or {})})
        return event_id

    def warm_up(self, ns: str, app: App, topic: str, handler: str | None = None, data: dict | None = None) -> None:
        """Publishes `data` to `topic` until `app` receives one: its subscription is then running."""
        ids: list[str] = []

        def received() -> bool:
            ids.append(self.publish(ns, topic, {"warmup": True, **(data or {})}))
            return any(event["id"] in ids for event in app.events(handler=handler))

        wait_until(received, timeout=SUBSCRIBED_WITHIN, interval=0.5)


def node_files(root: Path, tenants: dict[str, str], resources: dict[str, str]) -> tuple[Path, Path]:
    """Writes the Tenant and resource files (by name) under `root`; returns the two directories."""
    tenancy, resource_dir = root / "tenancy", root / "resources"
    for directory, files in ((tenancy, tenants), (resource_dir, resources)):
        directory.mkdir()
        for name, text in files.items():
            (directory / name).write_text(text)
    return tenancy, resource_dir


def serve(node: Node, http_apps: tuple[tuple[str, str], ...]) -> Iterator[Node]:
    """Starts `node`'s daemon and then its HTTP apps (`(namespace, app)`, each listening at its channel's default
    address, in a directory hangard made), yields the node, and stops everything, checking the daemon lived."""
    daemon = node.daemon
    try:
        daemon.start()
        for ns, app in http_apps:
            node.start_http(ns, app)
        yield node
        assert daemon.running, f"hangard died:\n{daemon.log}"
        # The apps' sockets are in hangard's directories: gone before it checks that none is left.
        for started in node.apps.values():
            started.stop()
        daemon.stop()
    finally:
        for started in node.apps.values():
            started.stop()
        daemon.kill()
        shutil.rmtree(node.root, ignore_errors=True)


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    root = short_tempdir()
    grpc_port, grpc_late_port = free_port(), free_port()
    tenancy, resources = node_files(root, tenants(grpc_port, grpc_late_port), RESOURCES)
    grpcapp = App("grpc", str(grpc_port), root / "team-a-grpcapp.jsonl").start()
    daemon = Hangard(root, tenancy=tenancy, resources=resources,
                     apps=(("team-a", "pub"), ("team-a", "web"), ("team-b", "pub"), ("team-b", "web")))
    node = Node(daemon, root)
    node.grpc_late_port = grpc_late_port
    node.apps["team-a/grpcapp"] = grpcapp
    yield from serve(node, (("team-a", "web"), ("team-b", "web")))


# ---------------------------------------------------------------------------------------------------------------
# What the apps receive.


def test_a_fastapi_app_receives_the_event_another_app_published(node):
    web = node.apps["team-a/web"]
    node.warm_up("team-a", web, "orders", handler="orders")
    # A publisher's `dapr-api-token` metadata must not pass for the runtime's token.
    event_id = node.publish("team-a", "orders", {"order": 7, "item": "<tea & cake>"},
                            metadata={"priority": "high", "dapr-api-token": "forged"})
    [event] = web.wait_for(event_id)
    assert event["handler"] == "orders" and event["path"] == "/events/pubsub/orders"
    assert event["data"] == {"order": 7, "item": "<tea & cake>"}
    assert event["source"] == "pub" and event["type"] == "com.dapr.event.sent" and event["specversion"] == "1.0"
    assert event["topic"] == "orders" and event["pubsubname"] == "pubsub"
    assert event["datacontenttype"] == "application/json"
    assert event["traceparent"].startswith("00-")
    headers = event["headers"]
    assert headers["content-type"] == "application/cloudevents+json"
    # The broker metadata as headers: pubsubName and the publish's own metadata.
    assert headers["pubsubname"] == "pubsub" and headers["priority"] == "high"
    assert headers["dapr-api-token"] == WEB_APP_TOKEN
    assert headers["traceparent"] == event["traceparent"]
    # The publisher's trace continues in the event (with a span of its own) and in the delivery's header.
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    traced = str(uuid.uuid4())
    result = node.daemon.http("team-a", "pub", "POST", "/v1.0/publish/pubsub/orders?metadata.cloudevent.id=" + traced,
                              b'{"traced": true}', {"Content-Type": "application/json",
                                                    "traceparent": f"00-{trace}-00f067aa0ba902b7-01"})
    assert result.status == 204, result.body
    [event] = web.wait_for(traced)
    assert event["traceparent"].split("-")[1] == trace and event["headers"]["traceparent"] == event["traceparent"]


def test_a_grpc_app_receives_the_event_another_app_published(node):
    grpcapp = node.apps["team-a/grpcapp"]
    node.warm_up("team-a", grpcapp, "grpc-orders", handler="on_orders")
    event_id = node.publish("team-a", "grpc-orders", {"order": 8},
                            metadata={"priority": "low", "dapr-api-token": "forged"})
    [event] = grpcapp.wait_for(event_id)
    assert event["handler"] == "on_orders" and event["data"] == {"order": 8}
    assert event["source"] == "pub" and event["type"] == "com.dapr.event.sent" and event["specversion"] == "1.0"
    assert event["topic"] == "grpc-orders" and event["pubsubname"] == "pubsub"
    assert event["datacontenttype"] == "application/json"
    assert event["extensions"]["pubsubname"] == "pubsub" and event["extensions"]["topic"] == "grpc-orders"
    assert event["extensions"]["traceparent"].startswith("00-")
    # The broker metadata as gRPC metadata, keys lower-cased.
    assert event["metadata"]["pubsubname"] == "pubsub" and event["metadata"]["priority"] == "low"
    assert event["metadata"]["dapr-api-token"] == GRPC_APP_TOKEN
    [call] = [call for call in grpcapp.calls("OnTopicEvent") if call["ids"] == [event_id]]
    assert call["path"] == "" and call["topic"] == "grpc-orders"


@pytest.mark.parametrize("topic, handler", [("nested/topic", "nested"), ("café", "café")])
def test_default_routes_of_topics_with_a_slash_or_non_ascii_letters_reach_the_handler(node, topic, handler):
    """The SDK's default route `/events/<pubsub>/<topic>`, sent percent-encoded where needed and decoded by the
    app's server."""
    web = node.apps["team-a/web"]
    node.warm_up("team-a", web, topic, handler=handler)
    event_id = node.publish("team-a", topic, {"t": topic})
    [event] = web.wait_for(event_id)
    assert event["handler"] == handler and event["topic"] == topic and event["data"] == {"t": topic}
    assert event["path"] == f"/events/pubsub/{topic}"


def test_text_and_binary_payloads_reach_both_apps_as_dapr_sends_them(node):
    web, grpcapp = node.apps["team-a/web"], node.apps["team-a/grpcapp"]
    node.warm_up("team-a", web, "orders", handler="orders")
    node.warm_up("team-a", grpcapp, "grpc-orders", handler="on_orders")
    client = node.daemon.client("team-a", "pub")
    sent = {}
    for topic in ("orders", "grpc-orders"):
        for content_type, payload in (("text/plain", "héllo <text>"), ("application/octet-stream", b"\x00\xffbin")):
            event_id = str(uuid.uuid4())
            client.publish_event("pubsub", topic, payload, data_content_type=content_type,
                                 publish_metadata={"cloudevent.id": event_id})
            sent[(topic, content_type)] = event_id
    # HTTP: the envelope verbatim, text as a string, bytes as data_base64.
    [text] = web.wait_for(sent[("orders", "text/plain")])
    assert text["data"] == "héllo <text>" and text["datacontenttype"] == "text/plain"
    [binary] = web.wait_for(sent[("orders", "application/octet-stream")])
    assert base64.b64decode(binary["data_base64"]) == b"\x00\xffbin" and binary["data"] is None
    # gRPC: `data` is the text's bytes, and the decoded bytes.
    [text] = grpcapp.wait_for(sent[("grpc-orders", "text/plain")])
    assert text["data"] == "héllo <text>" and text["datacontenttype"] == "text/plain"
    [binary] = grpcapp.wait_for(sent[("grpc-orders", "application/octet-stream")])
    assert base64.b64decode(binary["raw_base64"]) == b"\x00\xffbin"
    assert binary["datacontenttype"] == "application/octet-stream"


def test_a_published_cloudevent_and_odd_metadata_reach_both_apps_as_dapr_sends_them(node):
    web, grpcapp = node.apps["team-a/web"], node.apps["team-a/grpcapp"]
    node.warm_up("team-a", web, "orders", handler="orders")
    node.warm_up("team-a", grpcapp, "grpc-orders", handler="on_orders")
    client = node.daemon.client("team-a", "pub")
    metadata = {"X-Mixed-Case": "Value", "bad key": "dropped", "smuggle": "a\r\nInjected: yes"}
    for topic in ("orders", "grpc-orders"):
        event_id = str(uuid.uuid4())
        cloud_event = {"specversion": "1.0", "id": event_id, "source": "my-source", "type": "my.type",
                       "subject": "s-1", "myext": "v", "datacontenttype": "application/json", "data": {"k": [1, 2]}}
        client.publish_event("pubsub", topic, json.dumps(cloud_event), data_content_type="application/cloudevents+json",
                             publish_metadata=metadata)
        if topic == "orders":
            [event] = web.wait_for(event_id)
            assert (event["source"], event["type"], event["data"]) == ("my-source", "my.type", {"k": [1, 2]})
            assert event["topic"] == "orders" and event["pubsubname"] == "pubsub"
            headers = event["headers"]
            assert headers["x-mixed-case"] == "Value" and "injected" not in headers
            assert "bad key" not in headers and "smuggle" not in headers
        else:
            [event] = grpcapp.wait_for(event_id)
            assert (event["source"], event["type"], event["data"]) == ("my-source", "my.type", {"k": [1, 2]})
            assert event["extensions"]["myext"] == "v" and event["extensions"]["subject"] == "s-1"
            assert event["metadata"]["x-mixed-case"] == "Value" and "injected" not in event["metadata"]
            assert "bad key" not in event["metadata"] and "smuggle" not in event["metadata"]


def test_a_grpc_app_rule_routes_to_its_handler_and_an_unmatched_event_is_not_delivered(node):
    grpcapp = node.apps["team-a/grpcapp"]
    node.warm_up("team-a", grpcapp, "grpc-routed", handler="on_gadget", data={"kind": "gadget"})
    widget = node.publish("team-a", "grpc-routed", {"kind": "gadget"}, metadata={"cloudevent.type": "widget"})
    gadget = node.publish("team-a", "grpc-routed", {"kind": "gadget"})
    unmatched = node.publish("team-a", "grpc-routed", {"kind": "other"})
    after = node.publish("team-a", "grpc-routed", {"kind": "gadget"})
    # Priority 1 wins for an event both rules match.
    [event] = grpcapp.wait_for(widget)
    assert event["handler"] == "on_widget" and event["type"] == "widget"
    [call] = [call for call in grpcapp.calls("OnTopicEvent") if call["ids"] == [widget]]
    assert call["path"] == "on_widget"
    assert grpcapp.wait_for(gadget)[0]["handler"] == "on_gadget"
    assert grpcapp.wait_for(after)[0]["handler"] == "on_gadget"
    # No route matches (the SDK sets no default route): dropped by hangard, never sent to the app.
    assert node.daemon.wait_for_log("no route matches it; dropped", "grpc-routed", timeout=10)
    assert grpcapp.events(unmatched) == []
    assert not [call for call in grpcapp.calls() if unmatched in call["ids"]]


def test_declarative_subscriptions_route_to_the_right_handler(node):
    web = node.apps["team-a/web"]
    node.warm_up("team-a", web, "routed", handler="fallback", data={"n": 0})
    widget = node.publish("team-a", "routed", {"n": 50}, metadata={"cloudevent.type": "widget"})
    big = node.publish("team-a", "routed", {"n": 11})
    small = node.publish("team-a", "routed", {"n": 3})
    legacy = node.publish("team-a", "legacy-topic", {"n": 1})
    assert [event["handler"] for event in web.wait_for(widget)] == ["widgets"]
    assert [event["handler"] for event in web.wait_for(big)] == ["big"]
    assert [event["handler"] for event in web.wait_for(small)] == ["fallback"]
    [event] = web.wait_for(legacy)
    assert event["handler"] == "legacy" and event["path"] == "/legacy" and event["topic"] == "legacy-topic"


def test_raw_payload_subscriptions_get_the_bytes_as_published(node):
    web, grpcapp = node.apps["team-a/web"], node.apps["team-a/grpcapp"]
    client = node.daemon.client("team-a", "pub")
    raw = {"rawPayload": "true"}
    # Declarative: the consumers exist since start-up. Published raw too, so that the stored message is the bytes
    # themselves; the envelope the apps get is made up for them, with an id of its own (Dapr).
    client.publish_event("pubsub", "raw-http", b"\x00\x01 raw bytes", data_content_type="application/octet-stream",
                         publish_metadata=raw)
    wait_until(lambda: any(event["data_base64"] for event in web.events(handler="raw")), timeout=15)
    [event] = [event for event in web.events(handler="raw") if event["data_base64"]]
    assert base64.b64decode(event["data_base64"]) == b"\x00\x01 raw bytes"
    assert event["datacontenttype"] == "application/octet-stream" and event["type"] == "com.dapr.event.sent"
    assert event["topic"] == "raw-http" and event["pubsubname"] == "pubsub"
    client.publish_event("pubsub", "raw-grpc", b"plain text, raw", data_content_type="text/plain",
                         publish_metadata=raw)
    wait_until(lambda: any(event["raw"] == "plain text, raw" for event in grpcapp.events(handler="on_orders")),
               timeout=15)
    [event] = [event for event in grpcapp.events(handler="on_orders") if event["raw"] == "plain text, raw"]
    assert event["topic"] == "raw-grpc" and event["metadata"]["pubsubname"] == "pubsub"
    assert event["datacontenttype"] == "application/octet-stream"
    [call] = [call for call in grpcapp.calls("OnTopicEvent") if call["ids"] == [event["id"]]]
    assert call["path"] == "grpc-orders"


def test_undeliverable_events_go_to_the_dead_letter_topic(node):
    web = node.apps["team-a/web"]
    node.warm_up("team-a", web, "retried-dlq", handler="dlq")
    # HTTP 404: dropped, dead-lettered.
    lost = node.publish("team-a", "lost", {"n": 1})
    assert web.wait_for(lost, handler="dlq")[0]["data"] == {"n": 1}
    # No rule matches, and the rule fails on the event (`>` on a string): dead-lettered, never delivered.
    unmatched = node.publish("team-a", "strict", {"n": 0})
    failing = node.publish("team-a", "strict", {"n": "a string"})
    matched = node.publish("team-a", "strict", {"n": 5})
    assert web.wait_for(matched)[0]["handler"] == "big"
    web.wait_for(unmatched, handler="dlq")
    web.wait_for(failing, handler="dlq")
    assert web.events(unmatched, handler="big") == [] and web.events(failing, handler="big") == []


def test_a_live_edit_of_a_subscription_moves_delivery_to_the_new_route(node):
    web = node.apps["team-a/web"]
    node.warm_up("team-a", web, "legacy-topic", handler="legacy")
    write_atomically(node.daemon.resources / "2-legacy.yaml", subscription(
        "legacy", "legacy-topic", namespace="team-a", scopes=["web"], version="v1alpha1", spec="route: /fallback"))
    node.warm_up("team-a", web, "legacy-topic", handler="fallback")
    event_id = node.publish("team-a", "legacy-topic", {"n": 2})
    assert [event["handler"] for event in web.wait_for(event_id)] == ["fallback"]
    write_atomically(node.daemon.resources / "2-legacy.yaml", RESOURCES["2-legacy.yaml"])
    node.warm_up("team-a", web, "legacy-topic", handler="legacy")


@pytest.mark.parametrize("app, topic, handler", [("grpcapp", "grpc-orders", "on_orders"), ("web", "orders", "orders")])
def test_more_events_than_the_window_are_all_delivered_once(node, app, topic, handler):
    """250 events at once: more than a subscription has in flight (100), and, for `web`, through its two
    `maxConcurrency` slots."""
    subscriber = node.apps[f"team-a/{app}"]
    node.warm_up("team-a", subscriber, topic, handler=handler)
    ids = [str(uuid.uuid4()) for _ in range(250)]
    entries = [json.dumps({"i": i}) for i in range(250)]
    response = node.daemon.client("team-a", "pub")._stub.BulkPublishEvent(_bulk_request(topic, ids, entries))
    assert list(response.failedEntries) == []
    wait_until(lambda: set(ids) <= {event["id"] for event in subscriber.events(handler=handler)}, timeout=60)
    delivered = [event["id"] for event in subscriber.events(handler=handler) if event["id"] in set(ids)]
    assert len(delivered) == len(ids)


# ---------------------------------------------------------------------------------------------------------------
# Answers: RETRY, DROP, dead letters, garbage.


def test_retry_redelivers_the_same_event(node):
    web = node.apps["team-a/web"]
    node.warm_up("team-a", web, "retried", handler="retried")
    event_id = node.publish("team-a", "retried", {"answer": "RETRY", "times": 2})
    deliveries = web.wait_for(event_id, count=3, handler="retried")
    assert len(deliveries) == 3 and {event["data"]["answer"] for event in deliveries} == {"RETRY"}
    grpcapp = node.apps["team-a/grpcapp"]
    node.warm_up("team-a", grpcapp, "grpc-orders", handler="on_orders")
    retried = node.publish("team-a", "grpc-orders", {"answer": "RETRY", "times": 1})
    raised = node.publish("team-a", "grpc-orders", {"answer": "raise", "times": 1})
    assert len(grpcapp.wait_for(retried, count=2)) == 2
    # A handler that raises is gRPC UNKNOWN: a retry too.
    assert len(grpcapp.wait_for(raised, count=2)) == 2


def test_drop_without_a_dead_letter_topic_drops(node):
    web = node.apps["team-a/web"]
    node.warm_up("team-a", web, "orders", handler="orders")
    event_id = node.publish("team-a", "orders", {"answer": "DROP"})
    web.wait_for(event_id)
    assert node.daemon.wait_for_log("on orders the app answered DROP; dropped", timeout=10)
    # Acknowledged when dropped: never delivered again.
    assert len(web.events(event_id)) == 1


def test_drop_sends_the_event_to_the_dead_letter_topic(node):
    web = node.apps["team-a/web"]
    node.warm_up("team-a", web, "retried", handler="retried")
    node.warm_up("team-a", web, "retried-dlq", handler="dlq")
    event_id = node.publish("team-a", "retried", {"answer": "DROP"})
    [dead] = web.wait_for(event_id, handler="dlq")
    # The original message, on the dead-letter topic's own subscription.
    assert dead["data"] == {"answer": "DROP"} and dead["source"] == "pub"
    assert dead["headers"]["pubsubname"] == "pubsub"
    assert len(web.events(event_id, handler="retried")) == 1


def test_an_event_retried_ten_times_goes_to_the_dead_letter_topic(node):
    web = node.apps["team-a/web"]
    node.warm_up("team-a", web, "retried", handler="retried")
    node.warm_up("team-a", web, "retried-dlq", handler="dlq")
    event_id = node.publish("team-a", "retried", {"answer": "RETRY"})
    web.wait_for(event_id, handler="dlq", timeout=TEN_ATTEMPTS_WITHIN)
    assert len(web.events(event_id, handler="retried")) == 10
    # An event that succeeds after a retry does not go there.
    recovered = node.publish("team-a", "retried", {"answer": "RETRY", "times": 1})
    web.wait_for(recovered, count=2, handler="retried")
    dropped = node.publish("team-a", "retried", {"answer": "DROP"})
    web.wait_for(dropped, handler="dlq")
    assert web.events(recovered, handler="dlq") == []


def test_the_daemon_keeps_serving_when_the_app_answers_garbage(node):
    web = node.apps["team-a/web"]
    node.warm_up("team-a", web, "garbage", handler="garbage")
    # A 500 is a retry.
    failed = node.publish("team-a", "garbage", {"answer": "500", "times": 2})
    assert len(web.wait_for(failed, count=3)) == 3
    # An unknown status in a 2xx is a retry.
    bogus = node.publish("team-a", "garbage", {"answer": "bogus", "times": 1})
    assert len(web.wait_for(bogus, count=2)) == 2
    # Statuses are read exactly, as Dapr's Go decoder compares them: "drop" is an unknown status, retried.
    lower = node.publish("team-a", "garbage", {"answer": "drop", "times": 1})
    assert len(web.wait_for(lower, count=2)) == 2
    # A 2xx whose body is not JSON is a success (Dapr): acknowledged, delivered once.
    garbage = node.publish("team-a", "garbage", {"answer": "garbage"})
    web.wait_for(garbage)
    marker = node.publish("team-a", "garbage", {"answer": "500", "times": 1})
    web.wait_for(marker, count=2)
    retried = [line for line in node.daemon.log.splitlines() if "on garbage retried" in line]
    assert len(retried) == 2 + 1 + 1 + 1, retried
    assert len(web.events(garbage)) == 1
    # The node still serves its other apps and calls.
    grpcapp = node.apps["team-a/grpcapp"]
    node.warm_up("team-a", grpcapp, "grpc-orders", handler="on_orders")
    assert node.daemon.client("team-a", "pub").get_metadata().application_id == "pub"


def test_a_hanging_handler_neither_stops_other_deliveries_nor_the_daemons_shutdown(hangard_factory):
    """The delivery deadline (60 s) is not configurable, so the hung delivery is not waited out: what is checked is
    that the node keeps delivering and serving meanwhile, and that SIGTERM still stops it at once."""
    root = hangard_factory.root()
    socket = root / "app.sock"
    tenant = dedent(f"""
        apiVersion: hangar.dev/v1alpha1
        kind: Tenant
        metadata:
          name: team-a
        spec:
          apps:
            - appId: pub
            - appId: web
              appChannel: {{protocol: http, address: "unix://{socket}"}}
        """)
    resources = {
        "0-pubsub.yaml": component_yaml("pubsub", "pubsub.in-memory"),
        "1-hang.yaml": subscription("hang", "hang", namespace="team-a", scopes=["web"],
                                    spec="routes: {default: /fallback}"),
    }
    app = App("fastapi", str(socket), root / "hang.jsonl").start()
    try:
        daemon = start_daemon(hangard_factory, {"team-a.yaml": tenant}, resources, apps=(("team-a", "pub"),))
        node = Node(daemon, root)
        node.warm_up("team-a", app, "hang", handler="fallback")
        hung = node.publish("team-a", "hang", {"answer": "hang"})
        app.wait_for(hung)
        after = [node.publish("team-a", "hang", {"i": i}) for i in range(3)]
        for event_id in after:
            app.wait_for(event_id)
        assert daemon.client("team-a", "pub").get_metadata().application_id == "pub"
        daemon.stop()
    finally:
        app.stop()


# ---------------------------------------------------------------------------------------------------------------
# Bulk subscriptions.


def test_bulk_subscribe_delivers_batches_to_a_grpc_app(node):
    grpcapp = node.apps["team-a/grpcapp"]
    node.warm_up("team-a", grpcapp, "grpc-bulk", handler="on_bulk")
    ids = [str(uuid.uuid4()) for _ in range(5)]
    entries = [json.dumps({"i": i, **({"answer": "RETRY", "times": 1} if i == 2 else {})}) for i in range(5)]
    client = node.daemon.client("team-a", "pub")
    # One bulk publish: one commit, so the loop leases the five together.
    response = client._stub.BulkPublishEvent(_bulk_request("grpc-bulk", ids, entries))
    assert list(response.failedEntries) == []
    for event_id in ids:
        grpcapp.wait_for(event_id, handler="on_bulk")
    assert len(grpcapp.wait_for(ids[2], count=2, handler="on_bulk")) == 2
    calls = [call for call in grpcapp.calls() if set(call["ids"]) & set(ids)]
    assert {call["method"] for call in calls} == {"OnBulkTopicEvent"}
    assert any(len(call["ids"]) > 1 for call in calls), calls
    first = calls[0]
    assert first["path"] == "bulk-handler" and first["topic"] == "grpc-bulk" and first["pubsubname"] == "pubsub"
    assert first["type"] == "com.dapr.event.sent.bulk"
    [event] = grpcapp.events(ids[0], handler="on_bulk")
    assert event["data"] == {"i": 0} and event["source"] == "pub" and event["metadata"]["pubsubname"] == "pubsub"


def test_bulk_subscribe_delivers_batches_to_an_http_app(node):
    web = node.apps["team-a/web"]
    node.warm_up("team-a", web, "http-bulk", handler="bulk")
    ids = [str(uuid.uuid4()) for _ in range(4)]
    node.warm_up("team-a", web, "retried-dlq", handler="dlq")
    answers = {1: {"answer": "RETRY", "times": 1}, 3: {"answer": "DROP"}}
    entries = [json.dumps({"i": i, **answers.get(i, {})}) for i in range(4)]
    response = node.daemon.client("team-a", "pub")._stub.BulkPublishEvent(_bulk_request("http-bulk", ids, entries))
    assert list(response.failedEntries) == []
    for event_id in ids:
        web.wait_for(event_id, handler="bulk")
    assert len(web.wait_for(ids[1], count=2, handler="bulk")) == 2
    calls = [call for call in web.calls("bulk") if set(call["ids"]) & set(ids)]
    assert any(len(call["ids"]) > 1 for call in calls), calls
    assert calls[0]["type"] == "com.dapr.event.sent.bulk" and calls[0]["topic"] == "http-bulk"
    [event] = web.events(ids[0], handler="bulk")
    assert event["data"] == {"i": 0} and event["metadata"]["pubsubName"] == "pubsub"
    # The entry answered DROP goes to the dead-letter topic, alone.
    assert web.wait_for(ids[3], handler="dlq")[0]["data"] == {"i": 3, "answer": "DROP"}
    assert [event["id"] for event in web.events(handler="dlq") if event["id"] in ids] == [ids[3]]


def _bulk_request(topic: str, ids: list[str], entries: list[str]):
    """A BulkPublishRequest whose entries carry their CloudEvent ids (the SDK's publish_events cannot set them)."""
    from dapr.proto.runtime.v1 import pubsub_pb2

    return pubsub_pb2.BulkPublishRequest(
        pubsub_name="pubsub", topic=topic,
        entries=[
            pubsub_pb2.BulkPublishRequestEntry(
                entry_id=str(i), event=entry.encode(), content_type="application/json",
                metadata={"cloudevent.id": event_id})
            for i, (event_id, entry) in enumerate(zip(ids, entries))
        ])


# ---------------------------------------------------------------------------------------------------------------
# Apps that are down, and other tenants.


def test_events_published_while_an_unhealthy_app_is_down_are_delivered_when_it_starts(node):
    """`late` has a health check: hangard pauses its subscriptions while it is down. Its consumer was created at
    start-up from the declarative Subscription, so what is published before the app first starts waits for it;
    and what is published while it is restarted waits for it again."""
    daemon = node.daemon
    assert daemon.wait_for_log("push subscription started", "team-a/late", timeout=10), daemon.log
    assert daemon.wait_for_log("app is unhealthy", "team-a/late", timeout=10)
    ids = [node.publish("team-a", "late-orders", {"i": i}) for i in range(3)]
    late = node.start_http("team-a", "late")
    for event_id in ids:
        [event] = late.wait_for(event_id, timeout=SUBSCRIBED_WITHIN)
        assert event["handler"] == "late"
    assert daemon.wait_for_log("app is healthy", "team-a/late", timeout=10)
    late.stop()
    wait_until(lambda: len([line for line in daemon.log.splitlines()
                            if "app is unhealthy" in line and "team-a/late" in line]) >= 2, timeout=10)
    again = [node.publish("team-a", "late-orders", {"i": i}) for i in range(3)]
    late = node.start_http("team-a", "late")
    for event_id in again:
        late.wait_for(event_id, timeout=SUBSCRIBED_WITHIN)


def test_a_grpc_app_that_was_unreachable_gets_its_events_once_it_listens(node):
    """A failed connection to a gRPC app is retried: the app gets what was published while it was not listening
    once it starts (within the ten attempts)."""
    daemon = node.daemon
    assert daemon.wait_for_log("push subscription started", "team-a/grpclate", timeout=10), daemon.log
    ids = [node.publish("team-a", "grpc-late", {"i": i}) for i in range(3)]
    assert daemon.wait_for_log("on grpc-late retried", timeout=20)
    app = App("grpc", str(node.grpc_late_port), node.root / "team-a-grpclate.jsonl").start()
    node.apps["team-a/grpclate"] = app
    for event_id in ids:
        [event] = app.wait_for(event_id, timeout=TEN_ATTEMPTS_WITHIN)
        assert event["handler"] == "on_orders" and event["topic"] == "grpc-late"


def test_events_published_while_an_app_without_health_check_is_down_are_delivered_when_it_starts(node):
    """`down` has no health check: hangard learns it is down from a delivery that finds nothing listening, and
    pauses its subscriptions until it answers again, rather than spend each event's attempts. Users need its events
    kept until it starts, however long that takes: here longer than ten retry delays."""
    daemon = node.daemon
    assert daemon.wait_for_log("push subscription started", "team-a/down", timeout=10), daemon.log
    ids = [node.publish("team-a", "down-orders", {"i": i}) for i in range(3)]
    assert daemon.wait_for_log("app unreachable", "team-a/down", timeout=20), daemon.log
    # How long the app stays down (not an assertion): longer than ten deliveries one retry delay apart.
    time.sleep(12)
    down = node.start_http("team-a", "down")
    for event_id in ids:
        assert len(down.wait_for(event_id, timeout=SUBSCRIBED_WITHIN)) == 1
    assert daemon.wait_for_log("app reachable again", "team-a/down", timeout=10)


def test_another_tenants_subscriber_of_the_same_topic_never_receives_the_event(node):
    web_a, web_b = node.apps["team-a/web"], node.apps["team-b/web"]
    node.warm_up("team-a", web_a, "orders", handler="orders")
    node.warm_up("team-b", web_b, "orders", handler="orders")
    from_a = node.publish("team-a", "orders", {"tenant": "a"})
    from_b = node.publish("team-b", "orders", {"tenant": "b"})
    # Each tenant's event published after the other's has arrived: the other's would have come before it.
    web_a.wait_for(from_a)
    web_b.wait_for(from_b)
    then_a = node.publish("team-a", "orders", {"tenant": "a"})
    then_b = node.publish("team-b", "orders", {"tenant": "b"})
    web_a.wait_for(then_a)
    web_b.wait_for(then_b)
    assert web_b.events(from_a) == [] and web_b.events(then_a) == []
    assert web_a.events(from_b) == [] and web_a.events(then_b) == []
    assert {event["source"] for event in web_b.events(handler="orders")} == {"pub"}
    assert all(event["data"].get("tenant") != "a" for event in web_b.events(handler="orders")
               if isinstance(event["data"], dict))


# Last: it replaces the component every other test uses.
def test_delivery_resumes_on_a_component_that_replaces_the_old_one(node):
    web, grpcapp = node.apps["team-a/web"], node.apps["team-a/grpcapp"]
    node.warm_up("team-a", web, "orders", handler="orders")
    write_atomically(node.daemon.resources / "0-pubsub.yaml",
                     component_yaml("pubsub", "pubsub.in-memory", {"cleanupInterval": "30s"}))
    assert node.daemon.wait_for_log("ended", "its component was retired", timeout=15)
    # Programmatic and declarative subscriptions, HTTP and gRPC, all carry on on the new component.
    node.warm_up("team-a", web, "orders", handler="orders")
    node.warm_up("team-a", grpcapp, "grpc-orders", handler="on_orders")
    node.warm_up("team-a", web, "routed", handler="fallback", data={"n": 0})
    node.warm_up("team-b", node.apps["team-b/web"], "orders", handler="orders")
