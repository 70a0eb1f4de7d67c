"""No cross-tenant access: a test matrix over tenants, apps, transports, keys, components, tokens and sockets.

The daemon under test serves two tenants with two apps each, all four with the same two app ids, so that every
check has an "other tenant, same app id" and an "other app, same tenant" neighbour:

    team-a/orders  (apiToken)        team-a/billing  (sockets only)
    team-b/orders  (apiTokenFile)    team-b/billing  (sockets only)

Every case is driven over gRPC (the official Dapr SDK on the app's Unix socket, or on the TCP listener with a
token) and over HTTP (raw HTTP/1.1 on the app's Unix HTTP socket, or on the TCP listener with a token), and checks
exact values, ETags and error codes. SQLite files are also read directly (read-only) to show that a refused
request wrote nothing and that every physical key begins with its writer's namespace. The key matrix also runs on
the shared network backends, `state.redis` and `state.postgresql` (real servers on loopback, started for the
module), where every tenant's items live in one database.

Most tests share one daemon (`node`, module scope) with its own tenancy and resource files and random tokens (no
quotas configured, so the defaults apply, far above what this file sends). Tests that need their own
configuration use `hangard_factory`. The socket tests that switch uid with `setpriv` need root.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

import grpc
import pytest
from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType
from dapr.clients.grpc._state import StateItem

from backend_servers import RedisProcess
from hangar_e2e import (
    HANGARD, Hangard, HTTPResult, free_port, grpc_error_info, sdk_environment, short_tempdir, unique,
)
from postgres_fixtures import SUPER_PASSWORD, PostgresServer, postgres_component_yaml

APPS = (("team-a", "orders"), ("team-a", "billing"), ("team-b", "orders"), ("team-b", "billing"))
TOKEN_A = "iso-a-" + secrets.token_hex(24)  # team-a/orders, inline apiToken
TOKEN_B = "iso-b-" + secrets.token_hex(24)  # team-b/orders, apiTokenFile
TOKENS = {("team-a", "orders"): TOKEN_A, ("team-b", "orders"): TOKEN_B}
TRANSPORTS = ("grpc", "http")

# ---------------------------------------------------------------------------------------------------------------
# Configuration of the shared daemon.

TENANTS = {
    "team-a.yaml": f"""\
apiVersion: hangar.dev/v1alpha1
kind: Tenant
metadata:
  name: team-a
spec:
  apps:
    - appId: orders
      apiToken: "{TOKEN_A}"
    - appId: billing
""",
    "team-b.yaml": """\
apiVersion: hangar.dev/v1alpha1
kind: Tenant
metadata:
  name: team-b
spec:
  apps:
    - appId: orders
      apiTokenFile: team-b-orders.token
    - appId: billing
