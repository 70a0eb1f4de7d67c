"""Live reconfiguration: changes in --tenancy and --resources apply without a restart; an invalid change is
reported (path, field) and the last good configuration stays in force."""

from __future__ import annotations

import socket
import threading
import time

import grpc
import pytest

from hangar_e2e import Hangard, unique
from tenancy_files import STORE, component_yaml, start_daemon as start, tenant_yaml, wait_until, write_atomically


def sockets_up(daemon: Hangard, ns: str, app: str) -> bool:
    return daemon.grpc_socket(ns, app).is_socket() and daemon.http_socket(ns, app).is_socket()


def accepts_calls(daemon: Hangard, ns: str, app: str) -> bool:
    if not sockets_up(daemon, ns, app):
        return False
    try:
        return daemon.http(ns, app, "GET", "/v1.0/metadata", timeout=2).status == 200
    except OSError:
        return False


def test_a_new_tenant_gets_its_sockets_within_a_second(hangard_factory):
    daemon = start(hangard_factory, {"a.yaml": tenant_yaml("team-a", [{"appId": "orders"}])}, apps=(("team-a", "orders"),))
    write_atomically(daemon.tenancy / "b.yaml", tenant_yaml("team-b", [{"appId": "payments"}]))
    elapsed = wait_until(lambda: accepts_calls(daemon, "team-b", "payments"), timeout=1.0)
    assert elapsed < 1.0
    client = daemon.client("team-b", "payments")
    client.save_state(STORE, "k", "v")
    assert client.get_state(STORE, "k").data == b"v"
    assert daemon.client("team-a", "orders").get_state(STORE, "k").data == b""
    assert daemon.wait_for_log("configuration reloaded", "team-b/payments")
    # A new app in an existing tenant too.
    write_atomically(
        daemon.tenancy / "a.yaml", tenant_yaml("team-a", [{"appId": "orders"}, {"appId": "billing"}])
    )
    wait_until(lambda: accepts_calls(daemon, "team-a", "billing"), timeout=1.0)


def test_a_removed_app_finishes_its_call_in_flight_then_its_sockets_disappear(hangard_factory):
    daemon = start(
        hangard_factory,
        {"a.yaml": tenant_yaml("team-a", [{"appId": "orders"}, {"appId": "billing"}])},
        apps=(("team-a", "orders"), ("team-a", "billing")),
    )
    # A call in flight on billing: its body is only half sent.
    held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    held.settimeout(10)
    held.connect(str(daemon.http_socket("team-a", "billing")))
    body = b'[{"key": "last", "value": "written"}]'
    held.sendall(
        f"POST /v1.0/state/{STORE} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:10]
    )
    time.sleep(0.2)
    write_atomically(daemon.tenancy / "a.yaml", tenant_yaml("team-a", [{"appId": "orders"}]))
    assert daemon.wait_for_log("app removed", "billing", timeout=3)
    # Its listener is closed at once: no new connection gets in...
    wait_until(lambda: not daemon.grpc_socket("team-a", "billing").exists(), timeout=3)
    # ...but the call in flight completes.
    held.sendall(body[10:])
    answer = held.recv(4096)
    held.close()
    assert answer.startswith(b"HTTP/1.1 204"), answer
    wait_until(lambda: not daemon.app_dir("team-a", "billing").exists(), timeout=5)
    # The rest of the node keeps serving.
    daemon.client("team-a", "orders").save_state(STORE, "k", "v")
    # Declared again, the app is back with its data (the state store is unchanged).
    write_atomically(
        daemon.tenancy / "a.yaml", tenant_yaml("team-a", [{"appId": "orders"}, {"appId": "billing"}])
    )
    wait_until(lambda: accepts_calls(daemon, "team-a", "billing"), timeout=2)
    assert daemon.http("team-a", "billing", "GET", f"/v1.0/state/{STORE}/last").body == b'"written"'


def test_changed_quotas_apply_to_new_requests(hangard_factory):
    daemon = start(
        hangard_factory,
        {"a.yaml": tenant_yaml("team-a", [{"appId": "orders"}], quotas={"requestsPerSecond": 1, "burst": 1})},
        apps=(("team-a", "orders"),),
    )
    client = daemon.client("team-a", "orders")
    client.get_state(STORE, "k")
    with pytest.raises(grpc.RpcError) as error:
        client.get_state(STORE, "k")
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    write_atomically(
        daemon.tenancy / "a.yaml",
        tenant_yaml("team-a", [{"appId": "orders"}], quotas={"requestsPerSecond": 1000, "burst": 1000}),
    )
    assert daemon.wait_for_log("configuration reloaded", timeout=3)
    time.sleep(0.05)
    for _ in range(20):
        client.get_state(STORE, "k")  # the same connection, now under the new quota
    # And back down.
    write_atomically(
        daemon.tenancy / "a.yaml",
        tenant_yaml("team-a", [{"appId": "orders"}], quotas={"maxConcurrentRequests": 1, "requestsPerSecond": 1, "burst": 1}),
    )
    def refused() -> bool:
        try:
            client.get_state(STORE, "k")
            return False
        except grpc.RpcError as error:
            return error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    wait_until(refused, timeout=3, interval=0.05)


