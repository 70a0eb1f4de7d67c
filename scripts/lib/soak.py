"""The soak test of issue 16: a real hangard under mixed load for a long time, its RSS, file descriptors and threads
sampled from /proc. Started by scripts/soak.sh (which builds hangard and the venv); runnable alone with the venv's
python:

    .venv/bin/python scripts/lib/soak.py --hangard PATH [--duration SECONDS] [--out DIR]

What runs (everything real, on loopback, through the official Dapr Python SDK over the apps' Unix sockets):

- a redis-server and a PostgreSQL server (Tests/e2e/backend_servers.py, postgres_fixtures.py);
- hangard (Tests/e2e/hangar_e2e.py's Hangard, log level info) with five tenants:
    shop     web (caller, publisher), orders (invocation callee: Tests/e2e/apps/grpc_callee.py, the SDK's
             dapr.ext.grpc.App, on loopback TCP; and streaming subscriber)
    stats    ingest (publisher), report (streaming subscriber)
    churn    churn (clients that connect, call once and disconnect)
    limited  app, with a small rate quota and a small maxStateBytes: the only calls that may be refused
    dynamic  base, and `extra`, which the reconfigurations add and remove
  and the components memstore (state.in-memory), sqlitestore (state.sqlite), redisstore (state.redis),
  pgstore (state.postgresql v2), mempubsub (pubsub.in-memory), sqlpubsub (pubsub.sqlite), redispubsub
  (pubsub.redis);
- workers, each paced to --rate calls/s: save/get/delete/bulk-get on each store (gRPC), the same on HTTP over the
  app's Unix socket, publish + receive on each broker (every event must arrive: lost events are errors), invocation
  of `orders` over gRPC (InvokeService) and over HTTP, a churn worker (a new DaprClient per call, a streaming
  subscription opened and closed, bare connections opened and closed), a quota worker (bursts over the rate quota
  and writes over maxStateBytes: RESOURCE_EXHAUSTED with HANGAR_QUOTA_EXCEEDED from it is the expected refusal);
- every --reconfigure-every seconds a reconfiguration, in turn: add the app dynamic/extra, add the component
  extrastore, change limited's quota, remove extra, remove extrastore, change the quota back; each is checked to
  have taken effect (sockets, metadata, the reload in hangard's log) within 10 s, else it is an error.

Every --interval seconds: VmRSS, open fds (/proc/PID/fd), threads, CPU seconds, and the window's calls, expected
refusals and errors, into OUT/soak.csv. At the end a summary (also OUT/summary.json); the exit code is 1 when there
was any unexpected error, when the RSS grew more than --max-rss-growth % from the end of the warm-up to the last
sample, or when the fds at the last sample exceed those at the end of the warm-up by more than --fd-slack.
Warm-up: the first 300 s, or a sixth of the run when that is shorter.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
E2E = REPO / "Tests" / "e2e"

# ---------------------------------------------------------------------------------------------------------------
# Arguments first: the e2e helpers read the binary's path ($HANGARD) when they are imported.


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Soak hangard under mixed load; see the module docstring.")
    parser.add_argument("--hangard", required=True, help="the hangard binary")
    parser.add_argument("--duration", type=float, default=1800, help="seconds of load (default 1800)")
    parser.add_argument("--out", default=None, help="directory for soak.csv, summary.json, hangard.log")
    parser.add_argument("--interval", type=float, default=5, help="seconds between samples (default 5)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds of warm-up (default: min(300, duration / 6))")
    parser.add_argument("--reconfigure-every", type=float, default=60, help="seconds between reconfigurations")
    parser.add_argument("--rate", type=float, default=25, help="calls/s of each steady worker (default 25)")
    parser.add_argument("--max-rss-growth", type=float, default=5.0, help="percent (default 5)")
    parser.add_argument("--fd-slack", type=int, default=5,
                        help="fds the last sample may have over the end of the warm-up (default 5)")
    parser.add_argument("--only", default=",".join(WORKERS),
                        help=f"comma-separated workers to run, to find what a growth comes from "
                             f"(default all: {','.join(WORKERS)})")
    args = parser.parse_args()
    args.only = set(filter(None, args.only.split(",")))
    if args.only - set(WORKERS):
        parser.error(f"unknown workers {sorted(args.only - set(WORKERS))}; known: {', '.join(WORKERS)}")
    return args


WORKERS = ("state", "http", "invoke", "pubsub", "churn", "quota", "reconfigure")


ARGS = parse_args()
os.environ["HANGARD"] = str(Path(ARGS.hangard).resolve())
sys.path.insert(0, str(E2E))
warnings.simplefilter("ignore")

import grpc  # noqa: E402
from dapr.clients import DaprClient  # noqa: E402
from dapr.clients.grpc.client import DaprGrpcClient  # noqa: E402

from backend_servers import RedisProcess  # noqa: E402
from hangar_e2e import Hangard, UnixHTTPConnection, free_port, grpc_error_info, short_tempdir  # noqa: E402
from postgres_fixtures import SUPER_PASSWORD, PostgresServer, postgres_component_yaml  # noqa: E402
from tenancy_files import component_yaml, tenant_yaml, write_atomically  # noqa: E402

STORES = ("memstore", "sqlitestore", "redisstore", "pgstore")
BROKERS = {  # broker → (namespace, publisher, subscriber)
    "mempubsub": ("shop", "web", "orders"),
    "sqlpubsub": ("shop", "web", "orders"),
    "redispubsub": ("stats", "ingest", "report"),
}
LIMITED_QUOTAS = ({"requestsPerSecond": 20, "burst": 20, "maxStateBytes": 20000},
                  {"requestsPerSecond": 22, "burst": 22, "maxStateBytes": 20000})
BURST = 24  # calls the quota worker sends at once, every second: a few over the bucket
MAX_PRINTED_ERRORS = 10


def log(message: str) -> None:
    print(f"soak [{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Stop(Exception):
    """SIGINT or SIGTERM: stop the run, clean up, and report what was measured."""


# ---------------------------------------------------------------------------------------------------------------
# Accounting.


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: Counter[str] = Counter()          # successful calls by kind
        self.expected: Counter[str] = Counter()       # expected refusals by quota
        self.unexpected: Counter[str] = Counter()     # unexpected errors by kind
        self.first_errors: list[str] = []
        self.window_calls = 0
        self.window_expected = 0
        self.window_unexpected = 0
        self.started = time.monotonic()
        # Set on SIGINT/SIGTERM: a terminal's Ctrl-C also stops hangard and the servers (same process group), so
        # what fails from then on says nothing about hangard.
        self.muted = threading.Event()

    def ok(self, kind: str, count: int = 1) -> None:
        with self.lock:
            self.calls[kind] += count
            self.window_calls += count

    def refused(self, quota: str) -> None:
        with self.lock:
            self.expected[quota] += 1
            self.window_expected += 1
            self.window_calls += 1

    def error(self, kind: str, message: str) -> None:
        if self.muted.is_set():
            return
        with self.lock:
            self.unexpected[kind] += 1
            self.window_unexpected += 1
            self.window_calls += 1
            if len(self.first_errors) < MAX_PRINTED_ERRORS:
                line = f"t={time.monotonic() - self.started:.1f}s {kind}: {message}"
                self.first_errors.append(line)
                log(f"UNEXPECTED ERROR {line}")

    def take_window(self) -> tuple[int, int, int]:
        with self.lock:
            window = (self.window_calls, self.window_expected, self.window_unexpected)
            self.window_calls = self.window_expected = self.window_unexpected = 0
            return window


def describe(error: BaseException) -> str:
    if isinstance(error, grpc.RpcError) and hasattr(error, "code"):
        return f"{error.code().name}: {error.details()}"
    return f"{type(error).__name__}: {error}"[:500]


def quota_refusal(error: BaseException) -> str | None:
    """The quota a RESOURCE_EXHAUSTED / HANGAR_QUOTA_EXCEEDED refusal names, else None."""
    if not (isinstance(error, grpc.RpcError) and hasattr(error, "code")):
        return None
    if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return None
    info = grpc_error_info(error)
    if info.get("reason") != "HANGAR_QUOTA_EXCEEDED":
        return None
    return info.get("metadata", {}).get("quota", "?")


class SubscriptionLogHandler(logging.Handler):
    """The SDK logs a warning when it reconnects a streaming subscription: hangard ended or broke the stream."""

    def __init__(self, stats: Stats) -> None:
        super().__init__(logging.WARNING)
        self.stats = stats

    def emit(self, record: logging.LogRecord) -> None:
        self.stats.error("subscription-reconnect", record.getMessage())


# ---------------------------------------------------------------------------------------------------------------
# The node.


class SoakHangard(Hangard):
    """The e2e Hangard at log level info (a long run at debug writes gigabytes)."""

    @property
    def command(self) -> list[str]:
        args = super().command
        index = args.index("--log-level")
        args[index + 1] = "info"
        return args


def tenants(callee_port: int, limited_quotas: dict, extra_app: bool) -> dict[str, str]:
    shop = "\n".join([
        "apiVersion: hangar.dev/v1alpha1", "kind: Tenant", "metadata:", "  name: shop", "spec:", "  apps:",
        "    - appId: web",
        "    - appId: orders",
        f"      appChannel: {{protocol: grpc, address: 127.0.0.1:{callee_port}}}",
    ]) + "\n"
    dynamic_apps = [{"appId": "base"}] + ([{"appId": "extra"}] if extra_app else [])
    return {
        "shop.yaml": shop,
        "stats.yaml": tenant_yaml("stats", [{"appId": "ingest"}, {"appId": "report"}]),
        "churn.yaml": tenant_yaml("churn", [{"appId": "churn"}]),
        "limited.yaml": tenant_yaml("limited", [{"appId": "app"}], quotas=limited_quotas),
        "dynamic.yaml": tenant_yaml("dynamic", dynamic_apps),
    }


APPS = (("shop", "web"), ("shop", "orders"), ("stats", "ingest"), ("stats", "report"), ("churn", "churn"),
        ("limited", "app"), ("dynamic", "base"))


def components(redis: RedisProcess, postgres: PostgresServer) -> dict[str, str]:
    return {
        "memstore.yaml": component_yaml("memstore", "state.in-memory"),
        "sqlitestore.yaml": component_yaml("sqlitestore", "state.sqlite", {"connectionString": "soak-state.db"}),
        "redisstore.yaml": component_yaml("redisstore", "state.redis", {"redisHost": redis.address}),
        "pgstore.yaml": postgres_component_yaml(
            "pgstore", {"connectionString": postgres.connection_string("postgres", SUPER_PASSWORD)}),
        "mempubsub.yaml": component_yaml("mempubsub", "pubsub.in-memory"),
        "sqlpubsub.yaml": component_yaml("sqlpubsub", "pubsub.sqlite", {"connectionString": "soak-pubsub.db"}),
        "redispubsub.yaml": component_yaml("redispubsub", "pubsub.redis", {"redisHost": redis.address}),
    }


class Callee:
    """Tests/e2e/apps/grpc_callee.py in `sdk` mode (dapr.ext.grpc.App) on a loopback port; its output to a file."""

    def __init__(self, port: int, log_path: Path) -> None:
        self.port = port
        self.log_path = log_path
        self.process = subprocess.Popen(
            [sys.executable, str(E2E / "apps" / "grpc_callee.py"), "sdk", str(port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            self.stop()
            raise RuntimeError(f"the callee did not start: {line}")
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        with open(self.log_path, "a") as out:
            for line in self.process.stdout:
                out.write(line)
                out.flush()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


# ---------------------------------------------------------------------------------------------------------------
# /proc.


def sample_process(pid: int) -> dict[str, float]:
    values: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                values["rss_kb"] = int(line.split()[1])
            elif line.startswith("Threads:"):
                values["threads"] = int(line.split()[1])
    values["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    values["cpu_s"] = round((int(fields[11]) + int(fields[12])) / ticks, 2)
    return values


# ---------------------------------------------------------------------------------------------------------------
# The run.


class Soak:
    def __init__(self, args: argparse.Namespace, out: Path) -> None:
        self.args = args
        self.out = out
        self.stats = Stats()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.published: dict[str, set[int]] = {broker: set() for broker in BROKERS}
        self.received: dict[str, set[int]] = {broker: set() for broker in BROKERS}
        self.duplicates: Counter[str] = Counter()
        self.pubsub_lock = threading.Lock()
        self.samples: list[dict] = []
        self.reconfigurations: list[dict] = []
        self.extra_app = False
        self.extra_component = False
        self.limited_quotas = LIMITED_QUOTAS[0]
        self.log_position = 0
        self.redis: RedisProcess | None = None
        self.postgres: PostgresServer | None = None
        self.callee: Callee | None = None
        self.daemon: SoakHangard | None = None
        self.root: Path | None = None
        self.subscriptions: list = []
        self.hangard_exit: int | None = None
        self.idle_after: dict | None = None
        self.idle_before: dict | None = None
        self.subscription_threads: list[threading.Thread] = []
        self.draining_done = threading.Event()

    # -- set-up -------------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.root = short_tempdir()
        log(f"work directory {self.root}")
        # No persistence: the soak measures hangard, not Redis's disk (the later flags override the helper's).
        self.redis = RedisProcess("--appendonly", "no", "--appendfsync", "everysec")
        log(f"redis-server on {self.redis.address}")
        self.postgres = PostgresServer().start()
        log(f"postgres on 127.0.0.1:{self.postgres.port}")
        self.callee = Callee(free_port(), self.out / "callee.log")
        tenancy, resources = self.root / "tenancy", self.root / "resources"
        tenancy.mkdir()
        resources.mkdir()
        for name, text in tenants(self.callee.port, self.limited_quotas, False).items():
            (tenancy / name).write_text(text)
        for name, text in components(self.redis, self.postgres).items():
            (resources / name).write_text(text)
        self.daemon = SoakHangard(self.root, tenancy=tenancy, resources=resources, apps=APPS)
        self.daemon.start()
        os.environ["DAPR_HTTP_ENDPOINT"] = f"http://127.0.0.1:{self.daemon.http_port}"
        log(f"hangard pid {self.daemon.process.pid}: {' '.join(self.daemon.command)}")
        self.idle_before = sample_process(self.daemon.process.pid)
        logging.getLogger("dapr.clients.grpc.subscription").addHandler(SubscriptionLogHandler(self.stats))

    def client(self, ns: str, app: str) -> DaprClient:
        return DaprClient(address=f"unix://{self.daemon.grpc_socket(ns, app)}")

    def ready(self) -> None:
        """Every store and broker answers before the load starts (components open in the background)."""
        deadline = time.monotonic() + 60
        client = self.client("shop", "web")
        try:
            pending = set(STORES)
            while pending:
                for store in sorted(pending):
                    try:
                        client.save_state(store, "soak-ready", "1")
                        pending.discard(store)
                    except grpc.RpcError as error:
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"{store} not ready: {describe(error)}")
                time.sleep(0.2)
        finally:
            client.close()

    # -- workers ------------------------------------------------------------------------------------------------

    def spawn(self, name: str, target, *args) -> None:
        def run() -> None:
            try:
                target(*args)
            except BaseException as error:  # noqa: BLE001 - a dead worker is an error
                if not self.stop.is_set():
                    self.stats.error(f"worker-{name}", f"worker died: {describe(error)}\n{traceback.format_exc()}")

        thread = threading.Thread(target=run, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def paced(self, rate: float):
        """Yields until stopped, at most `rate` times a second."""
        interval = 1.0 / rate
        next_at = time.monotonic()
        while not self.stop.is_set():
            yield
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
            else:
                next_at = time.monotonic()

    def call(self, kind: str, function, *args, **kwargs):
        try:
            result = function(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - every failure counts
            self.stats.error(kind, describe(error))
            return None
        self.stats.ok(kind)
        return result

    def state_worker(self, store: str, ns: str, app: str) -> None:
        client = self.client(ns, app)
        try:
            for index, _ in enumerate(self.paced(self.args.rate)):
                key = f"soak-{store}-{index % 100}"
                value = os.urandom(random.randint(50, 500)).hex()
                kind = f"state-{store}"
                if self.call(f"{kind}-save", client.save_state, store, key, value) is None:
                    continue
                got = self.call(f"{kind}-get", client.get_state, store, key)
                if got is not None and got.data != value.encode():
                    self.stats.error(f"{kind}-get", f"read {got.data[:40]!r}, wrote {value[:40]!r}")
                if index % 10 == 9:
                    keys = [f"soak-{store}-{(index - n) % 100}" for n in range(5)]
                    bulk = self.call(f"{kind}-bulk-get", client.get_bulk_state, store, keys)
                    if bulk is not None and len(bulk.items) != 5:
                        self.stats.error(f"{kind}-bulk-get", f"{len(bulk.items)} items for 5 keys")
                if index % 3 == 2:
                    if self.call(f"{kind}-delete", client.delete_state, store, key) is not None:
                        gone = self.call(f"{kind}-get", client.get_state, store, key)
                        if gone is not None and gone.data != b"":
                            self.stats.error(f"{kind}-get", f"deleted key read back {gone.data[:40]!r}")
        finally:
            client.close()

    def http_worker(self, ns: str, app: str) -> None:
        """HTTP/1.1 keep-alive on the app's Unix socket: state on sqlitestore and invocation of `orders`."""
        path = str(self.daemon.http_socket(ns, app))
        connection: UnixHTTPConnection | None = None
        reused = False

        def request(method: str, url: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
            nonlocal connection, reused
            for attempt in (1, 2):
                if connection is None:
                    connection, reused = UnixHTTPConnection(path, 10), False
                try:
                    connection.request(method, url, body=body, headers=headers)
                    response = connection.getresponse()
                    data = response.read()
                    if response.getheader("connection", "").lower() == "close":
                        connection.close()
                        connection = None
                    else:
                        reused = True
                    return response.status, data
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                    # A kept-alive connection the server closed while idle: reopened once, as HTTP clients do.
                    connection.close()
                    connection = None
                    if not (reused and attempt == 1):
                        raise
            raise AssertionError("unreachable")

        try:
            for index, _ in enumerate(self.paced(self.args.rate)):
                key = f"soak-http-{index % 100}"
                value = {"n": index, "pad": "x" * random.randint(10, 300)}
                try:
                    status, _ = request("POST", "/v1.0/state/sqlitestore", json.dumps([{"key": key, "value": value}]).encode(),
                                        {"Content-Type": "application/json"})
                    if status != 204:
                        raise RuntimeError(f"save: HTTP {status}")
                    self.stats.ok("http-state-save")
                    status, body = request("GET", f"/v1.0/state/sqlitestore/{key}", None, {})
                    if status != 200 or json.loads(body) != value:
                        raise RuntimeError(f"get: HTTP {status} {body[:80]!r}")
                    self.stats.ok("http-state-get")
                    status, body = request("POST", "/v1.0/invoke/orders/method/echo", b"hello-http",
                                           {"Content-Type": "text/plain"})
                    if status != 200 or json.loads(body)["data"] != "hello-http":
                        raise RuntimeError(f"invoke: HTTP {status} {body[:120]!r}")
                    self.stats.ok("http-invoke")
                except Exception as error:  # noqa: BLE001
                    self.stats.error("http", describe(error))
                    if connection is not None:
                        connection.close()
                        connection = None
        finally:
            if connection is not None:
                connection.close()

    def invoke_worker(self) -> None:
        client = self.client("shop", "web")
        try:
            for index, _ in enumerate(self.paced(self.args.rate)):
                data = f"call-{index}"
                response = self.call("invoke-grpc", DaprGrpcClient.invoke_method, client, "orders", "echo", data=data)
                if response is not None and json.loads(response.text())["data"] != data:
                    self.stats.error("invoke-grpc", f"answer {response.text()[:120]}")
        finally:
            client.close()

    def subscribe(self, broker: str) -> None:
        ns, _, subscriber = BROKERS[broker]
        client = self.client(ns, subscriber)
        subscription = client.subscribe(broker, "soak")
        self.subscriptions.append((subscription, client))

        def read() -> None:
            while True:
                try:
                    message = subscription.next_message()
                except Exception as error:  # noqa: BLE001
                    if not (self.stop.is_set() and self.draining_done.is_set()):
                        self.stats.error(f"subscribe-{broker}", describe(error))
                    return
                if message is None or not message.id():
                    continue
                text = message.raw_data().decode()
                try:
                    subscription.respond_success(message)
                except Exception as error:  # noqa: BLE001
                    self.stats.error(f"subscribe-{broker}", f"ack: {describe(error)}")
                if not text.startswith("soak:"):
                    continue  # the warm-up's events
                sequence = int(text.split(":", 1)[1])
                with self.pubsub_lock:
                    if sequence in self.received[broker]:
                        self.duplicates[broker] += 1
                    self.received[broker].add(sequence)
                self.stats.ok(f"receive-{broker}")

        thread = threading.Thread(target=read, name=f"sub-{broker}", daemon=True)
        thread.start()
        self.subscription_threads.append(thread)

    def publish_worker(self, broker: str) -> None:
        ns, publisher, _ = BROKERS[broker]
        client = self.client(ns, publisher)
        try:
            for sequence, _ in enumerate(self.paced(self.args.rate)):
                if self.call(f"publish-{broker}", client.publish_event, broker, "soak", f"soak:{sequence}",
                             data_content_type="text/plain") is not None:
                    with self.pubsub_lock:
                        self.published[broker].add(sequence)
        finally:
            client.close()

    def warm_pubsub(self) -> None:
        """A subscription's consumer group exists once its first event arrived: published until one does."""
        for broker, (ns, publisher, _) in BROKERS.items():
            client = self.client(ns, publisher)
            try:
                deadline = time.monotonic() + 30
                before = self.stats.calls[f"receive-{broker}"]
                while True:
                    client.publish_event(broker, "soak", "warm-up", data_content_type="text/plain")
                    time.sleep(0.5)
                    # The warm-up events are acknowledged and not counted; one more round trip proves delivery.
                    client.publish_event(broker, "soak", "soak:-1", data_content_type="text/plain")
                    time.sleep(0.5)
                    with self.pubsub_lock:
                        if -1 in self.received[broker]:
                            self.received[broker].discard(-1)
                            break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"no event delivered on {broker} within 30 s")
                with self.stats.lock:
                    self.stats.calls[f"receive-{broker}"] = before
            finally:
                client.close()

    def churn_worker(self) -> None:
        """Connections opened and closed: a new DaprClient per call, a subscription opened and closed, and bare
        connections that send nothing."""
        grpc_socket = str(self.daemon.grpc_socket("churn", "churn"))
        http_socket = str(self.daemon.http_socket("churn", "churn"))
        import socket as sockets

        for index, _ in enumerate(self.paced(max(1.0, self.args.rate / 3))):
            try:
                client = self.client("churn", "churn")
            except Exception as error:  # noqa: BLE001
                self.stats.error("churn-connect", describe(error))
                continue
            try:
                self.call("churn-get", client.get_state, "memstore", "soak-churn")
                if index % 5 == 4:
                    subscription = self.call("churn-subscribe", client.subscribe, "mempubsub", "churn")
                    if subscription is not None:
                        subscription.close()
            finally:
                client.close()
            if index % 2 == 1:
                for path in (grpc_socket, http_socket):
                    with sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM) as bare:
                        bare.settimeout(5)
                        try:
                            bare.connect(path)
                            self.stats.ok("churn-bare-connect")
                        except OSError as error:
                            self.stats.error("churn-bare-connect", describe(error))

    def quota_worker(self) -> None:
        """limited/app: every second a burst a few calls over its rate quota; every 10 s a write over its
        maxStateBytes. Only these refusals are expected."""
        client = self.client("limited", "app")

        def attempt(kind: str, function, *args) -> None:
            try:
                function(*args)
                self.stats.ok(kind)
            except Exception as error:  # noqa: BLE001
                quota = quota_refusal(error)
                if quota is None:
                    self.stats.error(kind, describe(error))
                else:
                    self.stats.refused(quota)

        try:
            for second, _ in enumerate(self.paced(1.0)):
                if second % 10 == 0:  # before the burst, while the bucket is full: refused for its size only
                    attempt("quota-save-small", client.save_state, "memstore", "small", "s" * 100)
                    try:
                        client.save_state("memstore", "big", "b" * 30000)
                        self.stats.error("quota-save-big", "a write over maxStateBytes was accepted")
                    except Exception as error:  # noqa: BLE001
                        quota = quota_refusal(error)
                        if quota is None:
                            self.stats.error("quota-save-big", describe(error))
                        else:
                            self.stats.refused(quota)
                for _ in range(BURST):
                    attempt("quota-get", client.get_state, "memstore", "small")
        finally:
            client.close()

    # -- reconfiguration ----------------------------------------------------------------------------------------

    def new_log(self) -> str:
        with open(self.daemon.log_path, "rb") as handle:
            handle.seek(self.log_position)
            data = handle.read()
        self.log_position += len(data)
        return data.decode(errors="replace")

    def metadata_components(self) -> set[str]:
        result = self.daemon.http("dynamic", "base", "GET", "/v1.0/metadata", timeout=5)
        return {c["name"] for c in result.json().get("components", [])}

    def reconfigure(self, step: int) -> None:
        actions = ("add-app", "add-component", "quota", "remove-app", "remove-component", "quota")
        action = actions[step % len(actions)]
        tenancy, resources = self.daemon.tenancy, self.daemon.resources
        self.new_log()  # what came before this change
        started = time.monotonic()
        if action in ("add-app", "remove-app"):
            self.extra_app = action == "add-app"
            write_atomically(tenancy / "dynamic.yaml",
                             tenants(self.callee.port, self.limited_quotas, self.extra_app)["dynamic.yaml"])
        elif action == "quota":
            self.limited_quotas = LIMITED_QUOTAS[1] if self.limited_quotas is LIMITED_QUOTAS[0] else LIMITED_QUOTAS[0]
            write_atomically(tenancy / "limited.yaml",
                             tenants(self.callee.port, self.limited_quotas, self.extra_app)["limited.yaml"])
        elif action == "add-component":
            self.extra_component = True
            write_atomically(resources / "extrastore.yaml",
                             component_yaml("extrastore", "state.in-memory", namespace="dynamic"))
        else:
            self.extra_component = False
            (resources / "extrastore.yaml").unlink()

        seen_log = ""

        def applied() -> bool:
            nonlocal seen_log
            seen_log += self.new_log()
            if "configuration change rejected" in seen_log:
                raise RuntimeError(f"hangard rejected the change: {seen_log[-500:]}")
            if action == "add-app":
                if not self.daemon.grpc_socket("dynamic", "extra").is_socket():
                    return False
                client = self.client("dynamic", "extra")
                try:
                    client.save_state("memstore", "soak-extra", "here")
                    return client.get_state("memstore", "soak-extra").data == b"here"
                finally:
                    client.close()
            if action == "remove-app":
                return not self.daemon.app_dir("dynamic", "extra").exists()
            if action == "add-component":
                if "extrastore" not in self.metadata_components():
                    return False
                client = self.client("dynamic", "base")
                try:
                    client.save_state("extrastore", "k", "v")
                    return client.get_state("extrastore", "k").data == b"v"
                except grpc.RpcError:
                    return False  # still INIT
                finally:
                    client.close()
            if action == "remove-component":
                return "extrastore" not in self.metadata_components()
            return "configuration reloaded" in seen_log

        outcome = {"t_s": round(time.monotonic() - self.stats.started, 1), "action": action, "ok": False}
        deadline = started + 10
        try:
            while True:
                try:
                    if applied():
                        outcome["ok"] = True
                        break
                except RuntimeError:
                    raise
                except Exception:  # noqa: BLE001 - not there yet (socket just bound, ...)
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("not applied within 10 s")
                time.sleep(0.05)
            outcome["applied_s"] = round(time.monotonic() - started, 3)
            self.stats.ok(f"reconfigure-{action}")
        except Exception as error:  # noqa: BLE001
            outcome["error"] = describe(error)
            self.stats.error(f"reconfigure-{action}", describe(error))
        self.reconfigurations.append(outcome)
        log(f"reconfiguration {action}: {'applied in ' + str(outcome.get('applied_s')) + ' s' if outcome['ok'] else outcome['error']}")

    # -- sampling -----------------------------------------------------------------------------------------------

    def sample(self, writer, handle, last: list[float]) -> None:
        now = time.monotonic()
        calls, expected, unexpected = self.stats.take_window()
        values = sample_process(self.daemon.process.pid)
        elapsed = now - last[0]
        last[0] = now
        row = {
            "t_s": round(now - self.stats.started, 1),
            "rss_kb": values["rss_kb"], "fds": values["fds"], "threads": values["threads"], "cpu_s": values["cpu_s"],
            "calls": calls, "calls_per_s": round(calls / elapsed, 1) if elapsed > 0 else 0,
            "expected_refusals": expected, "unexpected_errors": unexpected,
            "extra_app": int(self.extra_app), "extra_component": int(self.extra_component),
        }
        self.samples.append(row)
        writer.writerow(row)
        handle.flush()
        log(f"t={row['t_s']:>6}s rss={row['rss_kb'] / 1024:.1f} MB fds={row['fds']} threads={row['threads']} "
            f"cpu={row['cpu_s']}s calls/s={row['calls_per_s']} refused={expected} errors={unexpected}")

    # -- the run ------------------------------------------------------------------------------------------------

    def run(self) -> None:
        self.start()
        self.ready()
        only = self.args.only
        if "pubsub" in only:
            for broker in BROKERS:
                self.subscribe(broker)
            self.warm_pubsub()
        log(f"load starts: {', '.join(w for w in WORKERS if w in only)}")
        self.stats.started = time.monotonic()
        self.stats.take_window()
        if "state" in only:
            for store, (ns, app) in zip(STORES, (("shop", "web"), ("stats", "ingest"), ("shop", "web"),
                                                 ("stats", "ingest"))):
                self.spawn(f"state-{store}", self.state_worker, store, ns, app)
        if "http" in only:
            self.spawn("http", self.http_worker, "shop", "web")
        if "invoke" in only:
            self.spawn("invoke", self.invoke_worker)
        if "pubsub" in only:
            for broker in BROKERS:
                self.spawn(f"publish-{broker}", self.publish_worker, broker)
        if "churn" in only:
            self.spawn("churn", self.churn_worker)
        if "quota" in only:
            self.spawn("quota", self.quota_worker)

        fields = ["t_s", "rss_kb", "fds", "threads", "cpu_s", "calls", "calls_per_s", "expected_refusals",
                  "unexpected_errors", "extra_app", "extra_component"]
        with open(self.out / "soak.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            start = self.stats.started
            last = [start]
            next_sample = start + self.args.interval
            next_reconfigure = start + self.args.reconfigure_every
            step = 0
            end = start + self.args.duration
            while True:
                now = time.monotonic()
                if not self.daemon.running:
                    self.stats.error("hangard", f"hangard exited with {self.daemon.process.returncode}")
                    break
                if now >= next_sample:
                    self.sample(writer, handle, last)
                    next_sample += self.args.interval
                if now >= end:
                    break
                if now >= next_reconfigure:
                    if now + 15 < end and "reconfigure" in self.args.only:  # not in the last seconds: its effect would not be measured
                        self.reconfigure(step)
                        step += 1
                    next_reconfigure += self.args.reconfigure_every
                time.sleep(max(0.0, min(next_sample, next_reconfigure, end) - time.monotonic()))
        self.finish_load()

    def finish_load(self) -> None:
        log("load stops")
        self.stop.set()
        for thread in self.threads:
            thread.join(30)
            if thread.is_alive():
                self.stats.error("worker", f"{thread.name} did not stop within 30 s")
        # Every event published must arrive.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with self.pubsub_lock:
                if all(self.published[b] <= self.received[b] for b in BROKERS):
                    break
            time.sleep(0.2)
        self.draining_done.set()
        for subscription, client in self.subscriptions:
            try:
                subscription.close()
                client.close()
            except Exception as error:  # noqa: BLE001
                self.stats.error("subscription-close", describe(error))
        for thread in self.subscription_threads:
            thread.join(10)
        with self.pubsub_lock:
            for broker in BROKERS:
                lost = self.published[broker] - self.received[broker]
                if lost:
                    self.stats.error(f"lost-{broker}", f"{len(lost)} events never delivered, e.g. {sorted(lost)[:5]}")
        time.sleep(3)
        if self.daemon.running:
            self.idle_after = sample_process(self.daemon.process.pid)

    # -- teardown -----------------------------------------------------------------------------------------------

    def cleanup(self) -> None:
        self.stop.set()
        self.draining_done.set()
        if self.daemon is not None and self.daemon.process is not None:
            process = self.daemon.process
            try:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                    try:
                        self.hangard_exit = process.wait(20)
                    except subprocess.TimeoutExpired:
                        self.stats.error("hangard", "did not exit within 20 s of SIGTERM")
                        process.kill()
                        process.wait(5)
                else:
                    self.hangard_exit = process.returncode
                if self.hangard_exit not in (0, None):
                    self.stats.error("hangard", f"exit code {self.hangard_exit} at shutdown")
            finally:
                self.daemon.process = None
            try:
                shutil.copy(self.daemon.log_path, self.out / "hangard.log")
            except OSError:
                pass
        for name, stop in (("callee", self.callee and self.callee.stop), ("redis", self.redis and self.redis.stop),
                           ("postgres", self.postgres and self.postgres.stop)):
            if stop:
                try:
                    stop()
                except BaseException as error:  # noqa: BLE001 - keep cleaning up
                    log(f"stopping {name}: {describe(error)}")
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- summary ------------------------------------------------------------------------------------------------

    def summary(self, interrupted: bool) -> int:
        duration = max((s["t_s"] for s in self.samples), default=0)
        warmup = self.args.warmup if self.args.warmup is not None else min(300.0, self.args.duration / 6)
        failures: list[str] = []
        report: dict = {"duration_s": duration, "warmup_s": warmup, "interrupted": interrupted,
                        "workers": sorted(self.args.only),
                        "hangard": os.environ["HANGARD"], "rate_per_worker": self.args.rate}
        before = [s for s in self.samples if s["t_s"] <= warmup]
        after = [s for s in self.samples if s["t_s"] > warmup]
        print()
        print("=" * 100)
        print(f"soak summary: {duration:.0f} s of load, warm-up {warmup:.0f} s, {len(self.samples)} samples "
              f"every {self.args.interval:.0f} s (hangard {os.environ['HANGARD']})")
        if before and after:
            warm, final = before[-1], after[-1]
            peak = max(after, key=lambda s: s["rss_kb"])
            growth = 100.0 * (final["rss_kb"] - warm["rss_kb"]) / warm["rss_kb"]
            peak_growth = 100.0 * (peak["rss_kb"] - warm["rss_kb"]) / warm["rss_kb"]
            fds = [s["fds"] for s in after]
            # Least-squares slope of the RSS after the warm-up: a leak is a trend, a warm-up levels off.
            mean_t = sum(s["t_s"] for s in after) / len(after)
            mean_rss = sum(s["rss_kb"] for s in after) / len(after)
            spread = sum((s["t_s"] - mean_t) ** 2 for s in after)
            slope = (sum((s["t_s"] - mean_t) * (s["rss_kb"] - mean_rss) for s in after) / spread * 60 / 1024
                     if spread else 0.0)
            threads = [s["threads"] for s in after]
            report.update({
                "rss_start_kb": self.samples[0]["rss_kb"], "rss_warmup_kb": warm["rss_kb"],
                "rss_max_kb": peak["rss_kb"], "rss_max_at_s": peak["t_s"], "rss_final_kb": final["rss_kb"],
                "rss_growth_pct": round(growth, 2), "rss_max_growth_pct": round(peak_growth, 2),
                "rss_slope_mb_per_min": round(slope, 3),
                "fds_warmup": warm["fds"], "fds_min": min(fds), "fds_max": max(fds), "fds_final": final["fds"],
                "threads_warmup": warm["threads"], "threads_min": min(threads), "threads_max": max(threads),
                "threads_final": final["threads"], "cpu_s": final["cpu_s"],
            })
            mb = lambda kb: f"{kb / 1024:.1f} MB"  # noqa: E731
            print(f"  RSS: {mb(self.samples[0]['rss_kb'])} at the first sample, {mb(warm['rss_kb'])} at the end of "
                  f"the warm-up (t={warm['t_s']} s), max {mb(peak['rss_kb'])} (t={peak['t_s']} s, "
                  f"{peak_growth:+.2f} %), final {mb(final['rss_kb'])} ({growth:+.2f} %); after the warm-up "
                  f"{slope:+.3f} MB/min (least squares)")
            print(f"  fds after warm-up: min {min(fds)}, max {max(fds)}, final {final['fds']} "
                  f"(warm-up {warm['fds']}, allowed final <= {warm['fds'] + self.args.fd_slack})")
            print(f"  threads after warm-up: min {min(threads)}, max {max(threads)} (warm-up {warm['threads']})")
            print(f"  hangard CPU: {final['cpu_s']} s")
            if growth > self.args.max_rss_growth:
                failures.append(f"RSS grew {growth:.2f} % after the warm-up (limit {self.args.max_rss_growth} %)")
            if final["fds"] > warm["fds"] + self.args.fd_slack:
                failures.append(f"fds grew from {warm['fds']} to {final['fds']} after the warm-up "
                                f"(slack {self.args.fd_slack})")
        else:
            failures.append("too few samples for a warm-up and a steady phase")
        if self.idle_before and self.idle_after:
            report["idle_before"], report["idle_after"] = self.idle_before, self.idle_after
            print(f"  idle, before the load: RSS {self.idle_before['rss_kb'] / 1024:.1f} MB, fds "
                  f"{self.idle_before['fds']}, threads {self.idle_before['threads']}; after it (clients closed): "
                  f"RSS {self.idle_after['rss_kb'] / 1024:.1f} MB, fds {self.idle_after['fds']}, threads "
                  f"{self.idle_after['threads']}")
        total = sum(self.stats.calls.values())
        print(f"  calls: {total} succeeded ({total / duration:.0f}/s)" if duration else f"  calls: {total}")
        for kind, count in sorted(self.stats.calls.items()):
            print(f"    {kind:<34} {count}")
        with self.pubsub_lock:
            pubsub = {b: {"published": len(self.published[b]), "received": len(self.received[b]),
                          "lost": len(self.published[b] - self.received[b]), "duplicates": self.duplicates[b]}
                      for b in BROKERS}
        for broker, counts in pubsub.items():
            print(f"  {broker}: {counts['published']} published, {counts['received']} received, {counts['lost']} "
                  f"lost, {counts['duplicates']} delivered twice")
        applied = [r for r in self.reconfigurations if r["ok"]]
        print(f"  reconfigurations: {len(applied)} of {len(self.reconfigurations)} applied"
              + (f", slowest {max(r['applied_s'] for r in applied)} s" if applied else ""))
        print(f"  expected refusals (RESOURCE_EXHAUSTED, HANGAR_QUOTA_EXCEEDED, quota worker only): "
              f"{sum(self.stats.expected.values())} {dict(self.stats.expected)}")
        unexpected = sum(self.stats.unexpected.values())
        print(f"  unexpected errors: {unexpected} {dict(self.stats.unexpected)}")
        for line in self.stats.first_errors:
            print(f"    {line}")
        print(f"  hangard exit code at SIGTERM: {self.hangard_exit}")
        if unexpected:
            failures.append(f"{unexpected} unexpected errors")
        if not self.stats.expected and "quota" in self.args.only:
            failures.append("no quota refusal: the quota worker did not reach its limits")
        if interrupted:
            failures.append("interrupted")
        report.update({"calls": dict(self.stats.calls), "expected_refusals": dict(self.stats.expected),
                       "unexpected_errors": dict(self.stats.unexpected), "first_errors": self.stats.first_errors,
                       "pubsub": pubsub, "reconfigurations": self.reconfigurations,
                       "hangard_exit": self.hangard_exit, "failures": failures})
        (self.out / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
        print(f"  files: {self.out}/soak.csv, summary.json, hangard.log")
        print(("FAIL: " + "; ".join(failures)) if failures else "PASS")
        print("=" * 100)
        return 1 if failures else 0


def main() -> int:
    out = Path(ARGS.out or REPO / "bench-results" / f"soak-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    out.mkdir(parents=True, exist_ok=True)

    soak = Soak(ARGS, out)

    def interrupt(signum, frame):
        soak.stats.muted.set()
        soak.stop.set()
        raise Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    interrupted = False
    try:
        soak.run()
    except Stop as stop:
        log(f"{stop}: stopping")
        interrupted = True
    except BaseException as error:  # noqa: BLE001 - report, clean up
        log(f"the run failed: {describe(error)}\n{traceback.format_exc()}")
        soak.stats.error("driver", describe(error))
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        soak.cleanup()
    return soak.summary(interrupted)


if __name__ == "__main__":
    sys.exit(main())
