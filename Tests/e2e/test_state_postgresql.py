"""`state.postgresql` (version v2) end to end: the real hangard, the Dapr Python SDK and a real PostgreSQL server
started by the test (see postgres_fixtures.py).

- two tenants on one shared component write the same key and stay isolated (the namespace is in the key);
- a password-protected PostgreSQL user; a wrong password leaves the component DOWN, and no password is logged;
- the server crashed and started again under load: calls fail fast (each well under 1 s) with UNAVAILABLE, the
  component reports DOWN then UP, writes succeed again within 5 s without a restart, and no acknowledged write
  is lost;
- many apps on one node hold at most `maxConns` connections to the server (pg_stat_activity);
- a namespaced component with `keyLayout: dapr` reads and writes rows written with daprd's own SQL in place;
- `connectionString` from a `secretKeyRef`: a wrong password leaves it DOWN, the rotated secret brings it UP;
- a tenant's `maxStateBytes` holds on a shared component (RESOURCE_EXHAUSTED), the other tenant is unaffected.
"""

from __future__ import annotations

import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from hangar_e2e import expect_quota, unique
from postgres_fixtures import PostgresServer, postgres_component_yaml
from tenancy_files import start_daemon, tenant_yaml, wait_until

STORE = "pgstore"
USER = "hangar_app"
PASSWORD = "pw-" + secrets.token_hex(12)


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer().start()
    try:
        server.create_user(USER, PASSWORD)
        yield server
    finally:
        server.stop()


def start_node(factory, server: PostgresServer, apps_per_tenant: dict[str, list[str]], **metadata: str):
    tenants = {f"{ns}.yaml": tenant_yaml(ns, [{"appId": app} for app in apps]) for ns, apps in apps_per_tenant.items()}
    fields = {"connectionString": server.connection_string(USER, PASSWORD), "tablePrefix": metadata.pop("prefix")}
    fields.update(metadata)
    components = {"pg.yaml": postgres_component_yaml(STORE, fields)}
    apps = tuple((ns, app) for ns, names in apps_per_tenant.items() for app in names)
    return start_daemon(factory, tenants, components, apps=apps)


def prefix() -> str:
    return "e2e" + secrets.token_hex(4) + "_"


def test_two_tenants_share_one_component_and_the_same_key_stays_apart(hangard_factory, postgres):
    table_prefix = prefix()
    daemon = start_node(hangard_factory, postgres, {"team-a": ["orders"], "team-b": ["orders"]}, prefix=table_prefix)
    a, b = daemon.client("team-a", "orders"), daemon.client("team-b", "orders")
    key = unique()
    a.save_state(STORE, key, "from team-a")
    b.save_state(STORE, key, "from team-b")
    assert a.get_state(STORE, key).data == b"from team-a"
    assert b.get_state(STORE, key).data == b"from team-b"

    rows = postgres.psql(f"SELECT key || '=' || convert_from(value, 'UTF8') FROM {table_prefix}state ORDER BY key")
    assert rows.splitlines() == [f"team-a||orders||{key}=from team-a", f"team-b||orders||{key}=from team-b"]

    # ETags are the rows' UUIDs; one tenant's ETag does not reach the other's row.
    etag_a = a.get_state(STORE, key).etag
    assert etag_a == postgres.psql(f"SELECT etag::text FROM {table_prefix}state WHERE key = 'team-a||orders||{key}'")
    with pytest.raises(grpc.RpcError):
        b.save_state(STORE, key, "stolen", etag=etag_a)
    a.delete_state(STORE, key)
    assert a.get_state(STORE, key).data == b""
    assert b.get_state(STORE, key).data == b"from team-b"
    assert PASSWORD not in daemon.log


