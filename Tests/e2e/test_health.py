"""Health that operators can act on: `/v1.0/healthz` and `/healthz/outbound` answer 204 only once every listener is
up and every component has made its first initialisation attempt; `/healthz/detail` on the metrics listener shows
INIT/UP/DOWN per component and per tenant (the worst state wins); a component that fails to initialise is DOWN,
refused to its callers with a clear error, retried, and neither stops the daemon nor touches the other components.
"""

from __future__ import annotations

import http.client
import json
import sqlite3
import subprocess

import grpc
import pytest

from hangar_e2e import HANGARD, free_port, grpc_error_info, unique
from tenancy_files import STORE, component_yaml, start_daemon, tenant_yaml, wait_until, write_atomically


def get(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def detail(port: int) -> tuple[int, dict]:
    status, body = get(port, "/healthz/detail")
    return status, json.loads(body)


def by_name(document: dict) -> dict[str, dict]:
    return {component["name"]: component for component in document["components"]}


def start_with_broken_store(hangard_factory):
    """team-a (orders) and team-b (web); a shared good store and team-a's own `broken` store, whose database path
    lies under a regular file, so that it cannot be created (even by root) until that file is removed."""
    metrics_port = free_port()
    blocker = hangard_factory.root() / "blocker"
    blocker.write_text("a file where the store wants a directory\n")
    daemon = start_daemon(
        hangard_factory,
        {"a.yaml": tenant_yaml("team-a", [{"appId": "orders"}]), "b.yaml": tenant_yaml("team-b", [{"appId": "web"}])},
        {
            "store.yaml": component_yaml(STORE, "state.sqlite", {"connectionString": "s.db"}),
            "broken.yaml": component_yaml(
                "broken", "state.sqlite", {"connectionString": str(blocker / "broken.db")}, namespace="team-a"
            ),
        },
        apps=(("team-a", "orders"), ("team-b", "web")),
        extra_args=("--metrics-listen", f"127.0.0.1:{metrics_port}"),
    )
    return daemon, metrics_port, blocker


def test_a_component_that_fails_to_initialise_is_down_and_refused_while_the_rest_serves(hangard_factory):
    daemon, metrics_port, _ = start_with_broken_store(hangard_factory)
    # The daemon started and is ready: one tenant's broken component does not hold the node hostage.
    assert daemon.tcp_http("GET", "/v1.0/healthz").status == 204
    assert daemon.tcp_http("GET", "/v1.0/healthz/outbound").status == 204
    line = daemon.wait_for_log("component failed to initialise", "component.name=broken")
    assert line is not None and "cannot open state.sqlite" in line, daemon.log[-3000:]

    orders = daemon.client("team-a", "orders")
    with pytest.raises(grpc.RpcError) as refused:
        orders.save_state("broken", "k", "v")
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "state store broken is DOWN: cannot open state.sqlite" in refused.value.details()
    assert grpc_error_info(refused.value).get("reason") == "HANGAR_COMPONENT_DOWN"
    # The same on HTTP, over the app's socket.
    result = daemon.http("team-a", "orders", "POST", "/v1.0/state/broken", body=[{"key": "k", "value": "v"}])
    assert result.status == 503, result
    assert result.json()["errorCode"] == "ERR_STATE_STORE_NOT_READY"

    # The other components, and the same tenant's other calls, are untouched.
    key = unique()
    orders.save_state(STORE, key, "fine")
    assert orders.get_state(STORE, key).data == b"fine"
    web = daemon.client("team-b", "web")
    web.save_state(STORE, key, "also fine")
    assert web.get_state(STORE, key).data == b"also fine"

    # The metadata API shows each tenant what it may use: team-a sees DOWN, team-b is UP and never sees `broken`.
    extended = orders.get_metadata().extended_metadata
    assert extended["hangar.health"] == "DOWN"
    assert extended["hangar.health.broken"].startswith("DOWN: cannot open state.sqlite")
    assert extended[f"hangar.health.{STORE}"] == "UP"
    web_extended = web.get_metadata().extended_metadata
    assert web_extended["hangar.health"] == "UP"
    assert "hangar.health.broken" not in web_extended

    # /healthz/detail: the worst state wins, for the node and per tenant.
    status, document = detail(metrics_port)
    assert status == 503
    assert document["status"] == "DOWN" and document["ready"] is True
    components = by_name(document)
    assert components["broken"]["status"] == "DOWN"
    assert components["broken"]["namespace"] == "team-a"
    assert "cannot open state.sqlite" in components["broken"]["error"]
    assert components["broken"]["attempts"] >= 1
    assert components[STORE]["status"] == "UP" and "namespace" not in components[STORE]
    tenants = {tenant["namespace"]: tenant for tenant in document["tenants"]}
    assert tenants["team-a"]["status"] == "DOWN"
    assert tenants["team-b"]["status"] == "UP"
    assert [c["name"] for c in tenants["team-b"]["components"]] == [STORE]
    assert daemon.running


def test_a_down_component_is_retried_and_comes_up_without_a_restart(hangard_factory):
    daemon, metrics_port, blocker = start_with_broken_store(hangard_factory)
    assert by_name(detail(metrics_port)[1])["broken"]["status"] == "DOWN"
    blocker.unlink()  # the cause goes away; retries come 1 s, 2 s, 4 s … after the first failure
    wait_until(lambda: detail(metrics_port)[0] == 200, timeout=8, interval=0.1)
    status, document = detail(metrics_port)
    assert document["status"] == "UP"
    assert by_name(document)["broken"]["attempts"] >= 2
    orders = daemon.client("team-a", "orders")
    orders.save_state("broken", "k", "now it works")
    assert orders.get_state("broken", "k").data == b"now it works"
    assert orders.get_metadata().extended_metadata["hangar.health"] == "UP"
    assert daemon.wait_for_log("component initialised", "component.name=broken")


def test_a_component_added_live_that_cannot_initialise_is_down_and_the_node_keeps_serving(hangard_factory):
    metrics_port = free_port()
    daemon = start_daemon(
        hangard_factory,
        {"a.yaml": tenant_yaml("team-a", [{"appId": "orders"}])},
        apps=(("team-a", "orders"),),
        extra_args=("--metrics-listen", f"127.0.0.1:{metrics_port}"),
    )
    root, resources = daemon.root, daemon.resources
    client = daemon.client("team-a", "orders")
    client.save_state(STORE, "k", "before")
    (root / "blocker").write_text("x")
    write_atomically(
        resources / "late.yaml",
        component_yaml("late", "state.sqlite", {"connectionString": str(root / "blocker" / "late.db")}),
    )
    wait_until(lambda: "late" in by_name(detail(metrics_port)[1]), timeout=5, interval=0.05)
    assert by_name(detail(metrics_port)[1])["late"]["status"] == "DOWN"
    # Applied, not rejected: the configuration is valid, the component just cannot open yet.
    assert daemon.wait_for_log("configuration change rejected", timeout=0.5) is None
    with pytest.raises(grpc.RpcError) as refused:
        client.get_state("late", "k")
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert client.get_state(STORE, "k").data == b"before"


def test_healthz_is_not_ready_while_a_component_initialises(hangard_factory):
    """A store whose database another process holds locked stays INIT (SQLite waits out its busyTimeout): the
    listeners are up, yet /v1.0/healthz and /healthz/outbound answer 500 as Dapr does, calls to that store are
    refused as initialising, and /healthz/detail says INIT. Once the lock goes, the node becomes ready."""
    root = hangard_factory.root()
    tenancy, resources, data = root / "tenancy", root / "resources", root / "data"
    for directory in (tenancy, resources, data):
        directory.mkdir()
    (tenancy / "a.yaml").write_text(tenant_yaml("team-a", [{"appId": "orders"}]))
    (resources / "slow.yaml").write_text(
        component_yaml("slow", "state.sqlite", {"connectionString": "slow.db", "busyTimeout": "30s"})
    )
    (resources / "memory.yaml").write_text(component_yaml("memory", "state.in-memory"))
    lock = sqlite3.connect(data / "slow.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    http_port, metrics_port = free_port(), free_port()
    socket_root = root / "s"
    command = [
        str(HANGARD), "--tenancy", str(tenancy), "--resources", str(resources), "--data-dir", str(data),
        "--socket-root", str(socket_root), "--http-listen", f"127.0.0.1:{http_port}", "--grpc-listen", "none",
        "--metrics-listen", f"127.0.0.1:{metrics_port}",
    ]
    log_path = root / "hangard.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        app_socket = socket_root / "team-a" / "orders" / "dapr-orders-http.socket"
        wait_until(lambda: app_socket.is_socket() and get_or_none(http_port, "/v1.0/healthz") is not None, timeout=10)
        status, body = get(http_port, "/v1.0/healthz")
        assert status == 500, body
        assert json.loads(body)["errorCode"] == "ERR_HEALTH_NOT_READY"
        status, body = get(http_port, "/v1.0/healthz/outbound")
        assert status == 500 and json.loads(body)["errorCode"] == "ERR_OUTBOUND_HEALTH_NOT_READY"
        assert get(metrics_port, "/healthz")[0] == 503
        status, document = detail(metrics_port)
        assert status == 503 and document["status"] == "INIT" and document["ready"] is False
        assert by_name(document)["slow"]["status"] == "INIT"
        assert by_name(document)["memory"]["status"] == "UP"
        # Calls: the store that is opening is refused as such; the in-memory one already serves.
        from hangar_e2e import UnixHTTPConnection, http_request

        refused = http_request(UnixHTTPConnection(str(app_socket)), "GET", "/v1.0/state/slow/k")
        assert refused.status == 503 and "state store slow is initialising" in refused.json()["message"]
        saved = http_request(
            UnixHTTPConnection(str(app_socket)), "POST", "/v1.0/state/memory", [{"key": "k", "value": "v"}]
        )
        assert saved.status == 204, saved
        assert "hangard ready" not in log_path.read_text()

        lock.execute("COMMIT")
        wait_until(lambda: get(http_port, "/v1.0/healthz")[0] == 204, timeout=10, interval=0.05)
        assert get(http_port, "/v1.0/healthz/outbound")[0] == 204
        assert detail(metrics_port)[0] == 200
        assert "hangard ready" in log_path.read_text()
    finally:
        lock.close()
        process.terminate()
        assert process.wait(15) == 0, log_path.read_text()


def get_or_none(port: int, path: str) -> int | None:
    try:
        return get(port, path)[0]
    except OSError:
        return None


def test_the_metrics_listener_serves_health_and_nothing_else_new(hangard_factory):
    metrics_port = free_port()
    daemon = hangard_factory.examples(extra_args=("--metrics-listen", f"127.0.0.1:{metrics_port}"))
    assert get(metrics_port, "/healthz")[0] == 204
    status, document = detail(metrics_port)
    assert status == 200 and document["status"] == "UP" and document["ready"] is True
    assert {t["namespace"] for t in document["tenants"]} == {"team-a", "team-b"}
    assert get(metrics_port, "/healthz/other")[0] == 404
    # Detail is the operator's view (every tenant): the Dapr API listeners do not serve it.
    assert daemon.tcp_http("GET", "/healthz/detail").status == 404
    assert daemon.http("team-a", "orders", "GET", "/healthz/detail").status == 404
