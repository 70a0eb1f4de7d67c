"""The systemd deployment (daemonset/systemd/, scripts/install-systemd.sh) for edge/IoT hosts.

The test machines do not run systemd as PID 1, so the units are never started here. What is checked instead:

- the unit files, with systemd's own parser (`systemd-analyze verify`) and its hardening review
  (`systemd-analyze security --offline`), and against the contract with hangard (listen addresses, timeouts,
  directories, every ExecStart= flag known to `hangard --help`);
- the installer: files and modes, an operator's configuration never overwritten, idempotence, offline enabling;
- the example configuration it installs, loaded and served by the real hangard;
- hangard under the unit's sandbox, rebuilt from the unit file (systemd_sandbox.py: seccomp filters with
  libseccomp, capability bounding set with setpriv): it starts, serves an app of uid 1000, reloads, and each of
  its three capabilities is shown to be needed.

Socket activation and the notify protocol are tested with hangard's own code, not here.
"""

from __future__ import annotations

import ctypes.util
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import systemd_sandbox
from hangar_e2e import HANGARD, REPO_ROOT, START_TIMEOUT, STOP_TIMEOUT, free_port, http_request, short_tempdir

UNITS = REPO_ROOT / "daemonset" / "systemd"
SERVICE = UNITS / "hangard.service"
SOCKET = UNITS / "hangard.socket"
EXAMPLE = UNITS / "etc-hangar"
INSTALL = REPO_ROOT / "scripts" / "install-systemd.sh"
UPGRADE = UNITS / "hangard-upgrade"
SANDBOX = Path(systemd_sandbox.__file__)

# The example tenant (etc-hangar/tenancy/example.yaml): namespace, app, and the uid/gid it runs as.
EXAMPLE_NS, EXAMPLE_APP, EXAMPLE_UID, EXAMPLE_GID = "example", "telemetry", 1000, 1000
PLACEHOLDER_TOKEN = (EXAMPLE / "tenancy" / "telemetry.token").read_text().strip()

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze is not installed (Debian package systemd; scripts/test.sh installs it)",
)
# Running a client as uid 1000 and narrowing hangard's capabilities take root and setpriv, as in test_isolation.py.
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None or not Path("/usr/bin/python3").exists(),
    reason="needs root and setpriv (util-linux) to run clients as uid 1000 and narrow capabilities, "
    "and /usr/bin/python3 for the client",
)
needs_sandbox = pytest.mark.skipif(
    ctypes.util.find_library("seccomp") is None,
    reason="libseccomp is not installed (Debian package libseccomp2, a dependency of systemd)",
)


# ---------------------------------------------------------------------------------------------------------------
# Helpers.


def settings(path: Path) -> dict[str, list[str]]:
    return systemd_sandbox.unit_settings(path)


def last(path: Path, key: str) -> str:
    values = settings(path).get(key)
    assert values, f"{path.name} has no {key}="
    return values[-1]


def exec_start_flags(service: Path = SERVICE) -> dict[str, str]:
    """ExecStart='s --flag value pairs."""
    argv = last(service, "ExecStart").split()
    assert argv[0] == "/usr/local/bin/hangard", argv
    flags = {}
    rest = argv[1:]
    while rest:
        flag = rest.pop(0)
        assert flag.startswith("--") and rest and not rest[0].startswith("--"), f"ExecStart: {flag} needs a value"
        flags[flag] = rest.pop(0)
    return flags


def seconds(value: str) -> float:
    """A systemd time span with one unit (30s, 2min, 500ms, or bare seconds)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|sec|min|m)?", value)
    assert match, f"unexpected time span {value!r}"
    number, unit = float(match.group(1)), match.group(2) or "s"
    return number * {"ms": 0.001, "s": 1, "sec": 1, "min": 60, "m": 60}[unit]


def analyze_verify(*args: str, cwd: Path | None = None) -> tuple[int, list[str]]:
    """`systemd-analyze verify --man=no ARGS`: exit status, and the output lines about our units."""
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", *args], capture_output=True, text=True, timeout=60, cwd=cwd
    )
    lines = (result.stdout + result.stderr).splitlines()
    return result.returncode, [line for line in lines if "hangard" in line]


def units_for_verify(directory: Path, service_text: str | None = None, socket_text: str | None = None) -> Path:
    """Copies of the units in `directory`, ExecStart= pointing at the hangard under test (verify checks that the
    binary exists and is executable; /usr/local/bin/hangard is not installed on a test machine)."""
    directory.mkdir(parents=True, exist_ok=True)
    text = service_text if service_text is not None else SERVICE.read_text()
    assert "ExecStart=/usr/local/bin/hangard " in text
    text = text.replace("ExecStart=/usr/local/bin/hangard ", f"ExecStart={HANGARD} ")
    text = text.replace("ExecReload=/usr/local/libexec/hangar/hangard-upgrade ", f"ExecReload={UPGRADE} ")
    (directory / "hangard.service").write_text(text)
    (directory / "hangard.socket").write_text(socket_text if socket_text is not None else SOCKET.read_text())
    return directory


def run_install(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, f"install-systemd.sh {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root with its type, mode, and content digest or link target."""
    tree = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            tree[str(path.relative_to(root))] = ("link", os.readlink(path))
        elif stat.S_ISDIR(info.st_mode):
            tree[str(path.relative_to(root))] = ("dir", oct(stat.S_IMODE(info.st_mode)))
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            tree[str(path.relative_to(root))] = ("file", oct(stat.S_IMODE(info.st_mode)), digest, info.st_mtime_ns)
    return tree


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def tmp_root():
    root = short_tempdir()
    os.chmod(root, 0o755)  # like /: clients of uid 1000 must traverse it to reach run/<namespace>/<app>/
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def installed(tmp_root) -> Path:
    """A temporary root with everything installed by the installer (--no-start)."""
    run_install("--root", str(tmp_root), "--binary", str(HANGARD), "--no-start")
    return tmp_root