def test_a_changed_component_is_swapped_in_without_failing_calls_in_flight(hangard_factory):
    components = {"cache.yaml": component_yaml("cache", "state.in-memory")}
    daemon = start(
        hangard_factory,
        {"a.yaml": tenant_yaml("team-a", [{"appId": "orders"}])},
        components=components,
        apps=(("team-a", "orders"),),
    )
    errors: list[BaseException] = []
    calls = [0]
    stop = threading.Event()

    def load() -> None:
        client = daemon.client("team-a", "orders")
        while not stop.is_set():
            try:
                # A save and a get may straddle the swap (the new instance starts empty): only failures count.
                key = unique()
                client.save_state("cache", key, "v")
                client.get_state("cache", key)
                calls[0] += 2
            except BaseException as error:  # noqa: BLE001 - every failure counts
                errors.append(error)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        time.sleep(0.3)
        write_atomically(
            daemon.resources / "cache.yaml",
            component_yaml("cache", "state.sqlite", {"connectionString": "cache.db"}),
        )
        assert daemon.wait_for_log("component changed", "cache", timeout=3)
        time.sleep(0.5)
    finally:
        stop.set()
        worker.join(10)
    assert not errors, errors[:3]
    assert calls[0] > 20
    metadata = daemon.http("team-a", "orders", "GET", "/v1.0/metadata").json()
    types = {c["name"]: c["type"] for c in metadata["components"]}
    assert types["cache"] == "state.sqlite"
    assert daemon.wait_for_log("component closed", "cache", timeout=5)
    # A new component appears, a removed one disappears.
    write_atomically(daemon.resources / "extra.yaml", component_yaml("extra", "state.in-memory"))
    wait_until(
        lambda: "extra" in {c["name"] for c in daemon.http("team-a", "orders", "GET", "/v1.0/metadata").json()["components"]},
        timeout=2,
    )
    (daemon.resources / "extra.yaml").unlink()
    wait_until(
        lambda: "extra" not in {c["name"] for c in daemon.http("team-a", "orders", "GET", "/v1.0/metadata").json()["components"]},
        timeout=2,
    )


@pytest.mark.parametrize(
    "bad, field",
    [
        ("apiVersion: hangar.dev/v1alpha1\nkind: Tenant\nmetadata: {name: team-a}\nspec:\n  apps: [{appId: Orders}]\n", "appId"),
        ("apiVersion: hangar.dev/v1alpha1\nkind: Tenant\nmetadata: {name: team-a\n", "yaml"),
        ("apiVersion: hangar.dev/v1alpha1\nkind: Tenant\nmetadata: {name: team-a}\nspec:\n  apps: [{appId: orders}]\n  quotas: {burst: 3}\n", "burst"),
    ],
)
def test_an_invalid_change_is_reported_and_the_last_good_configuration_stays(hangard_factory, bad, field):
    daemon = start(
        hangard_factory,
        {"a.yaml": tenant_yaml("team-a", [{"appId": "orders"}])},
        apps=(("team-a", "orders"),),
    )
    client = daemon.client("team-a", "orders")
    client.save_state(STORE, "k", "before")
    path = daemon.tenancy / "a.yaml"
    write_atomically(path, bad)
    line = daemon.wait_for_log("configuration change rejected", timeout=3)
    assert line is not None, daemon.log[-3000:]
    assert str(path) in line and field.lower() in line.lower(), line
    # Still serving on the last good configuration.
    assert sockets_up(daemon, "team-a", "orders")
    assert client.get_state(STORE, "k").data == b"before"
    # Fixed, it applies.
    write_atomically(path, tenant_yaml("team-a", [{"appId": "orders"}, {"appId": "fixed"}]))
    wait_until(lambda: accepts_calls(daemon, "team-a", "fixed"), timeout=2)


def test_an_invalid_component_keeps_the_last_good_components(hangard_factory):
    daemon = start(
        hangard_factory,
        {"a.yaml": tenant_yaml("team-a", [{"appId": "orders"}])},
        apps=(("team-a", "orders"),),
    )
    client = daemon.client("team-a", "orders")
    client.save_state(STORE, "k", "v")
    write_atomically(
        daemon.resources / "store.yaml",
        component_yaml(STORE, "state.sqlite", {"connectionString": "s.db", "tableName": "bad name!"}),
    )
    line = daemon.wait_for_log("configuration change rejected", timeout=3)
    assert line is not None and "spec.metadata" in line and "table name" in line, daemon.log[-3000:]
    assert "store.yaml" in line
    assert client.get_state(STORE, "k").data == b"v"


def test_an_api_token_file_is_read_again_when_it_changes_and_tokens_never_reach_the_log(hangard_factory):
    root = hangard_factory.root()
    tenancy = root / "tenancy"
    resources = root / "resources"
    tenancy.mkdir()
    resources.mkdir()
    token_file = tenancy / "orders.token"
    old_token, new_token = f"old-{unique()}", f"new-{unique()}"
    token_file.write_text(old_token + "\n")
    (tenancy / "a.yaml").write_text(tenant_yaml("team-a", [{"appId": "orders", "apiTokenFile": "orders.token"}]))
    (resources / "store.yaml").write_text(component_yaml(STORE, "state.sqlite", {"connectionString": "s.db"}))
    daemon = hangard_factory.start(root, tenancy=tenancy, resources=resources, apps=(("team-a", "orders"),))

    def status(token: str) -> int:
        return daemon.tcp_http("GET", "/v1.0/metadata", headers={"dapr-api-token": token}).status

    assert status(old_token) == 200
    write_atomically(token_file, new_token + "\n")
    wait_until(lambda: status(new_token) == 200, timeout=3, interval=0.05)
    assert status(old_token) == 401
    # A duplicate token is an error that must not print the token.
    write_atomically(
        tenancy / "b.yaml", tenant_yaml("team-b", [{"appId": "orders", "apiToken": new_token}])
    )
    assert daemon.wait_for_log("configuration change rejected", timeout=3)
    assert status(new_token) == 200
    log = daemon.log
    assert old_token not in log and new_token not in log
