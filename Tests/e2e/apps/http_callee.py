"""An HTTP app that Hangar invokes, for the end-to-end tests: `python http_callee.py (tcp PORT | uds PATH)`.

A FastAPI app wrapped in the official SDK's dapr.ext.fastapi.DaprApp, served by uvicorn. Every path answers a JSON
summary of the request (verb, path, query string, headers, body); `/status/<code>` answers that status with a
body; `/big/<n>` answers n bytes; `/healthz` answers 200; `/calls` answers the verbs and paths of every request
the echo and status routes received (so a test can tell that a refused call never arrived). Prints "ready" once it
listens.

For streaming: `/stream/<n>?tag=T&status=S&length=1` streams n bytes of `stream_bytes(n)` in 64 KiB parts as
they are made (chunked, or with a content-length when `length=1`), answering status S (200 by default), and counts
in `/progress/<T>` how many bytes it has handed to the server so far and whether the stream ended or was cut;
`/upload/<T>` reads the request body part by part and answers (and keeps, for `/uploads/<T>`) its size and SHA-256,
or, when the caller goes away, keeps `aborted` with the bytes that had arrived.
"""

from __future__ import annotations

import hashlib
import random
import sys
import threading
import time

import uvicorn
from dapr.ext.fastapi import DaprApp
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.requests import ClientDisconnect

app = FastAPI()
DaprApp(app)
SEEN: list[str] = []


@app.get("/calls")
def calls() -> list[str]:
    return SEEN

PART = 64 * 1024
progress: dict[str, dict] = {}
uploads: dict[str, dict] = {}


def stream_parts(size: int):
    """The parts of the n-byte stream `/stream/<n>` sends: deterministic pseudo-random bytes, which the tests
    regenerate to check what came through."""
    rng = random.Random(size)
    left = size
    while left > 0:
        part = rng.randbytes(min(PART, left))
        left -= len(part)
        yield part


@app.get("/stream/{size}")
async def stream(size: int, request: Request, tag: str = "", status: int = 200, length: int = 0) -> StreamingResponse:
    record = progress.setdefault(tag, {"sent": 0, "state": "streaming"}) if tag else {"sent": 0}

    async def body():
        for part in stream_parts(size):
            # uvicorn drops what is sent after the client went away without a word: ask.
            if await request.is_disconnected():
                record["state"] = "cut"
                return
            yield part
            record["sent"] += len(part)
        record["state"] = "done"

    headers = {"content-length": str(size)} if length else None
    return StreamingResponse(body(), status_code=status, media_type="application/octet-stream", headers=headers)


@app.get("/progress/{tag}")
def stream_progress(tag: str) -> Response:
    if tag not in progress:
        return Response(status_code=404)
    return JSONResponse(progress[tag])


@app.api_route("/upload/{tag}", methods=["POST", "PUT"])
async def upload(tag: str, request: Request) -> Response:
    digest = hashlib.sha256()
    record = uploads[tag] = {"state": "receiving", "bytes": 0}
    try:
        async for part in request.stream():
            digest.update(part)
            record["bytes"] += len(part)
    except ClientDisconnect:
        record["state"] = "aborted"
        return Response(status_code=499)
    record.update(state="complete", sha256=digest.hexdigest())
    return JSONResponse(record)


@app.get("/uploads/{tag}")
def upload_record(tag: str) -> Response:
    if tag not in uploads:
        return Response(status_code=404)
    return JSONResponse(uploads[tag])


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
