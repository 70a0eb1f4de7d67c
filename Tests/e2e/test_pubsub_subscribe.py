"""Streaming subscriptions (`SubscribeTopicEventsAlpha1`), end to end with the official SDK's `client.subscribe` and
`subscribe_with_handler` against the real daemon and the examples' `pubsub` (pubsub.sqlite): delivery with the
right data and content type, SUCCESS/RETRY/DROP, competing consumers within an app id, fan-out across app ids,
tenant isolation on a shared component, durable cursors across disconnections, and the handshake's errors (raw
grpcio, to see the exact codes)."""

from __future__ import annotations

import json
import queue
import threading

import grpc
import pytest

from hangar_e2e import unique
from pubsub_fixtures import Receiver
from tenancy_files import STORE, component_yaml, start_daemon, tenant_yaml

PUBSUB = "pubsub"
WAIT = 20  # seconds a test waits for an event that must come (a bound against hangs, not a timing assertion)


def payloads(receiver: Receiver, count: int) -> list[bytes]:
    return [receiver.next().raw_data() for _ in range(count)]


def test_subscribe_receives_what_another_app_of_the_tenant_publishes(hangard):
    topic = unique("sub")
    receiver = Receiver(hangard.client("team-a", "orders").subscribe(PUBSUB, topic))
    try:
        publisher = hangard.client("team-a", "billing")
        publisher.publish_event(PUBSUB, topic, json.dumps({"n": 1}), data_content_type="application/json")
        publisher.publish_event(PUBSUB, topic, "plain text")
        publisher.publish_event(PUBSUB, topic, b"\x00\x01binary", data_content_type="application/octet-stream")
        first, second, third = receiver.next(), receiver.next(), receiver.next()
        assert first.data() == {"n": 1} and first.data_content_type() == "application/json"
        assert first.topic() == topic and first.pubsub_name() == PUBSUB
        assert first.source() == "billing" and first.type() == "com.dapr.event.sent"
        assert first.spec_version() == "1.0"
        assert first.extensions()["topic"] == topic and first.extensions()["pubsubname"] == PUBSUB
        assert second.data() == "plain text" and second.data_content_type() == "text/plain"
        assert third.raw_data() == b"\x00\x01binary"
        assert len({first.id(), second.id(), third.id()}) == 3
    finally:
        receiver.close()


def test_subscribe_with_handler_success_retry_and_drop(hangard):
    topic = unique("handler")
    seen: dict[str, int] = {}
    lock = threading.Lock()
    retried_twice = threading.Event()
    from dapr.clients.grpc._response import TopicEventResponse

    def handler(message):
        text = message.data()
        with lock:
            seen[text] = seen.get(text, 0) + 1
            count = seen[text]
        if text == "retry-me" and count == 1:
            return TopicEventResponse("retry")
        if text == "retry-me":
            retried_twice.set()
            return TopicEventResponse("success")
        if text == "drop-me":
            return TopicEventResponse("drop")
        return TopicEventResponse("success")

    close = hangard.client("team-a", "orders").subscribe_with_handler(PUBSUB, topic, handler)
    try:
        publisher = hangard.client("team-a", "billing")
        for text in ("ok", "drop-me", "retry-me"):
            publisher.publish_event(PUBSUB, topic, text)
        # RETRY: delivered again (after Dapr's 1 s). Had the dropped message (answered first) been given back too,
        # it would have come back first: it was seen once.
        assert retried_twice.wait(WAIT)
        with lock:
            assert seen == {"ok": 1, "drop-me": 1, "retry-me": 2}, seen
    finally:
        close()


