"""Pub/sub under bad input and between tenants, end to end with the SDK, raw grpcio and HTTP on the apps' Unix
sockets: malformed CloudEvent JSON, 10 MiB messages (refused by the request limit, refused by `maxTopicBytes`, or
delivered intact when the limits allow them), a streaming subscriber that never answers, one whose stream is cut in
the middle of an event, and the isolation matrix (two tenants, one topic name, one shared component; a tenant's
namespace-owned component is invisible to the others). After each hostile case the daemon still serves."""

from __future__ import annotations

import queue
import threading
import time

import grpc
import pytest

from hangar_e2e import grpc_error_info, unique
from pubsub_fixtures import Receiver
from tenancy_files import STORE, component_yaml, start_daemon, tenant_yaml

PUBSUB = "pubsub"
WAIT = 30  # seconds a test waits for an event that must come (a bound against hangs, not a timing assertion)
TEN_MIB = 10 * 1024 * 1024


def still_serves(daemon, ns: str = "team-a", app: str = "orders") -> None:
    """A publish and a state round trip succeed."""
    client = daemon.client(ns, app)
    client.publish_event(PUBSUB, unique("alive"), b"still here")
    key = unique("alive")
    client.save_state(STORE, key, b"yes")
    assert client.get_state(STORE, key).data == b"yes"


def http_publish(daemon, ns: str, app: str, topic: str, body: bytes, content_type: str, pubsub: str = PUBSUB):
    return daemon.http(ns, app, "POST", f"/v1.0/publish/{pubsub}/{topic}", body, {"Content-Type": content_type})


# ---------------------------------------------------------------------------------------------------------------
# Malformed CloudEvents and 10 MiB messages.


BAD_CLOUD_EVENTS = [b"{not json", b'{"specversion": "1.0", "data": ', b"\xff\xfe{}", b"", b"null", b'"a string"']


@pytest.mark.parametrize("body", BAD_CLOUD_EVENTS, ids=["garbage", "truncated", "not-utf8", "empty", "null", "string"])
def test_invalid_cloud_event_json_is_refused_over_http_and_grpc(hangard, body):
    topic = unique("ce")
    receiver = Receiver(hangard.client("team-a", "billing").subscribe(PUBSUB, topic))
    try:
        result = http_publish(hangard, "team-a", "orders", topic, body, "application/cloudevents+json")
        assert result.status == 500, result
        error = result.json()
        assert error["errorCode"] == "ERR_PUBSUB_CLOUD_EVENTS_SER" and error["message"] == "cannot create cloudevent"
        with pytest.raises(grpc.RpcError) as raised:
            hangard.client("team-a", "orders").publish_event(
                PUBSUB, topic, body, data_content_type="application/cloudevents+json")
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value
        assert grpc_error_info(raised.value)["reason"] == "DAPR_PUBSUB_CLOUD_EVENT_CREATION"
        # Nothing was stored: the next (valid) event is the first the subscriber sees.
        hangard.client("team-a", "orders").publish_event(PUBSUB, topic, "valid", data_content_type="text/plain")
        assert receiver.texts(1) == ["valid"]
        assert receiver.messages.empty()
    finally:
        receiver.close()
    still_serves(hangard)


def test_ten_mib_publish_is_refused_by_the_request_limit(hangard):
    topic = unique("huge")
    with pytest.raises(grpc.RpcError) as raised:
        hangard.client("team-a", "orders").publish_event(PUBSUB, topic, b"x" * TEN_MIB)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, raised.value
    result = http_publish(hangard, "team-a", "orders", topic, b"x" * TEN_MIB, "application/octet-stream")
    assert result.status == 413, result
    assert result.json()["errorCode"].startswith("ERR_")
    still_serves(hangard)


def big_client(daemon, ns: str, app: str):
    """A DaprClient on the app's Unix gRPC socket that sends and receives messages up to 32 MiB."""
    from dapr.clients import DaprClient

    from hangar_e2e import sdk_environment

    with sdk_environment(daemon.http_port):
        client = DaprClient(address=f"unix://{daemon.grpc_socket(ns, app)}", max_grpc_message_length=32 << 20)
    daemon._clients.append(client)
    return client