# A client run as another uid through setpriv (so it is that uid for SO_PEERCRED): one HTTP/1.1 request on a
# Unix socket. Prints {"status", "body"}, or {"errno"} when it cannot connect, or {"error"} when the server closes
# the connection (as it does at once for a peer whose credentials are not the app's).
CLIENT = r"""
import json, socket, sys
path, method, target, body = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].encode()
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
try:
    s.connect(path)
except OSError as e:
    print(json.dumps({"errno": e.errno})); sys.exit(0)
head = f"{method} {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
data = b""
try:
    s.sendall(head.encode() + b"Content-Type: application/json\r\n\r\n" + body)
    while chunk := s.recv(65536):
        data += chunk
except OSError as e:
    print(json.dumps({"error": str(e)})); sys.exit(0)
if not data:
    print(json.dumps({"error": "closed without an answer"})); sys.exit(0)
status = int(data.split(b" ", 2)[1])
print(json.dumps({"status": status, "body": data.split(b"\r\n\r\n", 1)[-1].decode(errors="replace")}))
"""


def as_app(path: Path, method: str = "GET", target: str = "/v1.0/healthz", body: str = "",
           uid: int = EXAMPLE_UID, gid: int = EXAMPLE_GID) -> dict[str, Any]:  # fmt: skip
    result = subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "/usr/bin/python3", "-I", "-S", "-c",
         CLIENT, str(path), method, target, body],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, f"client as {uid}:{gid} failed: {result.stderr}"
    return json.loads(result.stdout)


