"""Real backend servers for end-to-end tests, on loopback: Redis (Debian's redis-server, which scripts/test.sh
installs). Never mocks: hangard talks to the same servers a deployment does."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

from hangar_e2e import free_port, short_tempdir


class RedisProcess:
    """A redis-server on a free loopback port, in a temporary directory, with an append-only file synced on every
    write (so that what it acknowledged survives `crash()`), started with `arguments` added (`--requirepass`, ...)."""

    def __init__(self, *arguments: str, password: str | None = None):
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server; scripts/test.sh does it)")
        self.port = free_port()
        self.directory = short_tempdir()
        self.arguments = arguments
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
            "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
        ]
        if self.password:
            command += ["--requirepass", self.password]
        self.process = subprocess.Popen(
            command + list(self.arguments), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if self.cli("PING") == "PONG":
                    return
            except subprocess.SubprocessError:
                pass
            time.sleep(0.02)
        log = (self.directory / "redis.log").read_text() if (self.directory / "redis.log").exists() else ""
        self.crash()
        raise RuntimeError(f"redis-server did not start: {log}")

    def cli(self, *arguments: str) -> str:
        """One command through redis-cli; its raw output, stripped."""
        command = ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "--no-auth-warning"]
        if self.password:
            command += ["-a", self.password]
        result = subprocess.run(command + list(arguments), capture_output=True, timeout=10, check=True)
        return result.stdout.decode().strip()

    def client_names(self) -> list[str]:
        """The name of every client connected now (CLIENT LIST)."""
        names = []
        for line in self.cli("CLIENT", "LIST").splitlines():
            fields = dict(part.split("=", 1) for part in line.split(" ") if "=" in part)
            names.append(fields.get("name", ""))
        return names

    def crash(self) -> None:
        """SIGKILL: what an outage looks like to its clients."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        self.crash()
        shutil.rmtree(self.directory, ignore_errors=True)
