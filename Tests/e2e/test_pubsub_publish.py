"""Publishing, end to end: the official SDK over gRPC (`publish_event`, `publish_events`), curl over an app's Unix
HTTP socket (`/v1.0/publish`, bulk), Dapr's errors, hostile topic names, topic scopes, the `maxPubsubBytes` quota
(per tenant, on a shared component, for the same topic name), metrics, and durability: what a publish on
`pubsub.sqlite` acknowledged is in the SQLite file after `kill -9` and a restart (read with Python's sqlite3, the
schema documented in `Sources/HangarSQLite/SQLitePubSubSchema.swift`)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import urllib.parse
from pathlib import Path

import grpc
import pytest

from hangar_e2e import Hangard, free_port, grpc_error_info, unique
from tenancy_files import STORE, component_yaml, start_daemon, tenant_yaml
from test_metrics import parse_exposition, scrape

PUBSUB = "pubsub"


def still_serves(daemon: Hangard) -> None:
    daemon.client("team-a", "orders").publish_event(PUBSUB, unique("alive"), b"still here")


def curl(daemon: Hangard, ns: str, app: str, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request with curl on the app's Unix HTTP socket: status, headers (lower-case names), body."""
    args = ["curl", "-sS", "--unix-socket", str(daemon.http_socket(ns, app)), "-X", method, "-D", "-",
            "--max-time", "10", "--path-as-is"]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    if body is not None:
        args += ["--data-binary", "@-"]
    result = subprocess.run(args + [f"http://localhost{path}"], input=body or b"", capture_output=True, timeout=20)
    assert result.returncode == 0, result.stderr
    head, _, payload = result.stdout.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    response_headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        response_headers[name.strip().lower()] = value.strip()
    return status, response_headers, payload


def dapr_error(status: int, body: bytes, expected_status: int, code: str) -> dict:
    assert status == expected_status, (status, body)
    error = json.loads(body)
    assert error["errorCode"] == code, error
    return error


def sqlite_messages(data_dir: Path, file: str = "pubsub.db") -> list[dict]:
    """Every message in a pubsub.sqlite file, with its topic's name, read-only."""
    connection = sqlite3.connect(f"file:{data_dir / file}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT t.name, m.seq, m.content_type, m.expires_at, m.published_at, m.data FROM pubsub_messages m "
            "JOIN pubsub_topics t ON t.id = m.topic_id ORDER BY t.name, m.seq"
        ).fetchall()
    finally:
        connection.close()
    return [
        {"topic": r[0], "seq": r[1], "content_type": r[2], "expires_at": r[3], "published_at": r[4], "data": r[5]}
        for r in rows
    ]


# ---------------------------------------------------------------------------------------------------------------
# Publishing with the SDK and with curl.


def test_publish_event_with_the_sdk_over_grpc(hangard):
    client = hangard.client("team-a", "orders")
    client.publish_event(PUBSUB, unique("orders"), "a string")
    client.publish_event(PUBSUB, unique("orders"), json.dumps({"n": 1}), data_content_type="application/json")
    client.publish_event(
        PUBSUB, unique("orders"), b"\x00\x01", data_content_type="application/octet-stream",
        publish_metadata={"ttlInSeconds": "60", "cloudevent.type": "order.created", "partitionKey": "p"},
    )
    client.publish_event(PUBSUB, "orders/eu/north", b"raw bytes", publish_metadata={"rawPayload": "true"})
    # A CloudEvent passed through as the payload.
    event = {"id": unique("ce"), "source": "upstream", "type": "t", "specversion": "1.0", "data": {"x": 1}}
    client.publish_event(PUBSUB, unique("orders"), json.dumps(event), data_content_type="application/cloudevents+json")


def test_publish_events_in_bulk_with_the_sdk(hangard):
    client = hangard.client("team-b", "orders")
    response = client.publish_events(
        PUBSUB, unique("bulk"), ["one", "two", json.dumps({"three": 3})], publish_metadata={"ttlInSeconds": "30"}
    )
    assert list(response.failed_entries) == []
    response = client.publish_events(PUBSUB, unique("bulk"), [b"\x00bytes", b"more"])
    assert list(response.failed_entries) == []


