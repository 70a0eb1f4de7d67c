"""Upgrades with zero failed calls: a new hangard takes the running one's listening sockets over through its control
socket (<socket-root>/.hangard-upgrade.sock), the old one drains and exits.

The load test drives steady traffic from official Dapr SDK clients (gRPC over an app's Unix socket and over TCP
with the app's token, default retry settings) and from HTTP/1.1 clients (TCP with the token, and the app's Unix
socket), replaces the process, and checks: no failed call, no socket file ever missing, the new process serving.
It prints the upgrade time and the longest stall a client saw next to the median call without an upgrade; with
HANGAR_UPGRADE_REPORT set it also writes them there as JSON (scripts/bench-upgrade.sh).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hangar_e2e import (
    TEAM_A_ORDERS_TOKEN,
    TEAM_B_ORDERS_TOKEN,
    Hangard,
    UnixHTTPConnection,
    sdk_environment,
    unique,
)

STORE = "statestore"
CONTROL = ".hangard-upgrade.sock"
# Each worker waits this long between calls: steady load within every app's rate quota (team-a/orders: 200/s).
PACE = 0.015


def successor(factory, old: Hangard, *, tenancy: Path | None = None, extra_args: tuple[str, ...] = ()) -> Hangard:
    """A second hangard on the old one's socket root, data directory and TCP ports (not started)."""
    new = Hangard(
        old.root, tenancy=tenancy or old.tenancy, resources=old.resources, apps=old.apps, extra_args=extra_args,
        data_dir=old.data_dir, socket_root=old.socket_root,
    )  # fmt: skip
    new.http_port, new.grpc_port = old.http_port, old.grpc_port
    new.log_path = old.root / f"hangard-successor-{len(factory.daemons)}.log"
    factory.daemons.append(new)
    return new


def wait_exit(daemon: Hangard, timeout: float = 30.0) -> int:
    assert daemon.process is not None
    code = daemon.process.wait(timeout)
    daemon.close_clients()
    daemon.process = None  # exited: nothing for the factory to stop
    return code


def server_pid(path: Path) -> int:
    """The pid SO_PEERCRED reports for a connection to a Unix socket: the process that listens on it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(path))
        pid, _, _ = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        return pid


# ---------------------------------------------------------------------------------------------------------------
# Steady load.


@dataclass
class Call:
    client: str
    start: float
    end: float
    error: str | None = None


@dataclass
class Load:
    """Worker threads calling hangard until stopped; every call is recorded."""

    daemon: Hangard
    calls: list[Call] = field(default_factory=list)
    missing: list[tuple[float, str]] = field(default_factory=list)
    http_reconnects: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, client: str, start: float, error: str | None = None) -> None:
        with self.lock:
            self.calls.append(Call(client, start, time.monotonic(), error))

    def start(self) -> None:
        d = self.daemon
        workers = [
            (self.sdk, "grpc-unix", f"unix://{d.grpc_socket('team-a', 'billing')}", None),
            (self.sdk, "grpc-unix-2", f"unix://{d.grpc_socket('team-b', 'orders')}", None),
            (self.sdk, "grpc-tcp", f"127.0.0.1:{d.grpc_port}", TEAM_A_ORDERS_TOKEN),
            (self.http, "http-tcp", None, TEAM_B_ORDERS_TOKEN),
            (self.http, "http-unix", str(d.http_socket("team-a", "orders")), None),
            (self.watch_sockets, "sockets", None, None),
        ]
        for target, name, address, token in workers:
            thread = threading.Thread(target=target, args=(name, address, token), name=name, daemon=True)
            self.threads.append(thread)
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(20)

    def sdk(self, name: str, address: str, token: str | None) -> None:
        """A DaprClient with the SDK's defaults: save, then read back, one key per call pair."""
        from dapr.clients import DaprClient

        with sdk_environment(self.daemon.http_port, token):
            client = DaprClient(address=address)
        try:
            while not self.stop.is_set():
                key = unique(name)
                start = time.monotonic()
                try:
                    client.save_state(STORE, key, "v")
                    self.record(name, start)
                except Exception as error:  # every failure counts
                    self.record(name, start, f"save: {error!r}")
                    continue
                start = time.monotonic()
                try:
                    value = client.get_state(STORE, key).data
                    self.record(name, start, None if value == b"v" else f"read {value!r}")
                except Exception as error:
                    self.record(name, start, f"get: {error!r}")
                time.sleep(PACE)
        finally:
            client.close()

    def http(self, name: str, path: str | None, token: str | None) -> None:
        """An HTTP/1.1 client with a keep-alive connection, as a service's HTTP client library: GETs a key; a reused
        connection that the server closed before answering is reopened and the (idempotent) request sent again, as
        urllib3 and Go's net/http do. Anything else is a failure."""
        headers = {"dapr-api-token": token} if token else {}
        connection = None
        reused = False
        while not self.stop.is_set():
            start = time.monotonic()
            attempts = 0
            while True:
                attempts += 1
                if connection is None:
                    connection = (
                        UnixHTTPConnection(path, 10) if path
                        else http.client.HTTPConnection("127.0.0.1", self.daemon.http_port, timeout=10)
                    )  # fmt: skip
                    reused = False
                try:
                    connection.request("GET", f"/v1.0/state/{STORE}/http-load", headers=headers)
                    response = connection.getresponse()
                    response.read()
                    error = None if response.status in (200, 204) else f"HTTP {response.status}"
                    if response.getheader("connection", "").lower() == "close":
                        connection.close()
                        connection = None
                    else:
                        reused = True
                    break
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as failure:
                    connection.close()
                    connection = None
                    if reused and attempts == 1:
                        with self.lock:
                            self.http_reconnects += 1
                        continue
                    error = repr(failure)
                    break
                except Exception as failure:
                    connection.close()
                    connection = None
                    error = repr(failure)
                    break
            self.record(name, start, error)
            time.sleep(PACE)
        if connection is not None:
            connection.close()

    def watch_sockets(self, name: str, _address: None, _token: None) -> None:
        """Every socket file must exist at every moment."""
        paths = [p for ns, app in self.daemon.apps for p in (self.daemon.grpc_socket(ns, app), self.daemon.http_socket(ns, app))]
        while not self.stop.is_set():
            for path in paths:
                try:
                    if not stat.S_ISSOCK(os.lstat(path).st_mode):
                        self.missing.append((time.monotonic(), str(path)))
                except FileNotFoundError:
                    self.missing.append((time.monotonic(), str(path)))
            time.sleep(0.001)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# ---------------------------------------------------------------------------------------------------------------


