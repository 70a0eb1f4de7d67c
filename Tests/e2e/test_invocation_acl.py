"""Service invocation, continued: Dapr Configuration `accessControl` enforced on the callee's side, the header
mapping between HTTP and gRPC callers and callees, and the Basic-auth form of the target.

Callees are Tests/e2e/apps/grpc_callee.py (`raw`: a grpcio AppCallback servicer that also serves `/test.Echo/Echo`
for proxying) and http_callee.py (a FastAPI app); both answer `calls` with what they received, so a test can tell
that a refused call never reached them. Callers use the official SDK, plain grpcio and curl on their own sockets.
"""

from __future__ import annotations

import base64
import json
import subprocess
from typing import Iterator

import grpc
import pytest

from hangar_e2e import free_port
from tenancy_files import dedent, start_daemon, wait_until, write_atomically
from test_invocation import Callee


def tenants(raw_port: int, web_port: int) -> dict[str, str]:
    team_a = dedent(f"""
        apiVersion: hangar.dev/v1alpha1
        kind: Tenant
        metadata:
          name: team-a
        spec:
          allowInvocationFrom:
            - namespace: team-b
              methods: [open]
          apps:
            - appId: caller
            - appId: other
            - appId: raw
              appChannel:
                address: 127.0.0.1:{raw_port}
            - appId: web
              config: webacl
              appChannel:
                protocol: http
                address: 127.0.0.1:{web_port}
            - appId: guarded
              config: broken
              appChannel:
                protocol: http
                address: 127.0.0.1:{web_port}
        """)
    team_b = dedent("""
        apiVersion: hangar.dev/v1alpha1
        kind: Tenant
        metadata:
          name: team-b
        spec:
          apps:
            - appId: outsider
        """)
    return {"team-a.yaml": team_a, "team-b.yaml": team_b}


def appconfig(secret_action: str = "deny", extra: str = "") -> str:
    """team-a's Configuration (used by every team-a app that names none): deny by default; `caller` may call
    `allowed/**`, `calls`, `/test.Echo/Echo` (proxied) and `secret` as `secret_action` says; `outsider` of team-b
    may call anything the tenancy lets it."""
    return dedent(f"""
        apiVersion: dapr.io/v1alpha1
        kind: Configuration
        metadata:
          name: appconfig
          namespace: team-a
        spec:
          tracing:
            samplingRate: "1"
          accessControl:
            defaultAction: deny
            trustDomain: public
            policies:
              - appId: caller
                namespace: team-a
                trustDomain: public
                defaultAction: deny
                operations:
                  - {{name: /allowed/**, action: allow}}
                  - {{name: /calls, action: allow}}
                  - {{name: /test.Echo/Echo, action: allow}}
                  - {{name: /secret, action: {secret_action}}}
              - appId: outsider
                namespace: team-b
                trustDomain: public
                defaultAction: allow
        {extra}""")


WEBACL = dedent("""
    apiVersion: dapr.io/v1alpha1
    kind: Configuration
    metadata:
      name: webacl
    spec:
      accessControl:
        defaultAction: deny
        policies:
          - appId: caller
            namespace: team-a
            trustDomain: public
            defaultAction: deny
            operations:
              - {name: /orders/**, httpVerb: [GET], action: allow}
              - {name: /calls, httpVerb: ["*"], action: allow}
              - {name: /status/*, httpVerb: [GET], action: allow}
    """)

# A policy without its namespace: Dapr refuses to start with it; Hangar reports it and refuses calls into the app
# that uses it, while every other resource keeps working.
BROKEN = dedent("""
    apiVersion: dapr.io/v1alpha1
    kind: Configuration
    metadata:
      name: broken
    spec:
      accessControl:
        defaultAction: allow
        policies:
          - appId: caller
            trustDomain: public
    """)


