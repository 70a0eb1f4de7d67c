"""Bad input never crashes the daemon nor touches another tenant's data; each case ends with a call that works."""

from __future__ import annotations

import os
import re
import socket
import time

import grpc
import pytest

from hangar_e2e import unique

STORE = "statestore"
TEN_MIB = 10 * 1024 * 1024


def still_serves(hangard, ns="team-a", app="orders"):
    """The daemon is alive and the app can still read and write."""
    assert hangard.running, f"hangard died\nlog:\n{hangard.log[-4000:]}"
    client = hangard.client(ns, app)
    key = unique("alive")
    client.save_state(STORE, key, "ok")
    assert client.get_state(STORE, key).data == b"ok"


def send_and_drain(path, payload, timeout=5.0):
    """Writes payload to a Unix socket and reads until the server closes; returns what it answered."""
    received = b""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        try:
            s.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            return received
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                return received
            except socket.timeout:
                pytest.fail(f"the server neither answered nor closed within {timeout}s (got {received[:200]!r})")
            if not chunk:
                return received
            received += chunk
        pytest.fail(f"the server kept the connection open for {timeout}s (got {received[:200]!r})")


@pytest.mark.parametrize(
    "payload",
    [os.urandom(4096), b"\x00" * 64, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 512],
    ids=["random", "zeros", "http1", "preface-then-garbage"],
)
def test_garbage_on_the_grpc_socket(hangard, payload):
    send_and_drain(hangard.grpc_socket("team-a", "orders"), payload)
    still_serves(hangard)


def h2_frame(kind, flags, stream, payload=b"", length=None):
    """One raw HTTP/2 frame."""
    size = len(payload) if length is None else length
    return size.to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0)


def goaway_code(answer):
    """The error code of the first GOAWAY frame in what the server wrote, or None."""
    offset = 0
    while offset + 9 <= len(answer):
        size = int.from_bytes(answer[offset:offset + 3], "big")
        kind = answer[offset + 3]
        payload = answer[offset + 9:offset + 9 + size]
        if kind == 7 and len(payload) >= 8:
            return int.from_bytes(payload[4:8], "big")
        offset += 9 + size
    return None


@pytest.mark.parametrize(
    "payload, code",
    [
        (H2_PREFACE + h2_frame(0, 0, 1, length=1 << 20), 0x6),  # a frame over 16 KiB: FRAME_SIZE_ERROR
        (H2_PREFACE + h2_frame(1, 0, 1, b"\x82") + h2_frame(9, 0, 1) * 64, 0xB),  # CONTINUATION flood
        (H2_PREFACE + h2_frame(1, 0x4, 1, b"\xff\xff\xff\xff"), 0x9),  # undecodable HPACK: COMPRESSION_ERROR
        (H2_PREFACE + h2_frame(0, 0, 0, b"x"), 0x1),  # DATA on stream 0: PROTOCOL_ERROR
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0x1),  # not HTTP/2 at all
    ],
    ids=["oversized-frame", "continuation-flood", "bad-hpack", "data-on-stream-0", "http1"],
)
def test_http2_violations_get_goaway_and_close(hangard, payload, code):
    answer = send_and_drain(hangard.grpc_socket("team-a", "orders"), payload)
    assert goaway_code(answer) == code, answer[:200]
    still_serves(hangard)


@pytest.mark.parametrize(
    "payload",
    [os.urandom(4096), b"\x16\x03\x01\x02\x00" + b"\x00" * 100, b"GET /v1.0/healthz HTTP/9.9\r\n\r\n" + b"\xff" * 100],
    ids=["random", "tls-hello", "bad-version"],
)
def test_garbage_on_the_http_socket(hangard, payload):
    answer = send_and_drain(hangard.http_socket("team-a", "orders"), payload)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:200]
    still_serves(hangard)


def test_invalid_protobuf_in_valid_grpc_framing(hangard):
    channel = grpc.insecure_channel(f"unix://{hangard.grpc_socket('team-a', 'orders')}")
    try:
        call = channel.unary_unary("/dapr.proto.runtime.v1.Dapr/GetState")  # bytes in, bytes out
        for garbage in (b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", b"\x0a\x64abc", b"\x08"):
            with pytest.raises(grpc.RpcError) as error:
                call(garbage, timeout=5)
            assert error.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL), error.value
        unknown = channel.unary_unary("/dapr.proto.runtime.v1.Dapr/NoSuchMethod")
        with pytest.raises(grpc.RpcError) as error:
            unknown(b"", timeout=5)
        assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "NoSuchMethod" in error.value.details()
        other_service = channel.unary_unary("/some.other.Service/Method")
        with pytest.raises(grpc.RpcError) as error:
            other_service(b"", timeout=5)
        assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        channel.close()
    still_serves(hangard)


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b"[{\"key\": \"k\", \"value\": ", "[{\"key\": \"\u00e9\"}".encode("latin-1"), b"\xff\xfe"],
    ids=["broken", "empty", "truncated", "latin1", "binary"],
)
def test_invalid_json_on_the_state_route_is_400(hangard, body):
    result = hangard.http("team-a", "orders", "POST", f"/v1.0/state/{STORE}", body, {"Content-Type": "application/json"})
    assert result.status == 400, result
    assert result.json()["errorCode"] == "ERR_MALFORMED_REQUEST", result
    still_serves(hangard)