def test_the_control_socket_is_the_owners_only(hangard_factory):
    daemon = hangard_factory.examples()
    control = daemon.socket_root / CONTROL
    deadline = time.monotonic() + 5
    while not control.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    mode = control.lstat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600, oct(mode)


def test_an_upgrade_under_load_fails_no_call_and_never_removes_a_socket(hangard_factory):
    old = hangard_factory.examples()
    # The key the HTTP clients read.
    for ns in ("team-a", "team-b"):
        assert old.http(ns, "orders", "POST", f"/v1.0/state/{STORE}", [{"key": "http-load", "value": 1}]).status == 204
    load = Load(old)
    load.start()
    time.sleep(2.0)
    upgrade_started = time.monotonic()
    new = successor(hangard_factory, old).start()
    serving = new.wait_for_log("upgrade: serving the predecessor's sockets", timeout=30)
    assert serving, f"the successor did not take over\nnew log:\n{new.log}\nold log:\n{old.log}"
    code = wait_exit(old)
    old_exited = time.monotonic()
    time.sleep(2.0)
    load.finish()

    failed = [c for c in load.calls if c.error]
    assert code == 0, f"the old hangard exited with {code}\nlog:\n{old.log}"
    assert not failed, f"{len(failed)} failed calls, first: {failed[:5]}\nnew log:\n{new.log}\nold log:\n{old.log}"
    assert not load.missing, f"socket files missing during the upgrade: {load.missing[:5]}"
    assert new.running, new.log
    after = [c for c in load.calls if c.start > old_exited]
    assert {c.client for c in after} >= {"grpc-unix", "grpc-tcp", "http-tcp", "http-unix"}, "not every client was served after the old hangard exited"
    assert server_pid(new.grpc_socket("team-a", "orders")) == new.process.pid
    assert server_pid(new.http_socket("team-b", "orders")) == new.process.pid
    assert "took over the listeners" in old.log, old.log

    baseline = [c.end - c.start for c in load.calls if c.end < upgrade_started]
    during = [c for c in load.calls if c.end >= upgrade_started and c.start <= old_exited]
    longest = max(during, key=lambda c: c.end - c.start)
    takeover_ms = int(serving.split("takeover.ms=")[1].split()[0]) if "takeover.ms=" in serving else None
    report = {
        "calls": len(load.calls),
        "failed": len(failed),
        "http_reconnects": load.http_reconnects,
        "baseline_p50_ms": round(percentile(baseline, 0.5) * 1000, 2),
        "baseline_p99_ms": round(percentile(baseline, 0.99) * 1000, 2),
        "baseline_max_ms": round(max(baseline) * 1000, 2),
        "upgrade_s": round(old_exited - upgrade_started, 3),
        "takeover_ms": takeover_ms,
        "longest_stall_ms": round((longest.end - longest.start) * 1000, 2),
        "longest_stall_client": longest.client,
    }
    print("upgrade report:", json.dumps(report))
    if os.environ.get("HANGAR_UPGRADE_REPORT"):
        Path(os.environ["HANGAR_UPGRADE_REPORT"]).write_text(json.dumps(report) + "\n")