def test_subscribers_of_one_app_id_compete_and_app_ids_fan_out(hangard):
    topic = unique("groups")
    first = Receiver(hangard.client("team-a", "orders").subscribe(PUBSUB, topic))
    second = Receiver(hangard.client("team-a", "orders").subscribe(PUBSUB, topic))
    other = Receiver(hangard.client("team-a", "billing").subscribe(PUBSUB, topic))
    try:
        publisher = hangard.client("team-b", "orders")  # another tenant's app: never seen by team-a
        publisher.publish_event(PUBSUB, topic, "team-b only")
        sent = [f"m{i}" for i in range(20)]
        own = hangard.client("team-a", "billing")
        for text in sent:
            own.publish_event(PUBSUB, topic, text)
        # Fan-out: billing gets every message, in order, and nothing of team-b's.
        assert [m.data() for m in (other.next() for _ in sent)] == sent
        # Competing: orders' two streams share the messages: together each message once.
        received: list[str] = []
        while len(received) < len(sent):
            for receiver in (first, second):
                try:
                    received.append(receiver.next(timeout=0.2).data())
                except queue.Empty:
                    pass
        assert sorted(received) == sorted(sent), received
        assert first.messages.empty() and second.messages.empty()
    finally:
        for receiver in (first, second, other):
            receiver.close()


def test_an_unanswered_event_goes_to_the_other_subscriber_of_the_app_when_its_stream_ends(hangard):
    topic = unique("handover")
    holder = Receiver(hangard.client("team-a", "orders").subscribe(PUBSUB, topic), answer=False)
    hangard.client("team-a", "billing").publish_event(PUBSUB, topic, "held")
    assert holder.next().data() == "held"
    taker = Receiver(hangard.client("team-a", "orders").subscribe(PUBSUB, topic))
    try:
        holder.close()
        message = taker.next()
        assert message.data() == "held"
    finally:
        taker.close()


def test_another_tenant_on_the_same_topic_name_is_never_delivered(hangard):
    topic = unique("tenants")
    receiver = Receiver(hangard.client("team-b", "orders").subscribe(PUBSUB, topic))
    try:
        hangard.client("team-a", "orders").publish_event(PUBSUB, topic, "team-a")
        hangard.client("team-a", "billing").publish_event(PUBSUB, topic, "team-a again")
        hangard.client("team-b", "orders").publish_event(PUBSUB, topic, "team-b")
        # Order within the topic is kept: had team-a's messages reached team-b's topic, they would come first.
        message = receiver.next()
        assert message.data() == "team-b" and message.source() == "orders"
        assert receiver.messages.empty()
    finally:
        receiver.close()


def test_messages_published_while_disconnected_are_delivered_on_return(hangard):
    topic = unique("durable")
    client = hangard.client("team-a", "orders")
    receiver = Receiver(client.subscribe(PUBSUB, topic))
    receiver.close()  # the cursor exists from here on
    publisher = hangard.client("team-a", "billing")
    for text in ("while", "away"):
        publisher.publish_event(PUBSUB, topic, text)
    receiver = Receiver(client.subscribe(PUBSUB, topic))
    try:
        assert [receiver.next().data(), receiver.next().data()] == ["while", "away"]
    finally:
        receiver.close()


def test_a_dropped_event_goes_to_the_dead_letter_topic(hangard):
    topic, dead = unique("dlq-src"), unique("dlq")
    from dapr.clients.grpc._response import TopicEventResponse

    letters = Receiver(hangard.client("team-a", "billing").subscribe(PUBSUB, dead))
    close = hangard.client("team-a", "orders").subscribe_with_handler(
        PUBSUB, topic, lambda message: TopicEventResponse("drop"), dead_letter_topic=dead)
    try:
        hangard.client("team-a", "billing").publish_event(
            PUBSUB, topic, json.dumps({"k": "v"}), data_content_type="application/json")
        letter = letters.next()
        # The original message, as published: its envelope names the original topic.
        assert letter.data() == {"k": "v"} and letter.extensions()["topic"] == topic
    finally:
        close()
        letters.close()


# ---------------------------------------------------------------------------------------------------------------
# The handshake's errors, on the raw stream.


