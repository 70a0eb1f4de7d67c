"""Subscriber apps that record what hangard pushes to them, for the end-to-end tests of push delivery:
`python delivery_app.py (fastapi SOCKET | grpc PORT) RECORD`.

Every event an app receives is appended to the file RECORD as one JSON line (`{"kind": "event", "handler", "id",
"type", "source", "topic", "pubsubname", "datacontenttype", "data", "headers" or "metadata", ...}`); a gRPC app also
appends one `{"kind": "call", "method", "path", "ids", ...}` line per AppCallback call it serves (a server
interceptor reads the request), so that the tests see bulk batches and the routes hangard sent.

What the app answers is told by the event's data, a JSON object:
- `answer`: SUCCESS (the default), RETRY or DROP; for the HTTP app also `500` (an HTTP 500), `garbage` (a 200 whose
  body is not JSON), `bogus` (a 200 with the unknown status "BOGUS"), `hang` (no answer for an hour), or any other
  text, sent as the status verbatim; for the gRPC app also `raise` (the handler raises: gRPC UNKNOWN);
- `times`: the answer is given to the first `times` deliveries of the event (by CloudEvent id), SUCCESS after
  (default: every delivery).

fastapi: a FastAPI app with the official SDK's dapr.ext.fastapi.DaprApp, served by uvicorn on the Unix socket SOCKET
         (an HTTP app channel). Programmatic subscriptions: pubsub/orders (default route /events/pubsub/orders),
         pubsub/retried (route /retried, dead letters to retried-dlq), pubsub/retried-dlq (route /dlq),
         pubsub/garbage (route /garbage), pubsub/nested/topic and pubsub/café (default routes). Plain routes for declarative Subscriptions: /widgets, /big, /fallback,
         /legacy, /late, /raw, and /bulk (Dapr's bulk JSON; answers a status per entry). `/healthz` answers 200.
grpc:    the official SDK's dapr.ext.grpc.App on 127.0.0.1:PORT (health check registered). Subscriptions:
         pubsub/grpc-orders (on_orders), pubsub/grpc-routed with the rules `event.type == "widget"` (on_widget,
         priority 1) and `event.data.kind == "gadget"` (on_gadget, priority 2), and pubsub/bulk-handler
         (on_bulk), the handler a declarative bulk Subscription routes to by naming it.

Prints "ready" once it listens.
"""

# No `from __future__ import annotations`: dapr.ext.grpc reads the handlers' annotations as classes.
import asyncio
import base64
import json
import sys
import threading
import time

_lock = threading.Lock()
_seen: dict = {}
RECORD = ""


def record(entry: dict) -> None:
    line = json.dumps(entry, sort_keys=True, default=str)
    with _lock:
        with open(RECORD, "a") as file:
            file.write(line + "\n")
            file.flush()


def decide(event_id: str, data) -> str:
    """The answer for this delivery of the event, from its data (see the module's doc)."""
    if not isinstance(data, dict):
        return "SUCCESS"
    with _lock:
        _seen[event_id] = _seen.get(event_id, 0) + 1
        delivery = _seen[event_id]
    answer = str(data.get("answer", "SUCCESS"))
    times = data.get("times")
    if times is not None and delivery > int(times):
        return "SUCCESS"
    return answer