def test_state_written_before_an_upgrade_is_read_after_it(hangard_factory):
    old = hangard_factory.examples()
    key = unique("kept")
    old.client("team-b", "orders").save_state(STORE, key, "before")
    new = successor(hangard_factory, old).start()
    assert new.wait_for_log("upgrade: serving the predecessor's sockets", timeout=30), new.log
    assert wait_exit(old) == 0, old.log
    assert new.client("team-b", "orders").get_state(STORE, key).data == b"before"
    new.client("team-b", "orders").save_state(STORE, key, "after")
    assert new.client("team-b", "orders").get_state(STORE, key).data == b"after"


def test_an_upgrade_with_an_invalid_configuration_is_refused_and_the_old_one_keeps_serving(hangard_factory):
    old = hangard_factory.examples()
    broken = old.root / "broken-tenancy"
    broken.mkdir()
    for source in old.tenancy.iterdir():
        (broken / source.name).write_bytes(source.read_bytes())
    (broken / "team-a.yaml").write_text("apiVersion: hangar.dev/v1alpha1\nkind: Tenant\nmetadata: {name: Team_A}\n")
    new = successor(hangard_factory, old, tenancy=broken)
    try:
        new.start()  # may return at once: the old hangard answers its readiness checks
    except pytest.fail.Exception:
        pass
    assert new.process is not None
    assert wait_exit(new) == 2, new.log
    assert "invalid configuration" in new.log, new.log
    assert old.running, old.log
    assert "took over" not in old.log and "upgrade:" not in old.log, old.log
    key = unique("still")
    old.client("team-a", "orders").save_state(STORE, key, "served")
    assert old.client("team-a", "orders").get_state(STORE, key).data == b"served"
    assert server_pid(old.grpc_socket("team-a", "orders")) == old.process.pid


def test_take_over_required_exits_when_no_hangard_runs(hangard_factory):
    with pytest.raises(pytest.fail.Exception, match="exited with 1 during start-up"):
        hangard_factory.examples(extra_args=("--take-over", "required"))
    daemon = hangard_factory.daemons[-1]
    daemon.process = None
    assert "no hangard answers" in daemon.log, daemon.log


def test_a_streaming_subscription_is_told_to_reconnect_and_keeps_receiving_from_the_successor(
    hangard_factory, monkeypatch
):
    from dapr.clients import DaprClient
    from pubsub_fixtures import Receiver

    old = hangard_factory.examples()
    # The SDK probes the health endpoint again before it re-subscribes, reading the setting then.
    monkeypatch.setenv("DAPR_HTTP_ENDPOINT", f"http://127.0.0.1:{old.http_port}")
    topic = unique("upgrade")
    with sdk_environment(old.http_port):  # not old.client(): that one is closed when the old process exits
        subscriber = DaprClient(address=f"unix://{old.grpc_socket('team-a', 'orders')}")
    receiver = Receiver(subscriber.subscribe("pubsub", topic))
    try:
        old.client("team-a", "billing").publish_event("pubsub", topic, "before")
        assert receiver.texts(1) == ["before"]
        started = time.monotonic()
        new = successor(hangard_factory, old).start()
        assert new.wait_for_log("upgrade: serving the predecessor's sockets", timeout=30), new.log
        assert wait_exit(old) == 0, old.log
        # The old process ended the stream at once (UNAVAILABLE) rather than at --drain-timeout (5 s here).
        assert time.monotonic() - started < 5, f"the old hangard took {time.monotonic() - started:.1f}s to exit"
        new.client("team-a", "billing").publish_event("pubsub", topic, "after")
        assert receiver.texts(1) == ["after"]
    finally:
        receiver.close()
        subscriber.close()
