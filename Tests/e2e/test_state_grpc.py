"""The state API over an app's Unix gRPC socket, with the official SDK: CRUD, bulk, transactions, ETags, TTL."""

from __future__ import annotations

import time

import grpc
import pytest
from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType
from dapr.clients.grpc._state import Concurrency, StateItem, StateOptions

from hangar_e2e import grpc_error_info, unique

STORE = "statestore"


@pytest.fixture(scope="module")
def orders(hangard):
    """team-a/orders on its Unix gRPC socket."""
    return hangard.client("team-a", "orders")


def test_save_get_delete_with_changing_etag(orders):
    key = unique()
    orders.save_state(STORE, key, "v1")
    first = orders.get_state(STORE, key)
    assert first.data == b"v1"
    assert first.etag, "GetState must return an ETag for an existing key"

    orders.save_state(STORE, key, b"v2\x00\xff")  # values are bytes, not text
    second = orders.get_state(STORE, key)
    assert second.data == b"v2\x00\xff"
    assert second.etag and second.etag != first.etag, "a write must change the ETag"

    orders.delete_state(STORE, key)
    gone = orders.get_state(STORE, key)
    assert gone.data == b"" and gone.etag == ""


def test_missing_key_is_an_empty_response_not_an_error(orders):
    response = orders.get_state(STORE, unique("never-written"))
    assert response.data == b"" and response.etag == ""
    orders.delete_state(STORE, unique("never-written"))  # deleting a missing key without an ETag succeeds


def test_unknown_store_is_invalid_argument_naming_it(orders):
    with pytest.raises(grpc.RpcError) as error:
        orders.get_state("no-such-store", unique())
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "state store no-such-store is not found" in error.value.details()
    info = grpc_error_info(error.value)
    assert info.get("domain") == "dapr.io"
    assert info.get("reason") == "DAPR_STATE_NOT_FOUND"


def test_bulk_save_and_bulk_get(orders):
    keys = [unique("bulk") for _ in range(3)]
    orders.save_bulk_state(STORE, [StateItem(key=k, value=f"value-{i}") for i, k in enumerate(keys)])
    missing = unique("missing")
    response = orders.get_bulk_state(STORE, keys + [missing])
    items = {item.key: item for item in response.items}
    assert set(items) == set(keys) | {missing}
    for i, key in enumerate(keys):
        assert items[key].data == f"value-{i}".encode()
        assert items[key].etag
        assert not items[key].error
    assert items[missing].data == b"" and items[missing].etag == ""
    # Single reads agree with the bulk read.
    assert orders.get_state(STORE, keys[1]).etag == items[keys[1]].etag


def test_transaction_upserts_and_deletes(orders):
    keep, drop, new = unique("tx-keep"), unique("tx-drop"), unique("tx-new")
    orders.save_state(STORE, keep, "old")
    orders.save_state(STORE, drop, "doomed")
    orders.execute_state_transaction(
        STORE,
        [
            TransactionalStateOperation(key=keep, data="updated"),
            TransactionalStateOperation(key=new, data="created", operation_type=TransactionOperationType.upsert),
            TransactionalStateOperation(key=drop, operation_type=TransactionOperationType.delete),
        ],
    )
    assert orders.get_state(STORE, keep).data == b"updated"
    assert orders.get_state(STORE, new).data == b"created"
    assert orders.get_state(STORE, drop).data == b""


def test_transaction_is_all_or_nothing(orders):
    """A transaction whose last operation fails its ETag check changes nothing."""
    a, b = unique("atomic-a"), unique("atomic-b")
    orders.save_state(STORE, a, "a0")
    orders.save_state(STORE, b, "b0")
    stale = orders.get_state(STORE, b).etag
    orders.save_state(STORE, b, "b1")  # makes `stale` stale
    with pytest.raises(grpc.RpcError) as error:
        orders.execute_state_transaction(
            STORE,
            [
                TransactionalStateOperation(key=a, data="a1"),
                TransactionalStateOperation(key=unique("atomic-c"), data="c1"),
                TransactionalStateOperation(key=b, data="b2", etag=stale),
            ],
        )
    assert error.value.code() == grpc.StatusCode.ABORTED
    assert orders.get_state(STORE, a).data == b"a0", "the first operation of a failed transaction was applied"
    assert orders.get_state(STORE, b).data == b"b1"


