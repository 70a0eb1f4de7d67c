"""state.redis end to end: the official SDK over apps' Unix sockets, a real redis-server on loopback.

- two tenants on one shared component: the same app id and key are two items, each tenant reading its own;
- `keyLayout: dapr` on a tenant's own component: data written by Dapr's own Lua script under `<appId>||<key>` is
  read and updated in place, and what the app saves is in Dapr's layout;
- the tenant's `maxStateBytes` on a shared Redis: counted in Redis per tenant, refused with RESOURCE_EXHAUSTED once
  full while another tenant on the same component writes on;
- the node's connections: 40 apps making state calls at once share at most `poolSize` connections;
- an outage under load: calls fail fast with UNAVAILABLE while the server is down, succeed again within 5 s of
  its return without a restart of hangard, and no acknowledged write is lost (the server syncs its append-only file
  on every write, so what it acknowledged survives SIGKILL).
"""

from __future__ import annotations

import threading
from pathlib import Path
import time

import grpc
import pytest
from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType

from backend_servers import RedisProcess
from hangar_e2e import expect_quota, grpc_error_info, unique
from tenancy_files import component_yaml, start_daemon, tenant_yaml, wait_until

STORE = "redisstore"
POOL_SIZE = 4

# Dapr's own set script (components-contrib state/redis/redis.go, setDefaultQuery), as its sidecar runs it.
DAPR_SET = (Path(__file__).resolve().parent.parent / "dapr" / "state-redis-set.lua").read_text()

MANY = [f"app{index:02d}" for index in range(40)]


@pytest.fixture(scope="module")
def redis():
    server = RedisProcess()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def node(redis, tmp_path_factory):
    from conftest import DaemonFactory

    factory = DaemonFactory()
    tenants = {
        "team-a.yaml": tenant_yaml("team-a", [{"appId": "orders"}, {"appId": "billing"}]),
        "team-b.yaml": tenant_yaml("team-b", [{"appId": "orders"}]),
        "crowd.yaml": tenant_yaml("crowd", [{"appId": app} for app in MANY]),
        "tight.yaml": tenant_yaml("tight", [{"appId": "app"}], quotas={"maxStateBytes": 1000}),
    }
    components = {
        "shared.yaml": component_yaml(
            STORE, "state.redis", {"redisHost": redis.address, "poolSize": str(POOL_SIZE)}),
        "legacy.yaml": component_yaml(
            "legacy", "state.redis", {"redisHost": redis.address, "keyLayout": "dapr"}, namespace="team-a"),
    }
    apps = [("team-a", "orders"), ("team-a", "billing"), ("team-b", "orders"), ("tight", "app")]
    apps += [("crowd", app) for app in MANY]
    daemon = start_daemon(factory, tenants, components, apps=tuple(apps))
    yield daemon
    factory.stop_all()
    factory.cleanup()


def raw_hash(redis: RedisProcess, key: str) -> dict[str, str]:
    lines = redis.cli("HGETALL", key).splitlines()
    return dict(zip(lines[0::2], lines[1::2]))


def test_two_tenants_share_the_component_but_not_their_keys(node, redis):
    key = unique()
    a = node.client("team-a", "orders")
    b = node.client("team-b", "orders")
    a.save_state(STORE, key, "from-a")
    b.save_state(STORE, key, "from-b")
    assert a.get_state(STORE, key).data == b"from-a"
    assert b.get_state(STORE, key).data == b"from-b"
    # The same app id in two tenants: two items, each under its tenant's namespace.
    assert raw_hash(redis, f"team-a||orders||{key}")["data"] == "from-a"
    assert raw_hash(redis, f"team-b||orders||{key}")["data"] == "from-b"

    # ETags, first-write and transactions as with every store.
    first = a.get_state(STORE, key)
    a.save_state(STORE, key, "again", etag=first.etag)
    with pytest.raises(grpc.RpcError) as stale:
        a.save_state(STORE, key, "stale", etag=first.etag)
    assert stale.value.code() == grpc.StatusCode.ABORTED
    a.execute_state_transaction(STORE, [
        TransactionalStateOperation(operation_type=TransactionOperationType.upsert, key=key + "-t", data="t"),
        TransactionalStateOperation(operation_type=TransactionOperationType.delete, key=key),
    ])
    assert a.get_state(STORE, key).data == b""
    assert a.get_state(STORE, key + "-t").data == b"t"
    assert b.get_state(STORE, key).data == b"from-b", "team-a's transaction left team-b's item alone"


