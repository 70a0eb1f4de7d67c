"""Slow, stalled and greedy clients are bounded in time and in bytes (issue 16): a request head sent byte by byte
(slowloris), a request message or body that stops half-way, and a tenant that tries to pin the daemon's memory
with unfinished messages. Each case ends with the other tenant served as usual."""

from __future__ import annotations

import http.client
import json
import socket
import time

from hangar_e2e import free_port, unique
from tenancy_files import start_daemon, tenant_yaml

STORE = "statestore"
# Short timeouts, so that the tests wait seconds rather than the defaults' 10 s.
FAST = ("--header-timeout", "1", "--request-progress-timeout", "1")
SAVE_STATE = b"/dapr.proto.runtime.v1.Dapr/SaveState"


def h2_frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0)


def hpack_literals(fields: list[tuple[bytes, bytes]]) -> bytes:
    """A header block of literals without indexing (every name and value under 127 bytes)."""
    return b"".join(b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v for n, v in fields)


def grpc_request_headers(path: bytes) -> bytes:
    return hpack_literals([
        (b":method", b"POST"), (b":scheme", b"http"), (b":path", path), (b":authority", b"localhost"),
        (b"content-type", b"application/grpc"), (b"te", b"trailers"),
    ])


def partial_message(declared: int, sent: int) -> bytes:
    """The first `sent` bytes of a gRPC message whose prefix declares `declared` bytes."""
    return b"\x00" + declared.to_bytes(4, "big") + b"\x0a" * sent


def frames_until(sock: socket.socket, done, timeout: float) -> tuple[list[tuple[int, int, int, bytes]], float]:
    """Reads frames (type, flags, stream, payload) until done(frames) or the connection closes; fails on timeout.
    Returns them with the seconds it took."""
    start = time.monotonic()
    buffer = b""
    frames: list[tuple[int, int, int, bytes]] = []
    sock.settimeout(timeout)
    while not done(frames):
        assert time.monotonic() - start < timeout, f"no answer within {timeout} s; frames so far: {frames}"
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
        while len(buffer) >= 9 and len(buffer) >= 9 + int.from_bytes(buffer[:3], "big"):
            size = int.from_bytes(buffer[:3], "big")
            frames.append((buffer[3], buffer[4], int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF, buffer[9:9 + size]))
            buffer = buffer[9 + size:]
    return frames, time.monotonic() - start


def trailers_on(frames, stream: int) -> bytes | None:
    """The payload of the last HEADERS frame on `stream`."""
    found = [payload for kind, _, sid, payload in frames if kind == 1 and sid == stream]
    return found[-1] if found else None


def grpc_connection(path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    sock.sendall(H2_PREFACE)
    return sock


def served(daemon, ns: str, app: str) -> None:
    assert daemon.running, f"hangard died\nlog:\n{daemon.log[-4000:]}"
    client = daemon.client(ns, app)
    key = unique("alive")
    client.save_state(STORE, key, "ok")
    assert client.get_state(STORE, key).data == b"ok"


def test_a_grpc_request_stalled_inside_its_message_is_ended_with_deadline_exceeded(hangard_factory):
    daemon = hangard_factory.examples(extra_args=FAST)
    with grpc_connection(daemon.grpc_socket("team-a", "orders")) as sock:
        sock.sendall(
            h2_frame(1, 0x4, 1, grpc_request_headers(SAVE_STATE)) + h2_frame(0, 0, 1, partial_message(1000, 10)))
        frames, waited = frames_until(sock, lambda f: trailers_on(f, 1) is not None, timeout=10)
    trailers = trailers_on(frames, 1)
    assert b"grpc-status\x014" in trailers, trailers  # DEADLINE_EXCEEDED
    assert b"no progress" in trailers
    assert 0.9 <= waited < 6, waited
    assert any(kind == 3 and sid == 1 for kind, _, sid, _ in frames), "the stream is reset once answered"
    served(daemon, "team-a", "orders")
    served(daemon, "team-b", "orders")


def test_request_headers_sent_byte_by_byte_get_408(hangard_factory):
    daemon = hangard_factory.examples(extra_args=FAST)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(daemon.http_socket("team-a", "orders")))
        start = time.monotonic()
        sock.settimeout(0.2)
        answer = b""
        for byte in b"GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
            except socket.timeout:
                pass
            if answer or time.monotonic() - start > 10:
                break
        sock.settimeout(5)
        while True:
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request headers were not complete within 1 s" in answer
    assert time.monotonic() - start < 6
    served(daemon, "team-b", "orders")