def test_bulk_publish_alpha1_is_the_same_method(hangard):
    """The SDK falls back to BulkPublishEventAlpha1 only on UNIMPLEMENTED; call the deprecated name directly."""
    from dapr.proto.runtime.v1 import dapr_pb2_grpc, pubsub_pb2

    with grpc.insecure_channel(f"unix://{hangard.grpc_socket('team-a', 'orders')}") as channel:
        stub = dapr_pb2_grpc.DaprStub(channel)
        request = pubsub_pb2.BulkPublishRequest(
            pubsub_name=PUBSUB, topic=unique("alpha"),
            entries=[pubsub_pb2.BulkPublishRequestEntry(entry_id="1", event=b"x", content_type="text/plain")],
        )
        response = stub.BulkPublishEventAlpha1(request, timeout=10)
        assert list(response.failedEntries) == []
        with pytest.raises(grpc.RpcError) as error:
            request.entries.append(pubsub_pb2.BulkPublishRequestEntry(entry_id="1", event=b"y", content_type="text/plain"))
            stub.BulkPublishEvent(request, timeout=10)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "entryId is duplicated" in error.value.details()


def test_http_publish_with_curl_on_the_unix_socket(hangard):
    status, _, body = curl(hangard, "team-a", "orders", "POST", f"/v1.0/publish/{PUBSUB}/{unique('http')}",
                           b'{"order": 1}', {"Content-Type": "application/json"})
    assert status == 204 and body == b"", (status, body)
    status, _, _ = curl(hangard, "team-a", "orders", "PUT", f"/v1.0/publish/{PUBSUB}/orders/with/slashes", b"text")
    assert status == 204
    status, _, _ = curl(hangard, "team-a", "orders", "POST",
                        f"/v1.0/publish/{PUBSUB}/{unique('raw')}?metadata.rawPayload=true&metadata.ttl=10s", b"raw")
    assert status == 204


def test_http_bulk_publish_with_curl(hangard):
    entries = [
        {"entryId": "1", "event": {"n": 1}, "contentType": "application/json"},
        {"entryId": "2", "event": "text", "contentType": "text/plain", "metadata": {"cloudevent.id": "two"}},
        {"entryId": "3", "event": "AAEC", "contentType": "application/octet-stream"},
        {"entryId": "4", "event": {"id": "ce", "source": "s", "type": "t", "specversion": "1.0"},
         "contentType": "application/cloudevents+json"},
    ]
    for path in (f"/v1.0-alpha1/publish/bulk/{PUBSUB}/{unique('bulk')}", f"/v1.0/publish/bulk/{PUBSUB}/a/b"):
        status, _, body = curl(hangard, "team-b", "orders", "POST", path, json.dumps(entries).encode(),
                               {"Content-Type": "application/json"})
        assert status == 204, (status, body)


@pytest.mark.parametrize("entries,reason", [
    ([{"entryId": "1", "event": "x"}], "DAPR_PUBSUB_MARSHAL_ENVELOPE"),  # no contentType
    ([{"entryId": "1", "event": {"a": 1}, "contentType": "text/plain"}], "DAPR_PUBSUB_MARSHAL_ENVELOPE"),
    ([{"entryId": "1", "event": "not base64!", "contentType": "application/octet-stream"}],
     "DAPR_PUBSUB_MARSHAL_ENVELOPE"),
    ([{"event": "x", "contentType": "text/plain"}], "DAPR_PUBSUB_MARSHAL_EVENTS"),
    ([{"entryId": "1", "event": "x", "contentType": "text/plain"}] * 2, "DAPR_PUBSUB_MARSHAL_EVENTS"),
    ({"not": "an array"}, "DAPR_PUBSUB_UNMARSHAL_EVENTS"),
])
def test_http_bulk_publish_bad_entries(hangard, entries, reason):
    result = hangard.http("team-a", "orders", "POST", f"/v1.0-alpha1/publish/bulk/{PUBSUB}/t", entries)
    error = dapr_error(result.status, result.body, 400, "ERR_PUBSUB_EVENTS_SER")
    assert error["details"][0]["reason"] == reason, error


# ---------------------------------------------------------------------------------------------------------------
# Errors: Dapr's order, codes and messages, over both front-ends.