def test_max_state_bytes_is_counted_in_redis_per_tenant(node, redis):
    tight = node.client("tight", "app")
    # Physical key "tight||app||a" is 13 bytes: 13 + 600 = 613 bytes stored, counted in Redis.
    tight.save_state(STORE, "a", "x" * 600)
    assert redis.cli("HGET", "hangar:state:bytes:tight", "bytes").strip() == "613"
    with pytest.raises(grpc.RpcError) as error:
        tight.save_state(STORE, "b", "y" * 600)
    info = expect_quota(error, "maxStateBytes", 1000, "tenant")
    assert info["store"] == STORE
    assert tight.get_state(STORE, "b").data == b"", "nothing was written"
    # Another tenant on the same component is not limited by it.
    node.client("team-b", "orders").save_state(STORE, unique(), "z" * 2000)
    # Shrinking and deleting free room; a transaction is refused whole.
    tight.save_state(STORE, "a", "x" * 300)
    with pytest.raises(grpc.RpcError) as error:
        tight.execute_state_transaction(STORE, [
            TransactionalStateOperation(operation_type=TransactionOperationType.upsert, key="c", data="c" * 100),
            TransactionalStateOperation(operation_type=TransactionOperationType.upsert, key="d", data="d" * 600),
        ])
    expect_quota(error, "maxStateBytes", 1000, "tenant")
    assert tight.get_state(STORE, "c").data == b""
    tight.delete_state(STORE, "a")
    tight.save_state(STORE, "b", "y" * 900)
    assert redis.cli("HGET", "hangar:state:bytes:tight", "bytes").strip() == "913"


def test_dapr_layout_reads_and_writes_dapr_data_in_place(node, redis):
    key = unique()
    # A Dapr sidecar for app "orders" wrote this twice.
    for value in ("v1", "v2"):
        redis.cli("EVAL", DAPR_SET, "1", f"orders||{key}", "0", value, "1")
    orders = node.client("team-a", "orders")
    item = orders.get_state("legacy", key)
    assert item.data == b"v2"
    orders.save_state("legacy", key, "v3", etag=item.etag)
    assert raw_hash(redis, f"orders||{key}") == {"data": "v3", "version": "3"}
    # A Dapr sidecar goes on with the version it reads.
    redis.cli("EVAL", DAPR_SET, "1", f"orders||{key}", "3", "v4", "1")
    assert orders.get_state("legacy", key).data == b"v4"
    # Another app of the tenant has its own keys there, as in Dapr (the default keyPrefix is the app id).
    assert node.client("team-a", "billing").get_state("legacy", key).data == b""
    # team-b does not see team-a's component at all.
    with pytest.raises(grpc.RpcError) as missing:
        node.client("team-b", "orders").get_state("legacy", key)
    assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_forty_apps_at_once_share_at_most_pool_size_connections(node, redis):
    errors: list[BaseException] = []
    peak = [0]
    stop = threading.Event()

    def count() -> int:
        return sum(1 for name in redis.client_names() if name == f"hangard:state:{STORE}")

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], count())
            time.sleep(0.05)

    # Made here, not in the threads: the SDK reads its settings from the environment, which sdk_environment sets.
    clients = {app: node.client("crowd", app) for app in MANY}

    def work(app: str) -> None:
        try:
            client = clients[app]
            for index in range(30):
                client.save_state(STORE, f"k{index}", f"{app}-{index}")
                assert client.get_state(STORE, f"k{index}").data == f"{app}-{index}".encode()
        except BaseException as error:  # reported below
            errors.append(error)

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=work, args=(app,)) for app in MANY]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    watcher.join()
    assert not errors, errors[:3]
    assert 1 <= peak[0] <= POOL_SIZE, f"{peak[0]} connections for 40 apps"