@pytest.fixture
def node(hangard_factory) -> Iterator[dict]:
    raw, web = Callee("raw", free_port()).start(), Callee("tcp", free_port()).start()
    resources = {"appconfig.yaml": appconfig(), "webacl.yaml": WEBACL, "broken.yaml": BROKEN}
    metrics_port = free_port()
    daemon = start_daemon(
        hangard_factory, tenants(raw.port, web.port), components=resources,
        extra_args=("--metrics-listen", f"127.0.0.1:{metrics_port}"))
    try:
        yield {"daemon": daemon, "raw": raw, "web": web, "metrics_port": metrics_port}
    finally:
        raw.stop()
        web.stop()


def calls(daemon, app: str) -> list[str]:
    result = daemon.http("team-a", "caller", "GET", f"/v1.0/invoke/{app}/method/calls")
    assert result.status == 200, result
    return result.json()


def test_a_denied_operation_is_refused_and_never_reaches_the_callee(node):
    daemon = node["daemon"]
    assert daemon.http("team-a", "caller", "POST", "/v1.0/invoke/raw/method/allowed/1", body=b"x").status == 200
    denied = daemon.http("team-a", "caller", "POST", "/v1.0/invoke/raw/method/secret", body=b"x")
    assert denied.status == 403, denied
    # Dapr's HTTP answer to a callee-side denial: 403, ERR_DIRECT_INVOKE, the denial wrapped in its message.
    assert denied.json()["errorCode"] == "ERR_DIRECT_INVOKE"
    assert denied.json()["message"] == (
        "failed to invoke, id: raw, err: rpc error: code = PermissionDenied desc = access control policy has denied "
        "access to id: spiffe://public/ns/team-a/caller operation: secret verb: NONE")
    # An app without a policy gets the global default: deny.
    assert daemon.http("team-a", "other", "GET", "/v1.0/invoke/raw/method/allowed/1").status == 403
    assert calls(daemon, "raw") == ["allowed/1"]

    from dapr.clients.grpc.client import DaprGrpcClient

    client = daemon.client("team-a", "caller")
    with pytest.raises(grpc.RpcError) as raised:
        DaprGrpcClient.invoke_method(client, "raw", "secret", data="")
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "access control policy has denied access to id: spiffe://public/ns/team-a/caller" in raised.value.details()
    assert DaprGrpcClient.invoke_method(client, "raw", "allowed/2", data="").content_type == "application/json"
    assert calls(daemon, "raw") == ["allowed/1", "allowed/2"]


def test_a_self_call_skips_the_access_control(node):
    daemon = node["daemon"]
    assert daemon.http("team-a", "raw", "GET", "/v1.0/invoke/raw/method/secret").status == 200


def test_an_http_callee_is_guarded_by_verb_without_case(node):
    daemon = node["daemon"]
    assert daemon.http("team-a", "caller", "GET", "/v1.0/invoke/web/method/orders/1").status == 200
    assert daemon.http("team-a", "caller", "GET", "/v1.0/invoke/web/method/ORDERS/2").status == 200
    posted = daemon.http("team-a", "caller", "POST", "/v1.0/invoke/web/method/orders/3", body=b"{}")
    assert posted.status == 403
    assert posted.json()["message"].endswith("operation: orders/3 verb: POST")
    assert daemon.http("team-a", "caller", "GET", "/v1.0/invoke/web/method/payments").status == 403
    assert calls(daemon, "web") == ["GET /orders/1", "GET /ORDERS/2"]


def test_grpc_proxying_is_guarded_by_the_full_method_name(node):
    daemon = node["daemon"]
    for app, allowed in (("caller", True), ("other", False)):
        channel = grpc.insecure_channel(f"unix://{daemon.grpc_socket('team-a', app)}")
        try:
            echo = channel.unary_unary("/test.Echo/Echo")
            if allowed:
                assert json.loads(echo(b"hi", metadata=(("dapr-app-id", "raw"),), timeout=10))["request"] == "hi"
            else:
                with pytest.raises(grpc.RpcError) as denied:
                    echo(b"hi", metadata=(("dapr-app-id", "raw"),), timeout=10)
                assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
                assert denied.value.details() == (
                    "access control policy has denied access to id: spiffe://public/ns/team-a/other "
                    "operation: /test.Echo/Echo verb: NONE")
        finally:
            channel.close()
    assert calls(daemon, "raw") == ["/test.Echo/Echo"]