@pytest.mark.parametrize(
    "body",
    [{"key": "k"}, [{"value": 1}], [{"key": 7, "value": 1}], [["k", 1]], {"keys": "k"}],
    ids=["object", "no-key", "number-key", "nested-list", "keys-string"],
)
def test_wrongly_shaped_json_is_400(hangard, body):
    result = hangard.http("team-a", "orders", "POST", f"/v1.0/state/{STORE}", body)
    assert result.status == 400, result
    assert result.json()["errorCode"].startswith("ERR_"), result
    bulk = hangard.http("team-a", "orders", "POST", f"/v1.0/state/{STORE}/bulk", body)
    assert bulk.status == 400, bulk
    still_serves(hangard)


def test_key_with_separator_is_refused_and_other_tenants_are_untouched(hangard):
    victim = hangard.client("team-a", "orders")
    attacker = hangard.client("team-b", "orders")
    key = unique("victim")
    victim.save_state(STORE, key, "team-a's secret")

    forged = f"x||team-a||orders||{key}"
    for call in (
        lambda: attacker.save_state(STORE, forged, "overwritten"),
        lambda: attacker.get_state(STORE, forged),
        lambda: attacker.delete_state(STORE, forged),
        lambda: attacker.save_state(STORE, "a||b", "x"),
    ):
        with pytest.raises(grpc.RpcError) as error:
            call()
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value
    with pytest.raises(grpc.RpcError) as error:
        attacker.save_state(STORE, forged, "overwritten")
    info = error.value.status_details().error_info or {}
    assert info.get("reason") == "DAPR_STATE_ILLEGAL_KEY"

    http_save = hangard.http("team-b", "orders", "POST", f"/v1.0/state/{STORE}", [{"key": forged, "value": "x"}])
    assert http_save.status == 400, http_save
    http_get = hangard.http("team-b", "orders", "GET", f"/v1.0/state/{STORE}/a%7C%7Cb")
    assert http_get.status == 400, http_get
    http_delete = hangard.http("team-b", "orders", "DELETE", f"/v1.0/state/{STORE}/a%7C%7Cb")
    assert http_delete.status == 400, http_delete
    http_tx = hangard.http("team-b", "orders", "POST", f"/v1.0/state/{STORE}/transaction", {"operations": [
        {"operation": "upsert", "request": {"key": forged, "value": "x"}},
    ]})
    assert http_tx.status == 400, http_tx

    assert victim.get_state(STORE, key).data == b"team-a's secret"
    still_serves(hangard, "team-b", "orders")


def test_bulk_get_with_separator_key_is_refused(hangard):
    """As in Dapr, a bulk read with an illegal key fails as a whole (not per item)."""
    client = hangard.client("team-b", "orders")
    with pytest.raises(grpc.RpcError) as error:
        client.get_bulk_state(STORE, [unique("fine"), "x||team-a||orders||k"])
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value
    http_bulk = hangard.http("team-b", "orders", "POST", f"/v1.0/state/{STORE}/bulk", {"keys": ["a||b"]})
    assert http_bulk.status == 400, http_bulk
    still_serves(hangard, "team-b", "orders")


def test_ten_mib_value_over_grpc_is_resource_exhausted(hangard):
    client = hangard.client("team-a", "orders")
    key = unique("huge")
    with pytest.raises(grpc.RpcError) as error:
        client.save_state(STORE, key, b"x" * TEN_MIB)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.value
    assert client.get_state(STORE, key).data == b""
    still_serves(hangard)


def test_ten_mib_body_over_http_is_413(hangard):
    key = unique("huge")
    body = b'[{"key": "' + key.encode() + b'", "value": "' + b"x" * TEN_MIB + b'"}]'
    result = hangard.http("team-a", "orders", "POST", f"/v1.0/state/{STORE}", body, {"Content-Type": "application/json"})
    assert result.status == 413, result
    assert result.json()["errorCode"].startswith("ERR_")
    assert hangard.http("team-a", "orders", "GET", f"/v1.0/state/{STORE}/{key}").status == 204
    still_serves(hangard)