@pytest.mark.parametrize("pubsub,topic,metadata,code,reason,message", [
    ("nope", "t", {}, "ERR_PUBSUB_NOT_FOUND", "DAPR_PUBSUB_NOT_FOUND", "pubsub nope is not found"),
    ("", "t", {}, "ERR_PUBSUB_EMPTY", "DAPR_PUBSUB_NAME_EMPTY", "pubsub name is empty"),
    (PUBSUB, "", {}, "ERR_TOPIC_NAME_EMPTY", "DAPR_PUBSUB_TOPIC_NAME_EMPTY", "topic is empty in pubsub pubsub"),
    (PUBSUB, "t", {"rawPayload": "maybe"}, "ERR_PUBSUB_REQUEST_METADATA", "DAPR_PUBSUB_METADATA_DESERIALIZATION",
     "failed deserializing metadata. Error: rawPayload value must be a valid boolean: actual is 'maybe'"),
])
def test_grpc_publish_errors_are_daprs(hangard, pubsub, topic, metadata, code, reason, message):
    client = hangard.client("team-a", "orders")
    with pytest.raises(grpc.RpcError) as error:
        client.publish_event(pubsub, topic, b"x", publish_metadata=metadata)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value
    assert error.value.details() == message
    info = grpc_error_info(error.value)
    assert info["reason"] == reason and info["domain"] == "dapr.io", info
    assert info["metadata"]["errorCode"] == code


def test_http_publish_errors_are_daprs(hangard):
    result = hangard.http("team-a", "orders", "POST", "/v1.0/publish/nope/t", b"x")
    dapr_error(result.status, result.body, 404, "ERR_PUBSUB_NOT_FOUND")
    result = hangard.http("team-a", "orders", "POST", f"/v1.0/publish/{PUBSUB}", b"x")
    dapr_error(result.status, result.body, 404, "ERR_TOPIC_NAME_EMPTY")
    result = hangard.http("team-a", "orders", "POST", f"/v1.0/publish/{PUBSUB}/t", b"[1, 2]",
                          {"Content-Type": "application/cloudevents+json"})
    error = dapr_error(result.status, result.body, 500, "ERR_PUBSUB_CLOUD_EVENTS_SER")
    assert error["message"] == "cannot create cloudevent"
    result = hangard.http("team-a", "orders", "POST", f"/v1.0/publish/{PUBSUB}/t?metadata.ttlInSeconds=-5", b"x")
    dapr_error(result.status, result.body, 400, "ERR_PUBSUB_REQUEST_METADATA")
    # Percent-escapes are decoded once; malformed ones, and an encoded '..', are refused.
    for path in ("bad%zzescape", "%2e%2e/x", "a%7C%7Cb"):
        status, _, body = curl(hangard, "team-a", "orders", "POST", f"/v1.0/publish/{PUBSUB}/{path}", b"x")
        dapr_error(status, body, 400, "ERR_MALFORMED_REQUEST")
    status, _, _ = curl(hangard, "team-a", "orders", "POST", f"/v1.0/publish/{PUBSUB}/my%20topic%2Feu", b"x")
    assert status == 204
    # A state store is not a pub/sub component.
    result = hangard.http("team-a", "orders", "POST", f"/v1.0/publish/{STORE}/t", b"x")
    dapr_error(result.status, result.body, 404, "ERR_PUBSUB_NOT_FOUND")


def test_grpc_invalid_cloud_event_is_refused(hangard):
    with pytest.raises(grpc.RpcError) as error:
        hangard.client("team-a", "orders").publish_event(
            PUBSUB, "t", "{not json", data_content_type="application/cloudevents+json")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert grpc_error_info(error.value)["reason"] == "DAPR_PUBSUB_CLOUD_EVENT_CREATION"


HOSTILE_TOPICS = ["../x", "a/../../etc/passwd", "a||b", "t" * 10240, "a\x01b", "line\nbreak", "del\x7f"]


@pytest.mark.parametrize("topic", HOSTILE_TOPICS, ids=["dotdot", "traversal", "separator", "10KiB", "ctrl", "lf", "del"])
def test_hostile_topic_names_are_invalid_argument(hangard, topic):
    with pytest.raises(grpc.RpcError) as error:
        hangard.client("team-a", "orders").publish_event(PUBSUB, topic, b"x")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value
    assert "is not a valid topic name" in error.value.details()
    assert len(error.value.details()) < 400
    assert grpc_error_info(error.value)["reason"] == "HANGAR_PUBSUB_TOPIC_INVALID"
    if len(topic) < 1000:  # curl's request line stays short; the 10 KiB one is refused by gRPC above
        path = f"/v1.0/publish/{PUBSUB}/" + urllib.parse.quote(topic, safe="/|")
        status, _, body = curl(hangard, "team-a", "orders", "POST", path, b"x")
        error = dapr_error(status, body, 400, "ERR_MALFORMED_REQUEST")
        assert error["details"][0]["reason"] == "HANGAR_PUBSUB_TOPIC_INVALID"
    still_serves(hangard)


