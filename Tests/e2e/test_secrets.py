"""Secrets end to end, with the official Python SDK over each app's Unix sockets.

A secret store declared in a namespace is that tenant's alone; a node-wide store serves only node-wide components'
`secretKeyRef`s, never an app. A Configuration's `spec.secrets.scopes` narrows what its apps read. A `secretKeyRef`
feeds a component's metadata when the component is created, and a change of the secret file (a rewritten JSON
file, a kubelet `..data` swap) re-creates the component with the new value. Secret values reach no log line, no
`/healthz/detail`, no `GetMetadata` and no error message.
"""

from __future__ import annotations

import http.client
import json
import os
import sqlite3
from pathlib import Path

import grpc
import pytest

from hangar_e2e import free_port, unique
from tenancy_files import dedent, start_daemon, tenant_yaml, wait_until, write_atomically

APPS = (("team-a", "orders"), ("team-a", "billing"), ("team-b", "orders"))

# Distinctive values, so that finding one in a log is never a coincidence.
A_KEY = "a-key-5b1f9c"
A_ADMIN = "a-admin-0d7e44"
A_TABLE = "team_a_table_c41d"
A_ROTATED = "team_a_rotated_9e02"
B_KEY = "b-key-77aa31"
B_ROTATED = "b-key-rotated-3c8d"
ENV_VALUE = "env-a-e5d214"
# Not a valid SQLite table name: the node-wide store that reads it is refused by SQLite's checks, which quote it.
NODE_VALUE = "NODE-SECRET-9f8e7d"


def component(name: str, type_: str, namespace: str | None, metadata: dict[str, str], refs=None, store=None) -> str:
    lines = ["apiVersion: dapr.io/v1alpha1", "kind: Component", "metadata:", f"  name: {name}"]
    if namespace:
        lines.append(f"  namespace: {namespace}")
    lines += ["spec:", f"  type: {type_}", "  version: v1", "  metadata:"]
    for key, value in metadata.items():
        lines += [f"  - name: {key}", f'    value: "{value}"']
    for key, (secret, secret_key) in (refs or {}).items():
        lines += [f"  - name: {key}", "    secretKeyRef:", f"      name: {secret}", f"      key: {secret_key}"]
    if store:
        lines += ["auth:", f"  secretStore: {store}"]
    return "\n".join(lines) + "\n"


def kubelet_version(directory: Path, version: str, pairs: dict[str, str]) -> None:
    """One version of a mounted Secret as kubelet writes it: `..<version>/` with the files, `..data` renamed over
    to point at it, and one `<key> -> ..data/<key>` link per key."""
    versioned = directory / f"..{version}"
    versioned.mkdir(parents=True)
    for key, value in pairs.items():
        (versioned / key).write_text(value)
    os.symlink(f"..{version}", directory / "..data_tmp")
    os.replace(directory / "..data_tmp", directory / "..data")
    for key in pairs:
        if not (directory / key).is_symlink():
            os.symlink(f"..data/{key}", directory / key)


def start_node(hangard_factory, monkeypatch):
    """team-a (orders, billing): file store `vault` (multi-valued), env store `env`, state store `store` whose
    tableName comes from `vault`, and a Configuration scoping `vault`. team-b (orders): directory store `vault`
    (a kubelet-mounted Secret). Node-wide: file store `node-secrets` and state store `shared`, whose tableName
    comes from it."""
    secrets = hangard_factory.root()
    team_a = secrets / "team-a.json"
    team_a.write_text(json.dumps({"db": {"table": A_TABLE}, "api-key": A_KEY, "admin": A_ADMIN}))
    (secrets / "node.json").write_text(json.dumps({"node-token": NODE_VALUE}))
    mounted = secrets / "team-b"
    kubelet_version(mounted, "2024_01_01_v1", {"api-key": B_KEY})
    monkeypatch.setenv("E2E_TEAM_A_TOKEN", ENV_VALUE)
    configuration = dedent(
        """
        apiVersion: dapr.io/v1alpha1
        kind: Configuration
        metadata: {name: appconfig, namespace: team-a}
        spec:
          secrets:
            scopes:
              - storeName: vault
                defaultAccess: deny
                allowedSecrets: [db, api-key]
        """
    )
    metrics_port = free_port()
    daemon = start_daemon(
        hangard_factory,
        {
            "a.yaml": tenant_yaml("team-a", [{"appId": "orders"}, {"appId": "billing"}]),
            "b.yaml": tenant_yaml("team-b", [{"appId": "orders"}]),
        },
        {
            "a-vault.yaml": component(
                "vault", "secretstores.local.file", "team-a", {"secretsFile": str(team_a), "multiValued": "true"}
            ),
            "a-env.yaml": component("env", "secretstores.local.env", "team-a", {"prefix": "E2E_TEAM_A_"}),
            "a-store.yaml": component(
                "store", "state.sqlite", "team-a", {"connectionString": "a.db"}, {"tableName": ("db", "table")}, "vault"
            ),
            "a-config.yaml": configuration,
            "b-vault.yaml": component("vault", "secretstores.local.directory", "team-b", {"secretsDirectory": str(mounted)}),
            "node-secrets.yaml": component(
                "node-secrets", "secretstores.local.file", None, {"secretsFile": str(secrets / "node.json")}
            ),
            "shared.yaml": component(
                "shared", "state.sqlite", None, {"connectionString": "shared.db"},
                {"tableName": ("node-token", "node-token")}, "node-secrets",
            ),
        },
        apps=APPS,
        extra_args=("--metrics-listen", f"127.0.0.1:{metrics_port}"),
    )
    return daemon, metrics_port, team_a, mounted


