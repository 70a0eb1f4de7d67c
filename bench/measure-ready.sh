#!/usr/bin/env bash
# Time from exec to systemd's READY=1 (every listener up, every component initialised), as a service manager sees
# it: hangard runs with NOTIFY_SOCKET pointing at a datagram socket this script reads. N apps in one tenant
# (2 Unix sockets each), one state.sqlite and one state.in-memory component, TCP listeners on free ports.
# Usage: bench/measure-ready.sh PATH/TO/hangard [APPS ...]   (default: 1 100 1000; 5 runs each, median and max)
set -euo pipefail
bin=$(realpath "$1")
shift
counts=("$@")
[ "${#counts[@]}" -eq 0 ] && counts=(1 100 1000)
exec python3 - "$bin" "${counts[@]}" <<'PY'
import os, shutil, socket, statistics, subprocess, sys, tempfile, time

binary, counts = sys.argv[1], [int(n) for n in sys.argv[2:]]
print(f"{'apps':>6} {'median ms':>10} {'max ms':>8}   (exec -> READY=1, 5 runs)")
for count in counts:
    times = []
    for run in range(5):
        work = tempfile.mkdtemp(prefix="hr-", dir="/tmp")
        try:
            os.makedirs(f"{work}/t"); os.makedirs(f"{work}/r")
            with open(f"{work}/t/bench.yaml", "w") as f:
                f.write("apiVersion: hangar.dev/v1alpha1\nkind: Tenant\nmetadata:\n  name: bench\nspec:\n  apps:\n")
                f.writelines(f"    - appId: app-{i}\n" for i in range(count))
            with open(f"{work}/r/store.yaml", "w") as f:
                f.write("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n"
                        "  type: state.sqlite\n  metadata:\n    - {name: connectionString, value: state.db}\n---\n"
                        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: memstore\nspec:\n"
                        "  type: state.in-memory\n")
            notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            notify.bind(f"{work}/notify")
            notify.settimeout(60)
            env = dict(os.environ, NOTIFY_SOCKET=f"{work}/notify")
            started = time.monotonic()
            process = subprocess.Popen(
                [binary, "--tenancy", f"{work}/t", "--resources", f"{work}/r", "--socket-root", f"{work}/s",
                 "--data-dir", f"{work}/d", "--http-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0",
                 "--metrics-listen", "none", "--log-level", "warning"], env=env)
            while b"READY=1" not in notify.recv(4096):
                pass
            times.append((time.monotonic() - started) * 1000)
            process.terminate()
            process.wait(30)
            notify.close()
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{count:>6} {statistics.median(times):>10.1f} {max(times):>8.1f}")
PY