def test_http_topic_over_10_kib_is_refused(hangard):
    result = hangard.http("team-a", "orders", "POST", f"/v1.0/publish/{PUBSUB}/" + "t" * 10240, b"x")
    assert result.status in (400, 414, 431), result
    still_serves(hangard)


def test_publishing_scopes_apply_within_the_tenant(hangard_factory):
    scoped = component_yaml("scoped", "pubsub.in-memory", {
        "allowedTopics": "orders,audit,secret", "publishingScopes": "billing=secret,audit;orders=audit",
        "protectedTopics": "secret",
    })
    daemon = start_daemon(
        hangard_factory,
        {"a.yaml": tenant_yaml("shop", [{"appId": "orders"}, {"appId": "billing"}])},
        {"store.yaml": component_yaml(STORE, "state.in-memory"), "scoped.yaml": scoped},
        apps=(("shop", "orders"), ("shop", "billing")),
    )
    orders = daemon.client("shop", "orders")
    billing = daemon.client("shop", "billing")
    orders.publish_event("scoped", "audit", b"ok")
    billing.publish_event("scoped", "secret", b"ok")
    for client, topic in ((orders, "secret"), (orders, "orders"), (billing, "elsewhere")):
        with pytest.raises(grpc.RpcError) as error:
            client.publish_event("scoped", topic, b"no")
        assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED, (topic, error.value)
        assert grpc_error_info(error.value)["reason"] == "DAPR_PUBSUB_FORBIDDEN"
    result = daemon.http("shop", "orders", "POST", "/v1.0/publish/scoped/secret", b"no")
    error = dapr_error(result.status, result.body, 403, "ERR_PUBSUB_FORBIDDEN")
    assert error["message"] == "topic secret is not allowed for app id orders"


# ---------------------------------------------------------------------------------------------------------------
# Tenancy: the same topic name on one shared component, retained bytes per tenant, metrics.


def test_max_pubsub_bytes_is_per_tenant_on_a_shared_component(hangard_factory):
    port = free_port()
    shared = component_yaml(PUBSUB, "pubsub.sqlite", {"connectionString": "pubsub.db", "cleanupInterval": "0"})
    daemon = start_daemon(
        hangard_factory,
        {
            "noisy.yaml": tenant_yaml("noisy", [{"appId": "app"}], quotas={"maxPubsubBytes": 8192}),
            "quiet.yaml": tenant_yaml("quiet", [{"appId": "app"}], quotas={"maxPubsubBytes": 8192}),
        },
        {"store.yaml": component_yaml(STORE, "state.in-memory"), "pubsub.yaml": shared},
        apps=(("noisy", "app"), ("quiet", "app")),
        extra_args=("--metrics-listen", f"127.0.0.1:{port}"),
    )
    noisy = daemon.client("noisy", "app")
    quiet = daemon.client("quiet", "app")
    # Subscribed (a durable cursor each), so the messages are retained until consumed: a topic nobody subscribes to
    # keeps nothing once trimmed, and a refused publish trims to make room.
    for client in (noisy, quiet):
        client.subscribe(PUBSUB, "orders").close()
    payload = b"p" * 2000
    published = 0
    with pytest.raises(grpc.RpcError) as error:
        for _ in range(10):
            noisy.publish_event(PUBSUB, "orders", payload)
            published += 1
    assert published == 3, published  # each message is its ~2.3 KB envelope: checked in commit order, never 4
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.value
    info = grpc_error_info(error.value)
    assert info["reason"] == "HANGAR_QUOTA_EXCEEDED"
    assert info["metadata"]["quota"] == "maxPubsubBytes" and info["metadata"]["limit"] == "8192"
    assert info["metadata"]["namespace"] == "noisy"
    result = daemon.http("noisy", "app", "POST", f"/v1.0/publish/{PUBSUB}/other-topic", payload)
    assert result.status == 429 and int(result.headers["retry-after"]) >= 1, result
    assert result.json()["details"][0]["metadata"]["quota"] == "maxPubsubBytes"
    # The other tenant, same component, same topic name: its own topic and its own budget.
    for _ in range(published):
        quiet.publish_event(PUBSUB, "orders", payload)
    samples = parse_exposition(scrape(port).body.decode())
    retained = {ns: samples[("hangar_pubsub_retained_bytes", frozenset({"namespace": ns, "component": PUBSUB}.items()))]
                for ns in ("noisy", "quiet")}
    assert retained["noisy"] == retained["quiet"] > 2000 * published, retained
    for ns in ("noisy", "quiet"):
        labels = frozenset({"namespace": ns, "app_id": "app", "component": PUBSUB, "topic": "orders"}.items())
        assert samples[("hangar_pubsub_published_total", labels)] == published
        assert samples[("hangar_pubsub_published_bytes_total", labels)] == retained[ns]
    refusals = frozenset({"namespace": "noisy", "app_id": "app", "quota": "maxPubsubBytes"}.items())
    assert samples[("hangar_quota_refusals_total", refusals)] == 2