""",
}

# Key-prefix policies, all on ONE SQLite table (prefixes.db, table state), so that a collision between any two
# policies of any two callers would show. (component name, keyPrefix value or None for the default)
PREFIX_POLICIES = (
    ("p-appid", None),
    ("p-name", "name"),
    ("p-namespace", "namespace"),
    ("p-none", "none"),
    ("p-lit-team-b", "team-b"),  # a literal spelled like the other tenant's namespace
    ("p-lit-orders", "orders"),  # a literal spelled like an app id
)


def component_yaml(name: str, type_: str, *, namespace: str | None = None, scopes: tuple[str, ...] = (),
                   metadata: dict[str, str] | None = None) -> str:
    text = f"apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\n"
    if namespace:
        text += f"  namespace: {namespace}\n"
    text += f"spec:\n  type: {type_}\n  version: v1\n"
    if metadata:
        text += "  metadata:\n" + "".join(
            f"    - name: {k}\n      value: {json.dumps(v)}\n" for k, v in metadata.items()
        )
    if scopes:
        text += "scopes:\n" + "".join(f"  - {s}\n" for s in scopes)
    return text


RESOURCES = {
    "statestore.yaml": component_yaml("statestore", "state.sqlite", metadata={"connectionString": "state.db"}),
    "memstore.yaml": component_yaml("memstore", "state.in-memory"),
    # team-a only.
    "cache.yaml": component_yaml("cache", "state.in-memory", namespace="team-a"),
    # Every tenant, apps called billing only.
    "audit.yaml": component_yaml(
        "audit", "state.sqlite", scopes=("billing",), metadata={"connectionString": "audit.db", "tableName": "audit"}
    ),
    # team-b, apps called billing only.
    "ledger.yaml": component_yaml("ledger", "state.in-memory", namespace="team-b", scopes=("billing",)),
    # A shared sqlite store, hidden for team-a by team-a's own in-memory store of the same name.
    "shadowed.yaml": component_yaml("shadowed", "state.sqlite", metadata={"connectionString": "shadowed.db"}),
    "shadowed-team-a.yaml": component_yaml("shadowed", "state.in-memory", namespace="team-a"),
    **{
        f"{name}.yaml": component_yaml(
            name, "state.sqlite",
            metadata={"connectionString": "prefixes.db", **({"keyPrefix": prefix} if prefix is not None else {})},
        )
        for name, prefix in PREFIX_POLICIES
    },
}
PREFIX_STORES = {name for name, _ in PREFIX_POLICIES}

# What each app may use: GetMetadata must list exactly these (name -> type), and nothing else is usable.
VISIBLE = {
    ("team-a", "orders"): {"statestore": "state.sqlite", "memstore": "state.in-memory", "cache": "state.in-memory",
                           "shadowed": "state.in-memory"},
    ("team-a", "billing"): {"statestore": "state.sqlite", "memstore": "state.in-memory", "cache": "state.in-memory",
                            "shadowed": "state.in-memory", "audit": "state.sqlite"},
    ("team-b", "orders"): {"statestore": "state.sqlite", "memstore": "state.in-memory", "shadowed": "state.sqlite"},
    ("team-b", "billing"): {"statestore": "state.sqlite", "memstore": "state.in-memory", "shadowed": "state.sqlite",
                            "audit": "state.sqlite", "ledger": "state.in-memory"},
}
for _visible in VISIBLE.values():
    _visible.update({name: "state.sqlite" for name in PREFIX_STORES})
    _visible.update({"redisstore": "state.redis", "pgstore": "state.postgresql"})


def write_config(root: Path, backends: dict[str, str] | None = None) -> tuple[Path, Path]:
    """The daemon's tenancy and resources; `backends` adds components (file name -> document) on servers started
    for the module."""
    tenancy, resources = root / "tenancy", root / "resources"
    tenancy.mkdir()
    resources.mkdir()
    for name, text in TENANTS.items():
        (tenancy / name).write_text(text)
    (tenancy / "team-b-orders.token").write_text(TOKEN_B + "\n")
    for name, text in {**RESOURCES, **(backends or {})}.items():
        (resources / name).write_text(text)
    return tenancy, resources


# ---------------------------------------------------------------------------------------------------------------
# One caller API over both transports. Values are strings; refusals are raised as `Refused`, normalised.


class Refused(Exception):
    """A Dapr error: `status` is the grpc.StatusCode (gRPC) or the HTTP status (HTTP)."""

    def __init__(self, transport: str, status: Any, error_code: str | None, reason: str | None, message: str):
        super().__init__(f"{transport} {status} {error_code} {reason}: {message}")
        self.transport, self.status, self.error_code, self.reason, self.message = (
            transport, status, error_code, reason, message)


@dataclass(frozen=True)
class Expected:
    grpc_status: grpc.StatusCode
    http_status: int
    error_code: str
    reason: str


NOT_FOUND = Expected(grpc.StatusCode.INVALID_ARGUMENT, 400, "ERR_STATE_STORE_NOT_FOUND", "DAPR_STATE_NOT_FOUND")
ILLEGAL_KEY = Expected(grpc.StatusCode.INVALID_ARGUMENT, 400, "ERR_MALFORMED_REQUEST", "DAPR_STATE_ILLEGAL_KEY")
UNAUTHENTICATED = Expected(grpc.StatusCode.UNAUTHENTICATED, 401, "ERR_UNAUTHENTICATED", "DAPR_API_TOKEN_INVALID")
# Another item's ETag is either a mismatch or, where ETags are sealed per tenant (unsealed with the wrong
# tenant's key it may not even be a valid store ETag), invalid: both refuse the write.
SAVE_ETAG_REFUSED = (
    Expected(grpc.StatusCode.ABORTED, 409, "ERR_STATE_SAVE", "DAPR_STATE_ETAG_MISMATCH"),
    Expected(grpc.StatusCode.INVALID_ARGUMENT, 400, "ERR_STATE_SAVE", "DAPR_STATE_ETAG_INVALID"),
)
DELETE_ETAG_REFUSED = (
    Expected(grpc.StatusCode.ABORTED, 409, "ERR_STATE_DELETE", "DAPR_STATE_ETAG_MISMATCH"),
    Expected(grpc.StatusCode.INVALID_ARGUMENT, 400, "ERR_STATE_DELETE", "DAPR_STATE_ETAG_INVALID"),
)


def assert_refusal(error: Refused, expected: Expected, what: str = "") -> Refused:
    status = expected.grpc_status if error.transport == "grpc" else expected.http_status
    got = (error.status, error.error_code, error.reason)
    assert got == (status, expected.error_code, expected.reason), f"{what}: {error}"
    return error


def refused(call: Callable[[], Any], expected: Expected, what: str = "") -> Refused:
    """Runs `call`, which must be refused exactly as `expected`."""
    try:
        result = call()
    except Refused as error:
        return assert_refusal(error, expected, what)
    pytest.fail(f"{what}: expected {expected}, but the call succeeded with {result!r}")


def error_info(error: grpc.RpcError) -> dict[str, Any]:
    """The ErrorInfo of a gRPC error: from the SDK's error (`grpc_error_info`), or, for a call made on the SDK's
    generated stub (a plain grpc error), decoded from its grpc-status-details-bin trailer."""
    info = grpc_error_info(error) if hasattr(error, "status_details") else {}
    if info or not hasattr(error, "trailing_metadata"):
        return info
    from google.protobuf.json_format import MessageToDict
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    try:
        status = rpc_status.from_call(error)
    except ValueError:  # the status in the trailer disagrees with the call's (a client-side failure)
        return {}
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            unpacked = error_details_pb2.ErrorInfo()
            detail.Unpack(unpacked)
            return MessageToDict(unpacked)
    return {}


class GrpcCaller:
    transport = "grpc"

    def __init__(self, client: Any, label: str):
        self.client, self.label = client, label

    def __repr__(self) -> str:
        return f"grpc:{self.label}"

    def _run(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except grpc.RpcError as error:
            info = error_info(error)
            raise Refused("grpc", error.code(), (info.get("metadata") or {}).get("errorCode"), info.get("reason"),
                          error.details() or "") from None

    def save(self, store: str, key: str, value: str, etag: str | None = None) -> None:
        self._run(lambda: self.client.save_state(store, key, value, etag=etag))

    def save_many(self, store: str, items: list[tuple[str, str]]) -> None:
        self._run(lambda: self.client.save_bulk_state(store, [StateItem(key=k, value=v) for k, v in items]))

    def get(self, store: str, key: str) -> tuple[str | None, str | None]:
        response = self._run(lambda: self.client.get_state(store, key))
        return (response.data.decode(), response.etag) if response.data else (None, None)

    def delete(self, store: str, key: str, etag: str | None = None) -> None:
        self._run(lambda: self.client.delete_state(store, key, etag=etag))

    def bulk_get(self, store: str, keys: list[str]) -> dict[str, str | None]:
        items = self._run(lambda: self.client.get_bulk_state(store, keys)).items
        assert all(not i.error for i in items), [i.error for i in items]
        return {i.key: (i.data.decode() if i.data else None) for i in items}

    def transact(self, store: str, operations: list[tuple[str, str, str | None]]) -> None:
        ops = [
            TransactionalStateOperation(key=k, data=v or "", operation_type=TransactionOperationType[op])
            for op, k, v in operations
        ]
        self._run(lambda: self.client.execute_state_transaction(store, ops))

    def bulk_delete(self, store: str, keys: list[str]) -> None:
        """DeleteBulkState: the SDK has no wrapper, its generated stub is the client."""
        from dapr.proto.common.v1 import common_pb2
        from dapr.proto.runtime.v1 import state_pb2

        request = state_pb2.DeleteBulkStateRequest(store_name=store, states=[common_pb2.StateItem(key=k) for k in keys])
        self._run(lambda: self.client._stub.DeleteBulkState(request, timeout=10))

    def metadata(self) -> dict[str, Any]:
        m = self._run(self.client.get_metadata)
        return {"id": m.application_id, "extended": dict(m.extended_metadata),
                "components": {c.name: c.type for c in m.registered_components}}

    def set_metadata(self, name: str, value: str) -> None:
        self._run(lambda: self.client.set_metadata(name, value))


class HttpCaller:
    transport = "http"

    def __init__(self, send: Callable[..., HTTPResult], label: str, headers: dict[str, str] | None = None):
        self.send, self.label, self.headers = send, label, dict(headers or {})

    def __repr__(self) -> str:
        return f"http:{self.label}"

    def _run(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> HTTPResult:
        result = self.send(method, path, body, {**self.headers, **(headers or {})})
        if result.status >= 400:
            try:
                answer = result.json()
            except ValueError:
                answer = {}
            details = answer.get("details") or [{}]
            raise Refused("http", result.status, answer.get("errorCode"), details[0].get("reason"),
                          answer.get("message", result.body.decode(errors="replace")))
        return result

    @staticmethod
    def _path(store: str, key: str | None = None) -> str:
        path = f"/v1.0/state/{quote(store, safe='')}"
        return path if key is None else f"{path}/{quote(key, safe='')}"

    def save(self, store: str, key: str, value: str, etag: str | None = None) -> None:
        item: dict[str, Any] = {"key": key, "value": value}
        if etag is not None:
            item["etag"] = etag
        assert self._run("POST", self._path(store), [item]).status == 204

    def save_many(self, store: str, items: list[tuple[str, str]]) -> None:
        assert self._run("POST", self._path(store), [{"key": k, "value": v} for k, v in items]).status == 204

    def get(self, store: str, key: str) -> tuple[str | None, str | None]:
        result = self._run("GET", self._path(store, key))
        if result.status == 204:
            assert result.body == b"", result
            return None, None
        assert result.status == 200, result
        return json.loads(result.body), result.headers.get("etag")

    def delete(self, store: str, key: str, etag: str | None = None) -> None:
        headers = {"If-Match": etag} if etag is not None else {}
        assert self._run("DELETE", self._path(store, key), headers=headers).status == 204

    def bulk_get(self, store: str, keys: list[str]) -> dict[str, str | None]:
        items = self._run("POST", self._path(store) + "/bulk", {"keys": keys}).json()
        assert all("error" not in i for i in items), items
        return {i["key"]: i.get("data") for i in items}

    def transact(self, store: str, operations: list[tuple[str, str, str | None]]) -> None:
        body = {"operations": [
            {"operation": op, "request": {"key": k, **({"value": v} if v is not None else {})}}
            for op, k, v in operations
        ]}
        assert self._run("POST", self._path(store) + "/transaction", body).status == 204

    def bulk_delete(self, store: str, keys: list[str]) -> None:  # Dapr's HTTP API has none
        raise NotImplementedError

    def metadata(self) -> dict[str, Any]:
        answer = self._run("GET", "/v1.0/metadata").json()
        return {"id": answer["id"], "extended": answer["extended"],
                "components": {c["name"]: c["type"] for c in answer["components"]}}

    def set_metadata(self, name: str, value: str) -> None:
        assert self._run("PUT", f"/v1.0/metadata/{quote(name, safe='')}", value).status == 204


class Node:
    """The shared daemon and cached callers (one SDK client per app, so connections do not pile up)."""

    def __init__(self, daemon: Hangard):
        self.daemon = daemon
        self._grpc: dict[Any, Any] = {}

    def socket(self, ns: str, app: str, transport: str, token: str | None = None):
        """A caller on the app's Unix socket (optionally sending a dapr-api-token, which must be ignored)."""
        if transport == "grpc":
            key = ("unix", ns, app, token)
            if key not in self._grpc:
                if token is None:
                    self._grpc[key] = self.daemon.client(ns, app)
                else:
                    from dapr.clients import DaprClient

                    with sdk_environment(self.daemon.http_port, token):
                        client = DaprClient(address=f"unix://{self.daemon.grpc_socket(ns, app)}")
                    self.daemon._clients.append(client)
                    self._grpc[key] = client
            return GrpcCaller(self._grpc[key], f"{ns}/{app}" + (" +token" if token else ""))
        headers = {"dapr-api-token": token} if token is not None else {}
        return HttpCaller(lambda *a: self.daemon.http(ns, app, *a), f"{ns}/{app}" + (" +token" if token else ""),
                          headers)

    def tcp(self, token: str | None, transport: str):
        """A caller on the TCP listeners, identified by `token`."""
        if transport == "grpc":
            key = ("tcp", token)
            if key not in self._grpc:
                self._grpc[key] = self.daemon.tcp_client(token)
            return GrpcCaller(self._grpc[key], f"tcp token={token!r:.12}")
        headers = {"dapr-api-token": token} if token is not None else {}
        return HttpCaller(self.daemon.tcp_http, f"tcp token={token!r:.12}", headers)

    def rows(self, db: str, table: str = "state") -> dict[str, bytes]:
        """Every row of a SQLite state table, read directly (read-only) while the daemon runs."""
        connection = sqlite3.connect(f"file:{self.daemon.data_dir / db}?mode=ro", uri=True, timeout=5)
        try:
            return dict(connection.execute(f'SELECT key, value FROM "{table}"').fetchall())
        finally:
            connection.close()


