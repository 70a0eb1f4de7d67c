"""Where push subscriptions come from: declarative `Subscription` resources (dapr.io/v2alpha1 and v1alpha1, node-wide
and namespaced, scoped and not) and the apps' programmatic lists (the SDK's FastAPI `DaprApp.subscribe` over an HTTP
app channel on a Unix socket, and `dapr.ext.grpc.App.subscribe` with a `Rule` over gRPC), as `GetMetadata` (gRPC, and
`GET /v1.0/metadata`) lists them to each app: only its own.

Delivery is not checked here; test_pubsub_subscribe.py and the delivery tests do that.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from hangar_e2e import free_port
from pubsub_fixtures import AppProcess, subscription
from tenancy_files import component_yaml, dedent, start_daemon, wait_until, write_atomically

# A fetch retried with backoff reaches its 10 s cap; leave room for one attempt after it.
FETCHED_WITHIN = 30.0


class Subscriber(AppProcess):
    """A subscriber app process: subscriber.py `fastapi PATH` or `grpc PORT [VARIANT]`."""

    def __init__(self, *args: str):
        super().__init__("subscriber.py", *args, socket=args[1] if args[0] == "fastapi" else None)


RESOURCES = {
    "0-pubsub.yaml": component_yaml("pubsub", "pubsub.in-memory"),
    # Node-wide, unscoped: every app of every tenant.
    "1-audit.yaml": subscription("audit", "audit", spec="""
        routes:
          rules:
          - match: event.type == "audit.a"
            path: /audit/a
          default: /audit
        deadLetterTopic: audit-dlq
        metadata: {rawPayload: "false"}
        """),
    # Node-wide; the apps that subscribe to pubsub/shared programmatically replace it.
    "2-shared.yaml": subscription("shared", "shared", spec="routes: {default: /declared}"),
    # v1alpha1, team-a only, scoped to `web`.
    "3-legacy.yaml": subscription("legacy", "legacy", version="v1alpha1", namespace="team-a", scopes=["web"],
                                  spec="route: /legacy"),
    # team-b only.
    "4-bonly.yaml": subscription("bonly", "bonly", namespace="team-b", spec="routes: {default: /b}"),
    # Node-wide, scoped to `other` (there is one in each tenant).
    "5-others.yaml": subscription("others", "others", scopes=["other"], spec="routes: {default: /o}"),
    # Invalid: arithmetic is not in the supported CEL subset.
    "6-invalid.yaml": subscription("broken", "broken", spec="""
        routes:
          rules:
          - {match: 'event.data.n * 2 > 4', path: /x}
        """),
}


def tenants(grpc_port: int, late_port: int) -> dict[str, str]:
    team_a = dedent(f"""
        apiVersion: hangar.dev/v1alpha1
        kind: Tenant
        metadata:
          name: team-a
        spec:
          apps:
            - appId: web
              appChannel:
                protocol: http
                healthCheck: {{path: /healthz, intervalSeconds: 0.2, timeoutSeconds: 1, threshold: 2}}
            - appId: grpcapp
              appChannel: {{protocol: grpc, address: "127.0.0.1:{grpc_port}"}}
            - appId: late
              appChannel: {{protocol: grpc, address: "127.0.0.1:{late_port}"}}
            - appId: other
        """)
    team_b = dedent("""
        apiVersion: hangar.dev/v1alpha1
        kind: Tenant
        metadata:
          name: team-b
        spec:
          apps:
            - appId: web
            - appId: other
        """)
    return {"team-a.yaml": team_a, "team-b.yaml": team_b}


@pytest.fixture
def node(hangard_factory) -> Iterator[dict]:
    grpc_port, late_port, metrics_port = free_port(), free_port(), free_port()
    grpcapp = Subscriber("grpc", str(grpc_port)).start()
    daemon = start_daemon(
        hangard_factory, tenants(grpc_port, late_port), dict(RESOURCES),
        apps=(("team-a", "web"), ("team-a", "grpcapp"), ("team-a", "other"), ("team-b", "web")),
        extra_args=("--metrics-listen", f"127.0.0.1:{metrics_port}"))
    # The HTTP app listens at its channel's default address, in the directory hangard made: it starts after hangard.
    web_socket = str(daemon.app_dir("team-a", "web") / "app-web-http.socket")
    web = Subscriber("fastapi", web_socket).start()
    started = [grpcapp, web]
    try:
        yield {"daemon": daemon, "late_port": late_port, "metrics_port": metrics_port, "web_socket": web_socket,
               "started": started}
    finally:
        for app in started:
            app.stop()


def grpc_subscriptions(daemon, ns: str, app: str) -> dict[str, dict]:
    """The caller's subscriptions from GetMetadata over gRPC, by topic. The SDK's get_metadata() does not expose
    them, so the raw response of the SDK's own stub is read."""
    from dapr.proto.runtime.v1 import metadata_pb2

    client = daemon.client(ns, app)
    assert client.get_metadata().application_id == app
    response = client._stub.GetMetadata(metadata_pb2.GetMetadataRequest())
    listed = {}
    for sub in response.subscriptions:
        assert sub.topic not in listed, f"{sub.topic} listed twice for {ns}/{app}"
        listed[sub.topic] = {
            "pubsubname": sub.pubsub_name,
            "type": metadata_pb2.PubsubSubscriptionType.Name(sub.type),
            "rules": [(rule.match, rule.path) for rule in sub.rules.rules],
            "deadLetterTopic": sub.dead_letter_topic,
            "metadata": dict(sub.metadata),
        }
    return listed


