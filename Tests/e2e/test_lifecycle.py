"""Sockets, restarts, an app's Shutdown, and SIGTERM."""

from __future__ import annotations

import socket
import time

import grpc
import pytest

from hangar_e2e import EXAMPLE_APPS, TEAM_B_ORDERS_TOKEN, assert_socket_layout, unique

STORE = "statestore"


def wait_until_gone(*paths, timeout=5.0):
    deadline = time.monotonic() + timeout
    while any(p.exists() for p in paths):
        if time.monotonic() > deadline:
            pytest.fail(f"still present {timeout}s after Shutdown: {[str(p) for p in paths if p.exists()]}")
        time.sleep(0.05)


def assert_connect_fails(path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        with pytest.raises(OSError):
            s.connect(str(path))


def test_socket_layout(hangard):
    for ns, app in EXAMPLE_APPS:
        assert_socket_layout(hangard, ns, app)
    entries = {p.relative_to(hangard.socket_root).as_posix() for p in hangard.socket_root.rglob("*")}
    assert entries == {
        ".hangard-upgrade.sock",  # the upgrade control socket (test_upgrade.py)
        "team-a", "team-a/orders", "team-a/billing", "team-b", "team-b/orders",
        "team-a/orders/dapr-orders-grpc.socket", "team-a/orders/dapr-orders-http.socket",
        "team-a/billing/dapr-billing-grpc.socket", "team-a/billing/dapr-billing-http.socket",
        "team-b/orders/dapr-orders-grpc.socket", "team-b/orders/dapr-orders-http.socket",
    }


def test_sqlite_state_survives_a_restart(hangard_factory):
    root = hangard_factory.root()
    first = hangard_factory.examples(root)
    key = unique("durable")
    first.client("team-a", "orders").save_state(STORE, key, "still here")
    first.client("team-b", "orders").save_state(STORE, key, "team-b's")
    etag = first.client("team-a", "orders").get_state(STORE, key).etag
    first.stop()
    assert (root / "data" / "state.db").is_file(), "state.sqlite with connectionString state.db writes <data-dir>/state.db"

    second = hangard_factory.examples(root)  # same data dir and socket root, new ports
    again = second.client("team-a", "orders").get_state(STORE, key)
    assert again.data == b"still here"
    assert again.etag == etag
    assert second.client("team-b", "orders").get_state(STORE, key).data == b"team-b's"
    # ETags stay unique across the restart: a write after it does not reuse an old ETag.
    second.client("team-a", "orders").save_state(STORE, key, "newer", etag=etag)
    assert second.client("team-a", "orders").get_state(STORE, key).etag not in ("", etag)


def test_in_memory_state_does_not_survive_a_restart(hangard_factory):
    root = hangard_factory.root()
    first = hangard_factory.examples(root)
    key = unique("volatile")
    first.client("team-a", "orders").save_state("cache", key, "gone soon")
    first.stop()
    second = hangard_factory.examples(root)
    assert second.client("team-a", "orders").get_state("cache", key).data == b""


def test_shutdown_detaches_only_the_calling_app(hangard_factory):
    daemon = hangard_factory.examples()
    leaving = daemon.client("team-a", "orders")
    sibling = daemon.client("team-a", "billing")
    other_tenant = daemon.client("team-b", "orders")
    key = unique("before-shutdown")
    leaving.save_state(STORE, key, "kept")

    leaving.shutdown()

    grpc_path, http_path = daemon.grpc_socket("team-a", "orders"), daemon.http_socket("team-a", "orders")
    wait_until_gone(grpc_path, http_path)
    assert_connect_fails(grpc_path)
    assert_connect_fails(http_path)
    with pytest.raises(grpc.RpcError):
        leaving.get_state(STORE, key)

    assert daemon.running, "Shutdown from one app stopped the daemon"
    assert daemon.tcp_http("GET", "/v1.0/healthz").status == 204
    sibling.save_state(STORE, key, "billing")
    assert sibling.get_state(STORE, key).data == b"billing"
    assert other_tenant.get_state(STORE, key).data == b""
    other_tenant.save_state(STORE, key, "team-b")
    assert daemon.tcp_client(TEAM_B_ORDERS_TOKEN).get_state(STORE, key).data == b"team-b"
    assert daemon.http("team-b", "orders", "GET", f"/v1.0/state/{STORE}/{key}").body == b"team-b"
    # A new client of the same tenant's other app still connects (the listeners of others are untouched).
    assert daemon.client("team-a", "billing").get_state(STORE, key).data == b"billing"


def test_http_shutdown_detaches_only_the_calling_app(hangard_factory):
    daemon = hangard_factory.examples()
    result = daemon.http("team-b", "orders", "POST", "/v1.0/shutdown")
    assert result.status == 204, result
    wait_until_gone(daemon.grpc_socket("team-b", "orders"), daemon.http_socket("team-b", "orders"))
    assert daemon.running
    key = unique("after-http-shutdown")
    orders = daemon.client("team-a", "orders")
    orders.save_state(STORE, key, "ok")
    assert orders.get_state(STORE, key).data == b"ok"
    assert daemon.http("team-a", "billing", "GET", "/v1.0/healthz").status == 204


def test_sigterm_with_open_connections_exits_cleanly(hangard_factory):
    """Clients keep their connections open (as apps do); SIGTERM still exits 0 promptly, sockets removed."""
    daemon = hangard_factory.examples()
    clients = [daemon.client(ns, app) for ns, app in EXAMPLE_APPS]
    for client in clients:
        client.save_state(STORE, unique("open"), "x")
    idle_http = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle_http.settimeout(5)
    idle_http.connect(str(daemon.http_socket("team-a", "orders")))
    try:
        started = time.monotonic()
        daemon.stop()  # asserts exit code 0 within 15 s and no socket file left
        assert time.monotonic() - started < 10, "SIGTERM took longer than the 5 s drain timeout allows"
    finally:
        idle_http.close()


def test_restart_after_sigkill_replaces_stale_sockets(hangard_factory):
    root = hangard_factory.root()
    first = hangard_factory.examples(root)
    key = unique("crash")
    first.client("team-a", "orders").save_state(STORE, key, "committed")
    first.kill()  # SIGKILL: no clean-up, the socket files stay behind
    assert first.socket_files(), "expected stale socket files after SIGKILL"

    second = hangard_factory.examples(root)
    assert second.client("team-a", "orders").get_state(STORE, key).data == b"committed"
    assert second.http("team-b", "orders", "GET", "/v1.0/healthz").status == 204


def test_http_keep_alive_on_an_app_socket(hangard):
    from hangar_e2e import UnixHTTPConnection

    conn = UnixHTTPConnection(str(hangard.http_socket("team-a", "orders")))
    key = unique("keep-alive")
    try:
        for method, path, body, status in (
            ("GET", "/v1.0/healthz", None, 204),
            ("POST", f"/v1.0/state/{STORE}", f'[{{"key": "{key}", "value": 42}}]', 204),
            ("GET", f"/v1.0/state/{STORE}/{key}", None, 200),
            ("GET", f"/v1.0/state/{STORE}/{unique()}", None, 204),
            ("POST", f"/v1.0/state/{STORE}", "not json", 400),
            ("GET", f"/v1.0/state/{STORE}/{key}", None, 200),
        ):
            conn.request(method, path, body=body)
            response = conn.getresponse()
            payload = response.read()
            assert response.status == status, (method, path, response.status, payload)
        assert payload == b"42"
    finally:
        conn.close()