def test_stale_etag_is_aborted_and_changes_nothing(orders):
    key = unique("etag")
    orders.save_state(STORE, key, "one")
    stale = orders.get_state(STORE, key).etag
    orders.save_state(STORE, key, "two", etag=stale)  # the current ETag: accepted
    current = orders.get_state(STORE, key)
    assert current.data == b"two" and current.etag != stale

    with pytest.raises(grpc.RpcError) as error:
        orders.save_state(STORE, key, "three", etag=stale)
    assert error.value.code() == grpc.StatusCode.ABORTED
    info = grpc_error_info(error.value)
    assert info.get("reason") == "DAPR_STATE_ETAG_MISMATCH" and info.get("domain") == "dapr.io"
    assert orders.get_state(STORE, key).data == b"two"

    with pytest.raises(grpc.RpcError) as error:
        orders.delete_state(STORE, key, etag=stale)
    assert error.value.code() == grpc.StatusCode.ABORTED
    assert orders.get_state(STORE, key).data == b"two"

    orders.delete_state(STORE, key, etag=current.etag)
    assert orders.get_state(STORE, key).data == b""


def test_first_write_concurrency(orders):
    first_write = StateOptions(concurrency=Concurrency.first_write)
    key = unique("fw")
    orders.save_state(STORE, key, "created", options=first_write)  # new key, no ETag: allowed
    etag = orders.get_state(STORE, key).etag

    with pytest.raises(grpc.RpcError) as error:  # existing key, no ETag
        orders.save_state(STORE, key, "overwrite", options=first_write)
    assert error.value.code() == grpc.StatusCode.ABORTED

    orders.save_state(STORE, key, "second", etag=etag, options=first_write)  # current ETag: allowed
    with pytest.raises(grpc.RpcError) as error:  # now stale
        orders.save_state(STORE, key, "third", etag=etag, options=first_write)
    assert error.value.code() == grpc.StatusCode.ABORTED
    assert orders.get_state(STORE, key).data == b"second"


def test_last_write_ignores_etags(orders):
    last_write = StateOptions(concurrency=Concurrency.last_write)
    key = unique("lw")
    orders.save_state(STORE, key, "one")
    stale = orders.get_state(STORE, key).etag
    orders.save_state(STORE, key, "two")
    orders.save_state(STORE, key, "three", etag=stale, options=last_write)
    assert orders.get_state(STORE, key).data == b"three"
    orders.delete_state(STORE, key, etag=stale, options=last_write)
    assert orders.get_state(STORE, key).data == b""


def test_malformed_etag_is_invalid_argument(orders):
    key = unique("bad-etag")
    orders.save_state(STORE, key, "value")
    with pytest.raises(grpc.RpcError) as error:
        orders.save_state(STORE, key, "other", etag="abc")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert grpc_error_info(error.value).get("reason") == "DAPR_STATE_ETAG_INVALID"
    with pytest.raises(grpc.RpcError) as error:
        orders.delete_state(STORE, key, etag="abc")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert orders.get_state(STORE, key).data == b"value"


@pytest.mark.parametrize("store", ["statestore", "cache"])
def test_ttl_expires_items(orders, store):
    key, keeper = unique("ttl"), unique("no-ttl")
    orders.save_state(store, key, "short-lived", state_metadata={"ttlInSeconds": "1"})
    orders.save_state(store, keeper, "stays")
    assert orders.get_state(store, key).data == b"short-lived"
    time.sleep(2.5)
    expired = orders.get_state(store, key)
    assert expired.data == b"" and expired.etag == "", f"{store}: item with ttlInSeconds=1 still readable after 2.5 s"
    assert orders.get_state(store, keeper).data == b"stays"
    bulk = {item.key: item.data for item in orders.get_bulk_state(store, [key, keeper]).items}
    assert bulk == {key: b"", keeper: b"stays"}