class Daemon:
    """hangard on a given configuration, optionally under a command prefix (the sandbox), with its own log."""

    def __init__(self, root: Path, tenancy: Path, resources: Path, prefix: list[str] | None = None,
                 socket_root: Path | None = None, data_dir: Path | None = None):  # fmt: skip
        self.root = root
        self.socket_root = socket_root or root / "run"
        self.data_dir = data_dir or root / "state"
        self.http_port, self.grpc_port = free_port(), free_port()
        self.command = (prefix or []) + [
            str(HANGARD),
            "--tenancy", str(tenancy),
            "--resources", str(resources),
            "--socket-root", str(self.socket_root),
            "--data-dir", str(self.data_dir),
            "--http-listen", f"127.0.0.1:{self.http_port}",
            "--grpc-listen", f"127.0.0.1:{self.grpc_port}",
            "--metrics-listen", "none",
            "--drain-timeout", "5",
        ]  # fmt: skip
        self.log_path = root / f"hangard-{self.http_port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def app_dir(self, ns: str = EXAMPLE_NS, app: str = EXAMPLE_APP) -> Path:
        return self.socket_root / ns / app

    def http_socket(self, ns: str = EXAMPLE_NS, app: str = EXAMPLE_APP) -> Path:
        return self.app_dir(ns, app) / f"dapr-{app}-http.socket"

    def grpc_socket(self, ns: str = EXAMPLE_NS, app: str = EXAMPLE_APP) -> Path:
        return self.app_dir(ns, app) / f"dapr-{app}-grpc.socket"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, must_start: bool = True) -> "Daemon":
        """Starts hangard and waits for "hangard ready" and the example app's two sockets. With must_start=False,
        also returns (instead of failing) when hangard exits during start-up."""
        self.socket_root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.socket_root, 0o755)  # as RuntimeDirectoryMode=0755: apps of uid 1000 traverse it
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)  # as StateDirectoryMode=0700
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                if not must_start:
                    return self
                pytest.fail(f"hangard exited with {self.process.returncode} during start-up\n"
                            f"command: {' '.join(self.command)}\nlog:\n{self.log}")  # fmt: skip
            if "hangard ready" in self.log and self.http_socket().is_socket() and self.grpc_socket().is_socket():
                return self
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"hangard not ready within {START_TIMEOUT}s\ncommand: {' '.join(self.command)}\n"
                            f"log:\n{self.log}")  # fmt: skip
            time.sleep(0.05)

    def stop(self) -> int:
        """SIGTERM; returns the exit status (hangard must exit within STOP_TIMEOUT)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"hangard did not exit within {STOP_TIMEOUT}s of SIGTERM\nlog:\n{self.log}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def tcp(self, method: str, path: str, token: str | None = None):
        headers = {"dapr-api-token": token} if token else {}
        connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
        return http_request(connection, method, path, None, headers)

    def wait_for_log(self, needle: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while needle not in self.log:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


@pytest.fixture
def daemons():
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()


# ---------------------------------------------------------------------------------------------------------------
# The unit files.


@needs_systemd_analyze
def test_units_pass_systemd_analyze_verify(tmp_root):
    """systemd's own parser accepts both units without a warning (an unknown directive, a bad value, a missing
    binary or dependency would each print a line naming the unit). The second half is the control: the same check
    reports a misspelt directive and a bad value, so its silence means something."""
    code, lines = analyze_verify("hangard.service", "hangard.socket", cwd=units_for_verify(tmp_root / "good"))
    assert code == 0 and not lines, f"systemd-analyze verify (exit {code}):\n" + "\n".join(lines)

    broken = SERVICE.read_text().replace("NotifyAccess=all", "NotifyAccess=all\nNotifyAcess=all")
    broken_socket = SOCKET.read_text().replace("NoDelay=true", "NoDelay=maybe")
    code, lines = analyze_verify(
        "hangard.service", "hangard.socket", cwd=units_for_verify(tmp_root / "bad", broken, broken_socket)
    )
    assert any("Unknown key" in line and "NotifyAcess" in line for line in lines), lines
    assert any("hangard.socket" in line and "maybe" in line for line in lines), lines


# What `systemd-analyze security` may still flag, and why each is accepted. Anything else it flags is a hardening
# setting that was lost. (Keys are its JSON "json_field" names, systemd 252.)
ACCEPTED_EXPOSURES = {
    "UserOrDynamicUser": "root: hangard chowns each app's socket directory to the app's uid/gid",
    "CapabilityBoundingSet_CAP_CHOWN_FSETID_SETFCAP": "CAP_CHOWN, for the same reason",
    "CapabilityBoundingSet_CAP_DAC_FOWNER_IPC_OWNER": "CAP_DAC_OVERRIDE, CAP_FOWNER: app directories owned by app uids",
    "SystemCallFilter_privileged": "@chown is allowed again (it is part of @privileged)",
    "RestrictAddressFamilies_AF_UNIX": "the apps' Unix sockets, and the journal",
    "RestrictAddressFamilies_AF_INET_INET6": "the TCP listeners and network components",
    "PrivateNetwork": "the TCP listeners and network components",
    "IPAddressDeny": "network components reach their backends wherever they are",
    "PrivateUsers": "a user namespace would break the chown to app uids and SO_PEERCRED",
    "RootDirectoryOrRootImage": "hangard is installed on the host, not as a portable image",
    "DeviceAllow": "char-rtc:r, which ProtectClock= itself adds",
    "UMask": "0022: /run/hangar/<namespace>/ must stay traversable by every app's uid",
    "NotifyAccess": "all: on reload the new hangard (not yet the main process) sends MAINPID= and READY=1",
}
MAX_EXPOSURE = 2.5  # systemd 252 rates the unit 2.1 ("OK"; 10 is unprotected)


@needs_systemd_analyze
def test_hardening_keeps_its_exposure(tmp_root):
    """`systemd-analyze security --offline` flags nothing beyond the accepted exposures, and its overall rating
    stays under MAX_EXPOSURE: dropping a hardening directive (ProtectKernelTunables=, a namespace restriction, a
    capability from the bounding set...) fails here, by name."""
    help_text = subprocess.run([SYSTEMD_ANALYZE, "security", "--help"], capture_output=True, text=True).stdout
    if "--offline" not in help_text:
        pytest.skip("this systemd-analyze has no `security --offline` (systemd < 250)")
    units = units_for_verify(tmp_root)
    command = [SYSTEMD_ANALYZE, "security", "--offline=true", "hangard.service"]
    report = subprocess.run(command + ["--json=short"], capture_output=True, text=True, timeout=60, cwd=units)
    assert report.returncode == 0, report.stderr
    entries = json.loads(report.stdout)
    flagged = {entry["json_field"]: entry["description"] for entry in entries if entry["set"] is False}
    unexpected = {field: description for field, description in flagged.items() if field not in ACCEPTED_EXPOSURES}
    assert not unexpected, f"systemd-analyze security flags hardening the unit lost: {unexpected}"
    text = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=units).stdout
    match = re.search(r"Overall exposure level for hangard\.service: (\d+(?:\.\d+)?)", text)
    assert match, text[-2000:]
    assert float(match.group(1)) <= MAX_EXPOSURE, text[-2000:]


def test_units_follow_the_contract_with_hangard():
    """What the units promise each other and hangard: the socket unit's ports are ExecStart's --http-listen and
    --grpc-listen (hangard matches inherited sockets by port); metrics stay bound by hangard on loopback; stop
    timeout above the drain timeout; notify, watchdog, restart, directories as hangard expects them."""
    service, socket_unit = settings(SERVICE), settings(SOCKET)
    flags = exec_start_flags()
    assert flags["--tenancy"] == "/etc/hangar/tenancy" and flags["--resources"] == "/etc/hangar/resources"
    assert flags["--socket-root"] == "/run/hangar" and flags["--data-dir"] == "/var/lib/hangar"

    listen = socket_unit["ListenStream"]
    assert sorted(listen) == sorted([flags["--http-listen"], flags["--grpc-listen"]]), (listen, flags)
    assert len({address.rsplit(":", 1)[1] for address in listen}) == len(listen), "ports must tell the sockets apart"
    assert flags["--metrics-listen"].startswith("127.0.0.1:") and flags["--metrics-listen"] not in listen
    assert all(address.startswith("127.0.0.1:") for address in listen), "the TCP API stays on loopback"
    assert "FileDescriptorName" not in socket_unit, "one name for both sockets would defeat matching by port"
    assert last(SOCKET, "Service") == "hangard.service" and last(SOCKET, "WantedBy") == "sockets.target"
    assert int(last(SOCKET, "Backlog")) >= 128

    # `all`: the new hangard of a reload (not yet the main process) sends MAINPID= with READY=1.
    assert last(SERVICE, "Type") == "notify" and last(SERVICE, "NotifyAccess") == "all"
    assert 0 < seconds(last(SERVICE, "WatchdogSec"))
    assert last(SERVICE, "Restart") == "on-failure" and seconds(last(SERVICE, "RestartSec")) > 0
    assert seconds(last(SERVICE, "TimeoutStopSec")) > float(flags["--drain-timeout"]) + 5
    assert "hangard.socket" in service["Requires"][-1].split() and "hangard.socket" in service["After"][-1].split()
    assert "network.target" in service["After"][-1].split()
    assert last(SERVICE, "ExecReload") == "/usr/local/libexec/hangar/hangard-upgrade $MAINPID", (
        "reload hands the sockets to a new hangard (hangard does not handle SIGHUP; the configuration is watched)"
    )
    assert "--log-format" not in flags, "hangard detects the journal itself"

    expected = {
        "RuntimeDirectory": "hangar", "RuntimeDirectoryMode": "0755", "RuntimeDirectoryPreserve": "restart",
        "StateDirectory": "hangar", "StateDirectoryMode": "0700", "ConfigurationDirectory": "hangar",
        "UMask": "0022", "AmbientCapabilities": "", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
        "MemoryDenyWriteExecute": "yes", "SystemCallArchitectures": "native", "SystemCallErrorNumber": "EPERM",
    }  # fmt: skip
    for key, value in expected.items():
        assert last(SERVICE, key) == value, f"{key}={last(SERVICE, key)}, expected {value}"
    assert sorted(last(SERVICE, "CapabilityBoundingSet").split()) == ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER"]
    assert int(last(SERVICE, "LimitNOFILE")) >= 65536


@needs_systemd_analyze
def test_system_call_filter_allows_chown_and_refuses_privileged_calls():
    """The filter, resolved with systemd's own tables and its ordering rules: the @chown calls are back after
    ~@privileged, while the rest of @privileged and @resources stay refused."""
    allowed = systemd_sandbox.syscall_allow_list(settings(SERVICE))
    for call in ("chown", "fchown", "fchownat", "lchown", "chmod", "fchmod", "bind", "listen", "accept4", "unlink",
                 "inotify_add_watch", "fsync", "fcntl", "pread64", "pwrite64", "epoll_wait", "execve"):  # fmt: skip
        assert call in allowed, f"{call} is refused by the unit's SystemCallFilter="
    for call in ("mount", "umount2", "setuid", "setreuid", "setgroups", "chroot", "reboot", "init_module",
                 "settimeofday", "setrlimit", "sched_setaffinity", "setpriority", "swapon", "bpf"):  # fmt: skip
        assert call not in allowed, f"{call} is allowed by the unit's SystemCallFilter="


def test_exec_start_flags_are_hangard_flags():
    """Every flag in ExecStart= is one `hangard --help` lists (a renamed flag would make the unit fail at start)."""
    help_text = subprocess.run([str(HANGARD), "--help"], capture_output=True, text=True, timeout=30).stdout
    known = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", help_text))
    assert "--tenancy" in known, help_text
    missing = [flag for flag in exec_start_flags() if flag not in known]
    assert not missing, f"ExecStart= flags hangard does not know: {missing}\n{help_text}"


# ---------------------------------------------------------------------------------------------------------------
# The installer.

EXPECTED_FILES = {
    "usr/local/bin/hangard": 0o755,
    "usr/local/libexec/hangar/hangard-upgrade": 0o755,
    "etc/systemd/system/hangard.service": 0o644,
    "etc/systemd/system/hangard.socket": 0o644,
    "usr/local/share/doc/hangar/README.systemd.md": 0o644,
    "etc/hangar": 0o755,
    "etc/hangar/tenancy": 0o755,
    "etc/hangar/tenancy/example.yaml": 0o644,
    "etc/hangar/tenancy/telemetry.token": 0o600,
    "etc/hangar/resources": 0o755,
    "etc/hangar/resources/statestore.yaml": 0o644,
}


def test_install_into_a_root(installed):
    """--root --binary --no-start: exactly the expected files with the expected modes, copies of the sources (the
    binary byte for byte), a fresh random token instead of the repository's placeholder, nothing enabled."""
    root = installed
    for relative, expected_mode in EXPECTED_FILES.items():
        path = root / relative
        assert path.exists(), f"{relative} was not installed"
        assert mode(path) == expected_mode, f"{relative} has mode {oct(mode(path))}, expected {oct(expected_mode)}"
    files = {str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir()}
    assert files == {f for f in EXPECTED_FILES if not (root / f).is_dir()}, files
    assert (root / "usr/local/bin/hangard").read_bytes() == HANGARD.read_bytes()
    assert (root / "etc/systemd/system/hangard.service").read_text() == SERVICE.read_text()
    assert (root / "etc/systemd/system/hangard.socket").read_text() == SOCKET.read_text()
    assert (root / "etc/hangar/tenancy/example.yaml").read_text() == (EXAMPLE / "tenancy/example.yaml").read_text()
    token = (root / "etc/hangar/tenancy/telemetry.token").read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", token) and token != PLACEHOLDER_TOKEN, token
    # The units' Documentation= points at the installed README.
    for unit in (SERVICE, SOCKET):
        assert last(unit, "Documentation") == "file:/usr/local/share/doc/hangar/README.systemd.md"
    assert not list(root.glob("etc/systemd/system/*.wants")), "--no-start must not enable anything"


