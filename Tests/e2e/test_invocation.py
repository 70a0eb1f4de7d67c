"""Service invocation: the real hangard calls into gRPC apps over their app channel.

Callers use the official SDK (`invoke_method` over HTTP, the SDK's default, and gRPC `InvokeService`), plain HTTP
and curl on their own Unix socket; callees are the SDK's own app server (`dapr.ext.grpc.App`), a plain grpcio
AppCallback servicer that reports everything it received (Tests/e2e/apps/grpc_callee.py), each on loopback TCP, and a
FastAPI app (Tests/e2e/apps/http_callee.py) on TCP and on a Unix socket.

Streaming (an HTTP caller's call to an HTTP app) is checked by behaviour: the bytes that pass are hashed, and hangard's
resident memory (VmRSS) is sampled while tens of megabytes go through it.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import grpc
import pytest

from hangar_e2e import UnixHTTPConnection, free_port, sdk_environment, unique
from tenancy_files import dedent, start_daemon, wait_until, write_atomically

CALLEE = Path(__file__).parent / "apps" / "grpc_callee.py"
HTTP_CALLEE = Path(__file__).parent / "apps" / "http_callee.py"
CALLER_TOKEN = "caller-token-0123456789"
# The node's --max-request-bytes in these tests: room for a 20 MiB upload, and the cap of a buffered answer.
NODE_MAX_REQUEST_BYTES = 32 * 1024 * 1024
OUTSIDER_TOKEN = "outsider-token-0123456789"
# The APP_API_TOKENs hangard sends to the apps `rawtoken` (inline) and `webtoken` (from a file).
RAW_APP_TOKEN = "raw-app-token-0123456789"
WEB_APP_TOKEN = "web-app-token-0123456789"


class Callee:
    """A callee process listening on a loopback port: grpc_callee.py (`sdk` or `raw` mode), or http_callee.py
    (`tcp`, `where` a port, or `uds`, `where` a socket path)."""

    def __init__(self, mode: str, port: int | None = None, where: str | None = None):
        self.mode = mode
        self.port = port
        self.where = where if where is not None else str(port)
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> "Callee":
        script = HTTP_CALLEE if self.mode in ("tcp", "uds") else CALLEE
        self.process = subprocess.Popen(
            [sys.executable, str(script), self.mode, self.where],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.strip() == "ready", f"the callee did not start: {line}{self.process.stdout.read()}"
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        if self.mode == "uds":
            Path(self.where).unlink(missing_ok=True)  # a killed server leaves its socket file


def tenants(sdk_port: int, raw_port: int, down_port: int, grants: str = "", web_port: int = 1) -> dict[str, str]:
    team_a = dedent(f"""
        apiVersion: hangar.dev/v1alpha1
        kind: Tenant
        metadata:
          name: team-a
        spec:
          apps:
            - appId: caller
              apiToken: {CALLER_TOKEN}
            - appId: callee
              appChannel:
                protocol: grpc
                address: 127.0.0.1:{sdk_port}
            - appId: raw
              appChannel:
                address: 127.0.0.1:{raw_port}
            - appId: down
              appChannel:
                address: 127.0.0.1:{down_port}
            - appId: silent
            - appId: fit
              appChannel:
                address: 127.0.0.1:{sdk_port}
                healthCheck: {{intervalSeconds: 0.2, timeoutSeconds: 1, threshold: 2}}
            - appId: sick
              appChannel:
                address: 127.0.0.1:{raw_port}
                healthCheck: {{intervalSeconds: 0.2, timeoutSeconds: 1, threshold: 2}}
            - appId: web
              appChannel:
                protocol: http
                address: 127.0.0.1:{web_port}
                healthCheck: {{intervalSeconds: 0.2, timeoutSeconds: 1, threshold: 2}}
            - appId: webuds
              appChannel: {{protocol: http}}
            - appId: narrow
              appChannel: {{address: 127.0.0.1:{raw_port}, maxConcurrency: 1}}
            - appId: rawtoken
              appChannel: {{address: 127.0.0.1:{raw_port}, appApiToken: {RAW_APP_TOKEN}}}
            - appId: webtoken
              appChannel: {{protocol: http, address: 127.0.0.1:{web_port}, appApiTokenFile: webtoken.token}}
            - appId: busy
              apiToken: busy-token-0123456789
              quotas: {{maxConcurrentRequests: 2}}
            - appId: tight
              quotas: {{maxRequestBytes: 1048576}}
            - appId: single
              quotas: {{maxConcurrentRequests: 1}}
        """)
    team_a += grants
    team_b = dedent(f"""
        apiVersion: hangar.dev/v1alpha1
        kind: Tenant
        metadata:
          name: team-b
        spec:
          apps:
            - appId: outsider
              apiToken: {OUTSIDER_TOKEN}
        """)
    return {"team-a.yaml": team_a, "team-b.yaml": team_b, "webtoken.token": WEB_APP_TOKEN + "\n"}


@pytest.fixture
def node(hangard_factory) -> Iterator[dict]:
    sdk, raw = Callee("sdk", free_port()).start(), Callee("raw", free_port()).start()
    web = Callee("tcp", free_port()).start()
    down_port = free_port()
    daemon = start_daemon(
        hangard_factory, tenants(sdk.port, raw.port, down_port, web_port=web.port),
        extra_args=("--max-request-bytes", str(NODE_MAX_REQUEST_BYTES)))
    # The default address of an HTTP app channel: app-<appId>-http.socket in the app's directory, which the app
    # creates once hangard has made the directory.
    webuds = Callee("uds", where=str(daemon.app_dir("team-a", "webuds") / "app-webuds-http.socket")).start()
    try:
        yield {"daemon": daemon, "sdk": sdk, "raw": raw, "web": web, "down_port": down_port}
    finally:
        for callee in (sdk, raw, web, webuds):
            callee.stop()


def sdk_client(daemon, token: str):
    """The SDK's DaprClient as an app reaches a node over TCP: its token says which app it is."""
    from dapr.clients import DaprClient

    with sdk_environment(daemon.http_port, token):
        client = DaprClient(address=f"127.0.0.1:{daemon.grpc_port}")
    daemon._clients.append(client)
    return client


