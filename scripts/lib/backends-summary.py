"""The summary of scripts/bench-backends.sh (issue 15, "Measure"): reads what the run wrote into bench-results/ and
prints each figure beside its reference from the same run, the ratios and the goals. Every ratio uses the medians
over the rounds (the per-round values are in the JSON)."""

import csv
import json
import os
import statistics

RESULTS = "bench-results"


def load(name):
    path = os.path.join(RESULTS, name)
    return json.load(open(path)) if os.path.exists(path) else None


def phases(report, operation, store, mode):
    return [p for p in report["allPhases"] if p["operation"] == operation and p["store"] == store and p["mode"] == mode]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values):
    values = [v for v in values if v is not None]
    return f"{min(values):,.1f}–{max(values):,.1f}" if len(values) > 1 else "-"


def verdict(met):
    return "met" if met else "MISSED"


def anchors():
    path = os.path.join(RESULTS, "backends-redis.csv")
    if not os.path.exists(path):
        return {}
    return {(row["test"], int(row["clients"])): row for row in csv.DictReader(open(path))}


def state_lines(run, store, label):
    lines = []
    for operation in ("GetState", "SaveState"):
        for mode in ("sequential", "concurrent"):
            results = phases(run, operation, store, mode)
            if not results:
                continue
            callers = results[0]["callers"]
            lines.append(
                f"  {operation} {label}, {callers} caller(s): {median(p['callsPerSecond'] for p in results):,.0f}/s "
                f"(rounds {spread(p['callsPerSecond'] for p in results)}), "
                f"p50 {median(p['latency']['p50'] for p in results):,.1f} µs, "
                f"p99 {median(p['latency']['p99'] for p in results):,.1f} µs, "
                f"hangard {median(p['serverCPUMicrosPerCall'] for p in results):.1f} µs CPU/call"
                + (
                    f", server {median(p.get('calleeCPUMicrosPerCall') for p in results):.1f} µs CPU/call"
                    if any(p.get("calleeCPUMicrosPerCall") is not None for p in results)
                    else ""
                )
                + f", other load {median(p.get('otherBusyCores') for p in results) or 0:.2f} cores"
            )
    return lines


def redis_goals(run, direct):
    lines = []
    memory = phases(run, "GetState", "memstore", "sequential")
    redis = phases(run, "GetState", "redisstore", "sequential")
    if memory and redis:
        memory_p50 = median(p["latency"]["p50"] for p in memory)
        redis_p50 = median(p["latency"]["p50"] for p in redis)
        for test in ("GET", "EVALSHA"):
            anchor = direct.get((test, 1))
            if not anchor:
                continue
            direct_p50 = float(anchor["p50_ms"]) * 1000
            bound = 1.5 * direct_p50 + memory_p50
            lines.append(
                f"  p50, 1 caller: GetState on state.redis {redis_p50:.1f} µs against 1.5 × direct {test} "
                f"({direct_p50:.0f} µs) + GetState in-memory ({memory_p50:.1f} µs) = {bound:.1f} µs: "
                f"{redis_p50 / bound:.2f}× the bound — {verdict(redis_p50 <= bound)}"
                + (" (the goal's anchor)" if test == "GET" else " (the same script sent directly)")
            )
            lines.append(
                f"      GetState on state.redis − GetState in-memory = {redis_p50 - memory_p50:.1f} µs "
                f"= {(redis_p50 - memory_p50) / direct_p50:.2f}× direct {test}'s p50"
            )
    concurrent = phases(run, "GetState", "redisstore", "concurrent")
    if concurrent:
        rate = median(p["callsPerSecond"] for p in concurrent)
        callers = concurrent[0]["callers"]
        for test in ("GET", "EVALSHA"):
            anchor = direct.get((test, 32))
            if not anchor:
                continue
            direct_rate = float(anchor["rps"])
            ratio = rate / direct_rate
            lines.append(
                f"  throughput, {callers} callers: GetState on state.redis {rate:,.0f}/s against redis-benchmark "
                f"{test} -c 32 {direct_rate:,.0f}/s: {ratio:.2f}× (goal ≥ 0.5×) — {verdict(ratio >= 0.5)}"
                + (" (the goal's anchor)" if test == "GET" else "")
            )
    return lines


def sidecar_lines(report, backend):
    lines = [f"connections to {backend}: {report['options']['apps']} apps, the node against one hangard per app"]
    models = {m["name"]: m for m in report["models"]}
    for name in ("node", "sidecar"):
        model = models.get(name)
        if not model:
            continue
        counts = model.get("backendConnections") or {}
        lines.append(
            f"  {name}: {model['processes']} hangard(s); connections before load {counts.get('beforeLoad', '-')}, "
            f"peak {counts.get('peak', '-')}, steady {counts.get('steadyMedian', '-')}; "
            f"{model['traffic']['okPerSecond']:,.0f} calls/s, p50 {model['traffic']['latency']['p50']:.0f} µs, "
            f"p99 {model['traffic']['latency']['p99']:.0f} µs, "
            f"{model['traffic']['failed'] + model['traffic']['refused']} errors; "
            f"hangard(s) {model['cores']:.3f} cores"
            + (f", server {model['backendCores']:.3f} cores" if model.get("backendCores") is not None else "")
        )
    node, sidecar = models.get("node"), models.get("sidecar")
    if node and sidecar and node.get("backendConnections") and sidecar.get("backendConnections"):
        peak = report.get("connectionsPeakRatio")
        steady = report.get("connectionsSteadyRatio")
        lines.append(
            f"  node ÷ sidecars: peak {peak:.3f}× (1/{1 / peak:.0f})"
            + (f", steady {steady:.3f}× (1/{1 / steady:.0f})" if steady else "")
            + f" (goal ≤ 1/20 = 0.05×) — {verdict(peak <= 0.05)}; throughput node ÷ sidecars "
            f"{node['traffic']['okPerSecond'] / sidecar['traffic']['okPerSecond']:.3f}×"
        )
    return lines


def main():
    lines = []
    direct = anchors()
    run = load("backends-run.json")
    if run:
        lines.append("GetState and SaveState through hangard (medians over the rounds):")
        lines += state_lines(run, "memstore", "state.in-memory")
        lines += state_lines(run, "redisstore", "state.redis")
    run_pg = load("backends-run-postgresql.json")
    if run_pg:
        lines.append("GetState and SaveState through hangard, PostgreSQL's run (medians over the rounds):")
        lines += state_lines(run_pg, "memstore", "state.in-memory")
        lines += state_lines(run_pg, "pgstore", "state.postgresql")
    if direct:
        lines.append("Redis used directly (redis-benchmark, same server, same run):")
        for (test, clients), row in direct.items():
            lines.append(
                f"  {test} -c {clients}: {float(row['rps']):,.0f}/s, p50 {float(row['p50_ms']) * 1000:.0f} µs, "
                f"p99 {float(row['p99_ms']) * 1000:.0f} µs, redis {row['redis_cpu_us_per_request']} µs CPU/request"
            )
    if run and direct:
        lines.append("Goals, state.redis:")
        lines += redis_goals(run, direct)
    for backend, name in (("Redis", "backends-sidecar-redis.json"), ("PostgreSQL", "backends-sidecar-postgresql.json")):
        report = load(name)
        if report:
            lines += sidecar_lines(report, backend)
    print("\n".join(lines))


main()
