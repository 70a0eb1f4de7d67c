"""The Prometheus endpoint (`--metrics-listen`): GET /metrics answers in the text exposition format 0.0.4.

The helper starts every daemon with `--metrics-listen none` (so that no two daemons fight over 127.0.0.1:9090);
the tests here ask for an endpoint through `extra_args`, which come later on the command line and win.
"""

from __future__ import annotations

import http.client
import math
import re
import socket
import subprocess

import grpc
import pytest

from hangar_e2e import HANGARD, Hangard, copy_examples, free_port, http_request, unique

STORE = "statestore"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# The text exposition format, line by line (https://prometheus.io/docs/instrumenting/exposition_formats/).
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
VALUE = r"[-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|Inf|NaN)"
SAMPLE = re.compile(rf"^(?P<name>{NAME})(?P<labels>\{{(?:{LABEL}(?:,{LABEL})*)?\}})? (?P<value>{VALUE})(?: -?[0-9]+)?$")
TYPE = re.compile(rf"^# TYPE (?P<name>{NAME}) (?P<type>counter|gauge|histogram|summary|untyped)$")
HELP = re.compile(rf"^# HELP (?P<name>{NAME}) (?P<text>.*)$")
LABEL_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

# Every family the node may expose, and its type (README, "Metrics").
FAMILIES = {
    "hangar_requests_total": "counter",
    "hangar_request_duration_seconds": "histogram",
    "hangar_quota_refusals_total": "counter",
    "hangar_connections": "gauge",
    "hangar_state_stored_bytes": "gauge",
    "hangar_component_pool_queued": "gauge",
    "hangar_component_pool_running": "gauge",
    "hangar_component_pool_operations_total": "counter",
    "hangar_component_pool_wait_seconds_total": "counter",
    "hangar_component_pool_slots": "gauge",
    "hangar_component_pool_connections": "gauge",
    "hangar_build_info": "gauge",
    "hangar_buffered_bytes": "gauge",
    "hangar_node_buffered_bytes": "gauge",
    "hangar_node_buffer_budget_bytes": "gauge",
    "hangar_overload_level": "gauge",
    "hangar_overload_shed_connections_total": "counter",
    "hangar_overload_refused_connections_total": "counter",
}


def parse_exposition(text: str) -> dict[tuple[str, frozenset], float]:
    """Checks that `text` is valid exposition and returns its samples by (name, labels). Each family has one TYPE
    line (and at most one HELP line) before its samples; a histogram's samples are `_bucket` (with `le`, cumulative,
    ending in +Inf = `_count`), `_sum` and `_count`."""
    assert text.endswith("\n"), "the exposition must end with a line feed"
    samples: dict[tuple[str, frozenset], float] = {}
    types: dict[str, str] = {}
    helps: set[str] = set()
    for number, line in enumerate(text.split("\n")[:-1], 1):
        where = f"line {number}: {line!r}"
        if line.startswith("# TYPE "):
            match = TYPE.match(line)
            assert match, f"bad TYPE {where}"
            assert match["name"] not in types, f"second TYPE for a family, {where}"
            types[match["name"]] = match["type"]
        elif line.startswith("# HELP "):
            match = HELP.match(line)
            assert match, f"bad HELP {where}"
            assert match["name"] not in helps, f"second HELP for a family, {where}"
            helps.add(match["name"])
        elif line.startswith("#") or not line.strip():
            continue
        else:
            match = SAMPLE.match(line)
            assert match, f"not a sample, {where}"
            name = match["name"]
            family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
            assert family in types, f"sample before (or without) its family's TYPE, {where}"
            if types[family] == "histogram":
                assert name != family, f"a histogram's sample must be _bucket, _sum or _count, {where}"
            labels = frozenset(LABEL_PAIR.findall(match["labels"] or ""))
            assert (name, labels) not in samples, f"duplicate series, {where}"
            value = float(match["value"].replace("Inf", "inf"))
            samples[(name, labels)] = value
    for (name, labels), value in samples.items():
        if name.endswith("_bucket") and types.get(name[: -len("_bucket")]) == "histogram":
            assert any(key == "le" for key, _ in labels), f"bucket without le: {name}{set(labels)}"
    for family, kind in types.items():
        if kind == "histogram":
            check_histogram(family, samples)
    return samples