def test_sdk_invoke_method_over_http_reaches_a_dapr_ext_grpc_app(node):
    daemon = node["daemon"]
    client = sdk_client(daemon, CALLER_TOKEN)
    # The SDK's HTTP invocation reads DAPR_HTTP_ENDPOINT and DAPR_API_TOKEN at each call.
    with sdk_environment(daemon.http_port, CALLER_TOKEN):
        response = client.invoke_method("callee", "echo", data='{"n": 1}', http_verb="POST")
    body = json.loads(response.data)
    assert body["data"] == '{"n": 1}'
    assert body["content_type"] == "application/json; charset=utf-8"
    metadata = body["metadata"]
    assert metadata["dapr-caller-app-id"] == "caller"
    assert metadata["dapr-caller-namespace"] == "team-a"
    assert metadata["dapr-callee-app-id"] == "callee"
    assert "dapr-api-token" not in metadata and "dapr-app-id" not in metadata
    assert response.content_type == "application/json"


def test_grpc_invoke_service_reaches_the_callee(node):
    from dapr.clients.grpc.client import DaprGrpcClient

    daemon = node["daemon"]
    client = daemon.client("team-a", "caller")
    response = DaprGrpcClient.invoke_method(client, "callee", "whoami", data="")
    assert response.text() == f"callee on {node['sdk'].port}"
    echoed = json.loads(DaprGrpcClient.invoke_method(client, "callee", "echo", data="x", metadata=(("x-trace", "1"),)).text())
    assert echoed["metadata"]["x-trace"] == "1"
    assert echoed["metadata"]["dapr-caller-app-id"] == "caller"


@pytest.mark.parametrize("verb", ["GET", "POST", "PUT", "DELETE", "PATCH"])
def test_verbs_query_strings_and_headers_pass_to_the_callee(node, verb):
    daemon = node["daemon"]
    result = daemon.http(
        "team-a", "caller", verb, "/v1.0/invoke/raw/method/orders/42?x=1&y=a%20b",
        body=b"payload", headers={"content-type": "text/plain", "x-custom": "yes", "dapr-api-token": "secret"},
    )
    assert result.status == 200, result.body
    assert result.headers.get("x-callee") == "raw"
    got = result.json()
    assert got["method"] == "orders/42"
    assert got["verb"] == verb
    assert got["querystring"] == "x=1&y=a%20b"
    assert got["content_type"] == "text/plain"
    assert got["data"] == "payload"
    assert got["metadata"]["x-custom"] == "yes"
    assert "dapr-api-token" not in got["metadata"]