def test_install_twice_changes_nothing(installed):
    """A second run with the same inputs leaves every file as it was (content, mode, even mtime) and says so."""
    before = snapshot(installed)
    result = run_install("--root", str(installed), "--binary", str(HANGARD), "--no-start")
    assert snapshot(installed) == before
    assert "installed " not in result.stdout and "updated " not in result.stdout, result.stdout
    assert result.stdout.count("unchanged ") == 5 and result.stdout.count("kept ") == 2, result.stdout


def test_install_never_overwrites_an_existing_configuration(tmp_root):
    """An operator's /etc/hangar/tenancy is left exactly as it is (no example added beside their files); only the
    missing resources/ gets the example. Once both exist, the installer touches neither."""
    tenancy = tmp_root / "etc/hangar/tenancy"
    tenancy.mkdir(parents=True)
    (tenancy / "site.yaml").write_text("# the operator's tenants\n")
    (tenancy / "site.token").write_text("operator-secret\n")
    os.chmod(tenancy / "site.token", 0o640)
    before = snapshot(tmp_root / "etc/hangar/tenancy")
    result = run_install("--root", str(tmp_root), "--binary", str(HANGARD), "--no-start")
    assert snapshot(tmp_root / "etc/hangar/tenancy") == before
    assert sorted(p.name for p in tenancy.iterdir()) == ["site.token", "site.yaml"]
    assert (tmp_root / "etc/hangar/resources/statestore.yaml").is_file()
    assert f"kept       {tenancy}" in result.stdout, result.stdout

    (tmp_root / "etc/hangar/resources/statestore.yaml").write_text("# the operator's store\n")
    before = snapshot(tmp_root / "etc/hangar")
    run_install("--root", str(tmp_root), "--binary", str(HANGARD), "--no-start")
    assert snapshot(tmp_root / "etc/hangar") == before


