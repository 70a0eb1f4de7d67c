"""Isolation between tenants and apps: separate data, component visibility (namespace and scopes), metadata."""

from __future__ import annotations

import grpc
import pytest

from hangar_e2e import copy_examples, grpc_error_info, unique

STORE = "statestore"


def test_same_app_id_and_key_in_two_tenants_are_separate(hangard):
    a = hangard.client("team-a", "orders")
    b = hangard.client("team-b", "orders")
    key = unique("shared-name")
    a.save_state(STORE, key, "from team-a")
    assert b.get_state(STORE, key).data == b"", "team-b reads team-a's value"
    b.save_state(STORE, key, "from team-b")
    assert a.get_state(STORE, key).data == b"from team-a"
    assert b.get_state(STORE, key).data == b"from team-b"

    # ETags of one tenant do not apply to the other's item, and deletes stay in the tenant.
    b.delete_state(STORE, key)
    assert a.get_state(STORE, key).data == b"from team-a"
    assert {i.key: i.data for i in b.get_bulk_state(STORE, [key]).items} == {key: b""}


def test_apps_of_one_tenant_are_separate(hangard):
    orders = hangard.client("team-a", "orders")
    billing = hangard.client("team-a", "billing")
    key = unique("per-app")
    orders.save_state(STORE, key, "orders' value")
    assert billing.get_state(STORE, key).data == b""


def test_namespaced_component_is_invisible_and_unusable_for_other_tenants(hangard):
    b = hangard.client("team-b", "orders")
    for call in (
        lambda: b.get_state("cache", unique()),
        lambda: b.save_state("cache", unique(), "x"),
        lambda: b.delete_state("cache", unique()),
    ):
        with pytest.raises(grpc.RpcError) as error:
            call()
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "state store cache is not found" in error.value.details()
        assert grpc_error_info(error.value).get("reason") == "DAPR_STATE_NOT_FOUND"

    metadata = b.get_metadata()
    names = {c.name for c in metadata.registered_components}
    assert names == {"statestore", "pubsub"}, f"team-b/orders sees {names}"

    a = hangard.client("team-a", "orders")
    key = unique("cache")
    a.save_state("cache", key, "team-a only")
    assert a.get_state("cache", key).data == b"team-a only"


def test_scoped_component_is_only_for_the_listed_app(hangard):
    billing = hangard.client("team-a", "billing")
    key = unique("audit")
    billing.save_state("audit", key, "entry")
    assert billing.get_state("audit", key).data == b"entry"
    assert "audit" in {c.name for c in billing.get_metadata().registered_components}

    for ns, app in (("team-a", "orders"), ("team-b", "orders")):
        client = hangard.client(ns, app)
        with pytest.raises(grpc.RpcError) as error:
            client.get_state("audit", key)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "audit" in error.value.details()
        assert "audit" not in {c.name for c in client.get_metadata().registered_components}


@pytest.mark.parametrize(
    "ns,app,components",
    [
        ("team-a", "orders", {"statestore", "pubsub", "cache"}),
        ("team-a", "billing", {"statestore", "pubsub", "cache", "audit"}),
        ("team-b", "orders", {"statestore", "pubsub"}),
    ],
)
def test_get_metadata_describes_the_caller(hangard, ns, app, components):
    metadata = hangard.client(ns, app).get_metadata()
    assert metadata.application_id == app
    assert metadata.extended_metadata.get("hangar.namespace") == ns
    registered = {c.name: c for c in metadata.registered_components}
    assert set(registered) == components
    assert registered["statestore"].type == "state.sqlite"
    assert {"ETAG", "TRANSACTIONAL", "TTL"} <= set(registered["statestore"].capabilities)
    if "cache" in registered:
        assert registered["cache"].type == "state.in-memory"
    assert registered["pubsub"].type == "pubsub.sqlite"
    assert {"MESSAGE_TTL", "BULK_PUBLISH"} <= set(registered["pubsub"].capabilities)


def test_set_metadata_is_per_app_and_cannot_spoof_the_namespace(hangard):
    a = hangard.client("team-a", "orders")
    b = hangard.client("team-b", "orders")
    name = unique("attr")
    a.set_metadata(name, "value-a")
    assert a.get_metadata().extended_metadata.get(name) == "value-a"
    assert name not in b.get_metadata().extended_metadata

    with pytest.raises(grpc.RpcError) as error:
        a.set_metadata("hangar.namespace", "team-b")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert a.get_metadata().extended_metadata["hangar.namespace"] == "team-a"


def test_key_prefix_settings_never_cross_namespaces(hangard_factory):
    """keyPrefix none/name/literal share keys between apps, but never between tenants."""
    root = hangard_factory.root()
    _, resources = copy_examples(root)
    for prefix in ("none", "name", "shared"):
        (resources / f"prefix-{prefix}.yaml").write_text(
            "apiVersion: dapr.io/v1alpha1\n"
            "kind: Component\n"
            f"metadata:\n  name: prefix-{prefix}\n"
            "spec:\n  type: state.sqlite\n  version: v1\n  metadata:\n"
            f"    - name: connectionString\n      value: prefix-{prefix}.db\n"
            f"    - name: keyPrefix\n      value: {prefix}\n"
        )
    daemon = hangard_factory.examples(root)
    a_orders = daemon.client("team-a", "orders")
    a_billing = daemon.client("team-a", "billing")
    b_orders = daemon.client("team-b", "orders")
    for prefix in ("none", "name", "shared"):
        store, key = f"prefix-{prefix}", unique(prefix)
        a_orders.save_state(store, key, "a")
        assert a_billing.get_state(store, key).data == b"a", f"keyPrefix {prefix}: apps of a tenant should share"
        assert b_orders.get_state(store, key).data == b"", f"keyPrefix {prefix}: crossed into another tenant"
        b_orders.save_state(store, key, "b")
        assert a_orders.get_state(store, key).data == b"a"


def test_a_token_on_an_app_socket_does_not_change_who_is_calling(hangard):
    """On an app's socket the connection is the identity: another app's API token is ignored."""
    from hangar_e2e import TEAM_B_ORDERS_TOKEN, sdk_environment

    foreign = {"dapr-api-token": TEAM_B_ORDERS_TOKEN}
    metadata = hangard.http("team-a", "orders", "GET", "/v1.0/metadata", headers=foreign).json()
    assert metadata["extended"]["hangar.namespace"] == "team-a"
    key = unique("token-on-socket")
    assert hangard.http("team-a", "orders", "POST", f"/v1.0/state/{STORE}", [{"key": key, "value": "a"}], foreign).status == 204
    assert hangard.client("team-b", "orders").get_state(STORE, key).data == b""

    from dapr.clients import DaprClient

    with sdk_environment(hangard.http_port, TEAM_B_ORDERS_TOKEN):
        client = DaprClient(address=f"unix://{hangard.grpc_socket('team-a', 'orders')}")
    try:
        assert client.get_metadata().extended_metadata["hangar.namespace"] == "team-a"
        assert client.get_state(STORE, key).data == b'"a"'
    finally:
        client.close()
