"""Apps that subscribe programmatically, for the end-to-end tests of where subscriptions come from:
`python subscriber.py (fastapi PATH | grpc PORT) [VARIANT]`.

fastapi: a FastAPI app with the official SDK's dapr.ext.fastapi.DaprApp, served by uvicorn on the Unix socket PATH
         (what hangard dials as an HTTP app channel). It subscribes to pubsub/orders (the SDK's default route
         /events/pubsub/orders, metadata {"rawPayload": "true"}), pubsub/payments (route /pay, dead letters to
         payments-dlq) and pubsub/shared (which a declarative Subscription also names); VARIANT `changed`
         subscribes to pubsub/changed only. `/healthz` answers 200.
grpc:    the official SDK's dapr.ext.grpc.App on 127.0.0.1:PORT. It subscribes to pubsub/widgets with a Rule
         (`event.type == "widget"`, handler `on_widget`), pubsub/plain (dead letters to plain-dlq, metadata
         {"k": "v"}) and pubsub/shared. VARIANT `changed` subscribes to pubsub/changed only (an app restarted with
         other subscriptions).

Events are not delivered in these tests; the handlers only exist to be listed. Prints "ready" once it listens.
"""

# No `from __future__ import annotations`: dapr.ext.grpc reads the handlers' annotations as classes.
import sys
import threading
import time


def run_fastapi(path: str, variant: str) -> None:
    import uvicorn
    from dapr.ext.fastapi import DaprApp
    from fastapi import Body, FastAPI

    app = FastAPI()
    dapr_app = DaprApp(app)

    @app.get("/healthz")
    def healthz() -> dict:
        return {}

    if variant == "changed":

        @dapr_app.subscribe(pubsub="pubsub", topic="changed")
        def changed(event=Body()) -> None:
            return None

    else:

        @dapr_app.subscribe(pubsub="pubsub", topic="orders", metadata={"rawPayload": "true"})
        def orders(event=Body()) -> None:
            return None

        @dapr_app.subscribe(pubsub="pubsub", topic="payments", route="/pay", dead_letter_topic="payments-dlq")
        def payments(event=Body()) -> None:
            return None

        @dapr_app.subscribe(pubsub="pubsub", topic="shared")
        def shared(event=Body()) -> None:
            return None

    server = uvicorn.Server(uvicorn.Config(app, uds=path, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    print("ready", flush=True)
    thread.join()


def run_grpc(port: int, variant: str) -> None:
    from dapr.ext.grpc import App, Rule, SubscriptionMessage

    app = App()

    if variant == "changed":

        @app.subscribe(pubsub_name="pubsub", topic="changed")
        def on_changed(event: SubscriptionMessage) -> None:
            return None

    else:

        @app.subscribe(pubsub_name="pubsub", topic="widgets", rule=Rule('event.type == "widget"', 1))
        def on_widget(event: SubscriptionMessage) -> None:
            return None

        @app.subscribe(pubsub_name="pubsub", topic="plain", dead_letter_topic="plain-dlq", metadata={"k": "v"})
        def on_plain(event: SubscriptionMessage) -> None:
            return None

        @app.subscribe(pubsub_name="pubsub", topic="shared")
        def on_shared(event: SubscriptionMessage) -> None:
            return None

    print("ready", flush=True)
    app.run(port, listen_address="127.0.0.1")


if __name__ == "__main__":
    kind, where = sys.argv[1], sys.argv[2]
    variant = sys.argv[3] if len(sys.argv) > 3 else ""
    if kind == "fastapi":
        run_fastapi(where, variant)
    else:
        run_grpc(int(where), variant)