def run_fastapi(path: str) -> None:
    import uvicorn
    from dapr.ext.fastapi import DaprApp
    from fastapi import FastAPI, Request, Response

    app = FastAPI()
    dapr_app = DaprApp(app)

    @app.get("/healthz")
    def healthz() -> dict:
        return {}

    async def handle(name: str, request: Request) -> Response:
        body = await request.body()
        try:
            event = json.loads(body)
        except ValueError:
            event = {"unreadable": body.decode(errors="replace")}
        record({
            "kind": "event", "handler": name, "id": event.get("id"), "type": event.get("type"),
            "source": event.get("source"), "topic": event.get("topic"), "pubsubname": event.get("pubsubname"),
            "specversion": event.get("specversion"), "datacontenttype": event.get("datacontenttype"),
            "data": event.get("data"), "data_base64": event.get("data_base64"),
            "traceparent": event.get("traceparent"), "path": request.url.path,
            "headers": {key.lower(): value for key, value in request.headers.items()},
        })
        answer = decide(str(event.get("id")), event.get("data"))
        if answer == "hang":
            await asyncio.sleep(3600)
        if answer == "500":
            return Response("no", status_code=500)
        if answer == "garbage":
            return Response("<html>surely not JSON", status_code=200, media_type="text/html")
        if answer == "bogus":
            return Response(json.dumps({"status": "BOGUS"}), media_type="application/json")
        return Response(json.dumps({"status": answer}), media_type="application/json")

    @dapr_app.subscribe(pubsub="pubsub", topic="orders")
    async def orders(request: Request) -> Response:
        return await handle("orders", request)

    @dapr_app.subscribe(pubsub="pubsub", topic="retried", route="/retried", dead_letter_topic="retried-dlq")
    async def retried(request: Request) -> Response:
        return await handle("retried", request)

    @dapr_app.subscribe(pubsub="pubsub", topic="retried-dlq", route="/dlq")
    async def dlq(request: Request) -> Response:
        return await handle("dlq", request)

    @dapr_app.subscribe(pubsub="pubsub", topic="garbage", route="/garbage")
    async def garbage(request: Request) -> Response:
        return await handle("garbage", request)

    # Topics whose default routes need care: a slash, and a non-ASCII letter (percent-encoded on the wire).
    @dapr_app.subscribe(pubsub="pubsub", topic="nested/topic")
    async def nested(request: Request) -> Response:
        return await handle("nested", request)

    @dapr_app.subscribe(pubsub="pubsub", topic="café")
    async def cafe(request: Request) -> Response:
        return await handle("café", request)

    for route in ("widgets", "big", "fallback", "legacy", "late", "raw"):

        async def declared(request: Request, route: str = route) -> Response:
            return await handle(route, request)

        app.add_api_route(f"/{route}", declared, methods=["POST"])

    @app.post("/bulk")
    async def bulk(request: Request) -> Response:
        batch = json.loads(await request.body())
        statuses = []
        record({"kind": "call", "method": "bulk", "id": batch.get("id"), "type": batch.get("type"),
                "topic": batch.get("topic"), "pubsubname": batch.get("pubsubname"),
                "ids": [entry["event"].get("id") for entry in batch["entries"]]})
        for entry in batch["entries"]:
            event = entry["event"]
            record({"kind": "event", "handler": "bulk", "id": event.get("id"), "data": event.get("data"),
                    "entryId": entry.get("entryId"), "contentType": entry.get("contentType"),
                    "metadata": entry.get("metadata")})
            statuses.append({"entryId": entry["entryId"], "status": decide(event.get("id"), event.get("data"))})
        return Response(json.dumps({"statuses": statuses}), media_type="application/json")

    server = uvicorn.Server(uvicorn.Config(app, uds=path, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    print("ready", flush=True)
    thread.join()


def run_grpc(port: int) -> None:
    import grpc
    from dapr.clients.grpc._response import TopicEventResponse
    from dapr.ext.grpc import App, Rule, SubscriptionMessage

    class Recorder(grpc.ServerInterceptor):
        """Records each topic-event call's request as hangard sent it (the SDK's handlers do not see the route or
        the batch)."""

        def intercept_service(self, continuation, details):
            handler = continuation(details)
            method = details.method.rsplit("/", 1)[-1]
            if handler is None or "TopicEvent" not in method or handler.unary_unary is None:
                return handler
            inner = handler.unary_unary

            def behaviour(request, context):
                if hasattr(request, "entries"):
                    ids = [entry.cloud_event.id if entry.HasField("cloud_event") else "" for entry in request.entries]
                    entry_ids = [entry.entry_id for entry in request.entries]
                else:
                    ids, entry_ids = [request.id], []
                record({"kind": "call", "method": method, "path": request.path, "ids": ids, "entryIds": entry_ids,
                        "topic": request.topic,
                        "pubsubname": request.pubsub_name,
                        "type": getattr(request, "type", ""),
                        "metadata": dict(context.invocation_metadata())})
                return inner(request, context)

            return grpc.unary_unary_rpc_method_handler(
                behaviour, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)

    from concurrent import futures

    app = App(thread_pool=futures.ThreadPoolExecutor(max_workers=10), interceptors=(Recorder(),))
    app.register_health_check(lambda: None)

    def handle(name: str, event: SubscriptionMessage):
        data = event.data()
        if isinstance(data, (bytes, bytearray)):
            data = data.decode(errors="replace")
        record({
            "kind": "event", "handler": name, "id": event.id(), "type": event.type(), "source": event.source(),
            "topic": event.topic(), "pubsubname": event.pubsub_name(), "specversion": event.spec_version(),
            "datacontenttype": event.data_content_type(), "data": data,
            "raw": bytes(event.raw_data() or b"").decode(errors="replace"),
            "raw_base64": base64.b64encode(bytes(event.raw_data() or b"")).decode(), "extensions": event.extensions(),
            "metadata": dict(event.metadata()),
        })
        answer = decide(event.id(), data)
        if answer == "raise":
            raise RuntimeError("the handler failed")
        if answer != "SUCCESS":
            return TopicEventResponse(answer.lower())
        return None

    @app.subscribe(pubsub_name="pubsub", topic="grpc-orders")
    def on_orders(event: SubscriptionMessage):
        return handle("on_orders", event)

    @app.subscribe(pubsub_name="pubsub", topic="grpc-routed", rule=Rule('event.type == "widget"', 1))
    def on_widget(event: SubscriptionMessage):
        return handle("on_widget", event)

    @app.subscribe(pubsub_name="pubsub", topic="grpc-routed", rule=Rule('event.data.kind == "gadget"', 2))
    def on_gadget(event: SubscriptionMessage):
        return handle("on_gadget", event)

    @app.subscribe(pubsub_name="pubsub", topic="bulk-handler")
    def on_bulk(event: SubscriptionMessage):
        return handle("on_bulk", event)

    print("ready", flush=True)
    app.run(port, listen_address="127.0.0.1")


if __name__ == "__main__":
    kind, where, RECORD = sys.argv[1], sys.argv[2], sys.argv[3]
    if kind == "fastapi":
        run_fastapi(where)
    else:
        run_grpc(int(where))