@pytest.fixture(scope="module")
def node():
    root = short_tempdir()
    redis = RedisProcess()
    postgres = PostgresServer().start()
    try:
        backends = {
            "redisstore.yaml": component_yaml("redisstore", "state.redis", metadata={"redisHost": redis.address}),
            "pgstore.yaml": postgres_component_yaml(
                "pgstore", {"connectionString": postgres.connection_string("postgres", SUPER_PASSWORD)}),
        }
        tenancy, resources = write_config(root, backends)
        daemon = Hangard(root, tenancy=tenancy, resources=resources, apps=APPS)
        try:
            daemon.start()
            yield Node(daemon)
            daemon.stop()
        finally:
            daemon.kill()
    finally:
        redis.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


def stored(value: str, transport: str) -> bytes:
    """How a string value written over `transport` is stored: raw over gRPC, as JSON text over HTTP."""
    return value.encode() if transport == "grpc" else json.dumps(value).encode()


# ---------------------------------------------------------------------------------------------------------------
# 1. State keys.

KEY_KINDS = {
    "plain": lambda u: f"order-{u}",
    "dot-dot": lambda u: f"../{u}",
    "dot-dot-to-other-tenant": lambda u: f"../../team-b/orders/{u}",
    "slash": lambda u: f"team-b/orders/{u}",
    "percent-2F": lambda u: f"team-b%2Forders%2F{u}",
    "unicode": lambda u: f"ключ-ü-\u00e9-e\u0301-🔑-{u}",
    "nul-byte": lambda u: f"team-a\x00team-b-{u}",
    "single-bars": lambda u: f"|team-b|orders|{u}|",
    "long": lambda u: "L" * 2048 + u,
    "very-long": lambda u: "V" * 65536 + u,
}


def etag_refusal(call: Callable[[], Any], expected: tuple[Expected, ...], what: str, kind: str) -> None:
    """The call must be refused as one of `expected`, even for a 64 KiB key: error messages quote at most 128
    characters of a key, so the error fits in gRPC trailers (8 KiB soft limit in the client)."""
    try:
        result = call()
    except Refused as error:
        got = (error.status, error.error_code, error.reason)
        allowed = [
            (e.grpc_status if error.transport == "grpc" else e.http_status, e.error_code, e.reason) for e in expected
        ]
        assert got in allowed, f"{what}: {error}"
        return
    pytest.fail(f"{what}: expected one of {expected}, but the call succeeded with {result!r}")


