"""Helpers for the end-to-end tests: the real `hangard` binary, driven with the official Dapr Python SDK.

Every daemon a test starts gets its own short temporary directory (Unix socket paths are limited to 107
bytes), free TCP ports, and a `--data-dir`; the tenancy and resource files are copies of
`tenancy/examples/` unless a test writes its own. On teardown the daemon is sent SIGTERM and must exit 0
within 15 s with every socket file removed.

Every wait is bounded: daemon start-up (30 s), SDK calls (DAPR_API_TIMEOUT_SECONDS), raw socket I/O
(socket timeouts), subprocesses (timeouts), and each test as a whole (SIGALRM, see `_test_deadline`).

The binary is $HANGARD, or <repo>/.build/debug/hangard (`swift build --product hangard`).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import grpc
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "tenancy" / "examples"
HANGARD = Path(os.environ.get("HANGARD") or REPO_ROOT / ".build" / "debug" / "hangard")

# The apps tenancy/examples declares, and their TCP tokens.
EXAMPLE_APPS = (("team-a", "orders"), ("team-a", "billing"), ("team-b", "orders"))
TEAM_A_ORDERS_TOKEN = "team-a-orders-example-token"
TEAM_B_ORDERS_TOKEN = (EXAMPLES / "team-b-orders.token").read_text().strip()

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
TEST_TIMEOUT = 180

# The SDK reads its settings from the environment on every access. A deadline on every gRPC call keeps a
# misbehaving daemon from hanging a test; the health probe in DaprClient() gives up after 10 s.
os.environ["DAPR_API_TIMEOUT_SECONDS"] = "10"
os.environ["DAPR_HEALTH_TIMEOUT"] = "10"
os.environ.pop("DAPR_API_TOKEN", None)
os.environ.pop("DAPR_GRPC_ENDPOINT", None)


def unique(prefix: str = "k") -> str:
    """A state key no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


_ports_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port that was free just now and that this process has not handed out before."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _ports_handed_out:
            _ports_handed_out.add(port)
            return port


def short_tempdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="hg", dir="/tmp"))


def copy_examples(root: Path) -> tuple[Path, Path]:
    """Copies tenancy/examples into root/tenancy and root/resources; returns both directories."""
    tenancy = root / "tenancy"
    resources = root / "resources"
    tenancy.mkdir()
    for entry in EXAMPLES.iterdir():
        if entry.is_file():
            shutil.copy(entry, tenancy / entry.name)
    shutil.copytree(EXAMPLES / "resources", resources)
    return tenancy, resources


