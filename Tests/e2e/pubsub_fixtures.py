"""What the pub/sub end-to-end tests share: app processes that print "ready" once they listen, a reader of the SDK's
streaming subscriptions, and `Subscription` resource YAML."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
from pathlib import Path

from tenancy_files import dedent

APPS = Path(__file__).parent / "apps"


class AppProcess:
    """A Python app under Tests/e2e/apps run as `python SCRIPT ARGS...`, started once it prints "ready". An app that
    serves on a Unix socket (`socket`) leaves its socket file behind when killed: `stop` removes it."""

    def __init__(self, script: str, *args: str, socket: str | None = None):
        self.script, self.args, self.socket = APPS / script, args, socket
        self.process: subprocess.Popen[str] | None = None

    def start(self):
        self.process = subprocess.Popen(
            [sys.executable, str(self.script), *self.args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert self.process.stdout is not None
        seen = []
        for line in self.process.stdout:
            if line.strip() == "ready":
                return self
            seen.append(line)
        raise AssertionError(f"{self.script.name} {' '.join(self.args)} did not start: {''.join(seen)}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        if self.socket is not None:
            Path(self.socket).unlink(missing_ok=True)


class Receiver:
    """Reads a `client.subscribe` subscription on a thread into a queue, answering SUCCESS unless `answer` is
    False (events then stay unanswered)."""

    def __init__(self, subscription, answer: bool = True, wait: float = 30.0):
        self.subscription = subscription
        self.answer = answer
        self.wait = wait
        self.messages: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                message = self.subscription.next_message()
            except Exception:
                return
            if message is None or not message.id():
                continue
            self.messages.put(message)
            if self.answer:
                try:
                    self.subscription.respond_success(message)
                except Exception:
                    return

    def next(self, timeout: float | None = None):
        return self.messages.get(timeout=self.wait if timeout is None else timeout)

    def texts(self, count: int) -> list[str]:
        """The next `count` events' data as text."""
        return [self.next().raw_data().decode() for _ in range(count)]

    def close(self) -> None:
        self.subscription.close()
        self.thread.join(timeout=10)


def subscription(name: str, topic: str, *, version: str = "v2alpha1", namespace: str | None = None,
                 scopes: list[str] | None = None, spec: str = "", pubsub: str = "pubsub") -> str:
    """A `Subscription` resource of `pubsub`/`topic`; `spec` is YAML added under `spec:` (routes, deadLetterTopic,
    bulkSubscribe, metadata, or a v1alpha1 `route`)."""
    lines = [f"apiVersion: dapr.io/{version}", "kind: Subscription", "metadata:", f"  name: {name}"]
    if namespace:
        lines.append(f"  namespace: {namespace}")
    lines += ["spec:", f"  pubsubname: {pubsub}", f"  topic: {topic}"]
    lines += ["  " + line for line in dedent(spec).splitlines()]
    if scopes:
        lines.append(f"scopes: [{', '.join(scopes)}]")
    return "\n".join(lines) + "\n"