@pytest.mark.parametrize("kind", list(KEY_KINDS))
@pytest.mark.parametrize("store", ["statestore", "memstore", "redisstore", "pgstore"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_state_key_is_invisible_and_untouchable_for_other_tenants_and_apps(node, transport, store, kind):
    """team-a/orders writes K; team-b/orders (same app id, other tenant) and team-a/billing (same tenant, other
    app) do not see it, and nothing they do with "the same" key (write, delete, bulk get, transaction, bulk delete,
    even with the victim's ETag) changes the victim's value or ETag."""
    key = KEY_KINDS[kind](unique(""))
    victim = node.socket("team-a", "orders", transport)
    if store == "pgstore" and kind == "nul-byte":
        # PostgreSQL's text cannot hold NUL: a clear refusal of the key, for every operation, not a backend error.
        for attempt in (lambda: victim.save(store, key, "victim's value"), lambda: victim.get(store, key)):
            error = refused(attempt, ILLEGAL_KEY, "a NUL in a state.postgresql key")
            assert "NUL" in error.message, error.message
        return
    victim.save(store, key, "victim's value")
    value, etag = victim.get(store, key)
    assert value == "victim's value" and etag, (value, etag)

    def victim_untouched(after: str) -> None:
        assert victim.get(store, key) == ("victim's value", etag), f"{after}: the victim's item changed"

    for other in (node.socket("team-b", "orders", transport), node.socket("team-a", "billing", transport)):
        assert other.get(store, key) == (None, None), f"{other} reads team-a/orders' item"
        assert other.bulk_get(store, [key]) == {key: None}, f"{other} bulk-reads team-a/orders' item"
        # The victim's ETag is no key to the victim's item: with no item of its own, the other app's delete and
        # save with that ETag are ETag mismatches.
        etag_refusal(lambda: other.delete(store, key, etag=etag), DELETE_ETAG_REFUSED, f"{other} delete, etag", kind)
        etag_refusal(lambda: other.save(store, key, "hijack", etag=etag), SAVE_ETAG_REFUSED, f"{other} save, etag", kind)
        victim_untouched(f"{other} used the victim's ETag")
        other.delete(store, key)  # its own (missing) item: a no-op
        victim_untouched(f"{other} deleted the key")
        other.save(store, key, f"{other}'s value")
        assert other.get(store, key)[0] == f"{other}'s value"
        victim_untouched(f"{other} wrote the key")
        other.transact(store, [("upsert", key, "in a transaction"), ("delete", key, None)])
        assert other.get(store, key) == (None, None)
        victim_untouched(f"{other} ran a transaction on the key")
        other.save(store, key, "again")
        if transport == "grpc":
            other.bulk_delete(store, [key])
        else:
            other.delete(store, key)
        assert other.get(store, key) == (None, None)
        victim_untouched(f"{other} deleted its own copy")

    victim.delete(store, key, etag=etag)
    assert victim.get(store, key) == (None, None)
    if store == "statestore":
        assert not [k for k in node.rows("state.db") if k.endswith(key)], "an item was left behind"


SEPARATOR_KEYS = {
    "a||b": lambda victim_key: "a||b",
    "other-tenant-physical-key": lambda victim_key: f"team-b||orders||{victim_key}",
    "own-physical-key": lambda victim_key: f"team-a||orders||{victim_key}",
    "leading": lambda victim_key: f"||{victim_key}",
    "trailing": lambda victim_key: f"{victim_key}||",
    "three-bars": lambda victim_key: f"team-b|||{victim_key}",
}

SEPARATOR_OPS = {
    "save": lambda c, k, good: c.save("statestore", k, "forged"),
    "get": lambda c, k, good: c.get("statestore", k),
    "delete": lambda c, k, good: c.delete("statestore", k),
    "bulk-get": lambda c, k, good: c.bulk_get("statestore", [good, k]),
    "bulk-save-with-a-good-key": lambda c, k, good: c.save_many("statestore", [(good, "good"), (k, "forged")]),
    "transaction-upsert": lambda c, k, good: c.transact("statestore", [("upsert", good, "good"), ("upsert", k, "x")]),
    "transaction-delete": lambda c, k, good: c.transact("statestore", [("upsert", good, "good"), ("delete", k, None)]),
    "bulk-delete": lambda c, k, good: c.bulk_delete("statestore", [good, k]),
}


SEPARATOR_CASES = [
    pytest.param(transport, hostile, op, id=f"{transport}-{hostile}-{op}")
    for transport in TRANSPORTS
    for hostile in SEPARATOR_KEYS
    for op in SEPARATOR_OPS
    if not (transport == "http" and op == "bulk-delete")  # Dapr's HTTP API has no bulk delete
]


@pytest.mark.parametrize("transport,hostile,op", SEPARATOR_CASES)
def test_key_with_separator_is_refused_and_nothing_is_written(node, transport, hostile, op):
    """A key containing `||` (for instance spelled exactly like team-b/orders' physical key) is refused with
    INVALID_ARGUMENT / 400 ERR_MALFORMED_REQUEST (DAPR_STATE_ILLEGAL_KEY), as a whole request: the SQLite table is
    byte for byte unchanged afterwards (also the good key of the same request), and team-b's item is untouched."""
    victim_key, good = unique("sep-victim"), unique("sep-good")
    victim = node.socket("team-b", "orders", transport)
    victim.save("statestore", victim_key, "team-b's value")
    victim_item = victim.get("statestore", victim_key)
    before = node.rows("state.db")
    assert before[f"team-b||orders||{victim_key}"] == stored("team-b's value", transport)

    attacker = node.socket("team-a", "orders", transport)
    key = SEPARATOR_KEYS[hostile](victim_key)
    error = refused(lambda: SEPARATOR_OPS[op](attacker, key, good), ILLEGAL_KEY, f"{attacker} {op} {key!r}")
    assert "||" in error.message, error.message

    assert node.rows("state.db") == before, f"{op} with key {key!r} changed the store"
    assert victim.get("statestore", victim_key) == victim_item
    assert attacker.get("statestore", good) == (None, None)
    assert attacker.get("statestore", victim_key) == (None, None)


# ---------------------------------------------------------------------------------------------------------------
# 2. keyPrefix.


def physical_key(component: str, ns: str, app: str, key: str) -> str:
    """README: `<namespace>||` always leads; keyPrefix decides only what follows inside the namespace."""
    prefix = dict(PREFIX_POLICIES)[component]
    middle = {None: app, "name": component, "namespace": f"{ns}.{app}", "none": None}.get(prefix, prefix)
    return f"{ns}||{key}" if middle is None else f"{ns}||{middle}||{key}"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_key_prefix_policies_never_share_keys_across_tenants(node, transport):
    """Six keyPrefix policies (appid, name, namespace, none, literal 'team-b', literal 'orders') on ONE SQLite
    table. All four apps write the same user key through each: every read returns exactly what the policy shares
    *within* the namespace, and every row in the table belongs to the namespace its key starts with."""
    key = unique("kp")
    expected: dict[str, str] = {}  # physical key -> value, as the documented layout says
    for component, _ in PREFIX_POLICIES:
        for ns, app in APPS:
            value = f"{ns}/{app}@{component}"
            node.socket(ns, app, transport).save(component, key, value)
            expected[physical_key(component, ns, app, key)] = value

    def check(when: str) -> None:
        for component, _ in PREFIX_POLICIES:
            for ns, app in APPS:
                got = node.socket(ns, app, transport).get(component, key)[0]
                want = expected.get(physical_key(component, ns, app, key))
                assert got == want, f"{when}: {ns}/{app} reads {got!r} from {component}, expected {want!r}"
        rows = {k: v for k, v in node.rows("prefixes.db").items() if k.endswith(f"||{key}")}
        assert rows == {k: stored(v, transport) for k, v in expected.items()}, when
        for physical, value in rows.items():
            writer_ns = json.loads(value) if transport == "http" else value.decode()
            assert physical.split("||")[0] == writer_ns.split("/")[0], f"{physical!r} holds {writer_ns!r}"

    check("after every app wrote")
    # Both tenants use keyPrefix none on the shared store: same user key, separate values.
    assert node.socket("team-a", "orders", transport).get("p-none", key)[0] == "team-a/billing@p-none"
    assert node.socket("team-b", "orders", transport).get("p-none", key)[0] == "team-b/billing@p-none"

    # team-b deletes "the same" key under every policy: only team-b's items go.
    for component, _ in PREFIX_POLICIES:
        for app in ("orders", "billing"):
            node.socket("team-b", app, transport).delete(component, key)
            expected.pop(physical_key(component, "team-b", app, key), None)
    check("after team-b deleted the key under every policy")
    assert any(k.startswith("team-a||") for k in expected) and not any(k.startswith("team-b||") for k in expected)


@pytest.mark.parametrize("literal", ["a||b", "team-b||orders", "||", "x||", "||team-b"])
def test_literal_key_prefix_with_separator_is_refused_at_start(hangard_factory, literal):
    """A literal keyPrefix containing `||` could name another tenant's keys: hangard exits 2 before creating a
    socket, naming the file and spec.metadata.keyPrefix."""
    root = hangard_factory.root()
    tenancy, resources = write_config(root)
    bad = resources / "sneaky.yaml"
    bad.write_text(component_yaml("sneaky", "state.sqlite",
                                  metadata={"connectionString": "sneaky.db", "keyPrefix": literal}))
    args = [
        str(HANGARD), "--socket-root", str(root / "s"), "--data-dir", str(root / "data"),
        "--http-listen", f"127.0.0.1:{free_port()}", "--grpc-listen", f"127.0.0.1:{free_port()}",
        "--tenancy", str(tenancy), "--resources", str(resources),
    ]
    try:
        result = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"hangard accepted keyPrefix {literal!r} and kept running")
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if "invalid configuration" in line]
    assert len(lines) == 1, result.stderr
    assert str(bad) in lines[0] and "spec.metadata.keyPrefix" in lines[0] and "'||'" in lines[0], lines[0]
    assert not (root / "s").exists() or not any((root / "s").rglob("*.socket")), "sockets were created"