def health_detail(port: int) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/healthz/detail")
        return connection.getresponse().read().decode()
    finally:
        connection.close()


def tables(daemon, database: str) -> set[str]:
    with sqlite3.connect(daemon.data_dir / database) as connection:
        return {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_each_tenant_reads_only_its_own_stores(hangard_factory, monkeypatch):
    daemon, _, _, _ = start_node(hangard_factory, monkeypatch)
    a, b = daemon.client("team-a", "orders"), daemon.client("team-b", "orders")

    assert a.get_secret("vault", "api-key").secret == {"api-key": A_KEY}
    assert a.get_secret("vault", "db").secret == {"table": A_TABLE}
    assert b.get_secret("vault", "api-key").secret == {"api-key": B_KEY}
    assert b.get_bulk_secret("vault").secrets == {"api-key": {"api-key": B_KEY}}
    assert a.get_secret("env", "TOKEN").secret == {"TOKEN": ENV_VALUE}

    # team-b cannot reach team-a's stores, not even by a name that exists there, nor the node's.
    for client, store in ((b, "env"), (b, "node-secrets"), (a, "node-secrets")):
        with pytest.raises(grpc.RpcError) as error:
            client.get_secret(store, "api-key")
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value
        assert error.value.details() == f"failed finding secret store with key {store}"
    result = daemon.http("team-b", "orders", "GET", "/v1.0/secrets/env/TOKEN")
    assert result.status == 401 and result.json()["errorCode"] == "ERR_SECRET_STORE_NOT_FOUND", result

    # The same over HTTP, request metadata passed through.
    result = daemon.http("team-a", "orders", "GET", "/v1.0/secrets/vault/api-key?metadata.version_id=1")
    assert result.status == 200 and result.json() == {"api-key": A_KEY}, result
    result = daemon.http("team-b", "orders", "GET", "/v1.0/secrets/vault/bulk")
    assert result.status == 200 and result.json() == {"api-key": {"api-key": B_KEY}}, result
    result = daemon.http("team-b", "orders", "GET", "/v1.0/secrets/vault/missing")
    assert result.status == 500 and result.json()["errorCode"] == "ERR_SECRET_GET", result

    names = {component.name for component in b.get_metadata().registered_components}
    assert "vault" in names and "node-secrets" not in names and "env" not in names


def test_configuration_scopes_allow_and_deny(hangard_factory, monkeypatch):
    daemon, _, _, _ = start_node(hangard_factory, monkeypatch)
    billing = daemon.client("team-a", "billing")
    assert billing.get_secret("vault", "api-key").secret == {"api-key": A_KEY}
    with pytest.raises(grpc.RpcError) as error:
        billing.get_secret("vault", "admin")
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED, error.value
    assert error.value.details() == 'access denied by policy to get "admin" from "vault"'
    result = daemon.http("team-a", "orders", "GET", "/v1.0/secrets/vault/admin")
    assert result.status == 403 and result.json()["errorCode"] == "ERR_PERMISSION_DENIED", result
    # Bulk leaves out what the scope denies.
    assert set(billing.get_bulk_secret("vault").secrets) == {"db", "api-key"}
    # A store without a scope allows everything.
    assert billing.get_secret("env", "TOKEN").secret == {"TOKEN": ENV_VALUE}


def test_secret_key_ref_feeds_a_component_and_a_changed_file_recreates_it(hangard_factory, monkeypatch):
    daemon, _, team_a, _ = start_node(hangard_factory, monkeypatch)
    a = daemon.client("team-a", "orders")
    a.save_state("store", unique(), b"v")
    assert A_TABLE in tables(daemon, "a.db"), "the table named by the secret was not used"

    team_a_data = json.loads(team_a.read_text())
    team_a_data["db"]["table"] = A_ROTATED
    write_atomically(team_a, json.dumps(team_a_data))

    def rotated() -> bool:
        try:
            a.save_state("store", unique(), b"v")
        except grpc.RpcError:
            return False
        return A_ROTATED in tables(daemon, "a.db")

    wait_until(rotated, timeout=10, interval=0.1)
    assert a.get_secret("vault", "db").secret == {"table": A_ROTATED}
    assert daemon.wait_for_log("component changed", "store"), daemon.log


def test_a_kubelet_secret_swap_is_served_without_a_restart(hangard_factory, monkeypatch):
    daemon, _, _, mounted = start_node(hangard_factory, monkeypatch)
    b = daemon.client("team-b", "orders")
    assert b.get_secret("vault", "api-key").secret == {"api-key": B_KEY}
    kubelet_version(mounted, "2024_01_02_v2", {"api-key": B_ROTATED})
    wait_until(lambda: b.get_secret("vault", "api-key").secret == {"api-key": B_ROTATED}, timeout=10, interval=0.1)


def test_unresolvable_reference_is_down_named_and_secrets_are_never_shown(hangard_factory, monkeypatch):
    daemon, metrics_port, _, _ = start_node(hangard_factory, monkeypatch)
    a = daemon.client("team-a", "orders")
    # The rest of the node serves.
    a.save_state("store", unique(), b"v")
    detail = health_detail(metrics_port)
    shared = next(c for c in json.loads(detail)["components"] if c["name"] == "shared")
    assert shared["status"] == "DOWN", shared
    assert "[redacted]" in shared["error"], shared
    # Callers of the DOWN store are told why, masked.
    with pytest.raises(grpc.RpcError) as error:
        a.get_state("shared", "k")
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE, error.value
    assert "[redacted]" in error.value.details() and NODE_VALUE not in error.value.details(), error.value.details()
    line = daemon.wait_for_log("component failed to initialise", "shared")
    assert line and "[redacted]" in line, daemon.log

    for client in (a, daemon.client("team-b", "orders")):
        client.get_secret("vault", "api-key")
        assert NODE_VALUE not in str(client.get_metadata().extended_metadata)
    log = daemon.log
    for value in (A_KEY, A_ADMIN, A_TABLE, B_KEY, ENV_VALUE, NODE_VALUE):
        assert value not in log, f"secret value {value} in the log"
        assert value not in detail, f"secret value {value} in /healthz/detail"


def test_a_reference_to_a_missing_store_or_key_names_them(hangard_factory, monkeypatch):
    daemon, metrics_port, team_a, _ = start_node(hangard_factory, monkeypatch)
    write_atomically(
        daemon.resources / "a-broken.yaml",
        component(
            "broken", "state.sqlite", "team-a", {"connectionString": "b.db"}, {"tableName": ("db", "nope")}, "vault"
        ),
    )
    write_atomically(
        daemon.resources / "a-elsewhere.yaml",
        component(
            "elsewhere", "state.sqlite", "team-a", {"connectionString": "e.db"}, {"tableName": ("x", "y")},
            "node-secrets",
        ),
    )

    def errors() -> dict[str, str]:
        document = json.loads(health_detail(metrics_port))
        return {c["name"]: c.get("error", "") for c in document["components"] if c["status"] == "DOWN"}

    wait_until(lambda: {"broken", "elsewhere"} <= set(errors()), timeout=10, interval=0.1)
    down = errors()
    assert "secretKeyRef {name: db, key: nope} of secret store 'vault' in namespace 'team-a'" in down["broken"], down
    assert "secret db has no key nope" in down["broken"], down
    assert "secret store 'node-secrets' (auth.secretStore) is not declared in namespace 'team-a'" in down["elsewhere"]
    # The rest of the node serves.
    daemon.client("team-a", "orders").save_state("store", unique(), b"v")


def test_hostile_store_and_secret_names_get_clear_errors_and_reach_no_file(hangard_factory, monkeypatch):
    """A secret name like `../x` is a name, never a path: the directory store answers from what it read, so
    nothing outside its directory is reachable; a store name like `a||b` is just not found."""
    daemon, _, _, mounted = start_node(hangard_factory, monkeypatch)
    outside = mounted.parent / "outside"
    outside.write_text("must not be read")
    # A path with a dot segment or no name matches no route; any other name is looked up and not found (Dapr's
    # ERR_SECRET_GET, 500).
    for name, status in (("../outside", 404), ("", 404), ("..%2Foutside", 500), ("a||b", 500), ("..data", 500)):
        result = daemon.http("team-b", "orders", "GET", f"/v1.0/secrets/vault/{name}")
        assert result.status == status, (name, result)
        if status == 500:
            assert result.json()["errorCode"] == "ERR_SECRET_GET", (name, result)
        assert b"must not be read" not in result.body, name
    result = daemon.http("team-b", "orders", "GET", "/v1.0/secrets/a||b/x")
    assert result.status in (400, 401), result
    assert daemon.running
