"""Writing Tenant and Component files for end-to-end tests, and waiting for the daemon to apply them."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path
from typing import Any

STORE = "statestore"


def tenant_yaml(namespace: str, apps: list[dict], quotas: dict | None = None, weight: int | None = None) -> str:
    """A Tenant document. Each app is {"appId": ..., optional "apiToken", "apiTokenFile", "quotas", "uids"}."""
    lines = [
        "apiVersion: hangar.dev/v1alpha1",
        "kind: Tenant",
        "metadata:",
        f"  name: {namespace}",
        "spec:",
    ]
    if weight is not None:
        lines.append(f"  weight: {weight}")
    lines.append("  apps:")
    for app in apps:
        lines.append(f"    - appId: {app['appId']}")
        for field in ("apiToken", "apiTokenFile"):
            if field in app:
                lines.append(f'      {field}: "{app[field]}"')
        for field in ("uids", "gids"):
            if field in app:
                lines.append(f"      {field}: {list(app[field])}")
        if app.get("quotas"):
            lines.append("      quotas:")
            lines += [f"        {k}: {v}" for k, v in app["quotas"].items()]
    if quotas:
        lines.append("  quotas:")
        lines += [f"    {k}: {v}" for k, v in quotas.items()]
    return "\n".join(lines) + "\n"


def component_yaml(name: str, type_: str, metadata: dict[str, str] | None = None, namespace: str | None = None) -> str:
    lines = ["apiVersion: dapr.io/v1alpha1", "kind: Component", "metadata:", f"  name: {name}"]
    if namespace:
        lines.append(f"  namespace: {namespace}")
    lines += ["spec:", f"  type: {type_}", "  version: v1"]
    if metadata:
        lines.append("  metadata:")
        for key, value in metadata.items():
            lines += [f"    - name: {key}", f'      value: "{value}"']
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Writes `text` to `path` as editors and Kubernetes do: a temporary file renamed into place."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.01) -> float:
    """Seconds until predicate() was true; fails with AssertionError after `timeout`."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip()


def start_daemon(
    factory: Any,
    tenants: dict[str, str],
    components: dict[str, str] | None = None,
    apps: tuple = (),
    extra_args: tuple[str, ...] = (),
) -> Any:
    """A daemon (from the `hangard_factory` fixture) on its own --tenancy and --resources directories, holding
    `tenants` and `components` (file name → YAML); by default one state.sqlite store named `statestore`."""
    root = factory.root()
    tenancy = root / "tenancy"
    resources = root / "resources"
    tenancy.mkdir()
    resources.mkdir()
    for name, text in tenants.items():
        (tenancy / name).write_text(text)
    components = components or {"store.yaml": component_yaml(STORE, "state.sqlite", {"connectionString": "s.db"})}
    for name, text in components.items():
        (resources / name).write_text(text)
    return factory.start(root, tenancy=tenancy, resources=resources, apps=tuple(apps), extra_args=extra_args)
