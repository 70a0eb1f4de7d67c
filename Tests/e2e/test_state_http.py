"""The HTTP state and metadata routes on an app's Unix HTTP socket, and their agreement with gRPC."""

from __future__ import annotations

import json
import time

import pytest

from hangar_e2e import unique

STORE = "statestore"
NS, APP = "team-a", "orders"


def http(hangard, method, path, body=None, headers=None):
    return hangard.http(NS, APP, method, path, body, headers)


def assert_dapr_error(result, status, error_code=None):
    assert result.status == status, result
    body = result.json()
    assert isinstance(body.get("message"), str) and body["message"], result
    if error_code is None:
        assert body.get("errorCode", "").startswith("ERR_"), result
    else:
        assert body.get("errorCode") == error_code, result
    return body


def test_healthz_on_the_app_socket(hangard):
    assert http(hangard, "GET", "/v1.0/healthz").status == 204
    assert http(hangard, "GET", "/v1.0/healthz/outbound").status == 204


def test_save_get_with_etag_and_missing_key(hangard):
    key, obj_key = unique("h"), unique("h-obj")
    saved = http(hangard, "POST", f"/v1.0/state/{STORE}", [
        {"key": key, "value": "hello"},
        {"key": obj_key, "value": {"n": 1, "list": [1, "two"]}},
    ])
    assert saved.status == 204, saved

    got = http(hangard, "GET", f"/v1.0/state/{STORE}/{key}")
    assert got.status == 200, got
    assert got.body == b'"hello"', "a JSON string value is stored as its JSON text"
    assert got.headers.get("etag"), "GET state must return an ETag header"

    got_obj = http(hangard, "GET", f"/v1.0/state/{STORE}/{obj_key}")
    assert got_obj.status == 200 and json.loads(got_obj.body) == {"n": 1, "list": [1, "two"]}

    # PUT is accepted like POST, and a new write changes the ETag.
    assert http(hangard, "PUT", f"/v1.0/state/{STORE}", [{"key": key, "value": "again"}]).status == 204
    again = http(hangard, "GET", f"/v1.0/state/{STORE}/{key}")
    assert again.body == b'"again"' and again.headers.get("etag") not in (None, "", got.headers["etag"])

    missing = http(hangard, "GET", f"/v1.0/state/{STORE}/{unique('missing')}")
    assert missing.status == 204 and missing.body == b""


def test_http_and_grpc_see_the_same_state(hangard):
    key = unique("both")
    assert http(hangard, "POST", f"/v1.0/state/{STORE}", [{"key": key, "value": "hello"}]).status == 204
    client = hangard.client(NS, APP)
    via_grpc = client.get_state(STORE, key)
    assert via_grpc.data == b'"hello"'
    assert via_grpc.etag == http(hangard, "GET", f"/v1.0/state/{STORE}/{key}").headers.get("etag")

    client.save_state(STORE, key, b"raw bytes")
    assert http(hangard, "GET", f"/v1.0/state/{STORE}/{key}").body == b"raw bytes"


def test_bulk_get(hangard):
    k1, k2, missing = unique("hb"), unique("hb"), unique("hb-missing")
    assert http(hangard, "POST", f"/v1.0/state/{STORE}", [
        {"key": k1, "value": "one"}, {"key": k2, "value": {"two": 2}},
    ]).status == 204
    result = http(hangard, "POST", f"/v1.0/state/{STORE}/bulk", {"keys": [k1, k2, missing]})
    assert result.status == 200, result
    items = {item["key"]: item for item in result.json()}
    assert set(items) == {k1, k2, missing}
    assert items[k1]["data"] == "one" and items[k1]["etag"]
    assert items[k2]["data"] == {"two": 2} and items[k2]["etag"]
    assert not items[missing].get("data") and not items[missing].get("etag")
    assert items[k1]["etag"] == http(hangard, "GET", f"/v1.0/state/{STORE}/{k1}").headers["etag"]


def test_transaction(hangard):
    keep, drop = unique("ht"), unique("ht-drop")
    assert http(hangard, "POST", f"/v1.0/state/{STORE}", [{"key": drop, "value": "x"}]).status == 204
    result = http(hangard, "POST", f"/v1.0/state/{STORE}/transaction", {"operations": [
        {"operation": "upsert", "request": {"key": keep, "value": "kept"}},
        {"operation": "delete", "request": {"key": drop}},
    ]})
    assert result.status == 204, result
    assert http(hangard, "GET", f"/v1.0/state/{STORE}/{keep}").body == b'"kept"'
    assert http(hangard, "GET", f"/v1.0/state/{STORE}/{drop}").status == 204

    bad = http(hangard, "POST", f"/v1.0/state/{STORE}/transaction", {"operations": [
        {"operation": "upsert", "request": {"key": keep, "value": "changed"}},
        {"operation": "frobnicate", "request": {"key": keep}},
    ]})
    assert_dapr_error(bad, 400)
    assert http(hangard, "GET", f"/v1.0/state/{STORE}/{keep}").body == b'"kept"'