def test_a_wrong_password_leaves_the_component_down_and_no_password_is_shown(hangard_factory, postgres):
    wrong = "wrong-" + secrets.token_hex(8)
    tenants = {"team-a.yaml": tenant_yaml("team-a", [{"appId": "orders"}])}
    components = {
        "pg.yaml": postgres_component_yaml(
            STORE, {"connectionString": postgres.connection_string(USER, wrong), "tablePrefix": prefix()}
        )
    }
    daemon = start_daemon(hangard_factory, tenants, components, apps=(("team-a", "orders"),))
    orders = daemon.client("team-a", "orders")
    wait_until(lambda: orders.get_metadata().extended_metadata.get(f"hangar.health.{STORE}", "").startswith("DOWN"),
               timeout=10, interval=0.1)
    health = orders.get_metadata().extended_metadata[f"hangar.health.{STORE}"]
    assert "password authentication failed" in health, health
    with pytest.raises(grpc.RpcError) as refused:
        orders.save_state(STORE, "k", "v")
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    for text in (health, refused.value.details(), daemon.log):
        assert wrong not in text and PASSWORD not in text


def test_the_server_crashed_and_restarted_under_load_fails_fast_recovers_and_loses_no_acknowledged_write(
    hangard_factory, postgres
):
    table_prefix = prefix()
    apps = [f"app{i}" for i in range(4)]
    daemon = start_node(hangard_factory, postgres, {"team-a": apps}, prefix=table_prefix)
    clients = [daemon.client("team-a", app) for app in apps]
    stop = threading.Event()
    crashed_at = [time.monotonic() + 1e9]
    acknowledged: dict[tuple[str, str], str] = {}
    failures: list[tuple[float, grpc.StatusCode | None, str]] = []
    successes: list[float] = []
    lock = threading.Lock()

    def writer(index: int) -> None:
        client, app = clients[index], apps[index]
        n = 0
        while not stop.is_set():
            key, value = f"w{index}-{n}", f"value-{index}-{n}"
            n += 1
            start = time.monotonic()
            try:
                client.save_state(STORE, key, value)
            except grpc.RpcError as error:
                with lock:
                    elapsed = time.monotonic() - start
                    failures.append((elapsed, error.code(), f"{start - crashed_at[0]:.2f}s after the crash: {error.details()}"))
                time.sleep(0.02)
                continue
            with lock:
                acknowledged[(app, key)] = value
                successes.append(time.monotonic())
            time.sleep(0.005)

    threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(len(apps))]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(successes) >= 20, timeout=10)
        crashed_at[0] = time.monotonic()
        postgres.crash()
        crashed = time.monotonic()
        health = clients[0].get_metadata().extended_metadata
        wait_until(lambda: clients[0].get_metadata().extended_metadata.get(f"hangar.health.{STORE}", "")
                   .startswith("DOWN"), timeout=5, interval=0.05)
        time.sleep(2)
        with lock:
            during = len(failures)
        assert during >= 8, f"only {during} calls failed while the server was down"
        postgres.start()
        back = time.monotonic()
        wait_until(lambda: any(t > back for t in successes), timeout=5, interval=0.02)
        recovered = max(0.0, min(t for t in successes if t > back) - back)
        wait_until(lambda: clients[0].get_metadata().extended_metadata.get(f"hangar.health.{STORE}") == "UP",
                   timeout=5, interval=0.05)
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)

    assert crashed and health is not None
    assert recovered < 5, f"writes resumed {recovered:.2f}s after the server's return"
    slowest = max(failures, key=lambda failure: failure[0])
    assert slowest[0] < 1.0, f"a failing call took {slowest[0]:.2f}s: {slowest[2]}\n{daemon.log[-4000:]}"
    codes = {code for _, code, _ in failures}
    assert codes == {grpc.StatusCode.UNAVAILABLE}, codes

    stored = dict(
        line.split("=", 1)
        for line in postgres.psql(
            f"SELECT key || '=' || convert_from(value, 'UTF8') FROM {table_prefix}state"
        ).splitlines()
    )
    lost = [(app, key) for (app, key), value in acknowledged.items() if stored.get(f"team-a||{app}||{key}") != value]
    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged writes lost, e.g. {lost[:3]}"
    assert len(acknowledged) > 40
    assert PASSWORD not in daemon.log


