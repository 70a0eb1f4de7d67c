"""Resiliency policies on push delivery, end to end: the real hangard reading a `Resiliency` resource from
`--resources`, the subscriber apps of test_pubsub_delivery.py (apps/delivery_app.py: a FastAPI app with
dapr.ext.fastapi on a Unix socket, a dapr.ext.grpc.App on loopback TCP) answering what each event's data tells them,
events published by another app of the tenant with DaprClient.

The component's inbound policy replaces the built-in rule (1 s, 10 attempts): its `maxRetries` bounds the
deliveries, its `matching` decides which failures are retried, its `timeout` is each delivery's deadline, and an
edit of the resource reaches the running subscriptions. Counts are exact: a message that runs out of retries is
acknowledged when it is dead-lettered, so none arrives after its dead letter.
"""

from __future__ import annotations

import http.client
import json
from typing import Iterator

import pytest

from hangar_e2e import Hangard, free_port, short_tempdir
from tenancy_files import component_yaml, dedent, wait_until, write_atomically
from test_pubsub_delivery import App, Node, node_files, serve

# A few deliveries 200 ms apart, and room for a loaded machine.
WITHIN = 30.0


def resiliency(spec: str, *, name: str = "delivery", namespace: str | None = "team-a") -> str:
    lines = ["apiVersion: dapr.io/v1alpha1", "kind: Resiliency", "metadata:", f"  name: {name}"]
    if namespace:
        lines.append(f"  namespace: {namespace}")
    lines += ["spec:"] + ["  " + line for line in dedent(spec).splitlines()]
    return "\n".join(lines) + "\n"


# Three deliveries at most, 200 ms apart; HTTP failures only when 429 (so a 500 is not retried), gRPC ones only
# when UNAVAILABLE (so a handler that raises, UNKNOWN, is not retried); a RETRY answer carries no code: retried.
THREE_ATTEMPTS = resiliency("""
    policies:
      timeouts: {quick: 1s}
      retries:
        threeAttempts:
          policy: constant
          duration: 200ms
          maxRetries: 2
          matching: {httpStatusCodes: "429", gRPCStatusCodes: "14"}
    targets:
      components:
        pubsub: {inbound: {retry: threeAttempts, timeout: quick}, outbound: {retry: threeAttempts}}
      apps:
        web: {retry: threeAttempts}
    """)

ONE_ATTEMPT = resiliency("""
    policies:
      retries:
        oneAttempt: {policy: constant, duration: 200ms, maxRetries: 0}
    targets:
      components:
        pubsub: {inbound: {retry: oneAttempt}}
    """)

# Invalid (a target names a policy nobody declares): kept with its error, applies to nothing.
BROKEN = resiliency("""
    targets:
      components:
        pubsub: {inbound: {retry: nowhere}}
    """, name="broken", namespace=None)


def tenants(grpc_port: int) -> dict[str, str]:
    team_a = dedent(f"""
        apiVersion: hangar.dev/v1alpha1
        kind: Tenant
        metadata:
          name: team-a
        spec:
          apps:
            - appId: pub
            - appId: web
              appChannel: {{protocol: http}}
            - appId: grpcapp
              appChannel: {{protocol: grpc, address: "127.0.0.1:{grpc_port}"}}
        """)
    return {"team-a.yaml": team_a}


class ResilientNode(Node):
    """The node of test_pubsub_delivery.py with a metrics listener, where `/healthz/detail` is served."""

    metrics_port = 0

    def detail(self) -> dict:
        connection = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=5)
        try:
            connection.request("GET", "/healthz/detail")
            response = connection.getresponse()
            assert response.status == 200
            return json.loads(response.read())
        finally:
            connection.close()

    def resiliencies(self) -> dict[str, dict]:
        return {entry["name"]: entry for entry in self.detail()["resiliencies"]}

    def log_count(self, needle: str) -> int:
        return sum(needle in line for line in self.daemon.log.splitlines())


@pytest.fixture(scope="module")
def node() -> Iterator[ResilientNode]:
    root = short_tempdir()
    grpc_port, metrics_port = free_port(), free_port()
    tenancy, resources = node_files(root, tenants(grpc_port), {
        "0-pubsub.yaml": component_yaml("pubsub", "pubsub.in-memory"),
        "1-resiliency.yaml": THREE_ATTEMPTS,
        "2-broken.yaml": BROKEN,
    })
    grpcapp = App("grpc", str(grpc_port), root / "team-a-grpcapp.jsonl").start()
    daemon = Hangard(root, tenancy=tenancy, resources=resources, apps=(("team-a", "pub"), ("team-a", "web")),
                     extra_args=("--metrics-listen", f"127.0.0.1:{metrics_port}"))
    node = ResilientNode(daemon, root)
    node.metrics_port = metrics_port
    node.apps["team-a/grpcapp"] = grpcapp
    yield from serve(node, (("team-a", "web"),))