# ---------------------------------------------------------------------------------------------------------------
# Durability on pubsub.sqlite.


def test_acknowledged_publish_is_in_the_sqlite_file_after_kill_9(hangard_factory):
    root = hangard_factory.root()
    tenants = {"t.yaml": tenant_yaml("team-a", [{"appId": "orders"}]),
               "u.yaml": tenant_yaml("team-b", [{"appId": "orders"}])}
    # No trimming by the component on its own: nothing subscribes yet, and the test reads the log itself.
    components = {"pubsub.yaml": component_yaml(PUBSUB, "pubsub.sqlite",
                                                {"connectionString": "pubsub.db", "cleanupInterval": "0"}),
                  "store.yaml": component_yaml(STORE, "state.in-memory")}
    tenancy, resources = root / "tenancy", root / "resources"
    tenancy.mkdir()
    resources.mkdir()
    for name, text in tenants.items():
        (tenancy / name).write_text(text)
    for name, text in components.items():
        (resources / name).write_text(text)
    apps = (("team-a", "orders"), ("team-b", "orders"))
    daemon = hangard_factory.start(root, tenancy=tenancy, resources=resources, apps=apps)

    marker = unique("durable")
    client = daemon.client("team-a", "orders")
    client.publish_event(PUBSUB, "orders", json.dumps({"marker": marker}), data_content_type="application/json",
                         publish_metadata={"ttlInSeconds": "3600"})
    status, _, _ = curl(daemon, "team-b", "orders", "POST", f"/v1.0/publish/{PUBSUB}/orders", marker.encode())
    assert status == 204
    daemon.kill()  # SIGKILL: no shutdown, no checkpoint

    restarted = hangard_factory.start(root, tenancy=tenancy, resources=resources, apps=apps)
    messages = [m for m in sqlite_messages(restarted.data_dir) if marker.encode() in m["data"]]
    assert [m["topic"] for m in messages] == ["team-a||orders", "team-b||orders"], messages
    a, b = messages
    for message in messages:
        assert message["content_type"] == "application/cloudevents+json"
    event = json.loads(a["data"])
    assert event["data"] == {"marker": marker}
    assert event["source"] == "orders" and event["topic"] == "orders" and event["pubsubname"] == PUBSUB
    assert event["type"] == "com.dapr.event.sent" and event["specversion"] == "1.0"
    assert event["datacontenttype"] == "application/json"
    assert event["traceid"] == event["traceparent"] and event["traceparent"].startswith("00-")
    assert "expiration" not in event  # pubsub.sqlite expires messages itself
    assert a["expires_at"] - a["published_at"] == 3600 * 1000
    assert json.loads(b["data"])["data"] == marker and b["expires_at"] is None
    # The restarted daemon goes on appending to the same log.
    restarted.client("team-a", "orders").publish_event(PUBSUB, "orders", marker)
    after = [m for m in sqlite_messages(restarted.data_dir) if m["topic"] == "team-a||orders"]
    assert after[-1]["seq"] > a["seq"] and marker.encode() in after[-1]["data"]
