"""A real PostgreSQL server for the end-to-end tests (Debian's `postgresql`, which scripts/test.sh installs).

`PostgresServer` initdb's a temporary data directory and runs `postgres` on a free loopback port and a Unix
socket in that directory. PostgreSQL refuses to run as root, so as root every program runs as the `postgres`
user (`setpriv`, which execs in place: the pid is the postmaster's). The superuser has a password over TCP
(scram-sha-256); the Unix socket trusts local users, which `psql()` uses for setup and checks. `crash()` is an
immediate shutdown (every backend ends at once; the server recovers from its WAL at `start()`); commits are
synchronous, so an acknowledged write survives it.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

from hangar_e2e import free_port

SUPER_PASSWORD = "e2e-super-" + uuid.uuid4().hex[:8]


def _bin_dir() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql; scripts/test.sh does it)")
    return os.path.dirname(found[-1])


class PostgresServer:
    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.root = Path(f"/tmp/hangar-e2e-pg-{uuid.uuid4().hex[:10]}")
        self.data = self.root / "data"
        self.socket_dir = self.root / "socket"
        self.log_path = self.root / "postgres.log"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.socket_dir.mkdir(parents=True)
        (self.root / "pwfile").write_text(SUPER_PASSWORD)
        if os.getuid() == 0:
            subprocess.run(["chown", "-R", "postgres:postgres", str(self.root)], check=True, timeout=30)
        self._run(
            f"{self.bin}/initdb", "-D", str(self.data), "-U", "postgres", "--pwfile", str(self.root / "pwfile"),
            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync",
        )

    @staticmethod
    def _as_postgres(command: list[str]) -> list[str]:
        if os.getuid() != 0:
            return command
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] + command

    def _run(self, *command: str) -> str:
        result = subprocess.run(
            self._as_postgres(list(command)), capture_output=True, text=True, timeout=60, cwd="/tmp"
        )
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {result.stdout}{result.stderr}")
        return result.stdout

    def start(self) -> "PostgresServer":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self._as_postgres([
                f"{self.bin}/postgres", "-D", str(self.data), "-p", str(self.port), "-k", str(self.socket_dir),
                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200",
                "-c", "shared_buffers=32MB",
            ]),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd="/tmp",
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self.psql("SELECT 1") == "1":
                    return self
            except RuntimeError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"postgres did not start: {self.log_path.read_text(errors='replace')}")

    def crash(self) -> None:
        """An immediate shutdown (SIGQUIT), like a crash; the data directory stays for start()."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            self.process.wait(30)
        self.process = None

    def stop(self) -> None:
        self.crash()
        shutil.rmtree(self.root, ignore_errors=True)

    def psql(self, sql: str) -> str:
        return self._run(
            f"{self.bin}/psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", str(self.socket_dir),
            "-p", str(self.port), "-U", "postgres", "-d", "postgres", "-c", sql,
        ).strip()

    def create_user(self, name: str, password: str) -> None:
        self.psql(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'; GRANT ALL ON SCHEMA public TO {name}")

    def connection_count(self, user: str) -> int:
        return int(self.psql(f"SELECT count(*) FROM pg_stat_activity WHERE usename = '{user}'"))

    def connection_string(self, user: str, password: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={user} password={password} dbname=postgres sslmode=disable"


def postgres_component_yaml(name: str, metadata: dict[str, str], namespace: str | None = None) -> str:
    """A `state.postgresql` `version: v2` Component document."""
    lines = ["apiVersion: dapr.io/v1alpha1", "kind: Component", "metadata:", f"  name: {name}"]
    if namespace:
        lines.append(f"  namespace: {namespace}")
    lines += ["spec:", "  type: state.postgresql", "  version: v2", "  metadata:"]
    for key, value in metadata.items():
        lines += [f"    - name: {key}", f'      value: "{value}"']
    return "\n".join(lines) + "\n"
