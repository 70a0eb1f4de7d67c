"""The TCP listeners: an API token makes a call act as its app; without a valid one, only health answers."""

from __future__ import annotations

import grpc
import pytest

from hangar_e2e import TEAM_A_ORDERS_TOKEN, TEAM_B_ORDERS_TOKEN, unique

STORE = "statestore"


@pytest.mark.parametrize(
    "ns,token", [("team-a", TEAM_A_ORDERS_TOKEN), ("team-b", TEAM_B_ORDERS_TOKEN)], ids=["apiToken", "apiTokenFile"]
)
def test_grpc_with_a_token_acts_as_its_app(hangard, ns, token):
    over_socket = hangard.client(ns, "orders")
    over_tcp = hangard.tcp_client(token)
    key = unique("tcp")
    over_socket.save_state(STORE, key, f"written by {ns} on its socket")
    assert over_tcp.get_state(STORE, key).data == f"written by {ns} on its socket".encode()
    over_tcp.save_state(STORE, key, f"written by {ns} over TCP")
    assert over_socket.get_state(STORE, key).data == f"written by {ns} over TCP".encode()

    metadata = over_tcp.get_metadata()
    assert metadata.application_id == "orders"
    assert metadata.extended_metadata.get("hangar.namespace") == ns


def test_tokens_of_two_tenants_reach_separate_data(hangard):
    a, b = hangard.tcp_client(TEAM_A_ORDERS_TOKEN), hangard.tcp_client(TEAM_B_ORDERS_TOKEN)
    key = unique("tcp-both")
    a.save_state(STORE, key, "a")
    assert b.get_state(STORE, key).data == b""
    with pytest.raises(grpc.RpcError) as error:  # team-b may not use team-a's namespaced component
        b.get_state("cache", key)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "token", [None, "wrong-token", TEAM_A_ORDERS_TOKEN + "x", " "], ids=["none", "wrong", "near-miss", "blank"]
)
def test_grpc_without_a_valid_token_is_unauthenticated(hangard, token):
    client = hangard.tcp_client(token)
    for call in (
        lambda: client.get_state(STORE, unique()),
        lambda: client.save_state(STORE, unique(), "x"),
        lambda: client.get_metadata(),
    ):
        with pytest.raises(grpc.RpcError) as error:
            call()
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED, error.value


@pytest.mark.parametrize("headers", [{}, {"dapr-api-token": "wrong-token"}], ids=["no-token", "wrong-token"])
def test_http_without_a_valid_token_is_401_but_health_answers(hangard, headers):
    key = unique("http-tcp")
    for method, path, body in (
        ("GET", f"/v1.0/state/{STORE}/{key}", None),
        ("POST", f"/v1.0/state/{STORE}", [{"key": key, "value": 1}]),
        ("GET", "/v1.0/metadata", None),
    ):
        result = hangard.tcp_http(method, path, body, headers)
        assert result.status == 401, (method, path, result)
    assert hangard.tcp_http("GET", "/v1.0/healthz", headers=headers).status == 204
    assert hangard.tcp_http("GET", "/v1.0/healthz/outbound", headers=headers).status == 204
    assert hangard.client("team-a", "orders").get_state(STORE, key).data == b"", "an unauthenticated write landed"


def test_http_with_a_token_acts_as_its_app(hangard):
    key = unique("http-token")
    token = {"dapr-api-token": TEAM_B_ORDERS_TOKEN}
    assert hangard.tcp_http("POST", f"/v1.0/state/{STORE}", [{"key": key, "value": "b"}], token).status == 204
    assert hangard.client("team-b", "orders").get_state(STORE, key).data == b'"b"'
    assert hangard.client("team-a", "orders").get_state(STORE, key).data == b""
    got = hangard.tcp_http("GET", f"/v1.0/state/{STORE}/{key}", headers=token)
    assert got.status == 200 and got.body == b'"b"' and got.headers.get("etag")
    assert hangard.tcp_http("GET", "/v1.0/metadata", headers=token).json()["extended"]["hangar.namespace"] == "team-b"
