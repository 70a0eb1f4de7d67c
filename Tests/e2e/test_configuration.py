"""Start-up configuration: invalid files are refused with their path and field; the development default;
peer-credential checks on app sockets."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import grpc
import pytest

from hangar_e2e import HANGARD, copy_examples, free_port, unique

STORE = "statestore"


def run_hangard(args: list[str], sockets: Path, timeout: float = 10.0) -> subprocess.CompletedProcess:
    """Runs hangard expecting it to refuse its configuration: it must exit non-zero within `timeout` s. If it
    starts serving instead (a socket file appears), it is stopped and the test fails at once."""
    if not HANGARD.is_file():
        pytest.fail(f"hangard binary not found at {HANGARD}")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        deadline = time.monotonic() + timeout
        try:
            while process.poll() is None:
                serving = sockets.exists() and any(sockets.rglob("*.socket"))
                if serving or time.monotonic() > deadline:
                    process.kill()
                    process.wait(5)
                    err.seek(0)
                    pytest.fail(
                        "hangard accepted an invalid configuration and "
                        + ("started serving" if serving else f"was still running after {timeout}s")
                        + f"\nstderr:\n{err.read().decode(errors='replace')}"
                    )
                time.sleep(0.02)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(5)
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(
            args, process.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace")
        )
    assert result.returncode != 0, f"hangard exited 0 with an invalid configuration\nstderr:\n{result.stderr}"
    return result


def run_hangard_expecting_failure(root: Path, tenancy: Path | None, resources: Path | None) -> subprocess.CompletedProcess:
    args = [
        str(HANGARD), "--socket-root", str(root / "s"), "--data-dir", str(root / "data"),
        "--http-listen", f"127.0.0.1:{free_port()}", "--grpc-listen", f"127.0.0.1:{free_port()}",
    ]
    if tenancy is not None:
        args += ["--tenancy", str(tenancy)]
    if resources is not None:
        args += ["--resources", str(resources)]
    return run_hangard(args, root / "s")


TEAM_A_ORDERS = "  apps:\n    - appId: orders\n"

# (case id, file name, file text, the field stderr must name)
INVALID_TENANTS = [
    ("namespace-traversal", "bad.yaml",
     "apiVersion: hangar.dev/v1alpha1\nkind: Tenant\nmetadata:\n  name: ../x\nspec:\n" + TEAM_A_ORDERS,
     "metadata.name"),
    ("namespace-uppercase", "bad.yaml",
     "apiVersion: hangar.dev/v1alpha1\nkind: Tenant\nmetadata:\n  name: Team-A\nspec:\n" + TEAM_A_ORDERS,
     "metadata.name"),
    ("appid-separator", "bad.yaml",
     "apiVersion: hangar.dev/v1alpha1\nkind: Tenant\nmetadata:\n  name: team-c\nspec:\n  apps:\n    - appId: a||b\n",
     "appId"),
    ("appid-slash", "bad.yaml",
     "apiVersion: hangar.dev/v1alpha1\nkind: Tenant\nmetadata:\n  name: team-c\nspec:\n  apps:\n    - appId: a/b\n",
     "appId"),
    ("unknown-field", "bad.yaml",
     "apiVersion: hangar.dev/v1alpha1\nkind: Tenant\nmetadata:\n  name: team-c\nspec:\n  apps:\n"
     "    - appId: orders\n      apiTokn: secret\n",
     "apiTokn"),
    ("duplicate-token", "bad.yaml",
     "apiVersion: hangar.dev/v1alpha1\nkind: Tenant\nmetadata:\n  name: team-c\nspec:\n  apps:\n"
     "    - appId: orders\n      apiToken: team-a-orders-example-token\n",
     "apiToken"),
    ("negative-quota", "bad.yaml",
     "apiVersion: hangar.dev/v1alpha1\nkind: Tenant\nmetadata:\n  name: team-c\nspec:\n" + TEAM_A_ORDERS
     + "  quotas:\n    requestsPerSecond: -5\n",
     "requestsPerSecond"),
    ("missing-token-file", "bad.yaml",
     "apiVersion: hangar.dev/v1alpha1\nkind: Tenant\nmetadata:\n  name: team-c\nspec:\n  apps:\n"
     "    - appId: orders\n      apiTokenFile: nope.token\n",
     "apiTokenFile"),
    ("wrong-api-version", "bad.yaml",
     "apiVersion: hangar.dev/v2\nkind: Tenant\nmetadata:\n  name: team-c\nspec:\n" + TEAM_A_ORDERS,
     "apiVersion"),
    ("metadata-unknown-field", "bad.yaml",
     "apiVersion: hangar.dev/v1alpha1\nkind: Tenant\nmetadata:\n  name: team-c\n  namespace: team-a\nspec:\n"
     + TEAM_A_ORDERS,
     "metadata.namespace"),
    ("duplicate-namespace", "bad.yaml",
     "apiVersion: hangar.dev/v1alpha1\nkind: Tenant\nmetadata:\n  name: team-a\nspec:\n" + TEAM_A_ORDERS,
     "metadata.name"),
]


@pytest.mark.parametrize("case,name,text,field", INVALID_TENANTS, ids=[c[0] for c in INVALID_TENANTS])
def test_invalid_tenant_is_refused_naming_file_and_field(hangard_factory, case, name, text, field):
    root = hangard_factory.root()
    tenancy, resources = copy_examples(root)
    bad = tenancy / name
    bad.write_text(text)
    result = run_hangard_expecting_failure(root, tenancy, resources)
    # A clash between two files (a token, a namespace) may be reported at either of them.
    named = [bad] + ([tenancy / "team-a.yaml"] if case.startswith("duplicate") else [])
    assert any(str(path) in result.stderr for path in named), f"stderr does not name {bad}:\n{result.stderr}"
    assert field in result.stderr, f"stderr does not name the field {field}:\n{result.stderr}"
    assert not (root / "x").exists(), "a socket directory was created outside --socket-root"
    assert not (root / "s").exists() or not list((root / "s").rglob("*.socket"))


def test_yaml_syntax_error_is_refused_naming_the_file(hangard_factory):
    root = hangard_factory.root()
    tenancy, resources = copy_examples(root)
    bad = tenancy / "team-a.yaml"
    bad.write_text(bad.read_text().replace("  apps:\n", "  apps: [\n", 1))
    result = run_hangard_expecting_failure(root, tenancy, resources)
    assert str(bad) in result.stderr, result.stderr
    assert "yaml" in result.stderr.lower(), result.stderr


def test_socket_path_too_long_is_refused(hangard_factory):
    root = hangard_factory.root()
    tenancy, resources = copy_examples(root)
    long_root = root / ("d" * 70)
    args = [str(HANGARD), "--tenancy", str(tenancy), "--resources", str(resources), "--socket-root", str(long_root),
            "--data-dir", str(root / "data"), "--http-listen", "none", "--grpc-listen", "none"]
    result = run_hangard(args, long_root)
    assert "107" in result.stderr and str(tenancy) in result.stderr, result.stderr


INVALID_COMPONENTS = [
    ("unsupported-type", "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: redis\n"
     "spec:\n  type: state.mongodb\n  version: v1\n", "spec.type"),
    ("bad-namespace", "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: c\n  namespace: ../x\n"
     "spec:\n  type: state.in-memory\n  version: v1\n", "metadata.namespace"),
    ("separator-key-prefix", "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: c\n"
     "spec:\n  type: state.in-memory\n  version: v1\n  metadata:\n    - name: keyPrefix\n      value: a||b\n",
     "keyPrefix"),
    ("duplicate-name", "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\n"
     "spec:\n  type: state.in-memory\n  version: v1\n", "metadata.name"),
    ("pubsub-consumer-id-uuid", "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: events\n"
     "spec:\n  type: pubsub.sqlite\n  version: v1\n  metadata:\n    - name: consumerID\n      value: '{uuid}'\n",
     "consumerID"),
    ("unsupported-version", "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: c\n"
     "spec:\n  type: state.in-memory\n  version: v2\n", "spec.version"),
]


@pytest.mark.parametrize("case,text,field", INVALID_COMPONENTS, ids=[c[0] for c in INVALID_COMPONENTS])
def test_invalid_component_is_refused_naming_file_and_field(hangard_factory, case, text, field):
    root = hangard_factory.root()
    tenancy, resources = copy_examples(root)
    bad = resources / "zz-bad.yaml"
    bad.write_text(text)
    result = run_hangard_expecting_failure(root, tenancy, resources)
    assert str(bad) in result.stderr, f"stderr does not name {bad}:\n{result.stderr}"
    assert field in result.stderr, f"stderr does not name the field {field}:\n{result.stderr}"


def test_unknown_component_metadata_is_ignored_with_a_warning(hangard_factory):
    """Dapr ignores metadata a component does not know, so Dapr YAML keeps working; hangard says so."""
    root = hangard_factory.root()
    tenancy, resources = copy_examples(root)
    (resources / "typo.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: typo\n"
        "spec:\n  type: state.in-memory\n  version: v1\n  metadata:\n    - name: conectionString\n      value: c.db\n"
    )
    daemon = hangard_factory.examples(root)
    line = daemon.wait_for_log("unknown component metadata ignored", "conectionString")
    assert line is not None, f"no warning names the field\nlog:\n{daemon.log}"
    daemon.client("team-a", "orders").save_state("typo", unique(), "works")


@pytest.mark.parametrize("type_", ["state.mongodb", "lock.redis"])
def test_component_not_served_with_ignore_errors_is_skipped_with_a_warning(hangard_factory, type_):
    """Dapr's `spec.ignoreErrors: true` lets a sidecar start without a component it cannot load; hangard skips a
    type it does not serve (unknown, or of a building block not served yet) the same way, and says so."""
    root = hangard_factory.root()
    tenancy, resources = copy_examples(root)
    (resources / "later.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: later\n"
        f"spec:\n  type: {type_}\n  version: v1\n  ignoreErrors: true\n"
    )
    daemon = hangard_factory.examples(root)
    assert daemon.wait_for_log("component type not supported; ignored"), f"no warning\nlog:\n{daemon.log}"
    daemon.client("team-a", "orders").save_state(STORE, unique(), "works")


def test_other_resource_kinds_are_ignored_with_a_warning(hangard_factory):
    root = hangard_factory.root()
    tenancy, resources = copy_examples(root)
    (resources / "subscription.yaml").write_text(
        "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: orders-sub\n"
        "spec:\n  pubsubname: pubsub\n  topic: orders\n  routes:\n    default: /orders\n"
    )
    daemon = hangard_factory.examples(root)
    assert daemon.wait_for_log("Subscription"), f"no warning names the ignored kind\nlog:\n{daemon.log}"
    daemon.client("team-a", "orders").save_state(STORE, unique(), "works")


def test_development_default(hangard_factory):
    """No --tenancy/--resources: tenant `default`, app `default`, statestore, tokenless TCP."""
    root = hangard_factory.root()
    daemon = hangard_factory.start(root, tenancy=None, resources=None, apps=(("default", "default"),))
    assert daemon.grpc_socket("default", "default") == root / "s" / "default" / "default" / "dapr-default-grpc.socket"

    tcp = daemon.tcp_client(None)
    key = unique("dev")
    tcp.save_state(STORE, key, "tokenless")
    over_socket = daemon.client("default", "default")
    assert over_socket.get_state(STORE, key).data == b"tokenless"
    metadata = tcp.get_metadata()
    assert metadata.application_id == "default"
    assert metadata.extended_metadata.get("hangar.namespace") == "default"
    assert {c.name: c.type for c in metadata.registered_components} == {
        "statestore": "state.sqlite", "pubsub": "pubsub.sqlite"}
    tcp.publish_event("pubsub", "orders", "published on the development default")
    assert (root / "data" / "pubsub.db").is_file()
    assert (root / "data" / "state.db").is_file()

    http_get = daemon.tcp_http("GET", f"/v1.0/state/{STORE}/{key}")
    assert http_get.status == 200 and http_get.body == b"tokenless"
    assert daemon.http("default", "default", "GET", f"/v1.0/state/{STORE}/{key}").body == b"tokenless"


# ---------------------------------------------------------------------------------------------------------------
# Peer credentials (SO_PEERCRED). The tests run as root; "foreign" ids are ones this process does not have.


def foreign_id(own: int) -> int:
    return 65534 if own != 65534 else 65533


def write_peer_tenant(root: Path, spec_lines: str) -> Path:
    tenancy = root / "tenancy"
    tenancy.mkdir()
    (tenancy / "locks.yaml").write_text(
        "apiVersion: hangar.dev/v1alpha1\nkind: Tenant\nmetadata:\n  name: locks\nspec:\n  apps:\n" + spec_lines
    )
    return tenancy


def assert_refused(daemon, app):
    client = daemon.client("locks", app)
    with pytest.raises(grpc.RpcError) as error:
        client.get_state(STORE, unique())
    assert error.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.PERMISSION_DENIED), error.value
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(daemon.http_socket("locks", app)))
        try:
            s.sendall(b"GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = s.recv(4096)
        except (BrokenPipeError, ConnectionResetError):
            answer = b""
        assert answer == b"", f"a refused peer got an answer: {answer[:200]!r}"
    line = daemon.wait_for_log("refused", app)
    assert line, f"the daemon did not log the refused connection to {app}\nlog:\n{daemon.log[-4000:]}"


def test_peer_uid_not_allowed_is_refused_and_logged(hangard_factory):
    root = hangard_factory.root()
    uid = foreign_id(os.getuid())
    tenancy = write_peer_tenant(
        root, f"    - appId: locked\n      uids: [{uid}]\n    - appId: mine\n      uids: [{os.getuid()}]\n"
    )
    daemon = hangard_factory.start(
        root, tenancy=tenancy, resources=None, apps=(("locks", "locked"), ("locks", "mine"))
    )
    assert_refused(daemon, "locked")
    assert str(os.getuid()) in daemon.wait_for_log("refused", "locked")

    mine = daemon.client("locks", "mine")
    key = unique("mine")
    mine.save_state(STORE, key, "allowed")
    assert mine.get_state(STORE, key).data == b"allowed"
    assert daemon.http("locks", "mine", "GET", "/v1.0/healthz").status == 204
    assert daemon.running


def test_peer_gid_not_allowed_is_refused(hangard_factory):
    root = hangard_factory.root()
    gid = foreign_id(os.getgid())
    tenancy = write_peer_tenant(
        root, f"    - appId: locked\n      gids: [{gid}]\n    - appId: mine\n      gids: [{os.getgid()}]\n"
    )
    daemon = hangard_factory.start(
        root, tenancy=tenancy, resources=None, apps=(("locks", "locked"), ("locks", "mine"))
    )
    assert_refused(daemon, "locked")
    assert daemon.client("locks", "mine").get_state(STORE, unique()).data == b""


def _connect_as(uid: int, gid: int, path: Path) -> tuple[int, bytes]:
    """Forks a child that drops to uid/gid and sends GET /v1.0/healthz over the Unix socket at `path`.
    Returns (child's exit code, what it read); exit 3 = the connect itself was refused (permissions)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no Python-level cleanup, no grpc; only os/socket calls, then _exit
        code = 0
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            try:
                s.connect(str(path))
            except OSError as error:
                os.write(write_fd, repr(error).encode())
                code = 3
            else:
                s.sendall(b"GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                os.write(write_fd, data[:4096])
        except BaseException as error:  # noqa: BLE001 - report anything to the parent
            os.write(write_fd, repr(error).encode()[:4096])
            code = 4
        finally:
            os._exit(code)
    os.close(write_fd)
    deadline = time.monotonic() + 15
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the child connecting as another uid hung")
        time.sleep(0.05)
    with os.fdopen(read_fd, "rb") as pipe:
        output = pipe.read()
    return os.waitstatus_to_exitcode(status), output


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to connect as another uid")
def test_allowed_non_root_uid_can_reach_its_sockets(hangard_factory):
    """The app's directory and sockets must be usable by the uid/gid the Tenant allows (DESIGN.md: the
    directory is owned by the app's configured uid/gid), and peer credentials of that uid are accepted."""
    root = hangard_factory.root()
    os.chmod(root, 0o755)  # mkdtemp makes it 0700; the app user must be able to traverse to its socket root
    uid, gid = 65534, 65534
    tenancy = write_peer_tenant(root, f"    - appId: worker\n      uids: [{uid}]\n      gids: [{gid}]\n")
    daemon = hangard_factory.start(root, tenancy=tenancy, resources=None, apps=(("locks", "worker"),))
    app_dir = daemon.app_dir("locks", "worker")
    st = app_dir.stat()
    assert (st.st_uid, st.st_gid) == (uid, gid), (
        f"{app_dir} is owned by {st.st_uid}:{st.st_gid}; the app {uid}:{gid} cannot enter a 0770 directory"
    )
    code, output = _connect_as(uid, gid, daemon.http_socket("locks", "worker"))
    assert code == 0, f"uid {uid} could not connect to its own socket: {output!r}"
    assert output.startswith(b"HTTP/1.1 204"), output[:300]