# ---------------------------------------------------------------------------------------------------------------
# 3. Component namespaces and scopes.


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("ns,app", APPS, ids=[f"{ns}/{app}" for ns, app in APPS])
def test_get_metadata_lists_exactly_the_components_the_app_may_use(node, ns, app, transport):
    assert node.socket(ns, app, transport).metadata()["components"] == VISIBLE[(ns, app)]


# (caller, store name) pairs that must be indistinguishable from a store that does not exist.
HIDDEN = [
    (("team-b", "orders"), "cache"),  # namespaced to team-a
    (("team-b", "billing"), "cache"),
    (("team-a", "orders"), "audit"),  # scoped to billing
    (("team-b", "orders"), "audit"),
    (("team-a", "orders"), "ledger"),  # namespaced to team-b and scoped to billing
    (("team-a", "billing"), "ledger"),
    (("team-b", "orders"), "ledger"),
    # Spellings that might be parsed as "namespace + name".
    (("team-b", "orders"), "team-a/cache"),
    (("team-b", "orders"), "team-a||cache"),
    (("team-b", "orders"), "team-a.cache"),
    (("team-b", "orders"), "../team-a/cache"),
    (("team-b", "orders"), "CACHE"),
    (("team-b", "orders"), "cache "),
    (("team-a", "orders"), "no-such-store"),  # the reference answer
]

STORE_OPS = {
    "get": lambda c, s, k: c.get(s, k),
    "save": lambda c, s, k: c.save(s, k, "x"),
    "delete": lambda c, s, k: c.delete(s, k),
    "bulk-get": lambda c, s, k: c.bulk_get(s, [k]),
    "transaction": lambda c, s, k: c.transact(s, [("upsert", k, "x")]),
}


@pytest.mark.parametrize("op", list(STORE_OPS))
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("caller,store", HIDDEN, ids=[f"{ns}/{app}->{s}" for (ns, app), s in HIDDEN])
def test_hidden_component_answers_state_store_not_found(node, caller, store, transport, op):
    """Any call to a component the app may not use is Dapr's 'state store NAME is not found'
    (INVALID_ARGUMENT / 400 ERR_STATE_STORE_NOT_FOUND, reason DAPR_STATE_NOT_FOUND): the same answer as for a
    store that does not exist, so it does not even reveal that the other tenant's component exists."""
    client = node.socket(*caller, transport)
    error = refused(lambda: STORE_OPS[op](client, store, unique("hidden")), NOT_FOUND, f"{client} {op} {store!r}")
    assert error.message == f"state store {store} is not found", error.message


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_namespaced_and_scoped_components_are_usable_by_their_own_apps_only(node, transport):
    """The positive side of the matrix above: the apps that may use cache/audit/ledger can, and audit (shared,
    scoped to billing) keeps team-a/billing's and team-b/billing's items apart."""
    key = unique("own")
    for (ns, app), store in ((("team-a", "orders"), "cache"), (("team-a", "billing"), "cache"),
                             (("team-a", "billing"), "audit"), (("team-b", "billing"), "audit"),
                             (("team-b", "billing"), "ledger")):
        client = node.socket(ns, app, transport)
        client.save(store, key, f"{ns}/{app}")
        assert client.get(store, key)[0] == f"{ns}/{app}"
    # cache (keyPrefix appid) keeps team-a's two apps apart too.
    assert node.socket("team-a", "orders", transport).get("cache", key)[0] == "team-a/orders"
    assert node.socket("team-a", "billing", transport).get("audit", key)[0] == "team-a/billing"
    rows = {k: v for k, v in node.rows("audit.db", "audit").items() if k.endswith(key)}
    assert rows == {f"team-a||billing||{key}": stored("team-a/billing", transport),
                    f"team-b||billing||{key}": stored("team-b/billing", transport)}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_namespaced_component_hides_the_shared_one_only_for_its_tenant(node, transport):
    """team-a's own `shadowed` (in-memory) replaces the shared `shadowed` (SQLite) for team-a only: team-a's
    writes never reach the shared SQLite file, team-b's do, and neither sees the other's item."""
    key = unique("shadow")
    a, b = node.socket("team-a", "orders", transport), node.socket("team-b", "orders", transport)
    assert a.metadata()["components"]["shadowed"] == "state.in-memory"
    assert b.metadata()["components"]["shadowed"] == "state.sqlite"
    a.save("shadowed", key, "team-a's")
    assert b.get("shadowed", key) == (None, None)
    b.save("shadowed", key, "team-b's")
    assert a.get("shadowed", key)[0] == "team-a's"
    assert b.get("shadowed", key)[0] == "team-b's"
    rows = {k: v for k, v in node.rows("shadowed.db").items() if k.endswith(key)}
    assert rows == {f"team-b||orders||{key}": stored("team-b's", transport)}, "team-a's write reached the shared store"
    assert not [k for k in node.rows("shadowed.db") if not k.startswith("team-b||")], "team-a data in shared store"


# ---------------------------------------------------------------------------------------------------------------
# 4. Metadata.