def test_an_http_body_that_stops_gets_408_and_the_connection_closes(hangard_factory):
    daemon = hangard_factory.examples(extra_args=FAST)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(daemon.http_socket("team-a", "orders")))
        sock.sendall(
            b"POST /v1.0/state/statestore HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n[{\"key\": \"k\", ")
        sock.settimeout(8)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request body made no progress for 1 s" in answer
    served(daemon, "team-a", "orders")


def test_a_tenant_past_its_max_buffered_bytes_is_refused_and_the_other_tenant_is_not(hangard_factory):
    daemon = start_daemon(
        hangard_factory,
        {
            "team-a.yaml": tenant_yaml("team-a", [{"appId": "orders"}], quotas={"maxBufferedBytes": 300000}),
            "team-b.yaml": tenant_yaml("team-b", [{"appId": "orders"}]),
        },
        apps=(("team-a", "orders"), ("team-b", "orders")),
        extra_args=("--request-progress-timeout", "0"),
    )
    # Each stream holds about 64 KiB (the partial message's buffer); the fifth cannot fit in 300,000 bytes.
    with grpc_connection(daemon.grpc_socket("team-a", "orders")) as sock:
        for stream in (1, 3, 5, 7, 9, 11):
            sock.sendall(h2_frame(1, 0x4, stream, grpc_request_headers(SAVE_STATE)))
            body = partial_message(60000, 50000)
            for offset in range(0, len(body), 16384):
                sock.sendall(h2_frame(0, 0, stream, body[offset:offset + 16384]))
        frames, _ = frames_until(sock, lambda f: trailers_on(f, 11) is not None, timeout=10)
        refused = [sid for sid in (1, 3, 5, 7, 9, 11) if trailers_on(frames, sid) is not None]
        assert refused and 1 not in refused, refused
        for sid in refused:
            trailers = trailers_on(frames, sid)
            assert b"grpc-status\x018" in trailers, trailers  # RESOURCE_EXHAUSTED
            assert b"maxBufferedBytes" in trailers
        # Meanwhile, the other tenant is served.
        served(daemon, "team-b", "orders")
    # The connection closed: team-a's bytes are given back and it is served again.
    served(daemon, "team-a", "orders")


def vm_rss(pid: int) -> int:
    """The process's resident set in bytes."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def overload_detail(port: int) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/healthz/detail")
    document = json.loads(connection.getresponse().read())
    connection.close()
    return document["overload"]


def test_an_http_client_that_never_reads_its_answers_holds_one_and_counts_it(hangard_factory):
    """A client pipelining 200 GETs of a 1 MB value on HTTP/1.1 without reading: hangard serves a request only while
    the client reads (one answer waits, not 200), counts what waits against the tenant's maxBufferedBytes, serves
    the next ones once the client reads, gives the bytes back when the client goes, and the other tenant is served
    meanwhile."""
    metrics_port = free_port()
    daemon = start_daemon(
        hangard_factory,
        {
            "team-a.yaml": tenant_yaml("team-a", [{"appId": "orders"}]),
            "team-b.yaml": tenant_yaml("team-b", [{"appId": "orders"}]),
        },
        apps=(("team-a", "orders"), ("team-b", "orders")),
        extra_args=("--metrics-listen", f"127.0.0.1:{metrics_port}"),
    )
    value = "v" * 1_000_000
    daemon.client("team-a", "orders").save_state(STORE, "big", value)
    before = vm_rss(daemon.process.pid)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(str(daemon.http_socket("team-a", "orders")))
    request = b"GET /v1.0/state/statestore/big HTTP/1.1\r\nHost: x\r\n\r\n"
    sock.sendall(request * 200)
    deadline = time.monotonic() + 10
    held = 0
    while time.monotonic() < deadline and held == 0:
        held = overload_detail(metrics_port)["tenantBufferedBytes"].get("team-a", 0)
        time.sleep(0.1)
    assert 256 * 1024 <= held < 4_000_000, f"{held} bytes counted for the unread answers"
    time.sleep(1)
    grown = vm_rss(daemon.process.pid) - before
    assert grown < 50_000_000, f"hangard grew by {grown} bytes (200 answers of 1 MB would be 200 MB)"
    served(daemon, "team-b", "orders")
    # The client reads: the answers that waited come, and the next requests are served.
    sock.settimeout(30)
    received = b""
    while received.count(b"HTTP/1.1 200") < 5:
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            raise AssertionError(
                f"no byte for 30 s after {received.count(b'HTTP/1.1 200')} answers ({len(received)} bytes)\n"
                f"log:\n{daemon.log[-3000:]}") from None
        assert chunk, f"closed after {received.count(b'HTTP/1.1 200')} answers"
        received += chunk
    sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and overload_detail(metrics_port)["tenantBufferedBytes"].get("team-a", 0):
        time.sleep(0.1)
    assert overload_detail(metrics_port)["tenantBufferedBytes"].get("team-a", 0) == 0