# ---------------------------------------------------------------------------------------------------------------
# HTTP, over TCP or an app's Unix socket, with the standard library only.


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix domain socket."""

    def __init__(self, path: str, timeout: float = 10.0):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


@dataclass
class HTTPResult:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"HTTPResult({self.status}, {self.headers}, {self.body[:300]!r})"


def http_request(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> HTTPResult:
    """One request. A dict/list body is sent as JSON, str/bytes as they are. If the server answers and closes
    before the whole body is sent (as it may for an over-size body), the answer is still read."""
    headers = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    elif isinstance(body, str):
        body = body.encode()
    try:
        try:
            conn.request(method, path, body=body, headers=headers)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused early; its answer may already be waiting
        response = conn.getresponse()
        return HTTPResult(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------------------------
# The SDK.


@contextlib.contextmanager
def sdk_environment(http_port: int | None, token: str | None = None) -> Iterator[None]:
    """The environment DaprClient() reads while it is constructed: the TCP HTTP endpoint its health probe uses,
    and the API token its interceptor sends (read once, in the constructor)."""
    saved = {name: os.environ.get(name) for name in ("DAPR_HTTP_ENDPOINT", "DAPR_API_TOKEN")}
    try:
        if http_port is not None:
            os.environ["DAPR_HTTP_ENDPOINT"] = f"http://127.0.0.1:{http_port}"
        if token is None:
            os.environ.pop("DAPR_API_TOKEN", None)
        else:
            os.environ["DAPR_API_TOKEN"] = token
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def grpc_error_info(error: grpc.RpcError) -> dict[str, Any]:
    """The google.rpc.ErrorInfo detail of an SDK error ({} when there is none)."""
    details = getattr(error, "status_details", None)
    if details is None:
        return {}
    return details().error_info or {}


def expect_quota(error: Any, quota: str, limit: int, scope: str) -> dict:
    """A call refused by a Hangar quota: RESOURCE_EXHAUSTED with HANGAR_QUOTA_EXCEEDED naming it; its metadata."""
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.value
    info = grpc_error_info(error.value)
    assert info["reason"] == "HANGAR_QUOTA_EXCEEDED", info
    assert info["domain"] == "dapr.io"
    assert info["metadata"]["quota"] == quota
    assert info["metadata"]["limit"] == str(limit)
    assert info["metadata"]["scope"] == scope
    return info["metadata"]


# ---------------------------------------------------------------------------------------------------------------
# The daemon.


class Hangard:
    """One hangard process and what a test needs to talk to it."""

    def __init__(
        self,
        root: Path,
        *,
        tenancy: Path | None,
        resources: Path | None,
        apps: tuple[tuple[str, str], ...],
        extra_args: tuple[str, ...] = (),
        data_dir: Path | None = None,
        socket_root: Path | None = None,
    ):
        self.root = root
        self.tenancy = tenancy
        self.resources = resources
        self.apps = apps
        self.extra_args = extra_args
        self.data_dir = data_dir or root / "data"
        self.socket_root = socket_root or root / "s"
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.log_path = root / f"hangard-{self.http_port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._clients: list[Any] = []

    # -- paths ------------------------------------------------------------------------------------------------

    def app_dir(self, ns: str, app: str) -> Path:
        return self.socket_root / ns / app

    def grpc_socket(self, ns: str, app: str) -> Path:
        return self.app_dir(ns, app) / f"dapr-{app}-grpc.socket"

    def http_socket(self, ns: str, app: str) -> Path:
        return self.app_dir(ns, app) / f"dapr-{app}-http.socket"

    def socket_files(self) -> list[Path]:
        if not self.socket_root.exists():
            return []
        return sorted(p for p in self.socket_root.rglob("*") if p.is_socket() or p.name.endswith(".socket"))

    @property
    def command(self) -> list[str]:
        args = [
            str(HANGARD),
            "--socket-root", str(self.socket_root),
            "--data-dir", str(self.data_dir),
            "--http-listen", f"127.0.0.1:{self.http_port}",
            "--grpc-listen", f"127.0.0.1:{self.grpc_port}",
            "--metrics-listen", "none",
            "--drain-timeout", "5",
            "--log-level", "debug",
        ]
        if self.tenancy is not None:
            args += ["--tenancy", str(self.tenancy)]
        if self.resources is not None:
            args += ["--resources", str(self.resources)]
        return args + list(self.extra_args)

    # -- lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> "Hangard":
        if not HANGARD.is_file():
            pytest.fail(f"hangard binary not found at {HANGARD}: run `swift build --product hangard` or set HANGARD")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.root
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                pytest.fail(
                    f"hangard exited with {self.process.returncode} during start-up\n"
                    f"command: {' '.join(self.command)}\nlog:\n{self.log}"
                )
            missing = [
                str(path)
                for ns, app in self.apps
                for path in (self.grpc_socket(ns, app), self.http_socket(ns, app))
                if not path.is_socket()
            ]
            if not missing:
                try:
                    if self.tcp_http("GET", "/v1.0/healthz", timeout=2).status == 204:
                        return self
                except OSError:
                    pass
            if time.monotonic() > deadline:
                self.process.kill()
                self.process.wait(5)
                pytest.fail(
                    f"hangard not ready within {START_TIMEOUT}s (sockets missing: {missing})\n"
                    f"command: {' '.join(self.command)}\nlog:\n{self.log}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM; the daemon must exit 0 within 15 s and leave no socket file behind."""
        process = self.process
        assert process is not None
        try:
            if process.poll() is not None:
                pytest.fail(f"hangard died before teardown with exit code {process.returncode}\nlog:\n{self.log}")
            process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
                pytest.fail(f"hangard did not exit within {STOP_TIMEOUT}s of SIGTERM\nlog:\n{self.log}")
            assert code == 0, f"hangard exited with {code} after SIGTERM\nlog:\n{self.log}"
            left = self.socket_files()
            assert not left, f"socket files left after SIGTERM: {left}"
        finally:
            self.close_clients()
            self.process = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.close_clients()
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, *needles: str, timeout: float = 5.0) -> str | None:
        """The first log line containing every needle (case-insensitive), waiting up to `timeout`."""
        deadline = time.monotonic() + timeout
        lowered = [n.lower() for n in needles]
        while True:
            for line in self.log.splitlines():
                if all(n in line.lower() for n in lowered):
                    return line
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)

    # -- clients ----------------------------------------------------------------------------------------------

    def client(self, ns: str, app: str):
        """A DaprClient on the app's Unix gRPC socket (its health probe goes to the TCP HTTP listener)."""
        from dapr.clients import DaprClient

        with sdk_environment(self.http_port):
            client = DaprClient(address=f"unix://{self.grpc_socket(ns, app)}")
        self._clients.append(client)
        return client

    def tcp_client(self, token: str | None):
        """A DaprClient on the TCP gRPC listener, sending `token` as dapr-api-token (none when None)."""
        from dapr.clients import DaprClient

        with sdk_environment(self.http_port, token):
            client = DaprClient(address=f"127.0.0.1:{self.grpc_port}")
        self._clients.append(client)
        return client

    def close_clients(self) -> None:
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.close()
        self._clients.clear()

    def http(
        self,
        ns: str,
        app: str,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> HTTPResult:
        """One HTTP request on the app's Unix HTTP socket."""
        return http_request(UnixHTTPConnection(str(self.http_socket(ns, app)), timeout), method, path, body, headers)

    def tcp_http(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> HTTPResult:
        """One HTTP request on the TCP HTTP listener."""
        return http_request(
            http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout), method, path, body, headers
        )


def assert_socket_layout(daemon: Hangard, ns: str, app: str) -> None:
    directory = daemon.app_dir(ns, app)
    mode = stat.S_IMODE(directory.stat().st_mode)
    assert mode == 0o770, f"{directory} has mode {oct(mode)}, expected 0o770"
    for path in (daemon.grpc_socket(ns, app), daemon.http_socket(ns, app)):
        assert stat.S_ISSOCK(path.stat().st_mode), f"{path} is not a socket"