def test_many_apps_on_one_node_use_at_most_max_conns_connections(hangard_factory, postgres):
    user = "pool_" + secrets.token_hex(3)
    password = "pw-" + secrets.token_hex(8)
    postgres.create_user(user, password)
    apps = {"team-a": [f"a{i}" for i in range(12)], "team-b": [f"b{i}" for i in range(12)]}
    tenants = {f"{ns}.yaml": tenant_yaml(ns, [{"appId": app} for app in names]) for ns, names in apps.items()}
    components = {
        "pg.yaml": postgres_component_yaml(
            STORE,
            {
                "connectionString": postgres.connection_string(user, password),
                "tablePrefix": prefix(),
                "metadataTableName": f"{user}_metadata",
            },
        )
    }
    pairs = [(ns, app) for ns, names in apps.items() for app in names]
    daemon = start_daemon(hangard_factory, tenants, components, apps=tuple(pairs))
    clients = {pair: daemon.client(*pair) for pair in pairs}
    stop = threading.Event()
    peak = 0

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, postgres.connection_count(user))
            time.sleep(0.05)

    def work(pair) -> int:
        client = clients[pair]
        for n in range(25):
            client.save_state(STORE, f"k{n % 5}", f"{pair[1]}-{n}")
            assert client.get_state(STORE, f"k{n % 5}").data == f"{pair[1]}-{n}".encode()
        return 25

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with ThreadPoolExecutor(max_workers=len(pairs)) as pool:
            assert sum(pool.map(work, pairs)) == 25 * len(pairs)
    finally:
        stop.set()
        sampler.join(5)
    assert 1 <= peak <= 8, f"the node held {peak} connections (maxConns defaults to 8)"


def test_a_namespaced_component_with_key_layout_dapr_reads_and_writes_daprs_rows_in_place(hangard_factory, postgres):
    table_prefix = prefix()
    tenants = {"team-a.yaml": tenant_yaml("team-a", [{"appId": "orders"}])}
    fields = {
        "connectionString": postgres.connection_string(USER, PASSWORD),
        "tablePrefix": table_prefix,
        "keyLayout": "dapr",
    }
    components = {"pg.yaml": postgres_component_yaml(STORE, fields, namespace="team-a")}
    daemon = start_daemon(hangard_factory, tenants, components, apps=(("team-a", "orders"),))
    orders = daemon.client("team-a", "orders")
    orders.save_state(STORE, "created-by-hangar", "h")  # the tables exist once the component is up

    # A row as daprd writes it for app `orders` (its doSet upsert), read through Hangar.
    postgres.psql(
        f"INSERT INTO {table_prefix}state AS t (key, value, etag, expires_at) "
        f"VALUES ('orders||greeting', convert_to('hello from dapr', 'UTF8'), gen_random_uuid(), NULL) "
        f"ON CONFLICT (key) DO UPDATE SET value = convert_to('hello from dapr', 'UTF8'), updated_at = now(), "
        f"etag = gen_random_uuid(), expires_at = NULL"
    )
    item = orders.get_state(STORE, "greeting")
    assert item.data == b"hello from dapr"
    assert item.etag == postgres.psql(f"SELECT etag::text FROM {table_prefix}state WHERE key = 'orders||greeting'")

    # Hangar's writes land under Dapr's key, with the ETag check daprd would make.
    orders.save_state(STORE, "greeting", "hello from hangar", etag=item.etag)
    assert postgres.psql(
        f"SELECT convert_from(value, 'UTF8') FROM {table_prefix}state WHERE key = 'orders||greeting'"
    ) == "hello from hangar"
    keys = postgres.psql(f"SELECT string_agg(key, ',' ORDER BY key) FROM {table_prefix}state")
    assert keys == "orders||created-by-hangar,orders||greeting"