def test_other_namespaces_still_need_the_tenants_grant(node):
    daemon = node["daemon"]
    # The Configuration allows outsider everything, but team-a's Tenant grants team-b only `open`.
    refused = daemon.http("team-b", "outsider", "GET", "/v1.0/invoke/raw.team-a/method/allowed/1")
    assert refused.status == 403 and refused.json()["errorCode"] == "ERR_PERMISSION_DENIED"
    assert daemon.http("team-b", "outsider", "GET", "/v1.0/invoke/raw.team-a/method/open").status == 200


def test_a_configuration_change_applies_live_and_a_broken_one_keeps_the_last_good(node):
    daemon = node["daemon"]
    assert daemon.http("team-a", "caller", "GET", "/v1.0/invoke/raw/method/secret").status == 403
    write_atomically(daemon.resources / "appconfig.yaml", appconfig("allow"))
    wait_until(lambda: daemon.http("team-a", "caller", "GET", "/v1.0/invoke/raw/method/secret").status == 200, 10)
    # An invalid edit: reported, and the last good version (secret allowed) stays in force.
    write_atomically(daemon.resources / "appconfig.yaml", appconfig("deny", extra="    bogus: 1\n"))
    assert daemon.wait_for_log("Configuration resource invalid; its last good version stays in force", timeout=10)
    assert daemon.http("team-a", "caller", "GET", "/v1.0/invoke/raw/method/secret").status == 200
    write_atomically(daemon.resources / "appconfig.yaml", appconfig("deny"))
    wait_until(lambda: daemon.http("team-a", "caller", "GET", "/v1.0/invoke/raw/method/secret").status == 403, 10)


def test_a_malformed_configuration_is_reported_and_affects_only_its_apps(node):
    daemon = node["daemon"]
    refused = daemon.http("team-a", "caller", "GET", "/v1.0/invoke/guarded/method/orders/1")
    assert refused.status == 403
    assert "cannot be applied" in refused.json()["message"]
    assert "spec.accessControl.policies[0].namespace: is required" in refused.json()["message"]
    assert daemon.wait_for_log("calls into the apps that use it are refused", timeout=5)
    from test_health import detail

    status, document = detail(node["metrics_port"])
    assert status == 200
    configurations = {c["name"]: c for c in document["configurations"]}
    assert configurations["broken"]["status"] == "INVALID"
    assert "namespace: is required" in configurations["broken"]["error"]
    assert configurations["broken"]["apps"] == ["team-a/guarded"]
    assert configurations["appconfig"]["status"] == "VALID"
    # Everything else keeps working.
    assert daemon.http("team-a", "caller", "GET", "/v1.0/invoke/web/method/orders/9").status == 200
    assert daemon.http("team-a", "caller", "GET", "/v1.0/invoke/raw/method/allowed/9").status == 200


# -- headers -------------------------------------------------------------------------------------------------------


def test_an_http_callers_permanent_headers_reach_a_grpc_callee_with_the_dapr_prefix(node):
    daemon = node["daemon"]
    got = daemon.http(
        "team-a", "caller", "POST", "/v1.0/invoke/raw/method/allowed/h", body=b"{}",
        headers={"Content-Type": "application/json", "Accept": "text/plain", "Cookie": "a=1", "X-Custom": "yes"},
    ).json()["metadata"]
    assert got["dapr-content-type"] == "application/json"
    assert got["dapr-accept"] == "text/plain"
    assert got["dapr-cookie"] == "a=1"
    assert got["x-custom"] == "yes"
    assert "accept" not in got and "cookie" not in got