def http_subscriptions(daemon, ns: str, app: str) -> dict[str, dict]:
    """The caller's subscriptions from `GET /v1.0/metadata`, by topic, as Dapr's JSON has them."""
    result = daemon.http(ns, app, "GET", "/v1.0/metadata")
    assert result.status == 200, result.body
    return {sub["topic"]: sub for sub in result.json().get("subscriptions", [])}


def test_each_app_sees_its_declarative_and_programmatic_subscriptions_and_no_other(node):
    daemon = node["daemon"]
    # The FastAPI app started after hangard; its list is fetched once it answers.
    wait_until(lambda: "orders" in grpc_subscriptions(daemon, "team-a", "web"), timeout=FETCHED_WITHIN)
    web = grpc_subscriptions(daemon, "team-a", "web")
    assert set(web) == {"audit", "shared", "legacy", "orders", "payments"}
    assert web["audit"] == {
        "pubsubname": "pubsub", "type": "DECLARATIVE", "rules": [('event.type == "audit.a"', "/audit/a"), ("", "/audit")],
        "deadLetterTopic": "audit-dlq", "metadata": {"rawPayload": "false"},
    }
    assert web["legacy"]["type"] == "DECLARATIVE" and web["legacy"]["rules"] == [("", "/legacy")]
    # The SDK's FastAPI subscriptions: the default route /events/<pubsub>/<topic>, or the one given.
    assert web["orders"] == {
        "pubsubname": "pubsub", "type": "PROGRAMMATIC", "rules": [("", "/events/pubsub/orders")],
        "deadLetterTopic": "", "metadata": {"rawPayload": "true"},
    }
    assert web["payments"]["rules"] == [("", "/pay")] and web["payments"]["deadLetterTopic"] == "payments-dlq"
    # A programmatic subscription replaces the declarative one of the same pubsub and topic.
    assert web["shared"]["type"] == "PROGRAMMATIC" and web["shared"]["rules"] == [("", "/events/pubsub/shared")]

    wait_until(lambda: "widgets" in grpc_subscriptions(daemon, "team-a", "grpcapp"), timeout=FETCHED_WITHIN)
    grpcapp = grpc_subscriptions(daemon, "team-a", "grpcapp")
    assert set(grpcapp) == {"audit", "shared", "widgets", "plain"}
    # dapr.ext.grpc: a Rule's path is the handler's name; a plain subscription has the path "".
    assert grpcapp["widgets"]["type"] == "PROGRAMMATIC"
    assert grpcapp["widgets"]["rules"] == [('event.type == "widget"', "on_widget")]
    assert grpcapp["plain"] == {
        "pubsubname": "pubsub", "type": "PROGRAMMATIC", "rules": [("", "")], "deadLetterTopic": "plain-dlq",
        "metadata": {"k": "v"},
    }
    assert grpcapp["shared"]["type"] == "PROGRAMMATIC"

    # Apps without an app channel: the declarative ones that apply to them, by namespace and scope.
    other_a = grpc_subscriptions(daemon, "team-a", "other")
    assert {topic: sub["type"] for topic, sub in other_a.items()} == {
        "audit": "DECLARATIVE", "shared": "DECLARATIVE", "others": "DECLARATIVE"}
    assert other_a["shared"]["rules"] == [("", "/declared")]
    assert set(grpc_subscriptions(daemon, "team-b", "web")) == {"audit", "shared", "bonly"}
    # team-b's `other` is listed through its HTTP socket.
    assert set(http_subscriptions(daemon, "team-b", "other")) == {"audit", "shared", "bonly", "others"}
    assert "broken" not in web and "broken" not in other_a