def test_an_apps_api_token_is_sent_on_every_call_into_it_and_the_callers_is_not(node):
    """Dapr's APP_API_TOKEN: `appChannel.appApiToken` (or `appApiTokenFile`) reaches the app as `dapr-api-token`,
    in place of anything the caller sent under that name."""
    daemon = node["daemon"]
    got = daemon.http("team-a", "caller", "POST", "/v1.0/invoke/rawtoken/method/t", body=b"x",
                      headers={"dapr-api-token": "from-the-caller"}).json()
    assert got["metadata"]["dapr-api-token"] == RAW_APP_TOKEN
    got = daemon.http("team-a", "caller", "POST", "/v1.0/invoke/webtoken/method/t", body=b"x",
                      headers={"dapr-api-token": "from-the-caller"}).json()
    assert got["headers"]["dapr-api-token"] == WEB_APP_TOKEN
    # An app without one gets none (the SDK caller's own token is never forwarded).
    got = daemon.http("team-a", "caller", "POST", "/v1.0/invoke/raw/method/t", body=b"x").json()
    assert "dapr-api-token" not in got["metadata"]
    assert WEB_APP_TOKEN not in daemon.log and RAW_APP_TOKEN not in daemon.log


def test_a_callee_error_status_maps_to_dapr_http_status(node):
    daemon = node["daemon"]
    result = daemon.http("team-a", "caller", "POST", "/v1.0/invoke/raw/method/status/NOT_FOUND", body=b"")
    assert result.status == 404
    assert result.json() == {"code": 5, "message": "the callee says no", "details": []}
    unknown = daemon.http("team-a", "caller", "POST", "/v1.0/invoke/callee/method/nope", body=b"")
    assert unknown.status == 501
    assert unknown.json()["code"] == 12


def test_grpc_caller_gets_the_callee_status(node):
    from dapr.clients.grpc.client import DaprGrpcClient

    client = node["daemon"].client("team-a", "caller")
    with pytest.raises(Exception) as raised:
        DaprGrpcClient.invoke_method(client, "raw", "status/PERMISSION_DENIED", data="")
    error = raised.value
    assert getattr(error, "code", lambda: None)() == grpc.StatusCode.PERMISSION_DENIED or "PERMISSION_DENIED" in str(error)


def test_methods_are_normalised_and_bad_ones_refused(node):
    daemon = node["daemon"]
    cleaned = daemon.http("team-a", "caller", "GET", "/v1.0/invoke/raw/method/a/./b/../c")
    assert cleaned.status == 200 and cleaned.json()["method"] == "a/c"
    bad = daemon.http("team-a", "caller", "GET", "/v1.0/invoke/raw/method/a%00b")
    assert bad.status == 400 and bad.json()["errorCode"] == "ERR_DIRECT_INVOKE"
    for target in ("a.b.c", "../x", "a||b"):
        refused = daemon.http("team-a", "caller", "GET", f"/v1.0/invoke/{target}/method/x")
        assert refused.status in (400, 404), (target, refused.status)


def test_unknown_apps_and_apps_without_a_channel_are_clear_errors(node):
    daemon = node["daemon"]
    missing = daemon.http("team-a", "caller", "GET", "/v1.0/invoke/nobody/method/x")
    assert missing.status == 404 and missing.json()["errorCode"] == "ERR_DIRECT_INVOKE"
    assert "no app 'nobody'" in missing.json()["message"]
    silent = daemon.http("team-a", "caller", "GET", "/v1.0/invoke/silent/method/x")
    assert silent.status == 404 and "declares no appChannel" in silent.json()["message"]