def test_ten_mib_message_within_the_limits_is_delivered_intact_and_maxtopicbytes_refuses_it(hangard_factory):
    daemon = start_daemon(
        hangard_factory,
        {"a.yaml": tenant_yaml("team-a", [{"appId": "orders"}, {"appId": "billing"}])},
        {
            "store.yaml": component_yaml(STORE, "state.in-memory"),
            "pubsub.yaml": component_yaml(PUBSUB, "pubsub.sqlite", {"connectionString": "pubsub.db"}),
            "capped.yaml": component_yaml("capped", "pubsub.sqlite",
                                          {"connectionString": "capped.db", "maxTopicBytes": "8Mi"}),
        },
        apps=(("team-a", "orders"), ("team-a", "billing")),
        extra_args=("--max-request-bytes", str(16 << 20)),
    )
    payload = bytes(range(256)) * (TEN_MIB // 256)
    topic = unique("huge")
    receiver = Receiver(big_client(daemon, "team-a", "billing").subscribe(PUBSUB, topic))
    try:
        big_client(daemon, "team-a", "orders").publish_event(
            PUBSUB, topic, payload, data_content_type="application/octet-stream")
        message = receiver.next()
        assert message.raw_data() == payload
    finally:
        receiver.close()

    # A component whose topics hold at most 8 MiB refuses it whole, clearly, on both APIs.
    with pytest.raises(grpc.RpcError) as raised:
        big_client(daemon, "team-a", "orders").publish_event(
            "capped", topic, payload, data_content_type="application/octet-stream")
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, raised.value
    assert "maxTopicBytes of 8388608: it can never be stored" in raised.value.details()
    result = http_publish(daemon, "team-a", "orders", topic, payload, "application/octet-stream", pubsub="capped")
    assert result.status == 413, result
    assert result.json()["errorCode"] == "ERR_PUBSUB_PUBLISH_MESSAGE"
    still_serves(daemon)


# ---------------------------------------------------------------------------------------------------------------
# Subscribers that misbehave.


def test_a_subscriber_that_never_answers_stalls_nobody_and_gets_its_events_again_after_the_ack_timeout(
        hangard_factory):
    daemon = start_daemon(
        hangard_factory,
        {"a.yaml": tenant_yaml("team-a", [{"appId": "orders"}, {"appId": "billing"}, {"appId": "audit"}])},
        {
            "store.yaml": component_yaml(STORE, "state.in-memory"),
            "pubsub.yaml": component_yaml(PUBSUB, "pubsub.sqlite",
                                          {"connectionString": "pubsub.db", "ackTimeout": "2s"}),
        },
        apps=(("team-a", "orders"), ("team-a", "billing"), ("team-a", "audit")),
    )
    topic = unique("silent")
    silent = Receiver(daemon.client("team-a", "orders").subscribe(PUBSUB, topic), answer=False)
    other_app = Receiver(daemon.client("team-a", "audit").subscribe(PUBSUB, topic))
    texts = [f"e{n}" for n in range(30)]
    try:
        for text in texts:
            daemon.client("team-a", "billing").publish_event(PUBSUB, topic, text, data_content_type="text/plain")
        # Another app id receives everything, in order, while `orders` answers nothing.
        assert other_app.texts(len(texts)) == texts
        # Once the ack timeout has passed, the unanswered events are delivered again (to the only subscriber of
        # the app id, the silent one itself), with one more attempt each.
        deliveries: dict[str, int] = {}
        deadline = time.monotonic() + WAIT
        while (len(deliveries) < len(texts) or min(deliveries.values()) < 2) and time.monotonic() < deadline:
            try:
                text = silent.next(timeout=1).raw_data().decode()
            except queue.Empty:
                continue
            deliveries[text] = deliveries.get(text, 0) + 1
        assert set(deliveries) == set(texts)
        assert min(deliveries.values()) >= 2, f"not redelivered after the ack timeout: {deliveries}"
        # When it goes, everything it held is handed to the next subscriber of the app id.
        silent.close()
        taker = Receiver(daemon.client("team-a", "orders").subscribe(PUBSUB, topic))
        try:
            received: set[str] = set()
            deadline = time.monotonic() + WAIT
            while set(texts) - received and time.monotonic() < deadline:
                try:
                    received.add(taker.next(timeout=1).raw_data().decode())
                except queue.Empty:
                    pass
            assert received == set(texts), f"never handed over: {sorted(set(texts) - received)}"
        finally:
            taker.close()
    finally:
        silent.close()
        other_app.close()
    still_serves(daemon)


def test_a_stream_cut_in_the_middle_of_an_event_gives_it_to_the_next_subscriber(hangard):
    """Raw grpcio: the stream receives an event and is cancelled (RST_STREAM) without answering."""
    from dapr.proto import api_service_v1, api_v1

    topic = unique("cut")
    got_event = threading.Event()

    def requests():
        yield api_v1.SubscribeTopicEventsRequestAlpha1(
            initial_request=api_v1.SubscribeTopicEventsRequestInitialAlpha1(pubsub_name=PUBSUB, topic=topic))
        got_event.wait(WAIT)  # keep our side open until the event arrived

    channel = grpc.insecure_channel(f"unix://{hangard.grpc_socket('team-a', 'orders')}")
    try:
        call = api_service_v1.DaprStub(channel).SubscribeTopicEventsAlpha1(requests(), timeout=WAIT)
        first = next(call)
        assert first.WhichOneof("subscribe_topic_events_response_type") == "initial_response"
        hangard.client("team-a", "billing").publish_event(PUBSUB, topic, "cut-short", data_content_type="text/plain")
        event = next(call)
        assert event.event_message.data == b"cut-short"
        call.cancel()
        got_event.set()
    finally:
        channel.close()
    taker = Receiver(hangard.client("team-a", "orders").subscribe(PUBSUB, topic))
    try:
        assert taker.texts(1) == ["cut-short"]
    finally:
        taker.close()
    still_serves(hangard)


# ---------------------------------------------------------------------------------------------------------------
# Isolation between tenants.


def test_isolation_matrix_same_topic_same_shared_component(hangard):
    """team-a and team-b each publish (gRPC, HTTP, bulk) to the same topic name on the shared `pubsub`; each
    tenant's subscribers (one app id each side, plus team-a's second app) receive exactly their own tenant's."""
    topic = unique("matrix")
    receivers = {
        ("team-a", "orders"): Receiver(hangard.client("team-a", "orders").subscribe(PUBSUB, topic)),
        ("team-a", "billing"): Receiver(hangard.client("team-a", "billing").subscribe(PUBSUB, topic)),
        ("team-b", "orders"): Receiver(hangard.client("team-b", "orders").subscribe(PUBSUB, topic)),
    }
    try:
        for ns in ("team-a", "team-b"):
            client = hangard.client(ns, "orders")
            client.publish_event(PUBSUB, topic, f"{ns}-grpc", data_content_type="text/plain")
            result = http_publish(hangard, ns, "orders", topic, f"{ns}-http".encode(), "text/plain")
            assert result.status == 204, result
            client.publish_events(PUBSUB, topic, [f"{ns}-bulk"], data_content_type="text/plain")
        for (ns, app), receiver in receivers.items():
            texts = receiver.texts(3)
            assert texts == [f"{ns}-grpc", f"{ns}-http", f"{ns}-bulk"], (ns, app, texts)
        # A publish after the others: had anything crossed, it would have come before this one.
        for ns in ("team-a", "team-b"):
            hangard.client(ns, "orders").publish_event(PUBSUB, topic, f"{ns}-last", data_content_type="text/plain")
        for (ns, app), receiver in receivers.items():
            assert receiver.texts(1) == [f"{ns}-last"], (ns, app)
            assert receiver.messages.empty()
    finally:
        for receiver in receivers.values():
            receiver.close()
    still_serves(hangard, "team-b", "orders")


def test_a_tenant_cannot_use_another_tenants_namespaced_component(hangard_factory):
    owned = component_yaml("private", "pubsub.in-memory", namespace="team-b")
    daemon = start_daemon(
        hangard_factory,
        {"a.yaml": tenant_yaml("team-a", [{"appId": "orders"}]), "b.yaml": tenant_yaml("team-b", [{"appId": "orders"}])},
        {"store.yaml": component_yaml(STORE, "state.in-memory"),
         "pubsub.yaml": component_yaml(PUBSUB, "pubsub.in-memory"), "private.yaml": owned},
        apps=(("team-a", "orders"), ("team-b", "orders")),
    )
    topic = unique("owned")
    owner = Receiver(daemon.client("team-b", "orders").subscribe("private", topic))
    try:
        # Publishing: as if the component did not exist, over gRPC and HTTP.
        with pytest.raises(grpc.RpcError) as raised:
            daemon.client("team-a", "orders").publish_event("private", topic, "intruder")
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value
        assert "pubsub private is not found" in raised.value.details()
        result = http_publish(daemon, "team-a", "orders", topic, b"intruder", "text/plain", pubsub="private")
        assert result.status == 404 and result.json()["errorCode"] == "ERR_PUBSUB_NOT_FOUND", result
        # Subscribing: refused before any initial response.
        from dapr.proto import api_service_v1, api_v1

        with grpc.insecure_channel(f"unix://{daemon.grpc_socket('team-a', 'orders')}") as channel:
            stub = api_service_v1.DaprStub(channel)
            request = api_v1.SubscribeTopicEventsRequestAlpha1(
                initial_request=api_v1.SubscribeTopicEventsRequestInitialAlpha1(pubsub_name="private", topic=topic))
            with pytest.raises(grpc.RpcError) as raised:
                list(stub.SubscribeTopicEventsAlpha1(iter([request]), timeout=WAIT))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value
        assert "pubsub private is not found" in raised.value.details()
        # The owner's component works, and received nothing from the intruder.
        daemon.client("team-b", "orders").publish_event("private", topic, "owner", data_content_type="text/plain")
        assert owner.texts(1) == ["owner"]
        assert owner.messages.empty()
        metadata = daemon.client("team-a", "orders").get_metadata()
        assert "private" not in {c.name for c in metadata.registered_components}
    finally:
        owner.close()
    still_serves(daemon, "team-a", "orders")
    still_serves(daemon, "team-b", "orders")