def test_get_metadata_over_http_has_dapr_json_keys(node):
    daemon = node["daemon"]
    wait_until(lambda: "orders" in http_subscriptions(daemon, "team-a", "web"), timeout=FETCHED_WITHIN)
    web = http_subscriptions(daemon, "team-a", "web")
    assert web["audit"] == {
        "pubsubname": "pubsub", "topic": "audit", "type": "DECLARATIVE", "deadLetterTopic": "audit-dlq",
        "metadata": {"rawPayload": "false"},
        "rules": [{"match": 'event.type == "audit.a"', "path": "/audit/a"}, {"path": "/audit"}],
    }
    assert web["orders"] == {
        "pubsubname": "pubsub", "topic": "orders", "type": "PROGRAMMATIC", "deadLetterTopic": "",
        "metadata": {"rawPayload": "true"}, "rules": [{"path": "/events/pubsub/orders"}],
    }
    wait_until(lambda: "plain" in http_subscriptions(daemon, "team-a", "grpcapp"), timeout=FETCHED_WITHIN)
    plain = http_subscriptions(daemon, "team-a", "grpcapp")["plain"]
    # A rule with neither match nor path is an empty object, as Dapr's omitempty tags make it.
    assert plain["rules"] == [{}] and plain["deadLetterTopic"] == "plain-dlq"


def test_an_app_started_after_hangard_gets_its_subscriptions_fetched(node):
    daemon = node["daemon"]
    before = grpc_subscriptions(daemon, "team-a", "late")
    assert {topic: sub["type"] for topic, sub in before.items()} == {"audit": "DECLARATIVE", "shared": "DECLARATIVE"}
    assert daemon.wait_for_log("cannot fetch the app's programmatic subscriptions yet", "team-a/late", timeout=10)
    node["started"].append(Subscriber("grpc", str(node["late_port"])).start())
    wait_until(lambda: "widgets" in grpc_subscriptions(daemon, "team-a", "late"), timeout=FETCHED_WITHIN)
    late = grpc_subscriptions(daemon, "team-a", "late")
    assert set(late) == {"audit", "shared", "widgets", "plain"}
    assert late["shared"]["type"] == "PROGRAMMATIC"


def test_a_restarted_app_is_asked_again_once_healthy(node):
    """Hangard outlives the app's processes: after the app was unhealthy and is healthy again, its list is fetched
    again (Dapr fetches once per sidecar)."""
    daemon = node["daemon"]
    wait_until(lambda: "orders" in grpc_subscriptions(daemon, "team-a", "web"), timeout=FETCHED_WITHIN)
    web = node["started"][1]
    web.stop()
    assert daemon.wait_for_log("app is unhealthy", "team-a/web", timeout=10)
    node["started"].append(Subscriber("fastapi", node["web_socket"], "changed").start())
    wait_until(lambda: "changed" in grpc_subscriptions(daemon, "team-a", "web"), timeout=FETCHED_WITHIN)
    assert set(grpc_subscriptions(daemon, "team-a", "web")) == {"audit", "shared", "legacy", "changed"}