def test_other_namespaces_are_denied_until_the_target_allows_them(node):
    daemon = node["daemon"]
    denied = daemon.http("team-b", "outsider", "POST", "/v1.0/invoke/callee.team-a/method/whoami", body=b"")
    assert denied.status == 403, denied.body
    assert denied.json()["errorCode"] == "ERR_PERMISSION_DENIED"
    assert "team-b/outsider" in denied.json()["message"] and "team-a/callee" in denied.json()["message"]

    client = sdk_client(daemon, OUTSIDER_TOKEN)
    from dapr.clients.grpc.client import DaprGrpcClient

    with pytest.raises(Exception) as raised:
        DaprGrpcClient.invoke_method(client, "callee.team-a", "whoami", data="")
    assert "PERMISSION_DENIED" in str(raised.value) or "denied" in str(raised.value)

    grant = dedent("""
          allowInvocationFrom:
            - namespace: team-b
              appIds: [outsider]
              methods: [who]
        """)
    grant = "\n".join("  " + line if line else line for line in grant.splitlines()) + "\n"
    write_atomically(
        daemon.tenancy / "team-a.yaml",
        tenants(node["sdk"].port, node["raw"].port, node["down_port"], grant, web_port=node["web"].port)["team-a.yaml"])

    def allowed() -> bool:
        return daemon.http("team-b", "outsider", "POST", "/v1.0/invoke/callee.team-a/method/whoami", body=b"").status == 200

    wait_until(allowed, timeout=10)
    other_method = daemon.http("team-b", "outsider", "POST", "/v1.0/invoke/callee.team-a/method/echo", body=b"")
    assert other_method.status == 403


def test_a_callee_that_is_down_fails_fast_and_is_served_once_it_is_back(node):
    daemon = node["daemon"]
    started = time.monotonic()
    down = daemon.http("team-a", "caller", "GET", "/v1.0/invoke/down/method/whoami")
    assert time.monotonic() - started < 3
    assert down.status == 500 and down.json()["errorCode"] == "ERR_DIRECT_INVOKE"
    callee = Callee("sdk", node["down_port"]).start()
    try:
        back = time.monotonic()
        wait_until(lambda: daemon.http("team-a", "caller", "GET", "/v1.0/invoke/down/method/whoami").status == 200, timeout=5)
        assert time.monotonic() - back < 5
    finally:
        callee.stop()
    wait_until(lambda: daemon.http("team-a", "caller", "GET", "/v1.0/invoke/down/method/whoami").status == 500, timeout=5)


def test_the_dapr_app_id_header_invokes_with_the_whole_path(node):
    daemon = node["daemon"]
    result = daemon.http(
        "team-a", "caller", "PUT", "/orders/7?x=1", body=b"b", headers={"dapr-app-id": "raw", "content-type": "text/plain"})
    assert result.status == 200, result.body
    got = result.json()
    assert (got["method"], got["verb"], got["querystring"], got["data"]) == ("orders/7", "PUT", "x=1", "b")
    assert "dapr-app-id" not in got["metadata"]