def check_histogram(family: str, samples: dict[tuple[str, frozenset], float]) -> None:
    """Per series: buckets are cumulative and +Inf equals _count."""
    series: dict[frozenset, list[tuple[float, float]]] = {}
    for (name, labels), value in samples.items():
        if name == family + "_bucket":
            le = dict(labels)["le"]
            rest = frozenset(pair for pair in labels if pair[0] != "le")
            series.setdefault(rest, []).append((float(le.replace("Inf", "inf")), value))
    for labels, buckets in series.items():
        buckets.sort()
        counts = [count for _, count in buckets]
        assert counts == sorted(counts), f"{family}{set(labels)}: buckets are not cumulative: {buckets}"
        assert math.isinf(buckets[-1][0]), f"{family}{set(labels)}: no +Inf bucket"
        assert samples[(family + "_count", labels)] == buckets[-1][1]
        assert (family + "_sum", labels) in samples


def scrape(port: int, path: str = "/metrics", method: str = "GET"):
    return http_request(http.client.HTTPConnection("127.0.0.1", port, timeout=10), method, path)


def metrics_daemon(hangard_factory, listen: str) -> Hangard:
    return hangard_factory.examples(extra_args=("--metrics-listen", listen))


def bound_port(daemon: Hangard) -> int:
    line = daemon.wait_for_log("metrics listening")
    assert line, f"no 'metrics listening' line in the log\nlog:\n{daemon.log[-4000:]}"
    match = re.search(r"metrics\.listen=127\.0\.0\.1:(\d+)", line)
    assert match, f"the 'metrics listening' line has no metrics.listen=HOST:PORT: {line}"
    return int(match[1])


def test_metrics_are_valid_exposition_with_build_info(hangard_factory):
    port = free_port()
    daemon = metrics_daemon(hangard_factory, f"127.0.0.1:{port}")
    assert bound_port(daemon) == port

    # Some traffic first, on both front-ends, so that the scrape shows whatever the node records of it.
    client = daemon.client("team-a", "orders")
    key = unique("metrics")
    client.save_state(STORE, key, "x")
    assert client.get_state(STORE, key).data == b"x"
    assert daemon.http("team-a", "orders", "GET", f"/v1.0/state/{STORE}/{key}").status == 200

    result = scrape(port)
    assert result.status == 200, result
    assert result.headers["content-type"] == CONTENT_TYPE
    assert int(result.headers["content-length"]) == len(result.body)
    text = result.body.decode("utf-8")
    samples = parse_exposition(text)

    build_info = [(labels, value) for (name, labels), value in samples.items() if name == "hangar_build_info"]
    assert len(build_info) == 1, text
    labels, value = build_info[0]
    assert value == 1
    assert {key for key, _ in labels} == {"version"}
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", dict(labels)["version"]), text
    assert "# TYPE hangar_build_info gauge" in text
    assert "# HELP hangar_build_info " in text

    # Nothing outside the documented families, each with its documented type.
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert FAMILIES.get(name) == kind, f"undocumented family or wrong type: {line}"

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, frozenset(labels.items())))

    orders = {"namespace": "team-a", "app_id": "orders"}
    assert value("hangar_requests_total", **orders, method="SaveState", transport="grpc", code="OK") == 1
    assert value("hangar_requests_total", **orders, method="GetState", transport="grpc", code="OK") == 1
    assert value("hangar_requests_total", **orders, method="GetState", transport="http", code="OK") == 1
    assert value("hangar_request_duration_seconds_count", **orders, method="GetState", transport="grpc") == 1
    assert value("hangar_connections", **orders) >= 1  # the SDK client's connection is open
    # The examples' statestore holds the key just saved, under team-a's partition.
    assert value("hangar_state_stored_bytes", namespace="team-a", store=STORE) >= len("team-a||orders||") + 1