def test_the_connection_string_from_a_secret_is_used_and_a_rotated_secret_is_picked_up(hangard_factory, postgres):
    """`connectionString` as a `secretKeyRef` into the tenant's own secret store (a kubelet-style directory), as
    Dapr's docs deploy it: a wrong password leaves the component DOWN; once the secret file holds the right one the
    component is made again from it, without a restart, and no password appears in the log."""
    wrong = "wrong-" + secrets.token_hex(8)
    root = hangard_factory.root()
    directory = root / "secrets" / "pg"
    directory.mkdir(parents=True)
    secret = directory / "connection"
    secret.write_text(postgres.connection_string(USER, wrong))
    component = "\n".join([
        "apiVersion: dapr.io/v1alpha1", "kind: Component", "metadata:", f"  name: {STORE}", "  namespace: team-a",
        "spec:", "  type: state.postgresql", "  version: v2", "  metadata:",
        "  - name: tablePrefix", f'    value: "{prefix()}"',
        "  - name: connectionString", "    secretKeyRef:", "      name: pg", "      key: connection",
        "auth:", "  secretStore: vault",
    ]) + "\n"
    vault = "\n".join([
        "apiVersion: dapr.io/v1alpha1", "kind: Component", "metadata:", "  name: vault", "  namespace: team-a",
        "spec:", "  type: secretstores.local.directory", "  version: v1", "  metadata:",
        "  - name: secretsDirectory", f'    value: "{root / "secrets"}"',
    ]) + "\n"
    daemon = start_daemon(
        hangard_factory, {"team-a.yaml": tenant_yaml("team-a", [{"appId": "orders"}])},
        {"pg.yaml": component, "vault.yaml": vault}, apps=(("team-a", "orders"),))
    orders = daemon.client("team-a", "orders")

    def health() -> str:
        return orders.get_metadata().extended_metadata.get(f"hangar.health.{STORE}", "")

    wait_until(lambda: health().startswith("DOWN"), timeout=10, interval=0.1)
    assert "password authentication failed" in health(), health()

    secret.write_text(postgres.connection_string(USER, PASSWORD))

    def saves() -> bool:
        try:
            orders.save_state(STORE, "k", "from the rotated secret")
            return True
        except grpc.RpcError:
            return False

    wait_until(saves, timeout=15, interval=0.2)
    assert orders.get_state(STORE, "k").data == b"from the rotated secret"
    assert health().startswith("UP"), health()
    for text in (health(), daemon.log):
        assert wrong not in text and PASSWORD not in text


def test_max_state_bytes_holds_one_tenant_on_a_shared_component_and_survives_a_restart(hangard_factory, postgres):
    """`spec.quotas.maxStateBytes` on state.postgresql: the usage is counted in PostgreSQL (`<prefix>hangar_usage`),
    a write over it is RESOURCE_EXHAUSTED and changes nothing, the other tenant on the same component is unaffected,
    and the count holds across a restart."""
    table_prefix = prefix()
    tenants = {
        f"{ns}.yaml": tenant_yaml(ns, [{"appId": "app"}], quotas={"maxStateBytes": 1000}) for ns in ("small", "other")
    }
    fields = {"connectionString": postgres.connection_string(USER, PASSWORD), "tablePrefix": table_prefix}
    components = {"pg.yaml": postgres_component_yaml(STORE, fields)}
    daemon = start_daemon(hangard_factory, tenants, components, apps=(("small", "app"), ("other", "app")))
    small, other = daemon.client("small", "app"), daemon.client("other", "app")
    # Physical key "small||app||a" is 13 bytes: 13 + 600 = 613 bytes stored; 613 + 613 > 1000.
    small.save_state(STORE, "a", "x" * 600)
    with pytest.raises(grpc.RpcError) as error:
        small.save_state(STORE, "b", "y" * 600)
    info = expect_quota(error, "maxStateBytes", 1000, "tenant")
    assert info["store"] == STORE
    assert small.get_state(STORE, "b").data == b""
    # The other tenant, on the same component and table, has its own budget.
    other.save_state(STORE, "b", "z" * 900)
    usage = postgres.psql(
        f"SELECT string_agg(partition || '=' || total, ',' ORDER BY partition) FROM "
        f"(SELECT partition, sum(bytes) AS total FROM {table_prefix}hangar_usage GROUP BY partition) p"
    )
    assert usage == "other=913,small=613"
    # Shrinking and deleting free room: 313 + 613 = 926.
    small.save_state(STORE, "a", "x" * 300)
    small.save_state(STORE, "b", "y" * 600)

    daemon.stop()
    daemon.start()
    small = daemon.client("small", "app")
    with pytest.raises(grpc.RpcError) as error:
        small.save_state(STORE, "c", "w" * 200)  # 926 + 213 > 1000
    expect_quota(error, "maxStateBytes", 1000, "tenant")
    small.delete_state(STORE, "b")
    small.save_state(STORE, "c", "w" * 200)
    assert small.get_state(STORE, "c").data == b"w" * 200
    assert daemon.client("other", "app").get_state(STORE, "b").data == b"z" * 900