def test_chunked_over_size_body_over_http_is_413(hangard):
    """Without Content-Length the limit is enforced while the body streams in."""
    import http.client

    from hangar_e2e import UnixHTTPConnection

    conn = UnixHTTPConnection(str(hangard.http_socket("team-a", "orders")), timeout=10)
    chunk = b"x" * (1024 * 1024)

    def body():
        yield b'[{"key": "chunked", "value": "'
        for _ in range(6):
            yield chunk
        yield b'"}]'

    try:
        try:
            conn.request("POST", f"/v1.0/state/{STORE}", body=body(), encode_chunked=True,
                         headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = conn.getresponse()
        assert response.status == 413, (response.status, response.read()[:300])
    except (http.client.RemoteDisconnected, ConnectionResetError) as error:
        pytest.fail(f"the daemon dropped the connection instead of answering 413: {error!r}")
    finally:
        conn.close()
    still_serves(hangard)


def test_max_request_bytes_flag_is_honoured(hangard_factory):
    daemon = hangard_factory.examples(extra_args=("--max-request-bytes", "2048"))
    client = daemon.client("team-a", "orders")
    client.save_state(STORE, unique("small"), b"s" * 512)
    with pytest.raises(grpc.RpcError) as error:
        client.save_state(STORE, unique("big"), b"b" * 4096)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    result = daemon.http("team-a", "orders", "POST", f"/v1.0/state/{STORE}", [{"key": unique(), "value": "b" * 4096}])
    assert result.status == 413, result
    still_serves(daemon)


@pytest.mark.parametrize(
    "name,call",
    [
        ("GetConfiguration", lambda c: c.get_configuration("configstore", ["key"])),
        ("InvokeBinding", lambda c: c.invoke_binding("binding", "create", b"data")),
        ("TryLockAlpha1", lambda c: c.try_lock("lockstore", "resource", "owner", 10)),
    ],
)
def test_unimplemented_methods_name_themselves(hangard, name, call):
    client = hangard.client("team-a", "orders")
    with pytest.raises(grpc.RpcError) as error:
        call(client)
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED, error.value
    assert name in error.value.details(), error.value.details()
    still_serves(hangard)


def test_unknown_http_route_is_an_error_not_a_crash(hangard):
    for method, path in (("GET", "/v1.0/nope"), ("POST", "/v2/state/x"), ("GET", "/" + "a" * 8000)):
        result = hangard.http("team-a", "orders", method, path)
        assert 400 <= result.status < 500 or result.status == 501, result
    still_serves(hangard)


def connect_unix(path, timeout=5.0):
    """Connects to a Unix socket, retrying while the listen backlog is full (EAGAIN), for at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(str(path))
            return s
        except BlockingIOError:
            s.close()
            if time.monotonic() > deadline:
                pytest.fail(f"could not connect to {path} within {timeout}s: the daemon stopped accepting")
            time.sleep(0.01)
        except BaseException:
            s.close()
            raise


def test_many_idle_connections_do_not_stop_service(hangard):
    """200 idle connections on each socket of one app; that app and the others still answer."""
    sockets = []
    try:
        for path in (hangard.http_socket("team-a", "orders"), hangard.grpc_socket("team-a", "orders")):
            sockets += [connect_unix(path) for _ in range(200)]
        assert hangard.http("team-a", "orders", "GET", "/v1.0/healthz").status == 204
        still_serves(hangard)
        still_serves(hangard, "team-b", "orders")
    finally:
        for s in sockets:
            s.close()


def test_oversized_http_header_is_refused(hangard):
    result = hangard.http("team-a", "orders", "GET", "/v1.0/healthz", headers={"X-Big": "a" * 200_000})
    assert 400 <= result.status < 500, result
    still_serves(hangard)


def test_pipelined_http_requests_are_answered_in_order(hangard):
    """HTTP/1.1 pipelining: several requests in one write get their responses in order on the same connection,
    including one refused at its head (unknown store) between two that reach the store."""
    key = unique("pipelined")
    save = (
        f'[{{"key": "{key}", "value": "v1"}}]'
    ).encode()
    payload = (
        b"POST /v1.0/state/statestore HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(save)}\r\n\r\n".encode() + save
        + f"GET /v1.0/state/nosuchstore/{key} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        + f"GET /v1.0/state/statestore/{key} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    answer = send_and_drain(hangard.http_socket("team-a", "orders"), payload)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
    assert statuses == [b"204", b"400", b"200"], answer
    assert answer.endswith(b'"v1"'), answer
    still_serves(hangard)


def test_malformed_http_request_gets_400_and_the_connection_closes(hangard):
    answer = send_and_drain(hangard.http_socket("team-a", "orders"), b"GET /v1.0/healthz HTTP/1.1\r\nBad Header\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer
    still_serves(hangard)