def test_install_upgrades_the_binary_and_units_only(installed):
    """An older binary and unit are replaced (atomically, with their modes); the configuration is not touched."""
    config_before = snapshot(installed / "etc/hangar")
    (installed / "usr/local/bin/hangard").write_bytes(b"#!/bin/sh\necho old\n")
    (installed / "etc/systemd/system/hangard.service").write_text("[Service]\nExecStart=/bin/true\n")
    os.chmod(installed / "etc/systemd/system/hangard.socket", 0o600)
    result = run_install("--root", str(installed), "--binary", str(HANGARD), "--no-start")
    assert (installed / "usr/local/bin/hangard").read_bytes() == HANGARD.read_bytes()
    assert (installed / "etc/systemd/system/hangard.service").read_text() == SERVICE.read_text()
    assert mode(installed / "etc/systemd/system/hangard.socket") == 0o644
    for name in ("usr/local/bin/hangard", "etc/systemd/system/hangard.service", "etc/systemd/system/hangard.socket"):
        assert f"updated    {installed / name}" in result.stdout, result.stdout
    assert snapshot(installed / "etc/hangar") == config_before
    assert not list(installed.rglob(".hangard*")), "a temporary file was left behind"


def test_install_enables_the_units_offline_in_a_root(tmp_root):
    """Without --no-start, an install into a root (an image) enables both units there, as their [Install] sections
    say, and starts nothing; again, it changes nothing."""
    if shutil.which("systemctl") is None:
        pytest.skip("systemctl is not installed (Debian package systemd; scripts/test.sh installs it)")
    run_install("--root", str(tmp_root), "--binary", str(HANGARD))
    wants = tmp_root / "etc/systemd/system"
    assert os.readlink(wants / "sockets.target.wants/hangard.socket") == "/etc/systemd/system/hangard.socket"
    assert os.readlink(wants / "multi-user.target.wants/hangard.service") == "/etc/systemd/system/hangard.service"
    before = snapshot(tmp_root)
    run_install("--root", str(tmp_root), "--binary", str(HANGARD))
    assert snapshot(tmp_root) == before


