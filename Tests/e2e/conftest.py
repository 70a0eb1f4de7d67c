"""Fixtures for the end-to-end tests (helpers are in hangar_e2e.py).

`hangard`: one daemon per test module serving copies of tenancy/examples; `hangard_factory`: daemons for a
single test. Both stop their daemons on teardown with SIGTERM and require exit code 0 within 15 s and no
socket file left behind. `_test_deadline` fails any test that runs longer than TEST_TIMEOUT.
"""

from __future__ import annotations

import shutil
import signal
from pathlib import Path
from typing import Any, Iterator

import pytest

from hangar_e2e import EXAMPLE_APPS, TEST_TIMEOUT, Hangard, copy_examples, short_tempdir


@pytest.fixture(autouse=True)
def _test_deadline(request):
    """No test may hang: SIGALRM fails any test still running after TEST_TIMEOUT seconds."""

    def expired(signum, frame):
        raise TimeoutError(f"{request.node.nodeid} took longer than {TEST_TIMEOUT}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TEST_TIMEOUT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


class DaemonFactory:
    """Starts daemons for one test (or module) and stops every one of them at teardown."""

    def __init__(self) -> None:
        self.daemons: list[Hangard] = []
        self.roots: list[Path] = []

    def root(self) -> Path:
        path = short_tempdir()
        self.roots.append(path)
        return path

    def examples(self, root: Path | None = None, extra_args: tuple[str, ...] = ()) -> Hangard:
        """A daemon serving copies of tenancy/examples (team-a: orders, billing; team-b: orders)."""
        root = root or self.root()
        tenancy, resources = (
            (root / "tenancy", root / "resources") if (root / "tenancy").exists() else copy_examples(root)
        )
        return self.start(root, tenancy=tenancy, resources=resources, apps=EXAMPLE_APPS, extra_args=extra_args)

    def start(self, root: Path, **kwargs: Any) -> Hangard:
        daemon = Hangard(root, **kwargs)
        self.daemons.append(daemon)
        return daemon.start()

    def stop_all(self) -> None:
        errors = []
        for daemon in self.daemons:
            if daemon.process is None:
                continue
            try:
                daemon.stop()
            except BaseException as error:  # keep stopping the others
                daemon.kill()
                errors.append(error)
        self.daemons.clear()
        if errors:
            raise errors[0]

    def cleanup(self) -> None:
        for root in self.roots:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def hangard_factory() -> Iterator[DaemonFactory]:
    """Per-test daemons: `hangard_factory.examples()` or `hangard_factory.start(root, tenancy=..., ...)`."""
    factory = DaemonFactory()
    try:
        yield factory
        factory.stop_all()
    finally:
        for daemon in factory.daemons:
            daemon.kill()
        factory.cleanup()


@pytest.fixture(scope="module")
def hangard() -> Iterator[Hangard]:
    """One daemon per test module, serving copies of tenancy/examples. Tests use unique keys."""
    factory = DaemonFactory()
    try:
        yield factory.examples()
        factory.stop_all()
    finally:
        for daemon in factory.daemons:
            daemon.kill()
        factory.cleanup()