def test_the_trace_context_reaches_the_callee_as_a_new_span_of_the_callers_trace(node):
    daemon = node["daemon"]
    incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    got = daemon.http(
        "team-a", "caller", "GET", "/v1.0/invoke/raw/method/t", headers={"traceparent": incoming, "tracestate": "k=v"}
    ).json()["metadata"]
    assert got["traceparent"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-") and got["traceparent"] != incoming
    assert got["tracestate"] == "k=v"
    fresh = daemon.http("team-a", "caller", "GET", "/v1.0/invoke/raw/method/t").json()["metadata"]["traceparent"]
    assert len(fresh.split("-")[1]) == 32 and not fresh.startswith("00-4bf92f35")


def test_an_app_that_fails_its_health_checks_is_not_invoked(node):
    """`sick` is the grpcio servicer, which serves no AppCallbackHealthCheck (UNIMPLEMENTED, like a
    dapr.ext.grpc.App without register_health_check): after two failed probes calls into it fail at once. `fit`,
    the SDK's app with a health check, stays healthy."""
    daemon = node["daemon"]

    def sick_refused() -> bool:
        result = daemon.http("team-a", "caller", "GET", "/v1.0/invoke/sick/method/x")
        return result.status == 500 and "not in a healthy state" in result.json()["message"]

    wait_until(sick_refused, timeout=5)
    assert daemon.http("team-a", "caller", "GET", "/v1.0/invoke/fit/method/whoami").status == 200
    assert daemon.wait_for_log("app is unhealthy", timeout=2)


@pytest.mark.parametrize("app", ["web", "webuds"])
@pytest.mark.parametrize("verb", ["GET", "POST", "PUT", "DELETE", "PATCH"])
def test_an_http_app_receives_the_verb_path_query_headers_and_body(node, app, verb):
    daemon = node["daemon"]
    result = daemon.http(
        "team-a", "caller", verb, f"/v1.0/invoke/{app}/method/orders/42?x=1&y=a%20b", body=b"payload",
        headers={"content-type": "text/plain", "x-custom": "yes", "dapr-api-token": "secret"},
    )
    assert result.status == 200, result.body
    got = result.json()
    assert (got["verb"], got["path"], got["query"], got["body"]) == (verb, "/orders/42", "x=1&y=a%20b", "payload")
    headers = got["headers"]
    assert headers["content-type"] == "text/plain" and headers["x-custom"] == "yes"
    assert headers["dapr-caller-app-id"] == "caller" and headers["dapr-callee-app-id"] == app
    assert "dapr-api-token" not in headers
    assert result.headers.get("content-type") == "application/json"


def test_an_http_apps_status_and_body_pass_back_to_an_http_caller(node):
    daemon = node["daemon"]
    result = daemon.http("team-a", "caller", "POST", "/v1.0/invoke/web/method/status/418", body=b"")
    assert result.status == 418
    assert result.body == b"the callee answers 418"
    big = daemon.http("team-a", "caller", "GET", "/v1.0/invoke/web/method/big/1000000")
    assert big.status == 200 and len(big.body) == 1_000_000


def test_a_grpc_caller_reaches_an_http_app_with_a_verb_and_gets_its_status_as_a_grpc_error(node):
    from dapr.clients.grpc.client import DaprGrpcClient

    client = node["daemon"].client("team-a", "caller")
    response = DaprGrpcClient.invoke_method(client, "web", "things/1", data="d", http_verb="PUT", http_querystring=(("q", "1"),))
    got = json.loads(response.text())
    assert (got["verb"], got["path"], got["query"], got["body"]) == ("PUT", "/things/1", "q=1", "d")
    with pytest.raises(Exception) as raised:
        DaprGrpcClient.invoke_method(client, "web", "status/404", data="", http_verb="GET")
    assert "NOT_FOUND" in str(raised.value) or "Not Found" in str(raised.value)
    with pytest.raises(Exception) as missing:
        DaprGrpcClient.invoke_method(client, "web", "things/1", data="")
    assert "missing HTTP extension field" in str(missing.value)


def test_an_http_app_with_a_health_check_is_invoked(node):
    daemon = node["daemon"]
    time.sleep(0.6)  # a few probe rounds of /healthz
    assert daemon.http("team-a", "caller", "GET", "/v1.0/invoke/web/method/x").status == 200


def concurrently(calls) -> list:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


def test_max_concurrency_queues_calls_into_the_app(node):
    daemon = node["daemon"]
    call = lambda: daemon.http("team-a", "caller", "GET", "/v1.0/invoke/narrow/method/sleep/400")  # noqa: E731
    started = time.monotonic()
    results = concurrently([call, call, call])
    assert [r.status for r in results] == [200, 200, 200]
    assert time.monotonic() - started >= 1.1  # one at a time: three calls of 0.4 s
    started = time.monotonic()
    results = concurrently([lambda: daemon.http("team-a", "caller", "GET", "/v1.0/invoke/raw/method/sleep/400")] * 3)
    assert [r.status for r in results] == [200, 200, 200] and time.monotonic() - started < 1.1


def test_a_slow_target_holds_no_more_than_the_callers_quota(node):
    daemon = node["daemon"]
    call = lambda: daemon.http("team-a", "busy", "GET", "/v1.0/invoke/raw/method/sleep/600")  # noqa: E731
    statuses = sorted(r.status for r in concurrently([call, call, call, call]))
    assert statuses.count(200) == 2 and statuses.count(429) == 2, statuses


def test_a_grpc_callers_deadline_bounds_the_call_into_the_app(node):
    from dapr.clients.grpc.client import DaprGrpcClient

    client = node["daemon"].client("team-a", "caller")
    started = time.monotonic()
    with pytest.raises(Exception) as raised:
        DaprGrpcClient.invoke_method(client, "raw", "sleep/3000", data="", timeout=1)
    assert time.monotonic() - started < 2.5
    assert "DEADLINE_EXCEEDED" in str(raised.value) or "Deadline" in str(raised.value)


def test_grpc_proxying_forwards_a_unary_call_to_the_targets_own_service(node):
    """A plain gRPC client on the caller's socket calls the callee's own method through hangard with
    `dapr-app-id`, as Dapr's proxy mode does; the message is forwarded undecoded."""
    daemon = node["daemon"]
    channel = grpc.insecure_channel(f"unix://{daemon.grpc_socket('team-a', 'caller')}")
    echo = channel.unary_unary("/test.Echo/Echo")
    try:
        answer = json.loads(echo(b"hello", metadata=(("dapr-app-id", "raw"), ("x-custom", "1")), timeout=10))
        assert answer["request"] == "hello"
        assert answer["metadata"]["x-custom"] == "1"
        assert answer["metadata"]["dapr-caller-app-id"] == "caller"
        assert "dapr-app-id" not in answer["metadata"]
        with pytest.raises(grpc.RpcError) as failed:
            echo(b"fail", metadata=(("dapr-app-id", "raw"),), timeout=10)
        assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert failed.value.details() == "the callee says no"
        with pytest.raises(grpc.RpcError) as unnamed:
            echo(b"x", timeout=10)
        assert unnamed.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(grpc.RpcError) as http_app:
            echo(b"x", metadata=(("dapr-app-id", "web"),), timeout=10)
        assert http_app.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        channel.close()
    outsider = grpc.insecure_channel(f"unix://{daemon.grpc_socket('team-b', 'outsider')}")
    try:
        with pytest.raises(grpc.RpcError) as denied:
            outsider.unary_unary("/test.Echo/Echo")(b"x", metadata=(("dapr-app-id", "raw.team-a"),), timeout=10)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        outsider.close()


# ---------------------------------------------------------------------------------------------------------------
# Streamed bodies: an HTTP caller's call to an HTTP app.

MiB = 1024 * 1024
STREAM_PART = 64 * 1024


def stream_digest(size: int) -> str:
    """The SHA-256 of what http_callee.py's `/stream/<size>` sends (its `stream_parts`)."""
    digest, rng, left = hashlib.sha256(), random.Random(size), size
    while left > 0:
        part = rng.randbytes(min(STREAM_PART, left))
        left -= len(part)
        digest.update(part)
    return digest.hexdigest()


def rss(pid: int) -> int:
    """A process's resident memory in bytes (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class PeakRSS:
    """Samples a process's VmRSS in the background while the block runs; `growth` is the peak over the first
    sample."""

    def __init__(self, pid: int):
        self.pid = pid
        self.before = rss(pid)
        self.peak = self.before
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.01):
            self.peak = max(self.peak, rss(self.pid))

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, rss(self.pid))

    @property
    def growth(self) -> int:
        return self.peak - self.before


def callee_record(node, path: str) -> dict | None:
    """What the HTTP callee kept about a stream or an upload, asked of it directly (not through hangard)."""
    connection = http.client.HTTPConnection("127.0.0.1", node["web"].port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        return json.loads(body) if response.status == 200 else None
    finally:
        connection.close()


def curl(daemon, app: str, path: str, *args: str) -> list[str]:
    """A curl command on the app's own HTTP Unix socket."""
    return ["curl", "-sS", "--unix-socket", str(daemon.http_socket("team-a", app)), *args, f"http://localhost{path}"]


def warm_up(daemon) -> None:
    """One small streamed call first, so that what the client and pools allocate once is not counted as growth."""
    assert daemon.http("team-a", "caller", "GET", "/v1.0/invoke/web/method/stream/100000").status == 200


@pytest.mark.parametrize(("app", "framing"), [("web", "chunked"), ("webuds", "length")])
def test_a_50_mb_answer_streams_through_to_curl_without_being_buffered(node, app, framing, tmp_path):
    daemon = node["daemon"]
    size = 50 * MiB
    warm_up(daemon)
    headers = tmp_path / "headers"
    query = "?length=1" if framing == "length" else ""
    digest, received = hashlib.sha256(), 0
    with PeakRSS(daemon.process.pid) as memory:
        process = subprocess.Popen(
            curl(daemon, "caller", f"/v1.0/invoke/{app}/method/stream/{size}{query}", "-D", str(headers), "-o", "-"),
            stdout=subprocess.PIPE)
        assert process.stdout is not None
        for chunk in iter(lambda: process.stdout.read(MiB), b""):
            digest.update(chunk)
            received += len(chunk)
        assert process.wait(timeout=60) == 0
    head = headers.read_text().lower()
    assert head.startswith("http/1.1 200"), head
    if framing == "length":
        assert f"content-length: {size}" in head and "transfer-encoding" not in head
    else:
        assert "transfer-encoding: chunked" in head and "content-length" not in head
    assert received == size and digest.hexdigest() == stream_digest(size)
    # Streamed, not held: hangard's memory grows by far less than the 50 MB that went through it.
    assert memory.growth < 30 * MiB, f"hangard grew by {memory.growth} bytes"


def test_the_sdk_reads_a_50_mb_streamed_answer(node):
    daemon = node["daemon"]
    size = 50 * MiB
    warm_up(daemon)
    client = sdk_client(daemon, CALLER_TOKEN)
    with sdk_environment(daemon.http_port, CALLER_TOKEN), PeakRSS(daemon.process.pid) as memory:
        response = client.invoke_method("web", f"stream/{size}", http_verb="GET")
    assert len(response.data) == size and hashlib.sha256(response.data).hexdigest() == stream_digest(size)
    assert memory.growth < 30 * MiB, f"hangard grew by {memory.growth} bytes"


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_20_mb_request_body_streams_through_to_the_callee(node, framing, tmp_path):
    daemon = node["daemon"]
    warm_up(daemon)
    data = random.Random(20).randbytes(20 * MiB)
    upload = tmp_path / "upload"
    upload.write_bytes(data)
    tag = unique("up")
    extra = ["-H", "transfer-encoding: chunked"] if framing == "chunked" else []
    with PeakRSS(daemon.process.pid) as memory:
        # curl sends `expect: 100-continue` before a body this large: hangard answers it when the body is wanted.
        result = subprocess.run(
            curl(daemon, "caller", f"/v1.0/invoke/web/method/upload/{tag}", "-X", "POST", "--data-binary",
                 f"@{upload}", "-H", "content-type: application/octet-stream", *extra),
            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    expected = {"state": "complete", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert json.loads(result.stdout) == expected
    assert callee_record(node, f"/uploads/{tag}") == expected
    assert memory.growth < 15 * MiB, f"hangard grew by {memory.growth} bytes"


def chunked_upload(daemon, app: str, path: str, size: int) -> tuple[int, bytes]:
    """POSTs `size` bytes in 64 KiB chunks (no content-length) on the app's socket; answers the status and body,
    also when hangard answers and closes before the whole body is sent."""
    connection = UnixHTTPConnection(str(daemon.http_socket("team-a", app)), timeout=20)
    try:
        connection.putrequest("POST", path)
        connection.putheader("transfer-encoding", "chunked")
        connection.putheader("content-type", "application/octet-stream")
        connection.endheaders()
        part = b"%x\r\n" % STREAM_PART + b"y" * STREAM_PART + b"\r\n"
        try:
            for _ in range(size // STREAM_PART):
                connection.send(part)
            connection.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused mid-body: the answer is waiting
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_a_body_over_max_request_bytes_gets_413_and_the_callee_never_has_it_whole(node):
    """`tight` may send 1 MiB: a declared larger body is refused at its head (the callee never sees it); a chunked
    one is cut where it passes the limit, and the callee's request is aborted."""
    daemon = node["daemon"]
    declared = unique("up")
    refused = daemon.http(
        "team-a", "tight", "POST", f"/v1.0/invoke/web/method/upload/{declared}", body=b"z" * (2 * MiB),
        headers={"content-type": "application/octet-stream"})
    assert refused.status == 413, refused
    assert refused.json()["errorCode"] == "ERR_QUOTA_EXCEEDED" and "maxRequestBytes" in refused.json()["message"]
    assert callee_record(node, f"/uploads/{declared}") is None

    chunked = unique("up")
    status, body = chunked_upload(daemon, "tight", f"/v1.0/invoke/web/method/upload/{chunked}", 3 * MiB)
    assert status == 413, body
    assert json.loads(body)["errorCode"] == "ERR_QUOTA_EXCEEDED"

    def settled() -> bool:
        record = callee_record(node, f"/uploads/{chunked}")
        return record is None or record["state"] == "aborted"

    wait_until(settled, timeout=10)
    record = callee_record(node, f"/uploads/{chunked}")
    assert record is None or record["bytes"] <= MiB, record
    # Within the limit, the same caller's chunked body goes through.
    status, body = chunked_upload(daemon, "tight", f"/v1.0/invoke/web/method/upload/{unique('up')}", MiB // 2)
    assert status == 200 and json.loads(body)["bytes"] == MiB // 2


def test_a_caller_that_stops_reading_holds_its_slot_but_not_memory_and_frees_it_when_it_goes(node):
    """`single` may have one call in flight. It asks for 512 MiB and stops reading after 1 MiB: the callee is
    held back (it is not read faster than the caller reads) and hangard's memory stays flat; the call keeps the
    caller's slot until the caller disconnects, which frees it and cuts the callee's stream."""
    daemon = node["daemon"]
    warm_up(daemon)
    tag = unique("stall")
    size = 512 * MiB
    caller = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    caller.settimeout(10)
    caller.connect(str(daemon.http_socket("team-a", "single")))
    try:
        caller.sendall(f"GET /v1.0/invoke/web/method/stream/{size}?tag={tag} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
        read = 0
        while read < MiB:
            chunk = caller.recv(STREAM_PART)
            assert chunk, "hangard closed the stream"
            read += len(chunk)
        with PeakRSS(daemon.process.pid) as memory:
            # The callee stops once the buffers between it and the caller are full.
            samples = [-1]

            def stalled() -> bool:
                samples.append(callee_record(node, f"/progress/{tag}")["sent"])
                return samples[-1] == samples[-2]

            wait_until(stalled, timeout=30, interval=0.5)
        assert samples[-1] < 64 * MiB, f"the callee sent {samples[-1]} bytes to a caller that read {read}"
        assert memory.growth < 30 * MiB, f"hangard grew by {memory.growth} bytes"
        busy = daemon.http("team-a", "single", "GET", "/v1.0/invoke/web/method/x")
        assert busy.status == 429 and "maxConcurrentRequests" in busy.json()["message"]
    finally:
        caller.close()
    wait_until(lambda: daemon.http("team-a", "single", "GET", "/v1.0/invoke/web/method/x").status == 200, timeout=10)
    wait_until(lambda: callee_record(node, f"/progress/{tag}")["state"] == "cut", timeout=10)


def test_a_non_2xx_answer_with_a_body_passes_back_intact(node):
    daemon = node["daemon"]
    size = 3 * MiB
    for query in ("", "&length=1"):
        result = daemon.http("team-a", "caller", "GET", f"/v1.0/invoke/web/method/stream/{size}?status=503{query}")
        assert result.status == 503
        assert len(result.body) == size and hashlib.sha256(result.body).hexdigest() == stream_digest(size)
    # A HEAD answer keeps the length the app announced, and has no body.
    head = daemon.http("team-a", "caller", "HEAD", "/v1.0/invoke/web/method/anything")
    assert head.status == 200 and int(head.headers["content-length"]) > 0 and head.body == b""


def test_buffered_answers_over_the_node_limit_are_a_clear_resource_exhausted_error(node):
    """A gRPC caller's answer, and a gRPC app's, is one message: held whole, so capped at --max-request-bytes."""
    from dapr.clients.grpc.client import DaprGrpcClient

    daemon = node["daemon"]
    over = NODE_MAX_REQUEST_BYTES + MiB
    client = daemon.client("team-a", "caller")
    with pytest.raises(Exception) as raised:
        DaprGrpcClient.invoke_method(client, "web", f"stream/{over}", data="", http_verb="GET")
    assert "RESOURCE_EXHAUSTED" in str(raised.value) and str(NODE_MAX_REQUEST_BYTES) in str(raised.value)
    from_grpc_app = daemon.http("team-a", "caller", "POST", f"/v1.0/invoke/raw/method/big/{over}", body=b"")
    assert from_grpc_app.status == 500, from_grpc_app
    assert from_grpc_app.json()["errorCode"] == "ERR_DIRECT_INVOKE"
    assert str(NODE_MAX_REQUEST_BYTES) in from_grpc_app.json()["message"]
    # The connections survive: the same calls within the limit work.
    assert DaprGrpcClient.invoke_method(client, "web", "stream/1000", data="", http_verb="GET").data
    assert daemon.http("team-a", "caller", "POST", "/v1.0/invoke/raw/method/big/1000", body=b"").status == 200


def test_a_grpc_callers_request_is_capped_by_its_max_request_bytes(node):
    from dapr.clients.grpc.client import DaprGrpcClient

    client = node["daemon"].client("team-a", "tight")
    with pytest.raises(Exception) as raised:
        DaprGrpcClient.invoke_method(client, "web", "upload/x", data=b"z" * (2 * MiB), http_verb="POST")
    assert "RESOURCE_EXHAUSTED" in str(raised.value) and "maxRequestBytes" in str(raised.value)