def test_a_live_edit_of_a_subscription_file_shows_up(node):
    daemon = node["daemon"]
    resources = daemon.resources
    assert set(grpc_subscriptions(daemon, "team-a", "other")) == {"audit", "shared", "others"}
    # Re-scope `legacy` to team-a's `other`, and rename its topic.
    write_atomically(resources / "3-legacy.yaml", subscription(
        "legacy", "legacy-2", version="v1alpha1", namespace="team-a", scopes=["other"], spec="route: /legacy2"))
    wait_until(lambda: "legacy-2" in grpc_subscriptions(daemon, "team-a", "other"), timeout=10)
    assert grpc_subscriptions(daemon, "team-a", "other")["legacy-2"]["rules"] == [("", "/legacy2")]
    assert "legacy-2" not in grpc_subscriptions(daemon, "team-b", "other")
    wait_until(lambda: "legacy" not in grpc_subscriptions(daemon, "team-a", "web"), timeout=10)
    # A removed file takes its subscription away.
    (resources / "5-others.yaml").unlink()
    wait_until(lambda: "others" not in grpc_subscriptions(daemon, "team-a", "other"), timeout=10)
    assert set(grpc_subscriptions(daemon, "team-b", "other")) == {"audit", "shared", "bonly"}


def test_an_invalid_subscription_is_in_healthz_detail_and_logged(node):
    from test_health import detail

    daemon = node["daemon"]
    status, document = detail(node["metrics_port"])
    assert status == 200
    listed = {sub["name"]: sub for sub in document["subscriptions"]}
    assert listed["audit"]["status"] == "VALID" and listed["audit"]["topic"] == "audit"
    assert listed["legacy"]["namespace"] == "team-a" and listed["legacy"]["scopes"] == ["web"]
    broken = listed["broken"]
    assert broken["status"] == "INVALID"
    assert "6-invalid.yaml" in broken["error"] and "spec.routes.rules[0].match" in broken["error"]
    assert "arithmetic ('*') is not supported" in broken["error"]
    assert daemon.wait_for_log("Subscription resource invalid", "broken")
    # Fixing it makes it valid and listed for the apps.
    write_atomically(daemon.resources / "6-invalid.yaml", subscription("broken", "broken", spec="""
        routes:
          rules:
          - {match: 'int(event.data.n) > 4', path: /x}
        """))
    wait_until(lambda: "broken" in grpc_subscriptions(daemon, "team-b", "web"), timeout=10)
    assert grpc_subscriptions(daemon, "team-b", "web")["broken"]["rules"] == [("int(event.data.n) > 4", "/x")]
    status, document = detail(node["metrics_port"])
    assert {sub["name"]: sub["status"] for sub in document["subscriptions"]}["broken"] == "VALID"


def test_streaming_subscriptions_are_listed_for_their_own_app_only(node):
    daemon = node["daemon"]
    subscription = daemon.client("team-b", "web").subscribe("pubsub", "streamed", dead_letter_topic="streamed-dlq")
    try:
        wait_until(lambda: "streamed" in grpc_subscriptions(daemon, "team-b", "web"), timeout=10)
        streamed = grpc_subscriptions(daemon, "team-b", "web")["streamed"]
        assert streamed["type"] == "STREAMING"
        assert streamed["rules"] == [("", "/")] and streamed["deadLetterTopic"] == "streamed-dlq"
        assert http_subscriptions(daemon, "team-b", "web")["streamed"]["type"] == "STREAMING"
        assert "streamed" not in grpc_subscriptions(daemon, "team-b", "other")
        assert "streamed" not in grpc_subscriptions(daemon, "team-a", "other")
    finally:
        subscription.close()
    wait_until(lambda: "streamed" not in grpc_subscriptions(daemon, "team-b", "web"), timeout=10)