def test_quota_refusals_and_errors_are_counted_per_tenant_and_app(hangard_factory):
    port = free_port()
    root = hangard_factory.root()
    tenancy, resources = root / "tenancy", root / "resources"
    tenancy.mkdir()
    resources.mkdir()
    (tenancy / "t.yaml").write_text(
        "apiVersion: hangar.dev/v1alpha1\nkind: Tenant\nmetadata: {name: limited}\nspec:\n"
        "  apps: [{appId: app}]\n  quotas: {requestsPerSecond: 1, burst: 2}\n"
    )
    (resources / "s.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: statestore}\n"
        "spec: {type: state.in-memory, version: v1}\n"
    )
    daemon = hangard_factory.start(
        root, tenancy=tenancy, resources=resources, apps=(("limited", "app"),),
        extra_args=("--metrics-listen", f"127.0.0.1:{port}"),
    )
    client = daemon.client("limited", "app")
    client.get_state(STORE, "k")
    with pytest.raises(grpc.RpcError):
        client.get_state(STORE, "a||b")  # INVALID_ARGUMENT, counted with its code
    for _ in range(3):
        with pytest.raises(grpc.RpcError):
            client.get_state(STORE, "k")
    samples = parse_exposition(scrape(port).body.decode())
    app = {"namespace": "limited", "app_id": "app"}
    assert samples[("hangar_quota_refusals_total", frozenset({**app, "quota": "requestsPerSecond"}.items()))] == 3
    get = {**app, "method": "GetState", "transport": "grpc"}
    assert samples[("hangar_requests_total", frozenset({**get, "code": "OK"}.items()))] == 1
    assert samples[("hangar_requests_total", frozenset({**get, "code": "INVALID_ARGUMENT"}.items()))] == 1


def test_port_zero_listens_on_a_free_port_and_logs_it(hangard_factory):
    daemon = metrics_daemon(hangard_factory, "127.0.0.1:0")
    port = bound_port(daemon)
    assert port != 0
    first = scrape(port)
    second = scrape(port)
    assert first.status == second.status == 200
    parse_exposition(second.body.decode("utf-8"))


def test_only_get_metrics_is_served(hangard_factory):
    port = free_port()
    metrics_daemon(hangard_factory, f"127.0.0.1:{port}")
    assert scrape(port, "/metrics?name[]=hangar_build_info").status == 200
    for method, path in (("GET", "/"), ("GET", "/metrics/x"), ("GET", "/v1.0/healthz"), ("POST", "/metrics")):
        assert scrape(port, path, method).status == 404, (method, path)


def test_none_disables_the_endpoint(hangard_factory):
    daemon = hangard_factory.examples()  # the helper's default: --metrics-listen none
    assert daemon.wait_for_log("metrics listening", timeout=0.5) is None


def test_a_taken_metrics_port_stops_start_up(hangard_factory):
    """Like the other listeners: a port in use stops hangard with exit code 1 and a message naming the flag, before
    any app socket is bound."""
    root = hangard_factory.root()
    tenancy, resources = copy_examples(root)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = Hangard(
            root, tenancy=tenancy, resources=resources, apps=(),
            extra_args=("--metrics-listen", f"127.0.0.1:{port}"),
        )
        try:
            result = subprocess.run(daemon.command, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            pytest.fail(f"hangard kept running with its metrics port taken: {daemon.command}")
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 1, stderr
    assert "--metrics-listen" in stderr and f"127.0.0.1:{port}" in stderr, stderr
    assert "address already in use" in stderr.lower(), stderr
    assert "hangard ready" not in stderr, stderr
    assert not daemon.socket_files(), daemon.socket_files()


@pytest.mark.parametrize("value", ["nonsense", "127.0.0.1", "127.0.0.1:65536", ":9090"])
def test_an_invalid_metrics_address_is_refused(value):
    """Refused while the flags are validated (exit 64, ArgumentParser's usage error), before anything starts."""
    if not HANGARD.is_file():
        pytest.fail(f"hangard binary not found at {HANGARD}")
    result = subprocess.run(
        [str(HANGARD), "--metrics-listen", value], capture_output=True, timeout=30, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 64, result
    assert "--metrics-listen" in result.stderr.decode(errors="replace")
