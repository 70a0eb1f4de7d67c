"""Quotas: each tenant (and app) is held to its limits, a refusal is RESOURCE_EXHAUSTED / HTTP 429 with an
ErrorInfo naming the quota, a refused request changes nothing, and one tenant's refusals never touch another."""

from __future__ import annotations

import socket
import time

import grpc
import pytest

from hangar_e2e import Hangard, expect_quota, unique
from tenancy_files import STORE, start_daemon, tenant_yaml


def start(factory, tenants: list[str], apps=()) -> Hangard:
    return start_daemon(factory, {f"t{index}.yaml": text for index, text in enumerate(tenants)}, apps=apps)


def test_rate_quota_refuses_over_the_burst_and_a_refused_write_changes_nothing(hangard_factory):
    daemon = start(
        hangard_factory,
        [
            tenant_yaml("noisy", [{"appId": "app"}], quotas={"requestsPerSecond": 1, "burst": 5}),
            tenant_yaml("quiet", [{"appId": "app"}], quotas={"requestsPerSecond": 1, "burst": 5}),
        ],
        apps=(("noisy", "app"), ("quiet", "app")),
    )
    noisy = daemon.client("noisy", "app")
    quiet = daemon.client("quiet", "app")
    key = unique()
    for index in range(5):
        noisy.save_state(STORE, key, f"v{index}")
    with pytest.raises(grpc.RpcError) as error:
        noisy.save_state(STORE, key, "refused")
    info = expect_quota(error, "requestsPerSecond", 1, "tenant")
    assert info["namespace"] == "noisy"
    assert int(info["retryAfterSeconds"]) >= 1
    assert "quota exceeded" in error.value.details()
    # Over HTTP: 429 with Retry-After and Dapr's error body.
    result = daemon.http("noisy", "app", "GET", f"/v1.0/state/{STORE}/{key}")
    assert result.status == 429, result
    assert int(result.headers["retry-after"]) >= 1
    body = result.json()
    assert body["errorCode"] == "ERR_QUOTA_EXCEEDED"
    assert body["details"][0]["reason"] == "HANGAR_QUOTA_EXCEEDED"
    assert body["details"][0]["metadata"]["quota"] == "requestsPerSecond"
    # The other tenant, with the same quota, is untouched.
    for index in range(5):
        quiet.save_state(STORE, key, f"q{index}")
    # The refused write changed nothing: once a token is back, the value is the last accepted one.
    time.sleep(1.1)
    assert noisy.get_state(STORE, key).data == b"v4"


def test_app_quota_narrows_the_app_within_its_tenant(hangard_factory):
    daemon = start(
        hangard_factory,
        [
            tenant_yaml(
                "team",
                [{"appId": "small", "quotas": {"requestsPerSecond": 1, "burst": 2}}, {"appId": "big"}],
                quotas={"requestsPerSecond": 1, "burst": 10},
            )
        ],
        apps=(("team", "small"), ("team", "big")),
    )
    small = daemon.client("team", "small")
    big = daemon.client("team", "big")
    for _ in range(2):
        small.get_state(STORE, "k")
    with pytest.raises(grpc.RpcError) as error:
        small.get_state(STORE, "k")
    expect_quota(error, "requestsPerSecond", 1, "app")
    # The app's refusal took nothing from the tenant: 8 tokens are left for the rest of the tenant.
    for _ in range(8):
        big.get_state(STORE, "k")
    with pytest.raises(grpc.RpcError) as error:
        big.get_state(STORE, "k")
    expect_quota(error, "requestsPerSecond", 1, "tenant")


def test_max_concurrent_requests_counts_calls_in_flight(hangard_factory):
    daemon = start(
        hangard_factory,
        [tenant_yaml("team", [{"appId": "app"}], quotas={"maxConcurrentRequests": 1})],
        apps=(("team", "app"),),
    )
    path = str(daemon.http_socket("team", "app"))
    # A request whose body has not all arrived holds its slot.
    held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    held.settimeout(10)
    held.connect(path)
    body = b'[{"key": "held", "value": "x"}]'
    held.sendall(
        f"POST /v1.0/state/{STORE} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:5]
    )
    time.sleep(0.3)
    refused = daemon.http("team", "app", "GET", f"/v1.0/state/{STORE}/held")
    assert refused.status == 429, refused
    assert refused.json()["details"][0]["metadata"]["quota"] == "maxConcurrentRequests"
    with pytest.raises(grpc.RpcError) as error:
        daemon.client("team", "app").get_state(STORE, "held")
    expect_quota(error, "maxConcurrentRequests", 1, "tenant")
    # The held request completes; then the slot is free again.
    held.sendall(body[5:])
    assert held.recv(4096).startswith(b"HTTP/1.1 204")
    held.close()
    assert daemon.client("team", "app").get_state(STORE, "held").data == b'"x"'


