"""A gRPC app that Hangar invokes, for the end-to-end tests: `python grpc_callee.py sdk|raw PORT`.

sdk: the official SDK's app server, dapr.ext.grpc.App, with methods `echo` (answers a JSON summary of what it
     received: data, content type and metadata) and `whoami`, and a health check.
raw: a plain grpcio AppCallback servicer whose OnInvoke answers the whole InvokeRequest as JSON (method, verb,
     query string, content type, data, metadata): what dapr.ext.grpc.App does not show its handlers. Method
     `sleep/<ms>` answers after that long; `status/<CODE>` fails with that gRPC status; `big/<n>` answers n bytes
     of data; `calls` answers the
     methods of every call it received (OnInvoke methods, and proxied paths), so a test can tell that a refused
     call never arrived. It also serves its own service `test.Echo`, raw bytes in and out, for proxying:
       Echo (unary): answers the request and its metadata as JSON; `fail` fails it.
       Count (server-streaming): the request is JSON {n, size, delay_ms, fail_after, tag}; answers messages
         "0", "1", ... (each padded with `size` dots), one every `delay_ms`, failing with ABORTED before message
         `fail_after`; what it sent, whether it was cancelled and the deadline it saw are kept under `tag`.
       Sum (client-streaming): answers the sum of the integers it received (each may be padded with dots);
         a message `wait:<ms>` makes it stop reading for that long.
       Chat (bidirectional): answers each message as it arrives with "echo:" before it; `fail` fails it.
       Progress (unary): answers, as JSON, what Count kept under the tag in the request.
Prints "ready" once it listens.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent import futures


def metadata_dict(pairs) -> dict[str, str]:
    return {key: value for key, value in pairs if not key.endswith("-bin")}


def run_sdk(port: int) -> None:
    from dapr.ext.grpc import App, InvokeMethodRequest, InvokeMethodResponse

    app = App()

    @app.method(name="echo")
    def echo(request: InvokeMethodRequest) -> InvokeMethodResponse:
        body = {
            "data": request.text(),
            "content_type": request.content_type,
            "metadata": metadata_dict(request.get_metadata()),
        }
        return InvokeMethodResponse(json.dumps(body).encode(), "application/json")

    @app.method(name="whoami")
    def whoami(request: InvokeMethodRequest) -> str:
        return f"callee on {port}"

    app.register_health_check(lambda: None)
    print("ready", flush=True)
    app.run(port, listen_address="127.0.0.1")


def run_raw(port: int) -> None:
    import grpc
    from dapr.proto.common.v1 import common_pb2
    from dapr.proto.runtime.v1 import appcallback_pb2_grpc

    seen: list[str] = []

    class Servicer(appcallback_pb2_grpc.AppCallbackServicer):
        def OnInvoke(self, request, context):
            if request.method == "calls":
                listing = common_pb2.InvokeResponse(content_type="application/json")
                listing.data.value = json.dumps(seen).encode()
                return listing
            seen.append(request.method)
            body = {
                "method": request.method,
                "verb": common_pb2.HTTPExtension.Verb.Name(request.http_extension.verb),
                "querystring": request.http_extension.querystring,
                "content_type": request.content_type,
                "type_url": request.data.type_url,
                "data": request.data.value.decode(errors="replace"),
                "metadata": metadata_dict(context.invocation_metadata()),
            }
            if request.method.startswith("sleep/"):
                time.sleep(int(request.method.split("/", 1)[1]) / 1000)
            if request.method.startswith("status/"):
                context.abort(grpc.StatusCode[request.method.split("/", 1)[1]], "the callee says no")
            context.send_initial_metadata((("x-callee", "raw"),))
            if request.method.startswith("big/"):
                answer = common_pb2.InvokeResponse(content_type="application/octet-stream")
                answer.data.value = b"x" * int(request.method.split("/", 1)[1])
                return answer
            answer = common_pb2.InvokeResponse(content_type="application/json")
            answer.data.value = json.dumps(body).encode()
            return answer

    def echo(request: bytes, context) -> bytes:
        seen.append("/test.Echo/Echo")
        if request == b"fail":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the callee says no")
        body = {"request": request.decode(errors="replace"), "metadata": metadata_dict(context.invocation_metadata())}
        return json.dumps(body).encode()

    progress: dict[str, dict] = {}
    lock = threading.Lock()

    def count(request: bytes, context):
        spec = json.loads(request)
        with lock:
            state = progress.setdefault(spec.get("tag", ""), {})
            state.update(sent=0, cancelled=False, done=False, timeout=context.time_remaining())

        def ended() -> None:
            with lock:
                if not state["done"]:
                    state["cancelled"] = True

        context.add_callback(ended)
        context.send_initial_metadata((("x-callee", "count"),))
        context.set_trailing_metadata((("x-trailer", "counted"),))
        padding = b"." * int(spec.get("size", 0))
        for index in range(int(spec["n"])):
            if spec.get("fail_after") == index:
                with lock:
                    state["done"] = True
                context.abort(grpc.StatusCode.ABORTED, f"failed after {index}")
            if not context.is_active():
                with lock:
                    state["cancelled"] = True
                return
            yield str(index).encode() + padding
            with lock:
                state["sent"] = index + 1
            if spec.get("delay_ms"):
                time.sleep(spec["delay_ms"] / 1000)
        with lock:
            state["done"] = True

    def total(requests, context) -> bytes:
        result = 0
        for message in requests:
            if message.startswith(b"wait:"):  # a slow reader: nothing more is read meanwhile
                time.sleep(int(message[5:]) / 1000)
            else:
                result += int(message.rstrip(b"."))
        return str(result).encode()

    def chat(requests, context):
        for message in requests:
            if message == b"fail":
                context.abort(grpc.StatusCode.ABORTED, "the chat failed")
            yield b"echo:" + message

    def report(request: bytes, context) -> bytes:
        with lock:
            return json.dumps(progress.get(request.decode())).encode()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    appcallback_pb2_grpc.add_AppCallbackServicer_to_server(Servicer(), server)
    # A service of the app's own, reached through hangard by gRPC proxying (raw bytes in and out).
    methods = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Count": grpc.unary_stream_rpc_method_handler(count),
        "Sum": grpc.stream_unary_rpc_method_handler(total),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
        "Progress": grpc.unary_unary_rpc_method_handler(report),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", methods),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    run_sdk(port) if mode == "sdk" else run_raw(port)