@pytest.mark.parametrize("reader_transport", TRANSPORTS)
@pytest.mark.parametrize("setter_transport", TRANSPORTS)
def test_set_metadata_is_visible_to_the_setting_app_only(node, setter_transport, reader_transport):
    name, value = unique("attr"), unique("value")
    node.socket("team-a", "orders", setter_transport).set_metadata(name, value)
    assert node.socket("team-a", "orders", reader_transport).metadata()["extended"].get(name) == value
    assert node.tcp(TOKEN_A, reader_transport).metadata()["extended"].get(name) == value
    for ns, app in (("team-a", "billing"), ("team-b", "orders"), ("team-b", "billing")):
        assert name not in node.socket(ns, app, reader_transport).metadata()["extended"], f"{ns}/{app} sees it"
    assert name not in node.tcp(TOKEN_B, reader_transport).metadata()["extended"]

    # The same attribute name set by team-b/orders is team-b/orders' own.
    node.socket("team-b", "orders", setter_transport).set_metadata(name, "team-b's")
    assert node.socket("team-b", "orders", reader_transport).metadata()["extended"][name] == "team-b's"
    assert node.socket("team-a", "orders", reader_transport).metadata()["extended"][name] == value


CALLER_VIEWS = [(ns, app, via) for ns, app in APPS for via in ("grpc", "http")] + [
    (ns, app, via) for (ns, app) in TOKENS for via in ("grpc-tcp-token", "http-tcp-token")
]


@pytest.mark.parametrize("ns,app,via", CALLER_VIEWS, ids=[f"{ns}/{app}-{via}" for ns, app, via in CALLER_VIEWS])
def test_get_metadata_names_the_caller(node, ns, app, via):
    transport = via.split("-")[0]
    caller = node.tcp(TOKENS[(ns, app)], transport) if via.endswith("token") else node.socket(ns, app, transport)
    metadata = caller.metadata()
    assert metadata["id"] == app
    assert metadata["extended"]["hangar.namespace"] == ns
    assert metadata["extended"]["hangar.appId"] == app
    assert metadata["components"] == VISIBLE[(ns, app)]


