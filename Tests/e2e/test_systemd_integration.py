"""hangard under systemd, with systemd's own tools: socket activation through `systemd-socket-activate` (the
listening sockets are inherited, so clients that connect before hangard runs wait instead of failing), the
sd_notify protocol on a test NOTIFY_SOCKET (`READY=1` only once ready, `STATUS=`, `WATCHDOG=1` at half the
configured interval, `STOPPING=1` on SIGTERM), and native journal entries with priorities and fields.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from hangar_e2e import (
    EXAMPLE_APPS,
    HANGARD,
    TEAM_A_ORDERS_TOKEN,
    copy_examples,
    free_port,
    sdk_environment,
    unique,
)
from tenancy_files import STORE, wait_until

SOCKET_ACTIVATE = shutil.which("systemd-socket-activate")


def hangard_args(root: Path, http: str, grpc: str, metrics: str = "none") -> list[str]:
    tenancy, resources = copy_examples(root)
    return [
        str(HANGARD), "--tenancy", str(tenancy), "--resources", str(resources),
        "--socket-root", str(root / "s"), "--data-dir", str(root / "data"),
        "--http-listen", http, "--grpc-listen", grpc, "--metrics-listen", metrics, "--drain-timeout", "2",
    ]


class Supervised:
    """A process with its output in a log file, stopped with SIGTERM at the end (exit 0 required)."""

    def __init__(self, root: Path, command: list[str], env: dict[str, str] | None = None):
        self.log_path = root / "process.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})}, cwd=root,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            pytest.fail(f"no exit within 15 s of SIGTERM\n{self.log}")
        assert code == 0, f"exit code {code}\n{self.log}"


def http_get(port: int, path: str, timeout: float = 10.0) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.fixture
def workdir(hangard_factory) -> Path:
    return hangard_factory.root()


# -- socket activation --------------------------------------------------------------------------------------------

needs_socket_activate = pytest.mark.skipif(
    SOCKET_ACTIVATE is None, reason="systemd-socket-activate is missing (Debian package systemd; scripts/test.sh installs it)"
)


@needs_socket_activate
def test_socket_activation_serves_on_the_inherited_sockets_and_the_first_client_waits(workdir):
    http_port, grpc_port = free_port(), free_port()
    # systemd-socket-activate binds both ports, then starts hangard only when the first connection arrives: that
    # client's request sits in the inherited socket's backlog until hangard accepts it, as during a restart.
    command = [
        SOCKET_ACTIVATE, "-l", f"127.0.0.1:{http_port}", "-l", f"127.0.0.1:{grpc_port}",
        *hangard_args(workdir, f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"),
    ]
    supervised = Supervised(workdir, command)
    try:
        wait_until(lambda: "Listening on" in supervised.log and f"{grpc_port}" in supervised.log, timeout=10)
        assert "hangard" not in supervised.log.split("Listening on")[0]
        # The very first request starts hangard and is answered, not refused.
        assert http_get(http_port, "/v1.0/healthz/outbound", timeout=20) in (204, 500)
        wait_until(lambda: http_get(http_port, "/v1.0/healthz") == 204, timeout=20, interval=0.05)
        log = supervised.log
        assert "listener=http" in log and f"socket=127.0.0.1:{http_port}" in log, log
        assert "listener=grpc" in log and f"socket=127.0.0.1:{grpc_port}" in log, log
        assert f"http.listen=127.0.0.1:{http_port} (inherited)" in log, log

        # gRPC through the inherited socket, with the real SDK and a token.
        from dapr.clients import DaprClient

        with sdk_environment(http_port, TEAM_A_ORDERS_TOKEN):
            client = DaprClient(address=f"127.0.0.1:{grpc_port}")
        try:
            key = unique()
            client.save_state(STORE, key, "over an inherited socket")
            assert client.get_state(STORE, key).data == b"over an inherited socket"
            assert client.get_metadata().application_id == "orders"
        finally:
            client.close()

        # An idle keep-alive connection on the inherited HTTP socket must not hold up shutdown: it is told to
        # close (quiesced) rather than waited for.
        idle = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
        idle.request("GET", "/v1.0/healthz")
        assert idle.getresponse().read() == b""
        started = time.monotonic()
        supervised.stop()
        assert time.monotonic() - started < 5, "shutdown waited for an idle keep-alive connection"
        idle.close()
    finally:
        supervised.stop()


@needs_socket_activate
def test_named_inherited_sockets_win_over_the_flags_and_strays_are_closed(workdir):
    grpc_port, http_port, stray_port = free_port(), free_port(), free_port()
    # FileDescriptorName-style names (systemd-socket-activate --fdname) decide the role, whatever the flags say:
    # here both flags say `none`. A third socket has a name hangard does not know: it is closed with a warning.
    command = [
        SOCKET_ACTIVATE, "-l", f"127.0.0.1:{grpc_port}", "-l", f"127.0.0.1:{http_port}",
        "-l", f"127.0.0.1:{stray_port}", "--fdname=grpc:http:debug",
        *hangard_args(workdir, "none", "none"),
    ]
    supervised = Supervised(workdir, command)
    try:
        wait_until(lambda: str(stray_port) in supervised.log, timeout=10)
        wait_until(lambda: http_get(http_port, "/v1.0/healthz", timeout=20) == 204, timeout=20, interval=0.05)
        log = supervised.log
        assert "inherited socket not used; closed" in log and "'debug'" in log, log
        from dapr.clients import DaprClient

        with sdk_environment(http_port, TEAM_A_ORDERS_TOKEN):
            client = DaprClient(address=f"127.0.0.1:{grpc_port}")
        try:
            assert client.get_metadata().application_id == "orders"
        finally:
            client.close()
        # The stray socket was closed by hangard, so nothing accepts on it any more.
        with pytest.raises(OSError):
            with socket.create_connection(("127.0.0.1", stray_port), timeout=2) as stray:
                stray.sendall(b"GET / HTTP/1.0\r\n\r\n")
                if not stray.recv(1):
                    raise ConnectionResetError("closed")
    finally:
        supervised.stop()


# -- sd_notify ----------------------------------------------------------------------------------------------------


class NotifySocket:
    """A NOTIFY_SOCKET as systemd provides it: a datagram socket, collecting messages with their arrival time."""

    def __init__(self, directory: Path):
        self.path = directory / "notify.sock"
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(self.path))
        self.socket.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop:
            try:
                data = self.socket.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def fields(self, name: str) -> list[tuple[float, str]]:
        """Every value sent for `name` (a message may carry several NAME=value lines)."""
        found = []
        for at, message in list(self.messages):
            for line in message.split("\n"):
                if line.startswith(name + "="):
                    found.append((at, line[len(name) + 1 :]))
        return found

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.socket.close()


def test_ready_status_watchdog_and_stopping_reach_the_notify_socket(workdir):
    http_port, grpc_port = free_port(), free_port()
    notify = NotifySocket(workdir)
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "300000"}  # WatchdogSec=300ms: pings every 150 ms
    supervised = Supervised(
        workdir, hangard_args(workdir, f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"), env=env
    )
    try:
        wait_until(lambda: notify.fields("READY"), timeout=20, interval=0.02)
        ready_at = notify.fields("READY")[0][0]
        # READY=1 means ready: the health route agrees, and every app socket is there.
        assert http_get(http_port, "/v1.0/healthz") == 204
        for ns, app in EXAMPLE_APPS:
            assert (workdir / "s" / ns / app / f"dapr-{app}-grpc.socket").is_socket()
        status = notify.fields("STATUS")[0][1]
        assert status == "serving 2 tenants, 3 apps; components: 4 up, 0 initialising, 0 down", status

        time.sleep(1.5)
        pings = [at for at, value in notify.fields("WATCHDOG") if value == "1" and at >= ready_at]
        # At half of WatchdogSec (150 ms): about 10 in 1.5 s. Bounds are loose; a missing loop gives 0.
        assert 5 <= len(pings) <= 16, pings
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert max(gaps) < 0.3, gaps  # never as late as WatchdogSec itself
        assert "systemd watchdog enabled" in supervised.log

        supervised.process.send_signal(signal.SIGTERM)
        wait_until(lambda: notify.fields("STOPPING"), timeout=10, interval=0.02)
        assert notify.fields("STOPPING")[0][1] == "1"
    finally:
        supervised.stop()
        notify.close()


def test_status_follows_reconfiguration_and_no_watchdog_without_watchdog_usec(workdir):
    http_port = free_port()
    notify = NotifySocket(workdir)
    supervised = Supervised(
        workdir, hangard_args(workdir, f"127.0.0.1:{http_port}", "none"), env={"NOTIFY_SOCKET": str(notify.path)}
    )
    try:
        wait_until(lambda: notify.fields("READY"), timeout=20, interval=0.02)
        # A new tenant: STATUS= follows.
        (workdir / "tenancy" / "c.yaml").write_text(
            "apiVersion: hangar.dev/v1alpha1\nkind: Tenant\nmetadata: {name: team-c}\nspec:\n  apps: [{appId: web}]\n"
        )
        wait_until(
            lambda: any("serving 3 tenants, 4 apps" in value for _, value in notify.fields("STATUS")),
            timeout=10, interval=0.05,
        )
        assert notify.fields("WATCHDOG") == []
    finally:
        supervised.stop()
        notify.close()


# -- the journal ----------------------------------------------------------------------------------------------------


def journal_entries(data: bytes) -> dict[str, str]:
    """One native-protocol journal datagram: NAME=value lines (a value with a newline uses NAME\\n<le64>value)."""
    fields: dict[str, str] = {}
    position = 0
    while position < len(data):
        end = data.index(b"\n", position)
        line = data[position:end]
        if b"=" in line:
            name, value = line.split(b"=", 1)
            fields[name.decode()] = value.decode()
            position = end + 1
        else:
            size = int.from_bytes(data[end + 1 : end + 9], "little")
            fields[line.decode()] = data[end + 9 : end + 9 + size].decode()
            position = end + 9 + size + 1
    return fields


def test_journal_logging_sends_priorities_and_tenant_fields(workdir):
    """--log-format journal writes native journal entries. A private mount namespace puts a test socket at
    /run/systemd/journal/socket, where sd_journal_sendv sends."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is missing")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a mount namespace here: {probe.stderr.decode().strip()}")
    journal_dir = workdir / "journal"
    journal_dir.mkdir()
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(journal_dir / "socket"))
    receiver.settimeout(0.5)
    http_port = free_port()
    args = hangard_args(workdir, f"127.0.0.1:{http_port}", "none") + ["--log-format", "journal"]
    script = 'mkdir -p /run/systemd/journal && mount --bind "$0" /run/systemd/journal && exec "$@"'
    supervised = Supervised(workdir, ["unshare", "-m", "sh", "-c", script, str(journal_dir), *args])
    entries: list[dict[str, str]] = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("hangard ready" in e.get("MESSAGE", "") for e in entries):
            try:
                entries.append(journal_entries(receiver.recv(65536)))
            except socket.timeout:
                pass
        ready = [e for e in entries if "hangard ready" in e.get("MESSAGE", "")]
        assert ready, f"no 'hangard ready' entry; got {entries[:5]}\n{supervised.log}"
        assert ready[0]["PRIORITY"] == "6" and ready[0]["SYSLOG_IDENTIFIER"] == "hangard"
        assert ready[0]["TENANTS"] == "2" and ready[0]["APPS"] == "3"
        # A warning about one app carries TENANT= and APP= fields: remove an app from the tenancy.
        tenancy = workdir / "tenancy"
        team_a = tenancy / "team-a.yaml"
        team_a.write_text(team_a.read_text().replace("    - appId: billing\n", "", 1))
        deadline = time.monotonic() + 10
        removed: list[dict[str, str]] = []
        later: list[str] = []
        while time.monotonic() < deadline and not removed:
            try:
                entry = journal_entries(receiver.recv(65536))
            except socket.timeout:
                continue
            later.append(entry.get("MESSAGE", ""))
            if "app removed from the configuration" in entry.get("MESSAGE", ""):
                removed.append(entry)
        assert removed, later
        assert removed[0]["TENANT"] == "team-a" and removed[0]["APP"] == "billing"
        assert removed[0]["PRIORITY"] == "5"  # notice
        # Nothing went to standard error instead.
        assert "hangard ready" not in supervised.log
    finally:
        supervised.stop()
        receiver.close()