def test_an_outage_fails_fast_then_recovers_without_losing_acknowledged_writes(node, redis):
    client = node.client("team-a", "billing")
    acknowledged: dict[str, str] = {}
    writes = [0]  # acknowledged saves, counted
    # Saves that failed after the last acknowledged one of their key: a save cut off by the crash may or may not
    # have been applied, so the key may hold one of these instead.
    uncertain: dict[str, list[str]] = {}
    failures: list[tuple[float, grpc.StatusCode, dict]] = []
    stop = threading.Event()

    def writer() -> None:
        index = 0
        while not stop.is_set():
            key, value = f"load-{index % 200}", f"v{index}"
            started = time.monotonic()
            try:
                client.save_state(STORE, key, value)
                acknowledged[key] = value
                uncertain.pop(key, None)
                writes[0] += 1
            except grpc.RpcError as error:
                uncertain.setdefault(key, []).append(value)
                failures.append((time.monotonic() - started, error.code(), grpc_error_info(error)))
                time.sleep(0.01)
            index += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.5)
        redis.crash()
        wait_until(lambda: len(failures) >= 20, timeout=10)
        redis.start()
        down_until = time.monotonic()
        before = writes[0]
        wait_until(lambda: writes[0] > before + 20, timeout=5)
        recovered_after = time.monotonic() - down_until
    finally:
        stop.set()
        thread.join()

    assert recovered_after < 5
    assert all(elapsed < 1.0 for elapsed, _, _ in failures), max(elapsed for elapsed, _, _ in failures)
    assert {code for _, code, _ in failures} == {grpc.StatusCode.UNAVAILABLE}
    assert failures[0][2].get("reason") == "DAPR_STATE_BACKEND_UNAVAILABLE"
    for key, value in acknowledged.items():
        stored = client.get_state(STORE, key).data.decode()
        assert stored == value or stored in uncertain.get(key, []), (key, value, stored)


def test_a_password_protected_server_with_the_password_from_a_secret(hangard_factory):
    """`redisPassword` as a `secretKeyRef` into the tenant's own secret store (a kubelet-style directory): the
    component logs in with it, and the password shows up in no log line."""
    password = "pw-" + unique("")
    server = RedisProcess(password=password)
    try:
        root = hangard_factory.root()
        secrets = root / "secrets" / "redis"
        secrets.mkdir(parents=True)
        (secrets / "password").write_text(password)
        component = "\n".join([
            "apiVersion: dapr.io/v1alpha1", "kind: Component", "metadata:", "  name: locked", "  namespace: team-a",
            "spec:", "  type: state.redis", "  version: v1", "  metadata:",
            "  - name: redisHost", f'    value: "{server.address}"',
            "  - name: redisPassword", "    secretKeyRef:", "      name: redis", "      key: password",
            "auth:", "  secretStore: vault",
        ]) + "\n"
        store = component_yaml("vault", "secretstores.local.directory", {"secretsDirectory": str(root / "secrets")},
                               namespace="team-a")
        daemon = start_daemon(
            hangard_factory, {"team-a.yaml": tenant_yaml("team-a", [{"appId": "orders"}])},
            {"locked.yaml": component, "vault.yaml": store}, apps=(("team-a", "orders"),))
        client = daemon.client("team-a", "orders")
        wait_until(lambda: _saves(client), timeout=10, interval=0.1)
        assert client.get_state("locked", "k").data == b"v"
        assert raw_hash(server, "team-a||orders||k")["data"] == "v"
        assert "hangard:state:locked" in server.client_names()
        assert password not in daemon.log
    finally:
        server.stop()


def _saves(client) -> bool:
    try:
        client.save_state("locked", "k", "v")
        return True
    except grpc.RpcError:
        return False