@pytest.mark.parametrize("reserved", ["hangar.namespace", "hangar.appId"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_set_metadata_cannot_change_the_callers_identity(node, transport, reserved):
    client = node.socket("team-a", "orders", transport)
    error = refused(lambda: client.set_metadata(reserved, "team-b" if reserved.endswith("namespace") else "billing"),
                    Expected(grpc.StatusCode.INVALID_ARGUMENT, 400, "ERR_MALFORMED_REQUEST", "DAPR_MALFORMED_REQUEST"),
                    f"set {reserved}")
    assert "reserved" in error.message
    extended = client.metadata()["extended"]
    assert (extended["hangar.namespace"], extended["hangar.appId"]) == ("team-a", "orders")


# ---------------------------------------------------------------------------------------------------------------
# 5. Tokens.


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("owner", list(TOKENS), ids=[f"{ns}-token" for ns, _ in TOKENS])
def test_token_acts_only_as_its_own_app(node, owner, transport):
    """Over TCP, a token writes into its own app's partition: visible on that app's Unix socket, not to the
    other tenant's orders nor to its own tenant's billing; and it cannot use billing's scoped component."""
    ns, app = owner
    other_ns = "team-b" if ns == "team-a" else "team-a"
    key = unique("tok")
    over_tcp = node.tcp(TOKENS[owner], transport)
    over_tcp.save("statestore", key, f"via {ns}'s token")
    assert node.socket(ns, "orders", transport).get("statestore", key)[0] == f"via {ns}'s token"
    for who in ((other_ns, "orders"), (ns, "billing"), (other_ns, "billing")):
        assert node.socket(*who, transport).get("statestore", key) == (None, None), f"{who} sees the token's write"
    assert node.tcp(TOKENS[(other_ns, "orders")], transport).get("statestore", key) == (None, None)
    rows = {k for k in node.rows("state.db") if k.endswith(key)}
    assert rows == {f"{ns}||orders||{key}"}
    refused(lambda: over_tcp.get("audit", key), NOT_FOUND, "a token used billing's component")
    if ns == "team-b":
        refused(lambda: over_tcp.get("cache", key), NOT_FOUND, "team-b's token used team-a's component")


TOKEN_ON_SOCKET = [
    ("team-a", "orders", TOKEN_B),
    ("team-a", "billing", TOKEN_A),
    ("team-a", "billing", TOKEN_B),
    ("team-b", "billing", TOKEN_A),
    ("team-b", "orders", TOKEN_A),
    ("team-a", "orders", "not-a-token-at-all"),
]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    "ns,app,token", TOKEN_ON_SOCKET,
    ids=[f"{ns}/{app}+{'A' if t == TOKEN_A else 'B' if t == TOKEN_B else 'junk'}" for ns, app, t in TOKEN_ON_SOCKET],
)
def test_token_on_an_app_socket_is_ignored(node, ns, app, token, transport):
    """On an app's socket the socket is the identity: another app's token (or junk) changes nothing."""
    with_token = node.socket(ns, app, transport, token=token)
    metadata = with_token.metadata()
    assert (metadata["id"], metadata["extended"]["hangar.namespace"]) == (app, ns)
    key = unique("sock-tok")
    with_token.save("statestore", key, "written with a foreign token")
    assert node.socket(ns, app, transport).get("statestore", key)[0] == "written with a foreign token"
    assert {k for k in node.rows("state.db") if k.endswith(key)} == {f"{ns}||{app}||{key}"}
    for owner, owner_token in TOKENS.items():
        if owner_token == token and owner != (ns, app):
            assert node.tcp(token, transport).get("statestore", key) == (None, None), "landed with the token's owner"


def test_identity_is_per_request_on_a_shared_tcp_connection(node):
    """One keep-alive HTTP connection and one gRPC channel carry requests with team-a's token, team-b's, none and
    team-a's again: each request is whoever its own token says (or refused), never the connection's first caller."""
    import http.client

    from dapr.proto.runtime.v1 import dapr_pb2_grpc, metadata_pb2

    key = unique("keepalive")
    sequence = [(TOKEN_A, "team-a"), (TOKEN_B, "team-b"), (None, None), ("wrong-token", None), (TOKEN_A, "team-a")]
    connection = http.client.HTTPConnection("127.0.0.1", node.daemon.http_port, timeout=10)
    try:
        for index, (token, ns) in enumerate(sequence):
            headers = {"dapr-api-token": token} if token else {}
            connection.request("POST", "/v1.0/state/statestore", json.dumps([{"key": key, "value": f"#{index}"}]),
                               {**headers, "Content-Type": "application/json"})
            response = connection.getresponse()
            body = response.read()
            assert response.status == (204 if ns else 401), (index, response.status, body)
            connection.request("GET", "/v1.0/metadata", headers=headers)
            response = connection.getresponse()
            body = response.read()
            if ns is None:
                assert response.status == 401, (index, response.status, body)
            else:
                assert json.loads(body)["extended"]["hangar.namespace"] == ns, (index, body)
            assert response.getheader("connection", "").lower() != "close", "the connection was not kept alive"
    finally:
        connection.close()
    rows = {k: v for k, v in node.rows("state.db").items() if k.endswith(key)}
    assert rows == {f"team-a||orders||{key}": b'"#4"', f"team-b||orders||{key}": b'"#1"'}

    channel = grpc.insecure_channel(f"127.0.0.1:{node.daemon.grpc_port}")
    try:
        stub = dapr_pb2_grpc.DaprStub(channel)
        for token, ns in sequence:
            metadata = [("dapr-api-token", token)] if token else []
            if ns is None:
                with pytest.raises(grpc.RpcError) as error:
                    stub.GetMetadata(metadata_pb2.GetMetadataRequest(), metadata=metadata, timeout=10)
                assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
            else:
                answer = stub.GetMetadata(metadata_pb2.GetMetadataRequest(), metadata=metadata, timeout=10)
                assert answer.extended_metadata["hangar.namespace"] == ns
    finally:
        channel.close()


WRONG_TOKENS = {
    "junk": "wrong-token",
    "a-then-b": TOKEN_A + TOKEN_B,
    "b-truncated": TOKEN_B[:-1],
    "a-upper-case": TOKEN_A.upper(),
    "a-comma-b": f"{TOKEN_A},{TOKEN_B}",
    "namespace-name": "team-a",
    "app-id": "orders",
    "token-file-name": "team-b-orders.token",
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("wrong", list(WRONG_TOKENS))
def test_wrong_token_is_unauthenticated_and_writes_nothing(node, wrong, transport):
    caller = node.tcp(WRONG_TOKENS[wrong], transport)
    key = unique("wrong-tok")
    for what, call in (("save", lambda: caller.save("statestore", key, "x")),
                       ("get", lambda: caller.get("statestore", key)),
                       ("metadata", caller.metadata)):
        error = refused(call, UNAUTHENTICATED, f"{wrong} {what}")
        assert WRONG_TOKENS[wrong] not in error.message, "the refusal echoes the token"
    assert not [k for k in node.rows("state.db") if k.endswith(key)]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_two_tokens_in_one_request_never_act_as_the_second(node, transport):
    """Both tenants' tokens in one request (two dapr-api-token values): as Dapr, which reads the first value, the
    request acts as the first token's app on both front-ends — never as the second's, never as both."""
    import http.client

    from dapr.proto.runtime.v1 import dapr_pb2_grpc, metadata_pb2

    for first, second in ((TOKEN_A, TOKEN_B), (TOKEN_B, TOKEN_A)):
        first_ns = "team-a" if first == TOKEN_A else "team-b"
        if transport == "grpc":
            channel = grpc.insecure_channel(f"127.0.0.1:{node.daemon.grpc_port}")
            try:
                stub = dapr_pb2_grpc.DaprStub(channel)
                try:
                    answer = stub.GetMetadata(metadata_pb2.GetMetadataRequest(), timeout=10,
                                              metadata=[("dapr-api-token", first), ("dapr-api-token", second)])
                    namespace = answer.extended_metadata["hangar.namespace"]
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
                    namespace = None
            finally:
                channel.close()
        else:
            connection = http.client.HTTPConnection("127.0.0.1", node.daemon.http_port, timeout=10)
            try:
                connection.putrequest("GET", "/v1.0/metadata")
                connection.putheader("dapr-api-token", first)
                connection.putheader("dapr-api-token", second)
                connection.endheaders()
                response = connection.getresponse()
                body = response.read()
            finally:
                connection.close()
            assert response.status in (200, 401), (response.status, body)
            namespace = json.loads(body)["extended"]["hangar.namespace"] if response.status == 200 else None
        assert namespace == first_ns, f"two tokens ({first_ns}'s first) acted as {namespace}"


def test_tokens_never_appear_in_the_log_or_in_answers(node):
    """Uses every token (valid, on sockets, wrong) once more, then reads the whole daemon log (debug level) and
    every app's metadata: neither token, nor a wrong one, nor a long piece of one, appears."""
    key = unique("log")
    for transport in TRANSPORTS:
        for token in (TOKEN_A, TOKEN_B):
            node.tcp(token, transport).save("statestore", key, "x")
            node.socket("team-a", "billing", transport, token=token).get("statestore", key)
        refused(lambda: node.tcp(WRONG_TOKENS["a-then-b"], transport).get("statestore", key), UNAUTHENTICATED)
    answers = "".join(
        node.daemon.http(ns, app, "GET", "/v1.0/metadata").body.decode() for ns, app in APPS
    ) + node.daemon.tcp_http("GET", "/v1.0/metadata", headers={"dapr-api-token": TOKEN_A}).body.decode()
    time.sleep(0.2)  # let the log catch up
    log = node.daemon.log
    assert "hangard ready" in log and "[HangarRuntime]" in log, "the log is not the daemon's"
    for name, token in (("team-a", TOKEN_A), ("team-b", TOKEN_B)):
        for piece in {token, token[6:], token[-16:], token[6:22]}:
            assert piece not in log, f"{name}'s token appears in daemon.log"
            assert piece not in answers, f"{name}'s token appears in a metadata answer"


# ---------------------------------------------------------------------------------------------------------------
# 6. Sockets and the filesystem.


@pytest.mark.parametrize("ns,app", APPS, ids=[f"{ns}/{app}" for ns, app in APPS])
def test_socket_modes_and_a_socket_path_is_its_app(node, ns, app):
    """Protection between apps is the filesystem: app directories are 0770, sockets 0660, and whoever connects to
    an app's socket path *is* that app (there is nothing else to check)."""
    daemon = node.daemon
    assert stat.S_IMODE(daemon.app_dir(ns, app).parent.stat().st_mode) == 0o755
    assert stat.S_IMODE(daemon.app_dir(ns, app).stat().st_mode) == 0o770
    for path in (daemon.grpc_socket(ns, app), daemon.http_socket(ns, app)):
        st = path.stat()
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660, (path, oct(st.st_mode))
    for transport in TRANSPORTS:
        metadata = node.socket(ns, app, transport).metadata()
        assert (metadata["id"], metadata["extended"]["hangar.namespace"]) == (app, ns)


# A client that runs under another uid (via setpriv, which execs it, so its pid is the Popen pid): connects to a
# Unix socket and, for HTTP, asks GET /v1.0/healthz; for gRPC sends the HTTP/2 preface and an empty SETTINGS
# frame. Prints {"errno": n} when connect fails, else what the server answered before closing (for gRPC: its
# first frame header), or within 3 s.
CLIENT = r"""
import json, os, socket, sys
path, kind = sys.argv[1], sys.argv[2]
out = {"pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups()}
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(3)
try:
    s.connect(path)
except OSError as e:
    out["errno"] = e.errno
else:
    data = b""
    try:
        if kind == "http":
            s.sendall(b"GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        else:
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
            if kind == "grpc" and len(data) >= 9:  # the server's first frame: enough (HTTP/2 stays open)
                break
    except OSError as e:
        out["io_errno"] = e.errno
    out["answer"] = data.hex()
print(json.dumps(out))
"""


def run_as(uid: int, gid: int, path: Path, kind: str) -> dict[str, Any]:
    python = shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3"
    result = subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", python, "-I", "-S", "-c", CLIENT,
         str(path), kind],
        capture_output=True, text=True, timeout=20,
    )
    assert result.returncode == 0, f"client as {uid}:{gid} failed: {result.stderr}"
    out = json.loads(result.stdout)
    assert (out["uid"], out["gid"], out["groups"]) == (uid, gid, []), out
    out["answer"] = bytes.fromhex(out.get("answer", ""))
    return out