def test_the_resources_are_listed_with_what_is_not_applied_and_an_invalid_one_with_its_error(node):
    listed = node.resiliencies()
    delivery = listed["delivery"]
    assert delivery["status"] == "VALID" and delivery["namespace"] == "team-a"
    assert delivery["notApplied"] == ["targets.apps.web", "targets.components.pubsub.outbound"]
    broken = listed["broken"]
    assert broken["status"] == "INVALID" and "namespace" not in broken
    assert broken["error"].endswith(
        "spec.targets.components.pubsub.inbound.retry: names the retry policy 'nowhere', which this resource does "
        "not declare")
    # The configuration was not rejected: the node serves, and says so in its log.
    assert node.daemon.wait_for_log("Resiliency resource invalid", "broken")


def test_a_retried_event_is_delivered_max_retries_plus_one_times_then_dead_lettered(node):
    web = node.apps["team-a/web"]
    node.warm_up("team-a", web, "retried", handler="retried")
    node.warm_up("team-a", web, "retried-dlq", handler="dlq")
    event_id = node.publish("team-a", "retried", {"answer": "RETRY"})
    [dead] = web.wait_for(event_id, handler="dlq", timeout=WITHIN)
    assert dead["data"] == {"answer": "RETRY"}
    assert len(web.events(event_id, handler="retried")) == 3
    # One that succeeds at its third delivery is not dead-lettered.
    recovered = node.publish("team-a", "retried", {"answer": "RETRY", "times": 2})
    web.wait_for(recovered, count=3, handler="retried", timeout=WITHIN)
    dropped = node.publish("team-a", "retried", {"answer": "DROP"})
    web.wait_for(dropped, handler="dlq", timeout=WITHIN)
    assert web.events(recovered, handler="dlq") == []


def test_a_failure_the_policy_does_not_match_is_dead_lettered_at_once(node):
    web = node.apps["team-a/web"]
    node.warm_up("team-a", web, "retried", handler="retried")
    node.warm_up("team-a", web, "retried-dlq", handler="dlq")
    # HTTP 500 is not in `httpStatusCodes: "429"`: not retried.
    event_id = node.publish("team-a", "retried", {"answer": "500"})
    web.wait_for(event_id, handler="dlq", timeout=WITHIN)
    assert len(web.events(event_id, handler="retried")) == 1
    assert node.daemon.wait_for_log("failed with HTTP 500, which its retry policy does not retry")


def test_a_grpc_failure_the_policy_does_not_match_is_not_retried(node):
    grpcapp = node.apps["team-a/grpcapp"]
    node.warm_up("team-a", grpcapp, "grpc-orders", handler="on_orders")
    # A handler that raises is gRPC UNKNOWN (2), not in `gRPCStatusCodes: "14"`: dropped (no dead-letter topic).
    raised = node.publish("team-a", "grpc-orders", {"answer": "raise"})
    grpcapp.wait_for(raised)
    assert node.daemon.wait_for_log(
        "failed with gRPC code 2, which its retry policy does not retry", "dropped", timeout=WITHIN)
    # RETRY carries no code: retried, within the three attempts.
    retried = node.publish("team-a", "grpc-orders", {"answer": "RETRY", "times": 2})
    assert len(grpcapp.wait_for(retried, count=3, timeout=WITHIN)) == 3
    assert len(grpcapp.events(raised)) == 1


def test_the_inbound_timeout_is_each_deliverys_deadline(node):
    web = node.apps["team-a/web"]
    node.warm_up("team-a", web, "retried", handler="retried")
    node.warm_up("team-a", web, "retried-dlq", handler="dlq")
    # The app never answers: each delivery ends at the 1 s timeout (not the 60 s default), three times.
    event_id = node.publish("team-a", "retried", {"answer": "hang"})
    web.wait_for(event_id, handler="dlq", timeout=WITHIN)
    assert len(web.events(event_id, handler="retried")) == 3


def test_an_edit_of_the_resiliency_reaches_the_running_subscriptions(node):
    web = node.apps["team-a/web"]
    node.warm_up("team-a", web, "retried", handler="retried")
    node.warm_up("team-a", web, "retried-dlq", handler="dlq")
    resource = node.daemon.resources / "1-resiliency.yaml"
    three = "subscription on retried (pubsub pubsub) follows retry threeAttempts (team-a/delivery), timeout quick"
    followed = node.log_count(three)
    write_atomically(resource, ONE_ATTEMPT)
    try:
        # The subscription's loop logs the policy it follows once it has it.
        assert node.daemon.wait_for_log(
            "subscription on retried (pubsub pubsub) follows retry oneAttempt (team-a/delivery)", timeout=WITHIN)
        event_id = node.publish("team-a", "retried", {"answer": "RETRY"})
        web.wait_for(event_id, handler="dlq", timeout=WITHIN)
        assert len(web.events(event_id, handler="retried")) == 1
        assert node.resiliencies()["delivery"]["notApplied"] == []
    finally:
        write_atomically(resource, THREE_ATTEMPTS)
    wait_until(lambda: node.log_count(three) > followed, timeout=WITHIN)
    event_id = node.publish("team-a", "retried", {"answer": "RETRY"})
    web.wait_for(event_id, handler="dlq", timeout=WITHIN)
    assert len(web.events(event_id, handler="retried")) == 3