def test_install_refuses_bad_arguments(tmp_root):
    """Unknown options and a missing binary stop the installer before it writes anything."""
    result = run_install("--root", str(tmp_root), "--frobnicate", check=False)
    assert result.returncode != 0 and "unknown argument: --frobnicate" in result.stderr
    assert "Usage:" in result.stderr
    result = run_install("--root", str(tmp_root), "--binary", str(tmp_root / "missing"), "--no-start", check=False)
    assert result.returncode != 0 and "is not an executable file" in result.stderr
    assert not any(tmp_root.iterdir()), list(tmp_root.rglob("*"))
    help_result = run_install("--help")
    assert "--root DIR" in help_result.stdout and "--no-start" in help_result.stdout


@needs_systemd_analyze
def test_installed_tree_passes_systemd_analyze_verify(installed):
    """The units as installed, verified inside the root (`--root`): ExecStart='s /usr/local/bin/hangard exists
    there and is executable, and the dependencies resolve (the host's own units are copied in for sysinit.target,
    network.target and the like)."""
    system_units = Path("/usr/lib/systemd/system")
    if not (system_units / "sysinit.target").exists():
        pytest.skip(f"{system_units} has no sysinit.target to resolve the units' dependencies against")
    shutil.copytree(system_units, installed / "usr/lib/systemd/system", symlinks=True)
    code, lines = analyze_verify(f"--root={installed}", "hangard.service", "hangard.socket")
    assert code == 0 and not lines, f"systemd-analyze verify --root (exit {code}):\n" + "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# The installed example configuration, in the real hangard.


def installed_config(root: Path) -> tuple[Path, Path, str]:
    tenancy, resources = root / "etc/hangar/tenancy", root / "etc/hangar/resources"
    return tenancy, resources, (tenancy / "telemetry.token").read_text().strip()


def test_example_configuration_loads_and_serves(installed, daemons):
    """The installed /etc/hangar, as hangard.service would run it: hangard reaches "hangard ready", creates the
    example app's sockets, and the installed token (apiTokenFile, relative to the tenancy directory) identifies the
    app on TCP."""
    tenancy, resources, token = installed_config(installed)
    text = (tenancy / "example.yaml").read_text()
    assert f"name: {EXAMPLE_NS}" in text and f"appId: {EXAMPLE_APP}" in text
    assert f"uids: [{EXAMPLE_UID}]" in text and f"gids: [{EXAMPLE_GID}]" in text
    daemon = Daemon(installed, tenancy, resources)
    daemons.append(daemon)
    daemon.start()
    assert "error" not in daemon.log.lower(), daemon.log
    assert daemon.tcp("GET", "/v1.0/healthz").status == 204
    metadata = daemon.tcp("GET", "/v1.0/metadata", token)
    assert metadata.status == 200, metadata
    assert metadata.json()["id"] == EXAMPLE_APP, metadata
    components = {c["name"]: c["type"] for c in metadata.json().get("components", [])}
    assert components.get("statestore") == "state.sqlite", metadata
    assert daemon.tcp("GET", "/v1.0/metadata", PLACEHOLDER_TOKEN).status == 401
    assert daemon.stop() == 0, daemon.log


@needs_root
def test_example_app_reaches_its_socket_as_its_uid(installed, daemons):
    """With hangard as root (as in the unit), the example app's directory belongs to uid/gid 1000 with mode 0770,
    and a process of that uid and gid is served on the app's socket; root's own connection is refused by the peer
    credential check."""
    tenancy, resources, _ = installed_config(installed)
    daemon = Daemon(installed, tenancy, resources)
    daemons.append(daemon)
    daemon.start()
    info = daemon.app_dir().stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (EXAMPLE_UID, EXAMPLE_GID, 0o770)
    answer = as_app(daemon.http_socket())
    assert answer.get("status") == 204, answer
    answer = as_app(daemon.http_socket(), uid=0, gid=0)
    assert "status" not in answer, f"root is not among the app's uids, yet was served: {answer}"
    assert daemon.stop() == 0, daemon.log


# ---------------------------------------------------------------------------------------------------------------
# hangard under the unit's sandbox.


def sandbox_prefix(root: Path, unit: Path = SERVICE, capabilities: list[str] | None = None) -> list[str]:
    """setpriv (capabilities, no_new_privs) + systemd_sandbox.py (seccomp, umask), built from the unit."""
    spec = systemd_sandbox.filter_spec(unit)
    spec_path = root / "filter.json"
    spec_path.write_text(json.dumps(spec))
    prefix = systemd_sandbox.setpriv_prefix(unit)
    if capabilities is not None:
        names = ["+" + cap.removeprefix("CAP_").lower() for cap in capabilities]
        prefix[1] = "--bounding-set=" + ",".join(["-all"] + names)
    return prefix + [sys.executable, str(SANDBOX), str(spec_path), "--"]


def proc_status(pid: int) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)


def capability_mask(names: list[str]) -> int:
    numbers = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3}
    return sum(1 << numbers[name] for name in names)