def served(out: dict[str, Any], kind: str) -> bool:
    """Whether the app answered (HTTP 204 for healthz; an HTTP/2 SETTINGS frame for gRPC)."""
    answer = out["answer"]
    if kind == "http":
        return answer.startswith(b"HTTP/1.1 204")
    return len(answer) >= 9 and answer[3] == 0x04


needs_setpriv = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None or not Path("/usr/bin/python3").exists(),
    reason="needs root and setpriv (util-linux) to connect as another uid, and /usr/bin/python3 for the client",
)

OTHER_UID = 65534


@needs_setpriv
@pytest.mark.parametrize("kind", ["grpc", "http"])
def test_another_uid_cannot_open_an_app_socket(hangard_factory, kind):
    """uid 65534 can traverse everything up to the app directories, but the 0770 directory (owner root) stops
    connect with EACCES; with the directory opened (o+x) the 0660 socket still does; only when the socket too is
    opened up (0666) does the connection reach the app — so the modes are the barrier, nothing else."""
    root = hangard_factory.root()
    os.chmod(root, 0o755)
    tenancy, resources = write_config(root)
    daemon = hangard_factory.start(root, tenancy=tenancy, resources=resources, apps=APPS)
    for ns, app in APPS:
        directory = daemon.app_dir(ns, app)
        path = daemon.grpc_socket(ns, app) if kind == "grpc" else daemon.http_socket(ns, app)
        assert (directory.stat().st_uid, path.stat().st_uid) == (0, 0)
        out = run_as(OTHER_UID, OTHER_UID, path, kind)
        assert out.get("errno") == 13, f"uid {OTHER_UID} reached {ns}/{app} through its 0770 directory: {out}"
        os.chmod(directory, 0o771)
        try:
            out = run_as(OTHER_UID, OTHER_UID, path, kind)
            assert out.get("errno") == 13, f"uid {OTHER_UID} connected to {ns}/{app}'s 0660 socket: {out}"
            os.chmod(path, 0o666)
            try:
                out = run_as(OTHER_UID, OTHER_UID, path, kind)
                assert "errno" not in out and served(out, kind), f"control: an open socket should answer: {out}"
            finally:
                os.chmod(path, 0o660)
        finally:
            os.chmod(directory, 0o770)


PEER_TENANTS = {
    "team-a.yaml": """\
apiVersion: hangar.dev/v1alpha1
kind: Tenant
metadata:
  name: team-a
spec:
  apps:
    - appId: orders
      uids: [65533]
      gids: [65534]
""",
    "team-b.yaml": """\
apiVersion: hangar.dev/v1alpha1
kind: Tenant
metadata:
  name: team-b
spec:
  apps:
    - appId: orders
      uids: [65532]
      gids: [65532]
""",
}

# (client uid, client gid, target namespace, outcome). team-a/orders' directory and sockets are 65533:65534 (its
# first uid/gid), team-b/orders' 65532:65532.
PEER_CASES = [
    (65533, 65534, "team-a", "served"),  # its uid and gid
    (65534, 65534, "team-a", "refused"),  # in the group, so it can connect, but not an allowed uid
    (65533, 65533, "team-a", "refused"),  # the owner uid, but not an allowed gid
    (65532, 65532, "team-a", "EACCES"),  # team-b's user cannot even reach team-a's socket
    (65532, 65532, "team-b", "served"),
    (65533, 65534, "team-b", "EACCES"),  # team-a's user cannot reach team-b's socket
    (65534, 65532, "team-b", "refused"),  # in team-b's group, wrong uid
]


@needs_setpriv
@pytest.mark.parametrize("kind", ["grpc", "http"])
@pytest.mark.parametrize("uid,gid,ns,outcome", PEER_CASES, ids=[f"{u}:{g}->{n}-{o}" for u, g, n, o in PEER_CASES])
def test_peer_credentials_across_tenants(hangard_factory, uid, gid, ns, outcome, kind):
    """With `uids`/`gids`, a client that can reach the socket through the filesystem (e.g. as a member of the
    app's group) but is not listed is closed before any request is read, and the refusal is logged with the
    client's exact pid, uid and gid; a user of the other tenant cannot reach the socket at all."""
    root = hangard_factory.root()
    os.chmod(root, 0o755)
    tenancy = root / "tenancy"
    tenancy.mkdir()
    for name, text in PEER_TENANTS.items():
        (tenancy / name).write_text(text)
    daemon = hangard_factory.start(root, tenancy=tenancy, resources=None,
                                   apps=(("team-a", "orders"), ("team-b", "orders")))
    owner = {"team-a": (65533, 65534), "team-b": (65532, 65532)}[ns]
    path = daemon.grpc_socket(ns, "orders") if kind == "grpc" else daemon.http_socket(ns, "orders")
    for p in (daemon.app_dir(ns, "orders"), path):
        assert (p.stat().st_uid, p.stat().st_gid) == owner, p

    out = run_as(uid, gid, path, kind)
    if outcome == "EACCES":
        assert out.get("errno") == 13, out
    elif outcome == "served":
        assert "errno" not in out and served(out, kind), out
    else:
        assert "errno" not in out, f"uid {uid}:{gid} should reach the socket through the group: {out}"
        assert out["answer"] == b"", f"a refused peer got an answer: {out['answer'][:200]!r}"
        line = daemon.wait_for_log("connection refused: peer credentials", f"peer.pid={out['pid']} ")
        assert line, f"no refusal logged for pid {out['pid']}\nlog:\n{daemon.log[-3000:]}"
        for field in (f"peer.uid={uid} ", f"peer.gid={gid} ", f"tenant.namespace={ns} ", "app.id=orders "):
            assert field in line, (field, line)
    if outcome != "refused":
        assert "peer credentials not allowed" not in daemon.log, daemon.log[-3000:]
    assert daemon.running


def test_etags_say_nothing_about_other_tenants_writes(hangard_factory):
    """A store's ETags come from one counter shared by its tenants; each tenant sees them through its own keyed
    permutation, so the ETags of its own successive writes do not count anyone else's."""
    daemon = hangard_factory.examples()
    team_b = daemon.client("team-b", "orders")
    team_a = daemon.client("team-a", "orders")
    samples = []
    for _ in range(5):
        team_b.save_state("statestore", "probe", "v")
        first = int(team_b.get_state("statestore", "probe").etag)
        for index in range(5):
            team_a.save_state("statestore", f"noise-{index}", "x")
        team_b.save_state("statestore", "probe", "v")
        second = int(team_b.get_state("statestore", "probe").etag)
        samples.append(second - first)
    # Unsealed, every difference would be exactly 6 (five writes of team-a plus team-b's own).
    assert len(set(samples)) == len(samples), samples
    assert all(abs(difference) > 1_000_000 for difference in samples), samples
    # The ETags still work for the tenant that holds them.
    etag = team_b.get_state("statestore", "probe").etag
    team_b.save_state("statestore", "probe", "w", etag=etag)
    with pytest.raises(grpc.RpcError) as error:
        team_b.save_state("statestore", "probe", "z", etag=etag)
    assert error.value.code() == grpc.StatusCode.ABORTED
