"""Interoperability of hangard's own HTTP/2 server with nghttp2's load generator, `h2load` (Debian
`nghttp2-client`), on an app's Unix gRPC socket: many concurrent streams per connection, tight flow-control
windows on large responses (the server must split DATA and wait for WINDOW_UPDATEs stream by stream), and large
uploads (the server must credit its inbound windows as it consumes). grpcio and swift-nio-http2's client are the
other two clients the server is tested with (the rest of this suite, and Tests/HangarGRPCTests).

h2load does not read gRPC trailers, so each test checks that the DATA it received is exactly the expected answers
(a refused call answers with trailers only) and reads the outcome through the SDK afterwards. The tenant has no
rate quota and room for every stream, so nothing is refused.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from dapr.proto.runtime.v1 import state_pb2

from hangar_e2e import unique
from tenancy_files import start_daemon, tenant_yaml

STORE = "statestore"
GET_STATE = "http://localhost/dapr.proto.runtime.v1.Dapr/GetState"
SAVE_STATE = "http://localhost/dapr.proto.runtime.v1.Dapr/SaveState"


def framed(message) -> bytes:
    """One gRPC message: uncompressed, 4-byte big-endian length, the protobuf bytes."""
    payload = message.SerializeToString()
    return b"\x00" + struct.pack(">I", len(payload)) + payload


class H2LoadResult:
    def __init__(self, output: str):
        self.output = output
        requests = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", output)
        codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output)
        data = re.search(r"traffic: .*?, .*? headers .*?, .*?\((\d+)\) data", output)
        assert requests and codes and data, f"unexpected h2load output:\n{output}"
        self.total, self.started, self.done, self.succeeded, self.failed = map(int, requests.groups())
        self.status_2xx = int(codes.group(1))
        self.data_bytes = int(data.group(1))

    def __repr__(self) -> str:
        return self.output


def h2load(socket: Path, uri: str, body: bytes, tmp_path: Path, *args: str) -> H2LoadResult:
    if shutil.which("h2load") is None:
        pytest.fail("h2load is not installed: scripts/test.sh installs nghttp2-client")
    body_file = tmp_path / f"body-{unique()}.bin"
    body_file.write_bytes(body)
    command = [
        "h2load", *args,
        "-H", "content-type: application/grpc", "-H", "te: trailers",
        "-d", str(body_file), "-B", f"unix:{socket}", uri,
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, f"h2load failed: {completed.stdout}\n{completed.stderr}"
    return H2LoadResult(completed.stdout)


@pytest.fixture
def hangard(hangard_factory):
    tenant = tenant_yaml("interop", [{"appId": "loader"}], quotas={"maxConcurrentRequests": 1000})
    return start_daemon(hangard_factory, {"interop.yaml": tenant}, apps=[("interop", "loader")])


@pytest.fixture
def orders(hangard):
    return hangard.client("interop", "loader")


def test_many_concurrent_streams_on_few_connections(hangard, orders, tmp_path):
    key = unique("h2load")
    orders.save_state(STORE, key, b"hello")
    request = framed(state_pb2.GetStateRequest(store_name=STORE, key=key))
    result = h2load(hangard.grpc_socket("interop", "loader"), GET_STATE, request, tmp_path, "-n", "4000", "-c", "4", "-m", "32")
    assert result.succeeded == 4000 and result.status_2xx == 4000, result
    # Each answer is one GetStateResponse message with the value and its ETag.
    response = state_pb2.GetStateResponse(data=b"hello", etag=orders.get_state(STORE, key).etag)
    assert result.data_bytes == 4000 * len(framed(response)), result
    assert orders.get_state(STORE, key).data == b"hello", "the daemon keeps serving after the load"


def test_large_responses_under_tight_flow_control_windows(hangard, orders, tmp_path):
    """1023-byte stream windows and a 4095-byte connection window, 8 streams at once per connection: every 200 KB
    answer has to be cut into DATA frames that fit, resumed on each WINDOW_UPDATE, without mixing up streams."""
    key = unique("h2load-big")
    value = bytes(range(256)) * 800  # 204,800 bytes
    orders.save_state(STORE, key, value)
    request = framed(state_pb2.GetStateRequest(store_name=STORE, key=key))
    result = h2load(
        hangard.grpc_socket("interop", "loader"), GET_STATE, request, tmp_path,
        "-n", "120", "-c", "2", "-m", "8", "-w", "10", "-W", "12",
    )  # fmt: skip
    assert result.succeeded == 120 and result.status_2xx == 120, result
    assert result.data_bytes >= 120 * len(value), result
    etag = orders.get_state(STORE, key).etag
    response = state_pb2.GetStateResponse(data=value, etag=etag)
    assert result.data_bytes == 120 * len(framed(response)), "every answer arrived whole, once"


def test_large_uploads_credit_the_servers_inbound_windows(hangard, orders, tmp_path):
    """1 MiB SaveState requests, 4 at once on each of 2 connections: more than the server's initial windows, so the
    uploads finish only if hangard sends WINDOW_UPDATEs as it consumes the bytes."""
    key = unique("h2load-upload")
    value = b"u" * (1 << 20)
    request = framed(state_pb2.SaveStateRequest(store_name=STORE, states=[{"key": key, "value": value}]))
    result = h2load(hangard.grpc_socket("interop", "loader"), SAVE_STATE, request, tmp_path, "-n", "24", "-c", "2", "-m", "4")
    assert result.succeeded == 24 and result.status_2xx == 24, result
    assert orders.get_state(STORE, key).data == value, "the uploaded value was stored whole"