@needs_systemd_analyze
@needs_root
@needs_sandbox
def test_sandbox_reproduction_refuses_what_the_unit_refuses(tmp_root):
    """Control for the tests below: under the reproduced sandbox, a process really is refused what the unit
    refuses — a system call outside the filter (setpriority, of @resources), a netlink socket, writable and
    executable memory, and capabilities outside the bounding set — while ordinary calls work."""
    probe = r"""
import errno, json, mmap, os, socket
out = {}
try:
    os.setpriority(os.PRIO_PROCESS, 0, 0); out["setpriority"] = "allowed"
except OSError as e:
    out["setpriority"] = errno.errorcode[e.errno]
try:
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0); out["netlink"] = "allowed"
except OSError as e:
    out["netlink"] = errno.errorcode[e.errno]
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC); out["wx"] = "allowed"
except OSError as e:
    out["wx"] = errno.errorcode[e.errno]
socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()
out["umask"] = oct(os.umask(0))
fields = ("CapBnd", "CapEff", "NoNewPrivs", "Seccomp_filters")
out["status"] = {k: v.strip() for k, v in (l.split(":", 1) for l in open("/proc/self/status")) if k in fields}
print(json.dumps(out))
"""
    result = subprocess.run(
        sandbox_prefix(tmp_root) + [sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert (out["setpriority"], out["netlink"], out["wx"]) == ("EPERM", "EAFNOSUPPORT", "EPERM"), out
    assert out["umask"] == "0o22", out
    caps = capability_mask(["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER"])
    assert int(out["status"]["CapBnd"], 16) == caps and int(out["status"]["CapEff"], 16) == caps, out
    assert out["status"]["NoNewPrivs"] == "1" and out["status"]["Seccomp_filters"] == "3", out


def write_extra_app(tenancy: Path, uid: int) -> str:
    """The example tenant with a second app, `extra`, of another uid. Returns the original text."""
    path = tenancy / "example.yaml"
    original = path.read_text()
    extra = f"    - appId: extra\n      uids: [{uid}]\n      gids: [{uid}]\n"
    changed = original.replace("  apps:\n", "  apps:\n" + extra, 1)
    assert changed != original
    temporary = tenancy / ".example.yaml.new"
    temporary.write_text(changed)
    temporary.rename(path)  # as editors and configuration management do
    return original


@needs_systemd_analyze
@needs_root
@needs_sandbox
def test_hangard_runs_under_the_unit_sandbox(installed, daemons):
    """hangard under the unit's system call filter, address families, W^X rule, umask, capability bounding set and
    no_new_privs (checked in /proc, so the sandbox is known to be in force): it starts on the installed example,
    hands the app's directory to uid 1000, serves state over the app's socket to that uid (SQLite under the
    filter), applies a configuration change (a new app of uid 1001, chowned to it, then removed) and stops with
    exit 0, its sockets removed."""
    tenancy, resources, token = installed_config(installed)
    daemon = Daemon(installed, tenancy, resources, prefix=sandbox_prefix(installed))
    daemons.append(daemon)
    daemon.start()
    status = proc_status(daemon.process.pid)
    assert Path(f"/proc/{daemon.process.pid}/exe").resolve() == HANGARD.resolve()
    caps = capability_mask(["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER"])
    assert int(status["CapBnd"], 16) == caps and int(status["CapEff"], 16) == caps, status
    assert status["NoNewPrivs"].strip() == "1" and status["Seccomp_filters"].strip() == "3", status

    info = daemon.app_dir().stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (EXAMPLE_UID, EXAMPLE_GID, 0o770)
    body = json.dumps([{"key": "sandboxed", "value": {"n": 1}}])
    saved = as_app(daemon.http_socket(), "POST", "/v1.0/state/statestore", body)
    assert saved.get("status") == 204, f"{saved}\nlog:\n{daemon.log}"
    read = as_app(daemon.http_socket(), "GET", "/v1.0/state/statestore/sandboxed")
    assert read.get("status") == 200 and json.loads(read["body"]) == {"n": 1}, read
    assert daemon.tcp("GET", "/v1.0/metadata", token).status == 200

    original = write_extra_app(tenancy, 1001)
    assert daemon.wait_for_log("apps.added=example/extra"), daemon.log
    extra = daemon.app_dir(EXAMPLE_NS, "extra")
    deadline = time.monotonic() + 10
    while not daemon.http_socket(EXAMPLE_NS, "extra").is_socket() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (extra.stat().st_uid, extra.stat().st_gid) == (1001, 1001)
    assert as_app(daemon.http_socket(EXAMPLE_NS, "extra"), uid=1001, gid=1001).get("status") == 204
    (tenancy / "example.yaml").write_text(original)
    assert daemon.wait_for_log("apps.removed=example/extra"), daemon.log

    assert daemon.stop() == 0, daemon.log
    left = [p for p in daemon.socket_root.rglob("*") if p.is_socket()]
    assert not left, f"sockets left after SIGTERM: {left}"
    assert "error" not in daemon.log.lower(), daemon.log


def notifications(sock: socket.socket, timeout: float) -> list[str]:
    """The datagrams a service manager's notify socket received within `timeout` s (after the first, 0.2 s)."""
    messages: list[str] = []
    sock.settimeout(timeout)
    try:
        while True:
            messages.append(sock.recv(4096).decode())
            sock.settimeout(0.2)
    except TimeoutError:
        return messages


def wait_gone(pid: int, timeout: float) -> bool:
    """Waits until process `pid` (not a child of this one) has gone; whether it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


@needs_systemd_analyze
@needs_root
@needs_sandbox
def test_reload_hands_the_sockets_to_a_new_hangard_under_the_unit_sandbox(installed, daemons, monkeypatch):
    """ExecReload= (hangard-upgrade, as installed) under the unit's sandbox, against a running hangard: a new process
    of the binary starts with the same arguments plus --take-over required, tells the service manager MAINPID= with
    READY=1 (what NotifyAccess=all is for), serves the same sockets and data, and the old one exits 0. A binary
    that cannot take over fails the reload and leaves the serving process alone."""
    tenancy, resources, _ = installed_config(installed)
    notify_path = installed / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_path))
    daemon = Daemon(installed, tenancy, resources, prefix=sandbox_prefix(installed))
    daemons.append(daemon)
    daemon.start()
    old = daemon.process.pid
    assert any("READY=1" in m and "MAINPID" not in m for m in notifications(notify, 10))
    body = json.dumps([{"key": "before-reload", "value": "kept"}])
    assert as_app(daemon.http_socket(), "POST", "/v1.0/state/statestore", body).get("status") == 204

    old_arguments = Path(f"/proc/{old}/cmdline").read_bytes().split(b"\0")[:-1]
    helper = installed / "usr/local/libexec/hangar/hangard-upgrade"
    helper_log = installed / "hangard-upgrade.log"
    new = None
    try:
        with open(helper_log, "wb") as log:  # not a pipe: the new hangard inherits it and outlives the helper
            reload = subprocess.run(
                sandbox_prefix(installed) + [str(helper), str(old), str(HANGARD)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, timeout=60,
            )
        output = helper_log.read_text(errors="replace")
        assert reload.returncode == 0, output
        assert daemon.process.wait(timeout=30) == 0, daemon.log
        messages = notifications(notify, 10)
        handed = [m for m in messages if "MAINPID=" in m and "READY=1" in m]
        assert handed, messages
        new = int(re.search(r"MAINPID=(\d+)", handed[0]).group(1))
        assert new != old and Path(f"/proc/{new}/exe").resolve() == HANGARD.resolve()
        arguments = Path(f"/proc/{new}/cmdline").read_bytes().split(b"\0")[:-1]
        assert arguments == old_arguments + [b"--take-over", b"required"], arguments
        assert daemon.http_socket().is_socket() and daemon.grpc_socket().is_socket()
        read = as_app(daemon.http_socket(), "GET", "/v1.0/state/statestore/before-reload")
        assert read.get("status") == 200 and json.loads(read["body"]) == "kept", f"{read}\n{output}"

        # A binary that cannot take over: the reload fails, and the serving hangard is not touched.
        failing = installed / "failing-hangard"
        failing.write_text("#!/bin/sh\nexit 2\n")
        failing.chmod(0o755)
        with open(helper_log, "ab") as log:
            refused = subprocess.run(
                sandbox_prefix(installed) + [str(helper), str(new), str(failing)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, timeout=60,
            )
        output = helper_log.read_text(errors="replace")
        assert refused.returncode == 1, output
        assert "keeps serving" in output, output
        assert Path(f"/proc/{new}").exists()
        assert as_app(daemon.http_socket(), "GET", "/v1.0/state/statestore/before-reload").get("status") == 200
    finally:
        notify.close()
        if new is not None:
            os.kill(new, signal.SIGTERM)
            assert wait_gone(new, STOP_TIMEOUT), f"hangard {new} did not stop"


CAPABILITIES = sorted(last(SERVICE, "CapabilityBoundingSet").split())


@needs_systemd_analyze
@needs_root
@needs_sandbox
@pytest.mark.parametrize("dropped", CAPABILITIES)
def test_each_capability_is_needed(installed, daemons, dropped):
    """Why the unit keeps each capability: hangard in the sandbox is killed (a crash: stale sockets, directories
    already owned by the app) and restarted on the same directories without `dropped`; the app of uid 1000 is then
    no longer served on its socket (hangard fails to start, or leaves the socket to root). With all three — the
    control — it is served again."""
    tenancy, resources, _ = installed_config(installed)
    first = Daemon(installed, tenancy, resources, prefix=sandbox_prefix(installed))
    daemons.append(first)
    first.start()
    assert as_app(first.http_socket()).get("status") == 204
    first.kill()
    assert first.http_socket().exists(), "SIGKILL should leave the socket file behind"

    kept = [cap for cap in CAPABILITIES if cap != dropped]
    second = Daemon(installed, tenancy, resources, prefix=sandbox_prefix(installed, capabilities=kept),
                    socket_root=first.socket_root, data_dir=first.data_dir)  # fmt: skip
    daemons.append(second)
    second.start(must_start=False)
    answer = as_app(second.http_socket())
    assert answer.get("status") != 204, (
        f"without {dropped} the app is still served after a restart: the unit may not need it\nlog:\n{second.log}"
    )
    second.kill()

    control = Daemon(installed, tenancy, resources, prefix=sandbox_prefix(installed),
                     socket_root=first.socket_root, data_dir=first.data_dir)  # fmt: skip
    daemons.append(control)
    control.start()
    assert as_app(control.http_socket()).get("status") == 204, control.log
    assert control.stop() == 0, control.log