def test_a_grpc_caller_and_an_http_callee_exchange_headers_as_dapr_maps_them(node):
    from dapr.clients.grpc.client import DaprGrpcClient

    daemon = node["daemon"]
    client = daemon.client("team-a", "caller")
    response = DaprGrpcClient.invoke_method(
        client, "web", "orders/5", data="", http_verb="GET", metadata=(("x-trace-bin", b"\x00\x01"), ("x-custom", "1")))
    headers = json.loads(response.text())["headers"]
    assert headers["dapr-authority"]
    assert headers["x-custom"] == "1"
    assert "x-trace-bin" not in headers and "te" not in headers
    assert headers["dapr-grpc-accept-encoding"]  # grpcio's, renamed
    assert not any(name.startswith("grpc-") for name in headers)
    # The HTTP callee's status and headers come back as the call's response headers.
    assert response.headers["dapr-http-status"] == ["200"]
    assert response.headers["dapr-content-type"] == ["application/json"]

    with pytest.raises(grpc.RpcError) as raised:
        DaprGrpcClient.invoke_method(client, "web", "orders/status", data="", http_verb="POST")
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED  # POST is not allowed by webacl


def test_an_http_callees_error_status_reaches_a_grpc_caller_as_dapr_maps_it(node):
    from dapr.proto.common.v1 import common_pb2
    from dapr.proto.runtime.v1 import dapr_pb2_grpc, invoke_pb2
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    channel = grpc.insecure_channel(f"unix://{node['daemon'].grpc_socket('team-a', 'caller')}")
    try:
        request = invoke_pb2.InvokeServiceRequest(
            id="web", message=common_pb2.InvokeRequest(
                method="status/404", http_extension=common_pb2.HTTPExtension(verb=common_pb2.HTTPExtension.GET)))
        with pytest.raises(grpc.RpcError) as raised:
            dapr_pb2_grpc.DaprStub(channel).InvokeService(request, timeout=10)
        error = raised.value
        assert error.code() == grpc.StatusCode.NOT_FOUND and error.details() == "Not Found"
        assert dict(error.initial_metadata())["dapr-http-status"] == "404"
        info = error_details_pb2.ErrorInfo()
        assert rpc_status.from_call(error).details[0].Unpack(info)
        assert (info.reason, info.domain) == ("Not Found", "dapr.io")
        assert dict(info.metadata) == {"http.code": "404", "http.error_message": "the callee answers 404"}
    finally:
        channel.close()


def test_a_grpc_callees_response_headers_reach_a_grpc_caller(node):
    from dapr.clients.grpc.client import DaprGrpcClient

    client = node["daemon"].client("team-a", "caller")
    response = DaprGrpcClient.invoke_method(client, "raw", "allowed/m", data="")
    assert response.headers["x-callee"] == ["raw"]
    assert "dapr-http-status" not in response.headers


# -- targets -------------------------------------------------------------------------------------------------------


def test_basic_auth_names_the_target_on_any_unmatched_path(node):
    daemon = node["daemon"]
    socket = str(daemon.http_socket("team-a", "caller"))
    out = subprocess.run(
        ["curl", "-s", "--unix-socket", socket, "-u", "dapr-app-id:raw", "-X", "PUT", "-d", "b",
         "http://localhost/allowed/7?x=1"],
        capture_output=True, text=True, timeout=20, check=True).stdout
    got = json.loads(out)
    assert (got["method"], got["verb"], got["querystring"], got["data"]) == ("allowed/7", "PUT", "x=1", "b")
    # As in Dapr, the Authorization header reaches the callee unchanged.
    token = base64.b64encode(b"dapr-app-id:raw").decode()
    assert got["metadata"]["authorization"] == f"Basic {token}"
    # Other credentials name no target: Dapr's answer for a request without one.
    other = daemon.http("team-a", "caller", "GET", "/allowed/7", headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert other.status == 404
    assert other.json()["errorCode"] == "ERR_DIRECT_INVOKE"
    assert other.json()["message"] == "failed getting app id either from the URL path or the header dapr-app-id"