def test_delete_with_if_match(hangard):
    key = unique("hd")
    assert http(hangard, "POST", f"/v1.0/state/{STORE}", [{"key": key, "value": 1}]).status == 204
    stale = http(hangard, "GET", f"/v1.0/state/{STORE}/{key}").headers["etag"]
    assert http(hangard, "POST", f"/v1.0/state/{STORE}", [{"key": key, "value": 2}]).status == 204
    current = http(hangard, "GET", f"/v1.0/state/{STORE}/{key}").headers["etag"]

    conflict = http(hangard, "DELETE", f"/v1.0/state/{STORE}/{key}", headers={"If-Match": stale})
    body = assert_dapr_error(conflict, 409)
    assert any(d.get("reason") == "DAPR_STATE_ETAG_MISMATCH" for d in body.get("details", [])), body
    assert http(hangard, "GET", f"/v1.0/state/{STORE}/{key}").body == b"2"

    invalid = http(hangard, "DELETE", f"/v1.0/state/{STORE}/{key}", headers={"If-Match": "abc"})
    assert_dapr_error(invalid, 400)

    assert http(hangard, "DELETE", f"/v1.0/state/{STORE}/{key}", headers={"If-Match": current}).status == 204
    assert http(hangard, "GET", f"/v1.0/state/{STORE}/{key}").status == 204


def test_save_with_stale_etag_and_first_write_is_409(hangard):
    key = unique("he")
    assert http(hangard, "POST", f"/v1.0/state/{STORE}", [{"key": key, "value": "a"}]).status == 204
    stale = http(hangard, "GET", f"/v1.0/state/{STORE}/{key}").headers["etag"]
    assert http(hangard, "POST", f"/v1.0/state/{STORE}", [{"key": key, "value": "b", "etag": stale}]).status == 204
    assert_dapr_error(http(hangard, "POST", f"/v1.0/state/{STORE}", [{"key": key, "value": "c", "etag": stale}]), 409)
    first_write = http(hangard, "POST", f"/v1.0/state/{STORE}", [
        {"key": key, "value": "d", "options": {"concurrency": "first-write"}},
    ])
    assert_dapr_error(first_write, 409)
    last_write = http(hangard, "POST", f"/v1.0/state/{STORE}", [
        {"key": key, "value": "e", "etag": stale, "options": {"concurrency": "last-write"}},
    ])
    assert last_write.status == 204, last_write
    assert http(hangard, "GET", f"/v1.0/state/{STORE}/{key}").body == b'"e"'


def test_unknown_store_is_400(hangard):
    result = http(hangard, "GET", f"/v1.0/state/no-such-store/{unique()}")
    body = assert_dapr_error(result, 400, "ERR_STATE_STORE_NOT_FOUND")
    assert "no-such-store" in body["message"]
    saved = http(hangard, "POST", "/v1.0/state/no-such-store", [{"key": unique(), "value": 1}])
    assert_dapr_error(saved, 400, "ERR_STATE_STORE_NOT_FOUND")


def test_ttl_over_http(hangard):
    key = unique("httl")
    result = http(hangard, "POST", f"/v1.0/state/{STORE}", [
        {"key": key, "value": "brief", "metadata": {"ttlInSeconds": "1"}},
    ])
    assert result.status == 204, result
    assert http(hangard, "GET", f"/v1.0/state/{STORE}/{key}").status == 200
    time.sleep(2.5)
    assert http(hangard, "GET", f"/v1.0/state/{STORE}/{key}").status == 204


def test_metadata_over_http(hangard):
    result = http(hangard, "GET", "/v1.0/metadata")
    assert result.status == 200, result
    body = result.json()
    assert body["id"] == APP
    assert body["runtimeVersion"]
    components = {c["name"]: c for c in body["components"]}
    assert set(components) == {"statestore", "pubsub", "cache"}
    assert components["statestore"]["type"] == "state.sqlite"
    assert {"ETAG", "TRANSACTIONAL", "TTL"} <= set(components["statestore"]["capabilities"])
    assert body["extended"]["hangar.namespace"] == NS

    attribute = unique("attr")
    assert http(hangard, "PUT", f"/v1.0/metadata/{attribute}", "some value").status == 204
    assert http(hangard, "GET", "/v1.0/metadata").json()["extended"].get(attribute) == "some value"
    other = hangard.http("team-b", "orders", "GET", "/v1.0/metadata").json()
    assert attribute not in other["extended"], "an attribute set by one app leaked into another app's metadata"


@pytest.mark.parametrize("method,path", [
    ("GET", "/v1.0/configuration/store"),
    ("POST", "/v1.0/bindings/binding"),
])
def test_unimplemented_apis_are_501(hangard, method, path):
    result = http(hangard, method, path, body={"x": 1})
    assert_dapr_error(result, 501, "ERR_NOT_IMPLEMENTED")