def test_in_memory_store_supports_etags_and_transactions(orders):
    key = unique("mem")
    orders.save_state("cache", key, "one")
    etag = orders.get_state("cache", key).etag
    assert etag
    orders.save_state("cache", key, "two", etag=etag)
    with pytest.raises(grpc.RpcError) as error:
        orders.save_state("cache", key, "three", etag=etag)
    assert error.value.code() == grpc.StatusCode.ABORTED
    orders.execute_state_transaction("cache", [TransactionalStateOperation(key=key, operation_type=TransactionOperationType.delete)])
    assert orders.get_state("cache", key).data == b""


def test_delete_bulk_state(orders):
    """The SDK has no wrapper for DeleteBulkState; its generated stub is the client here."""
    from dapr.proto.common.v1 import common_pb2
    from dapr.proto.runtime.v1 import state_pb2

    keys = [unique("del-bulk") for _ in range(3)]
    orders.save_bulk_state(STORE, [StateItem(key=k, value="x") for k in keys])
    stale = orders.get_state(STORE, keys[2]).etag
    orders.save_state(STORE, keys[2], "y")
    request = state_pb2.DeleteBulkStateRequest(store_name=STORE, states=[
        common_pb2.StateItem(key=keys[0]),
        common_pb2.StateItem(key=keys[1]),
    ])
    orders._stub.DeleteBulkState(request, timeout=10)
    assert [orders.get_state(STORE, k).data for k in keys] == [b"", b"", b"y"]

    stale_request = state_pb2.DeleteBulkStateRequest(store_name=STORE, states=[
        common_pb2.StateItem(key=keys[2], etag=common_pb2.Etag(value=stale)),
    ])
    with pytest.raises(grpc.RpcError) as error:
        orders._stub.DeleteBulkState(stale_request, timeout=10)
    assert error.value.code() == grpc.StatusCode.ABORTED
    assert orders.get_state(STORE, keys[2]).data == b"y"


def test_empty_key_is_invalid_argument(orders):
    for call in (lambda: orders.save_state(STORE, "", "x"), lambda: orders.get_state(STORE, "")):
        with pytest.raises(grpc.RpcError) as error:
            call()
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_unusual_keys_round_trip(orders, hangard):
    """Keys are opaque: unicode, spaces, slashes and percent signs work, also across gRPC and HTTP."""
    from urllib.parse import quote

    for key in ("ключ", "with space", "a/b/c", "100%", unique("x") + ":|:single|bar"):
        orders.save_state(STORE, key, f"value of {key}".encode())
        assert orders.get_state(STORE, key).data == f"value of {key}".encode()
        via_http = hangard.http("team-a", "orders", "GET", f"/v1.0/state/{STORE}/{quote(key, safe='')}")
        assert via_http.status == 200 and via_http.body == f"value of {key}".encode(), (key, via_http)


def test_concurrent_clients_of_several_tenants(hangard):
    """Eight clients (three apps, two tenants) write and read at once; every value lands where it belongs."""
    from concurrent.futures import ThreadPoolExecutor

    apps = [("team-a", "orders"), ("team-a", "billing"), ("team-b", "orders")] * 3
    clients = [hangard.client(ns, app) for ns, app in apps[:8]]
    prefix = unique("conc")

    def work(index):
        client = clients[index]
        for i in range(40):
            key = f"{prefix}-{i}"
            client.save_state(STORE, f"{key}-{index}", f"{index}:{i}")
            assert client.get_state(STORE, f"{key}-{index}").data == f"{index}:{i}".encode()
        return index

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert sorted(pool.map(work, range(8))) == list(range(8))
    # Same key names in different apps/tenants: each client sees only its own app's writes.
    for index, (ns, app) in enumerate(apps[:8]):
        items = clients[index].get_bulk_state(STORE, [f"{prefix}-39-{j}" for j in range(8)]).items
        mine = {j for j in range(8) if apps[j] == (ns, app)}
        for j, item in enumerate(items):
            assert (item.data != b"") == (j in mine), (ns, app, j, item.data)
