"""gRPC proxying of every call shape: a plain grpcio client on the caller's own socket calls the target app's own
service through the real hangard with `dapr-app-id`, as Dapr's proxy mode does. The callee is the plain grpcio
server of Tests/e2e/apps/grpc_callee.py (`raw` mode), whose `test.Echo` service has a unary, a server-streaming,
a client-streaming and a bidirectional method, and reports what it saw (messages sent, cancellation, deadline).
"""

from __future__ import annotations

import json
import queue
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import grpc
import pytest

from hangar_e2e import free_port
from tenancy_files import dedent, start_daemon, wait_until
from test_invocation import Callee
from test_isolation import error_info


def tenants(raw_port: int, web_port: int) -> dict[str, str]:
    team_a = dedent(f"""
        apiVersion: hangar.dev/v1alpha1
        kind: Tenant
        metadata:
          name: team-a
        spec:
          apps:
            - appId: caller
            - appId: raw
              appChannel:
                address: 127.0.0.1:{raw_port}
            - appId: narrow
              appChannel: {{address: 127.0.0.1:{raw_port}, maxConcurrency: 1}}
            - appId: web
              appChannel: {{protocol: http, address: 127.0.0.1:{web_port}}}
            - appId: single
              quotas: {{maxStreams: 1}}
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


@pytest.fixture
def node(hangard_factory) -> Iterator[dict]:
    raw = Callee("raw", free_port()).start()
    metrics_port = free_port()
    daemon = start_daemon(
        hangard_factory, tenants(raw.port, free_port()), extra_args=("--metrics-listen", f"127.0.0.1:{metrics_port}"))
    channels: list[grpc.Channel] = []

    def channel(app: str = "caller", ns: str = "team-a") -> grpc.Channel:
        opened = grpc.insecure_channel(f"unix://{daemon.grpc_socket(ns, app)}")
        channels.append(opened)
        return opened

    try:
        yield {"daemon": daemon, "raw": raw, "channel": channel, "metrics_port": metrics_port}
    finally:
        for opened in channels:
            opened.close()
        raw.stop()


TO_RAW = (("dapr-app-id", "raw"),)


def count_request(n: int, tag: str = "", size: int = 0, delay_ms: int = 0, fail_after: int | None = None) -> bytes:
    return json.dumps({"n": n, "tag": tag, "size": size, "delay_ms": delay_ms, "fail_after": fail_after}).encode()


def progress(channel: grpc.Channel, tag: str) -> dict | None:
    """What the callee's Count kept under `tag` (asked through hangard too)."""
    return json.loads(channel.unary_unary("/test.Echo/Progress")(tag.encode(), metadata=TO_RAW, timeout=10))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_server_stream_relays_every_message_in_order_with_headers_and_trailers(node):
    channel = node["channel"]()
    call = channel.unary_stream("/test.Echo/Count")(count_request(200, size=100), metadata=TO_RAW, timeout=20)
    messages = [message.rstrip(b".").decode() for message in call]
    assert messages == [str(index) for index in range(200)]
    assert ("x-callee", "count") in call.initial_metadata()
    assert ("x-trailer", "counted") in call.trailing_metadata()
    assert call.code() == grpc.StatusCode.OK


def invocations(metrics_port: int, target: str) -> dict[str, float]:
    """hangar_invocations_total from caller to `target` in team-a, by code."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("hangar_invocations_total{") and f'target_app_id="{target}"' in line:
            code = line.split('code="', 1)[1].split('"', 1)[0]
            counts[code] = counts.get(code, 0) + float(line.rsplit(" ", 1)[1])
    return counts


def test_each_proxied_call_is_counted_once_whatever_it_carried(node):
    channel = node["channel"]()
    to_narrow = (("dapr-app-id", "narrow"),)
    counted = channel.unary_stream("/test.Echo/Count")(count_request(500), metadata=to_narrow, timeout=20)
    assert len(list(counted)) == 500
    assert channel.stream_unary("/test.Echo/Sum")(
        (b"1" for _ in range(300)), metadata=to_narrow, timeout=20) == b"300"
    assert channel.unary_unary("/test.Echo/Echo")(b"x", metadata=to_narrow, timeout=20)
    with pytest.raises(grpc.RpcError):
        list(channel.unary_stream("/test.Echo/Count")(count_request(5, fail_after=2), metadata=to_narrow, timeout=20))
    cancelled = channel.unary_stream("/test.Echo/Count")(
        count_request(100_000, delay_ms=10), metadata=to_narrow, timeout=20)
    next(cancelled)
    cancelled.cancel()
    wait_until(lambda: invocations(node["metrics_port"], "narrow").get("CANCELLED") == 1, timeout=10)
    assert invocations(node["metrics_port"], "narrow") == {"OK": 3, "ABORTED": 1, "CANCELLED": 1}


def test_a_client_stream_reaches_the_app_message_by_message(node):
    channel = node["channel"]()
    total = channel.stream_unary("/test.Echo/Sum")(
        (str(number).encode() for number in range(1, 1001)), metadata=TO_RAW, timeout=20)
    assert total == str(sum(range(1, 1001))).encode()
    # No message at all is a stream too.
    assert channel.stream_unary("/test.Echo/Sum")(iter(()), metadata=TO_RAW, timeout=20) == b"0"


def test_a_bidirectional_stream_is_relayed_as_it_goes(node):
    """Each answer arrives before the next request is sent: nothing waits for the end of the caller's stream."""
    channel = node["channel"]()
    outgoing: queue.Queue[bytes | None] = queue.Queue()

    def requests():
        while (message := outgoing.get()) is not None:
            yield message

    call = channel.stream_stream("/test.Echo/Chat")(requests(), metadata=TO_RAW, timeout=20)
    for word in ("one", "two", "three"):
        outgoing.put(word.encode())
        assert next(call) == b"echo:" + word.encode()
    outgoing.put(None)
    assert list(call) == []
    assert call.code() == grpc.StatusCode.OK


def test_an_error_in_the_middle_of_a_stream_keeps_the_apps_status(node):
    channel = node["channel"]()
    call = channel.unary_stream("/test.Echo/Count")(count_request(10, fail_after=3), metadata=TO_RAW, timeout=20)
    received = []
    with pytest.raises(grpc.RpcError) as failed:
        for message in call:
            received.append(message)
    assert received == [b"0", b"1", b"2"]
    assert failed.value.code() == grpc.StatusCode.ABORTED
    assert failed.value.details() == "failed after 3"

    chat = channel.stream_stream("/test.Echo/Chat")(iter([b"a", b"fail", b"b"]), metadata=TO_RAW, timeout=20)
    with pytest.raises(grpc.RpcError) as chat_failed:
        assert next(chat) == b"echo:a"
        next(chat)
    assert chat_failed.value.code() == grpc.StatusCode.ABORTED
    assert chat_failed.value.details() == "the chat failed"


def test_the_callers_cancellation_reaches_the_app(node):
    channel = node["channel"]()
    call = channel.unary_stream("/test.Echo/Count")(
        count_request(100_000, tag="cancelled", delay_ms=10), metadata=TO_RAW, timeout=30)
    assert [next(call) for _ in range(3)] == [b"0", b"1", b"2"]
    call.cancel()
    wait_until(lambda: (progress(channel, "cancelled") or {}).get("cancelled"), timeout=10)
    state = progress(channel, "cancelled")
    assert state["cancelled"] and not state["done"]
    sent = state["sent"]
    time.sleep(0.3)
    assert progress(channel, "cancelled")["sent"] == sent  # it stopped

    # A caller that goes away altogether (its connection closes) cancels its calls too.
    gone = node["channel"]()
    call = gone.unary_stream("/test.Echo/Count")(
        count_request(100_000, tag="disconnected", delay_ms=10), metadata=TO_RAW, timeout=30)
    assert next(call) == b"0"
    gone.close()
    wait_until(lambda: (progress(channel, "disconnected") or {}).get("cancelled"), timeout=10)


def test_the_callers_deadline_reaches_the_app_and_ends_the_stream(node):
    channel = node["channel"]()
    call = channel.unary_stream("/test.Echo/Count")(
        count_request(100_000, tag="deadline", delay_ms=10), metadata=TO_RAW, timeout=1.5)
    with pytest.raises(grpc.RpcError) as expired:
        for _ in call:
            pass
    assert expired.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_until(lambda: (progress(channel, "deadline") or {}).get("cancelled"), timeout=10)
    seen = progress(channel, "deadline")["timeout"]
    assert seen is not None and 0 < seen <= 1.5


def test_an_app_that_vanishes_ends_the_callers_stream_as_unavailable(node):
    channel = node["channel"]()
    call = channel.unary_stream("/test.Echo/Count")(
        count_request(100_000, delay_ms=10), metadata=TO_RAW, timeout=30)
    assert next(call) == b"0"
    node["raw"].stop()
    with pytest.raises(grpc.RpcError) as gone:
        for _ in call:
            pass
    assert gone.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "raw" in gone.value.details()


def test_other_namespaces_and_http_apps_are_refused_for_every_shape(node):
    outsider = node["channel"]("outsider", "team-b")
    call = outsider.unary_stream("/test.Echo/Count")(
        count_request(3), metadata=(("dapr-app-id", "raw.team-a"),), timeout=10)
    with pytest.raises(grpc.RpcError) as denied:
        list(call)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(denied.value)["reason"] == "HANGAR_INVOCATION_DENIED"
    chat = outsider.stream_stream("/test.Echo/Chat")(
        iter([b"x"]), metadata=(("dapr-app-id", "raw.team-a"),), timeout=10)
    with pytest.raises(grpc.RpcError) as chat_denied:
        list(chat)
    assert chat_denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

    channel = node["channel"]()
    with pytest.raises(grpc.RpcError) as http_app:
        list(channel.unary_stream("/test.Echo/Count")(count_request(3), metadata=(("dapr-app-id", "web"),), timeout=10))
    assert http_app.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "HTTP app channel" in http_app.value.details()


def test_a_proxied_call_counts_against_the_callers_max_streams(node):
    channel = node["channel"]("single")
    count = channel.unary_stream("/test.Echo/Count")
    first = count(count_request(100_000, delay_ms=10), metadata=TO_RAW, timeout=30)
    assert next(first) == b"0"
    with pytest.raises(grpc.RpcError) as refused:
        list(count(count_request(1), metadata=TO_RAW, timeout=10))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(refused.value)["metadata"]["quota"] == "maxStreams"
    first.cancel()
    # The slot comes back once hangard has seen the reset.
    wait_until(lambda: _succeeds(lambda: list(count(count_request(1), metadata=TO_RAW, timeout=10))), timeout=10)


def _succeeds(call) -> bool:
    try:
        call()
        return True
    except grpc.RpcError:
        return False


def test_the_targets_max_concurrency_holds_a_second_stream_until_the_first_ends(node):
    channel = node["channel"]()
    count = channel.unary_stream("/test.Echo/Count")
    to_narrow = (("dapr-app-id", "narrow"),)
    first = count(count_request(5, tag="first", delay_ms=200), metadata=to_narrow, timeout=30)
    assert next(first) == b"0"
    second = count(count_request(1, tag="second"), metadata=to_narrow, timeout=30)
    time.sleep(0.3)
    assert progress(channel, "second") is None  # waiting in hangard for the slot, not at the app
    assert list(second) == [b"0"]
    assert progress(channel, "first")["done"]  # it ran only once the first had ended
    assert list(first) == [b"1", b"2", b"3", b"4"]


def test_a_slow_caller_holds_the_app_back_without_hangard_buffering_the_stream(node):
    """10,000 messages of 10 KB (100 MB) to a caller that stops reading: the app is held back by flow control
    through hangard, whose memory stays far below what the stream carries; then every message arrives in order."""
    daemon, channel = node["daemon"], node["channel"]()
    pid = daemon.process.pid
    before = rss_kib(pid)
    total, size = 10_000, 10_000
    call = channel.unary_stream("/test.Echo/Count")(
        count_request(total, tag="slow", size=size), metadata=TO_RAW, timeout=120)
    assert next(call).rstrip(b".") == b"0"
    time.sleep(2)  # the caller reads nothing: an unbounded relay would take the whole stream meanwhile
    stalled = progress(channel, "slow")
    during = rss_kib(pid)
    assert stalled["sent"] < total // 2, stalled
    assert during - before < 50 * 1024, (before, during)
    for index, message in enumerate(call, start=1):
        assert message[: len(str(index))] == str(index).encode() and len(message) == len(str(index)) + size
        if index % 2000 == 0:
            time.sleep(0.2)  # a slow consumer all along
    assert index == total - 1
    assert call.code() == grpc.StatusCode.OK
    after = rss_kib(pid)
    assert after - before < 50 * 1024, (before, during, after)


def test_a_stream_the_app_ends_while_the_caller_is_behind_arrives_whole(node):
    """The app sends its whole answer and its OK trailers while the caller reads nothing: hangard holds the end of
    the stream (within the app's window) behind what the caller has not taken yet, and the caller then reads every
    message and the app's status, not UNAVAILABLE for the app's stream having closed meanwhile."""
    daemon = node["daemon"]
    # Without BDP probing the caller's window stays small, far below the 500 KB the app sends.
    slow = grpc.insecure_channel(
        f"unix://{daemon.grpc_socket('team-a', 'caller')}", options=(("grpc.http2.bdp_probe", 0),))
    try:
        total, size = 500, 1000
        call = slow.unary_stream("/test.Echo/Count")(
            count_request(total, tag="ahead", size=size), metadata=TO_RAW, timeout=30)
        assert next(call).rstrip(b".") == b"0"
        watcher = node["channel"]()
        wait_until(lambda: (progress(watcher, "ahead") or {}).get("done"), timeout=10)
        time.sleep(0.5)  # the app's trailers follow its last message to hangard
        assert [message.rstrip(b".") for message in call] == [str(index).encode() for index in range(1, total)]
        assert call.code() == grpc.StatusCode.OK
        assert ("x-trailer", "counted") in call.trailing_metadata()
    finally:
        slow.close()


def test_a_slow_app_holds_the_caller_back_without_hangard_buffering_the_stream(node):
    """The other way: a caller streams 10,000 messages of 10 KB to an app that stops reading for a while; the
    caller is held back by flow control through hangard, whose memory stays far below what the stream carries."""
    daemon, channel = node["daemon"], node["channel"]()
    pid = daemon.process.pid
    before = rss_kib(pid)
    total, size = 10_000, 10_000
    yielded = 0

    def requests():
        nonlocal yielded
        yield b"wait:2000"
        for number in range(total):
            yielded += 1
            yield str(number).encode() + b"." * size

    answer = channel.stream_unary("/test.Echo/Sum").future(requests(), metadata=TO_RAW, timeout=120)
    time.sleep(1.5)  # the app reads nothing: an unbounded relay would take the whole stream meanwhile
    stalled, during = yielded, rss_kib(pid)
    assert stalled < total // 2, stalled
    assert during - before < 50 * 1024, (before, during)
    assert answer.result() == str(sum(range(total))).encode()
    after = rss_kib(pid)
    assert after - before < 50 * 1024, (before, during, after)