def raw_subscribe(daemon, ns: str, app: str, requests: list) -> list:
    """Sends `requests` on a SubscribeTopicEventsAlpha1 stream (then closes its side) and returns the responses;
    raises the call's error."""
    from dapr.proto import api_service_v1

    with grpc.insecure_channel(f"unix://{daemon.grpc_socket(ns, app)}") as channel:
        stub = api_service_v1.DaprStub(channel)
        return list(stub.SubscribeTopicEventsAlpha1(iter(requests), timeout=WAIT))


def initial(pubsub: str, topic: str, dead_letter: str = ""):
    from dapr.proto import api_v1

    return api_v1.SubscribeTopicEventsRequestAlpha1(
        initial_request=api_v1.SubscribeTopicEventsRequestInitialAlpha1(
            pubsub_name=pubsub, topic=topic, dead_letter_topic=dead_letter))


@pytest.mark.parametrize(
    ("pubsub", "topic", "code", "text"),
    [
        ("", "t", grpc.StatusCode.UNKNOWN, "pubsubName is required"),
        (PUBSUB, "", grpc.StatusCode.UNKNOWN, "topic is required"),
        ("nope", "t", grpc.StatusCode.INVALID_ARGUMENT, "pubsub nope is not found"),
        (PUBSUB, "a||b", grpc.StatusCode.INVALID_ARGUMENT, "||"),
    ],
)
def test_a_bad_initial_request_is_refused_before_any_response(hangard, pubsub, topic, code, text):
    with pytest.raises(grpc.RpcError) as error:
        raw_subscribe(hangard, "team-a", "orders", [initial(pubsub, topic)])
    assert error.value.code() == code, error.value
    assert text in error.value.details()


def test_the_first_message_must_be_the_initial_request_and_only_one(hangard):
    from dapr.proto import api_v1

    processed = api_v1.SubscribeTopicEventsRequestAlpha1(
        event_processed=api_v1.SubscribeTopicEventsRequestProcessedAlpha1(id="x"))
    with pytest.raises(grpc.RpcError) as error:
        raw_subscribe(hangard, "team-a", "orders", [processed])
    assert error.value.code() == grpc.StatusCode.UNKNOWN
    assert error.value.details() == "initial request is required"
    # Two initial requests: the first opens (exactly one initial_response), the second ends the stream.
    topic = unique("twice")
    with pytest.raises(grpc.RpcError) as error:
        responses = []
        from dapr.proto import api_service_v1

        with grpc.insecure_channel(f"unix://{hangard.grpc_socket('team-a', 'orders')}") as channel:
            call = api_service_v1.DaprStub(channel).SubscribeTopicEventsAlpha1(
                iter([initial(PUBSUB, topic), initial(PUBSUB, topic)]), timeout=WAIT)
            for response in call:
                responses.append(response)
    assert error.value.details() == "duplicate initial request received"


def test_an_initial_request_then_end_of_stream_gets_one_initial_response(hangard):
    responses = raw_subscribe(hangard, "team-a", "orders", [initial(PUBSUB, unique("eof"))])
    assert [r.WhichOneof("subscribe_topic_events_response_type") for r in responses] == ["initial_response"]


def test_subscription_scopes_apply(hangard_factory):
    scoped = component_yaml("scoped", "pubsub.in-memory", {"subscriptionScopes": "orders=audit"})
    daemon = start_daemon(
        hangard_factory,
        {"a.yaml": tenant_yaml("shop", [{"appId": "orders"}, {"appId": "billing"}])},
        {"store.yaml": component_yaml(STORE, "state.in-memory"), "scoped.yaml": scoped},
        apps=(("shop", "orders"), ("shop", "billing")),
    )
    with pytest.raises(grpc.RpcError) as error:
        raw_subscribe(daemon, "shop", "orders", [initial("scoped", "secret")])
    assert error.value.code() == grpc.StatusCode.UNKNOWN
    assert "subscription to topic 'secret'" in error.value.details()
    receiver = Receiver(daemon.client("shop", "orders").subscribe("scoped", "audit"))
    try:
        daemon.client("shop", "billing").publish_event("scoped", "audit", "allowed")
        assert receiver.next().data() == "allowed"
    finally:
        receiver.close()
