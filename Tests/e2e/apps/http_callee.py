"""An HTTP app that Hangar invokes, for the end-to-end tests: `python http_callee.py (tcp PORT | uds PATH)`.

A FastAPI app wrapped in the official SDK's dapr.ext.fastapi.DaprApp, served by uvicorn. Every path answers a JSON
summary of the request (verb, path, query string, headers, body); `/status/<code>` answers that status with a
body; `/big/<n>` answers n bytes; `/healthz` answers 200; `/calls` answers the verbs and paths of every request
the echo and status routes received (so a test can tell that a refused call never arrived). Prints "ready" once it
listens.
"""

from __future__ import annotations

import sys
import threading
import time

import uvicorn
from dapr.ext.fastapi import DaprApp
from fastapi import FastAPI, Request, Response

app = FastAPI()
DaprApp(app)
SEEN: list[str] = []


@app.get("/calls")
def calls() -> list[str]:
    return SEEN


@app.get("/healthz")
def healthz() -> Response:
    return Response(status_code=200)


@app.api_route("/big/{size}", methods=["GET", "POST"])
def big(size: int) -> Response:
    return Response(content=b"x" * size, media_type="application/octet-stream")


@app.api_route("/status/{code}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
async def status(code: int, request: Request) -> Response:
    SEEN.append(f"{request.method} {request.url.path}")
    return Response(content=f"the callee answers {code}", status_code=code, media_type="text/plain")


@app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
async def echo(path: str, request: Request) -> dict:
    body = await request.body()
    SEEN.append(f"{request.method} {request.url.path}")
    return {
        "verb": request.method,
        "path": request.url.path,
        "query": request.url.query,
        "headers": {k: v for k, v in request.headers.items()},
        "body": body.decode(errors="replace"),
    }


if __name__ == "__main__":
    kind, where = sys.argv[1], sys.argv[2]
    config = (
        uvicorn.Config(app, host="127.0.0.1", port=int(where), log_level="warning")
        if kind == "tcp"
        else uvicorn.Config(app, uds=where, log_level="warning")
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    print("ready", flush=True)
    thread.join()
