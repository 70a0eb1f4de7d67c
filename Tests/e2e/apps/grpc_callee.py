"""A gRPC app that Hangar invokes, for the end-to-end tests: `python grpc_callee.py sdk|raw PORT`.

sdk: the official SDK's app server, dapr.ext.grpc.App, with methods `echo` (answers a JSON summary of what it
     received: data, content type and metadata) and `whoami`, and a health check.
raw: a plain grpcio AppCallback servicer whose OnInvoke answers the whole InvokeRequest as JSON (method, verb,
     query string, content type, data, metadata): what dapr.ext.grpc.App does not show its handlers. Method
     `sleep/<ms>` answers after that long; `status/<CODE>` fails with that gRPC status; `big/<n>` answers n bytes
     of data. It also serves its own
     `/test.Echo/Echo` (raw bytes: answers the request and its metadata as JSON; `fail` fails it), for proxying.
Prints "ready" once it listens.
"""

from __future__ import annotations

import json
import sys
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

    class Servicer(appcallback_pb2_grpc.AppCallbackServicer):
        def OnInvoke(self, request, context):
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
        if request == b"fail":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the callee says no")
        body = {"request": request.decode(errors="replace"), "metadata": metadata_dict(context.invocation_metadata())}
        return json.dumps(body).encode()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    appcallback_pb2_grpc.add_AppCallbackServicer_to_server(Servicer(), server)
    # A service of the app's own, reached through hangard by gRPC proxying (raw bytes in and out).
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    run_sdk(port) if mode == "sdk" else run_raw(port)