def test_max_connections_per_app_socket(hangard_factory):
    daemon = start(
        hangard_factory,
        [tenant_yaml("team", [{"appId": "app"}, {"appId": "other"}], quotas={"maxConnections": 2})],
        apps=(("team", "app"), ("team", "other")),
    )
    path = str(daemon.grpc_socket("team", "app"))
    idle = []
    for _ in range(2):
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.connect(path)
        idle.append(connection)
    time.sleep(0.2)
    client = daemon.client("team", "app")
    with pytest.raises(grpc.RpcError) as error:
        client.get_state(STORE, "k")
    expect_quota(error, "maxConnections", 2, "app")
    assert daemon.wait_for_log("maxConnections", "team")
    # Connections are per app: the other app is not affected.
    daemon.client("team", "other").get_state(STORE, "k")
    # Once a connection closes, the waiting client's next call is admitted.
    idle.pop().close()
    time.sleep(0.2)
    client.get_state(STORE, "k")
    for connection in idle:
        connection.close()


def test_max_request_bytes_per_app_is_refused_before_the_body_is_read(hangard_factory):
    daemon = start(
        hangard_factory,
        [tenant_yaml("team", [{"appId": "app", "quotas": {"maxRequestBytes": 1000}}, {"appId": "big"}])],
        apps=(("team", "app"), ("team", "big")),
    )
    with pytest.raises(grpc.RpcError) as error:
        daemon.client("team", "app").save_state(STORE, "k", "x" * 2000)
    expect_quota(error, "maxRequestBytes", 1000, "app")
    assert daemon.client("team", "app").get_state(STORE, "k").data == b""
    daemon.client("team", "big").save_state(STORE, "k", "x" * 2000)
    # HTTP: the declared length alone is refused; the body is never sent.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.settimeout(10)
        raw.connect(str(daemon.http_socket("team", "app")))
        raw.sendall(
            f"POST /v1.0/state/{STORE} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: 5000\r\n\r\n".encode()
        )
        answer = raw.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b"maxRequestBytes" in answer


def _state_bytes_tenants() -> list[str]:
    return [
        tenant_yaml("small", [{"appId": "app"}], quotas={"maxStateBytes": 1000}),
        tenant_yaml("other", [{"appId": "app"}], quotas={"maxStateBytes": 1000}),
    ]


def test_max_state_bytes_is_tracked_per_tenant_and_survives_a_restart(hangard_factory):
    apps = (("small", "app"), ("other", "app"))
    daemon = start(hangard_factory, _state_bytes_tenants(), apps=apps)
    client = daemon.client("small", "app")
    # Physical key "small||app||a" is 13 bytes: 13 + 600 = 613 bytes stored.
    client.save_state(STORE, "a", "x" * 600)
    with pytest.raises(grpc.RpcError) as error:
        client.save_state(STORE, "b", "y" * 600)
    info = expect_quota(error, "maxStateBytes", 1000, "tenant")
    assert info["store"] == STORE
    assert client.get_state(STORE, "b").data == b""  # nothing was written
    # Another tenant's budget is its own.
    daemon.client("other", "app").save_state(STORE, "b", "z" * 900)
    # Shrinking an item and deleting are always allowed, and free room.
    client.save_state(STORE, "a", "x" * 300)
    client.save_state(STORE, "b", "y" * 600)
    with pytest.raises(grpc.RpcError):
        client.save_state(STORE, "c", "w" * 200)

    # After a restart the usage is recomputed from the store: the quota still holds.
    daemon.stop()
    daemon.start()
    client = daemon.client("small", "app")
    with pytest.raises(grpc.RpcError) as error:
        client.save_state(STORE, "c", "w" * 200)
    expect_quota(error, "maxStateBytes", 1000, "tenant")
    client.delete_state(STORE, "b")
    client.save_state(STORE, "c", "w" * 200)
    assert client.get_state(STORE, "c").data == b"w" * 200


def test_quota_refusals_never_touch_another_tenants_data(hangard_factory):
    daemon = start(
        hangard_factory,
        [
            tenant_yaml("noisy", [{"appId": "orders"}], quotas={"requestsPerSecond": 1, "burst": 1}),
            tenant_yaml("victim", [{"appId": "orders"}]),
        ],
        apps=(("noisy", "orders"), ("victim", "orders")),
    )
    victim = daemon.client("victim", "orders")
    victim.save_state(STORE, "shared-name", "victim-value")
    noisy = daemon.client("noisy", "orders")
    noisy.save_state(STORE, "shared-name", "noisy-1")
    refused = 0
    for _ in range(50):
        try:
            noisy.save_state(STORE, "shared-name", "noisy-flood")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            refused += 1
    assert refused >= 45
    assert victim.get_state(STORE, "shared-name").data == b"victim-value"
    assert daemon.running
