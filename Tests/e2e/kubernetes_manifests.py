"""The Kubernetes manifests in daemonset/kubernetes, rendered with `kubectl kustomize`, and what a node would make
of them: volumes laid out as kubelet lays them out, environment variables and `$(VAR)` references expanded as
kubelet expands them, container paths resolved through the volume mounts (the root filesystem is read-only, so
every path a container uses must be in a volume).

Used by test_deploy_kubernetes.py, which runs the real hangard with the DaemonSet's own arguments on such a
simulated node, and an app with the example Deployment's environment next to it.
"""

from __future__ import annotations

import base64
import functools
import os
import random
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from hangar_e2e import REPO_ROOT

KUBERNETES = REPO_ROOT / "daemonset" / "kubernetes"
BASE = KUBERNETES / "base"
EXAMPLE = KUBERNETES / "overlays" / "example"
CONTAINERFILE = REPO_ROOT / "daemonset" / "Containerfile"

# What status.hostIP is on the simulated node: the daemon binds it, the app connects to it.
HOST_IP = "127.0.0.1"


# ---------------------------------------------------------------------------------------------------------------
# Rendering.


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail(
            "kubectl not found: these tests render daemonset/kubernetes with `kubectl kustomize` (kustomize v5, "
            "kubectl 1.27 or later). Install kubectl (https://kubernetes.io/docs/tasks/tools/); scripts/test.sh "
            "installs Debian's kubernetes-client when kubectl is missing"
        )
    return path


@functools.cache
def render(directory: Path) -> str:
    """`kubectl kustomize DIRECTORY`; fails the test with kubectl's message and version when it cannot render."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
    )
    if result.returncode != 0:
        version = subprocess.run(
            [kubectl(), "version", "--client"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
        pytest.fail(
            f"kubectl kustomize {directory.relative_to(REPO_ROOT)} failed ({result.returncode}):\n"
            f"{result.stderr.strip()}\n{version}\n"
            "The manifests use kustomize v5 syntax (labels, per-generator options): kubectl 1.27 or later. "
            "Debian bookworm's kubernetes-client is kubectl 1.20 (kustomize v2), which cannot render them."
        )
    return result.stdout


class Manifests:
    """The objects one kustomization renders."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.objects: list[dict[str, Any]] = [doc for doc in yaml.safe_load_all(render(directory)) if doc]

    def all(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return [
            obj
            for obj in self.objects
            if obj["kind"] == kind and (namespace is None or obj["metadata"].get("namespace") == namespace)
        ]

    def get(self, kind: str, name: str, namespace: str | None) -> dict[str, Any]:
        found = [obj for obj in self.all(kind, namespace) if obj["metadata"]["name"] == name]
        where = f"{namespace}/{name}" if namespace else name
        assert len(found) == 1, (
            f"{self.directory.relative_to(REPO_ROOT)} renders {len(found)} {kind} {where}; "
            f"it has {[(o['kind'], o['metadata'].get('namespace'), o['metadata']['name']) for o in self.objects]}"
        )
        return found[0]

    def daemonset(self) -> dict[str, Any]:
        return self.get("DaemonSet", "hangard", "hangar-system")

    def files(self, kind: str, name: str, namespace: str) -> dict[str, bytes]:
        """A ConfigMap's or Secret's keys and contents, as its volume shows them."""
        obj = self.get(kind, name, namespace)
        if kind == "Secret":
            data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
            data.update({k: v.encode() for k, v in (obj.get("stringData") or {}).items()})
            return data
        data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return data

    def tenants(self) -> dict[str, dict[str, Any]]:
        """The Tenant documents the daemon's tenancy ConfigMap holds, by namespace (metadata.name)."""
        tenants = {}
        for key, text in self.files("ConfigMap", "hangar-tenancy", "hangar-system").items():
            for doc in yaml.safe_load_all(text):
                if doc:
                    assert doc.get("kind") == "Tenant", f"hangar-tenancy/{key} holds a {doc.get('kind')}"
                    tenants[doc["metadata"]["name"]] = doc
        return tenants


def container(pod_spec: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    containers = pod_spec["containers"]
    if name is None:
        assert len(containers) == 1, f"expected one container, found {[c['name'] for c in containers]}"
        return containers[0]
    return next(c for c in containers if c["name"] == name)


def hangard_container(manifests: Manifests) -> dict[str, Any]:
    return container(manifests.daemonset()["spec"]["template"]["spec"], "hangard")


def flag_values(args: list[str]) -> dict[str, str]:
    """`--flag value` and `--flag=value` pairs of a container's args (hangard has no boolean flags)."""
    values: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        assert arg.startswith("--"), f"unexpected positional argument {arg!r} in {args}"
        if "=" in arg:
            name, value = arg.split("=", 1)
            i += 1
        else:
            assert i + 1 < len(args), f"{arg} has no value in {args}"
            name, value = arg, args[i + 1]
            i += 2
        assert name not in values, f"{name} given twice in {args}"
        values[name] = value
    return values


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion in command, args and env values: `$$` is a literal `$`, and a reference
    to an undefined variable is left as it is."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", replace, value)


def security_context(pod_spec: dict[str, Any], ctr: dict[str, Any]) -> dict[str, Any]:
    """The container's effective security context: its own fields over the pod's."""
    merged = dict(pod_spec.get("securityContext") or {})
    merged.update(ctr.get("securityContext") or {})
    return merged


def port_number(ctr: dict[str, Any], port: int | str) -> int:
    """A probe's port (a number or the name of one of the container's ports) as a number."""
    if isinstance(port, int):
        return port
    named = [p["containerPort"] for p in ctr.get("ports", []) if p.get("name") == port]
    assert named, f"no container port named {port!r} in {ctr.get('ports')}"
    return named[0]


# ---------------------------------------------------------------------------------------------------------------
# kubelet's ConfigMap and Secret volumes.


class KubeletVolume:
    """A ConfigMap or Secret volume as kubelet's atomic writer (pkg/volume/util/atomic_writer.go) keeps it:

        ..2026_11_22_10_00_00.123456789/   the files of the current version
        ..data -> ..2026_11_22_10_00_00.123456789
        team-a.yaml -> ..data/team-a.yaml  one symlink per key

    An update writes the new version into a new timestamped directory, points a `..data_tmp` symlink at it and
    renames that over `..data` (the one atomic step), then adds symlinks for new keys, removes those of keys
    that are gone, and removes the old directory."""

    def __init__(self, path: Path, mode: int = 0o644):
        self.path = path
        self.mode = mode
        path.mkdir(parents=True, exist_ok=True)

    def write(self, payload: dict[str, bytes | str]) -> None:
        data_link = self.path / "..data"
        old = os.readlink(data_link) if data_link.is_symlink() else None
        version = self._new_version_dir()
        for key, content in payload.items():
            assert "/" not in key and not key.startswith("."), key
            target = version / key
            target.write_bytes(content.encode() if isinstance(content, str) else content)
            os.chmod(target, self.mode)
        temporary = self.path / "..data_tmp"
        os.symlink(version.name, temporary)
        os.rename(temporary, data_link)
        for key in payload:
            if not (self.path / key).is_symlink():
                os.symlink(f"..data/{key}", self.path / key)
        for entry in self.path.iterdir():
            if not entry.name.startswith("..") and entry.name not in payload:
                entry.unlink()
        if old is not None:
            shutil.rmtree(self.path / old)

    def _new_version_dir(self) -> Path:
        stamp = time.strftime("..%Y_%m_%d_%H_%M_%S", time.gmtime())
        while True:
            candidate = self.path / f"{stamp}.{random.randrange(10**9):09d}"
            try:
                candidate.mkdir(mode=0o755)
                return candidate
            except FileExistsError:
                continue


# ---------------------------------------------------------------------------------------------------------------
# A node: the host's filesystem under one directory, and pods whose volumes are laid out on it.


@dataclass
class Node:
    root: Path

    def host(self, path: str) -> Path:
        """Where the node's `path` (a hostPath) is."""
        assert path.startswith("/"), path
        return self.root / "host" / path.lstrip("/")


@dataclass
class Pod:
    """One pod of a rendered workload on the simulated node: its volumes as local directories and its
    container's view of them."""

    node: Node
    manifests: Manifests
    namespace: str
    name: str
    spec: dict[str, Any]
    container: dict[str, Any]
    volumes: dict[str, Path] = field(default_factory=dict)
    kubelet_volumes: dict[str, KubeletVolume] = field(default_factory=dict)

    @classmethod
    def of(cls, node: Node, manifests: Manifests, workload: dict[str, Any], container_name: str | None = None) -> "Pod":
        spec = workload["spec"]["template"]["spec"]
        pod = cls(
            node,
            manifests,
            workload["metadata"]["namespace"],
            workload["metadata"]["name"],
            spec,
            container(spec, container_name),
        )
        for volume in spec.get("volumes", []):
            name = volume["name"]
            if "hostPath" in volume:
                pod.volumes[name] = node.host(volume["hostPath"]["path"])
            else:
                pod.volumes[name] = node.root / "pods" / pod.name / name
        return pod

    def mounts(self) -> list[tuple[str, Path]]:
        """(mountPath, local directory) of the container's mounts, the deepest first."""
        mounts = []
        for mount in self.container.get("volumeMounts", []):
            assert "subPath" not in mount and "subPathExpr" not in mount, (
                f"{self.name}: {mount['mountPath']} is mounted with subPath: kubelet then never updates it"
            )
            mounts.append((mount["mountPath"].rstrip("/"), self.volumes[mount["name"]]))
        return sorted(mounts, key=lambda m: len(m[0]), reverse=True)

    def mount_of(self, path: str) -> dict[str, Any] | None:
        """The volume the container sees `path` in (None: the root filesystem)."""
        for mount in sorted(self.container.get("volumeMounts", []), key=lambda m: len(m["mountPath"]), reverse=True):
            mount_path = mount["mountPath"].rstrip("/")
            if path == mount_path or path.startswith(mount_path + "/"):
                return next(v for v in self.spec["volumes"] if v["name"] == mount["name"])
        return None

    def local(self, path: str) -> Path:
        """Where the container's `path` is on the simulated node. The root filesystem is read-only and holds
        nothing of the node's, so a path outside every volume fails the test."""
        for mount_path, local in self.mounts():
            if path == mount_path or path.startswith(mount_path + "/"):
                return local / path[len(mount_path) :].lstrip("/")
        pytest.fail(f"{self.name}: {path} is in no volume of the container (its root filesystem is read-only)")

    def lay_out_volumes(self, transform: Callable[[str, str, bytes], bytes] = lambda volume, key, data: data) -> None:
        """Creates the pod's volumes as kubelet would: hostPath (DirectoryOrCreate creates, Directory must
        exist), emptyDir, and ConfigMap/Secret through the atomic writer. `transform(volume, key, data)` may
        rewrite a file's contents on the way."""
        for volume in self.spec.get("volumes", []):
            name = volume["name"]
            local = self.volumes[name]
            if "hostPath" in volume:
                kind = volume["hostPath"].get("type", "")
                if kind == "DirectoryOrCreate":
                    local.mkdir(parents=True, exist_ok=True)
                else:
                    assert kind == "Directory", f"{self.name}: hostPath {volume['hostPath']['path']} of type {kind!r}"
                    assert local.is_dir(), (
                        f"{self.name}: hostPath {volume['hostPath']['path']} (type Directory) does not exist on "
                        "the node: the pod would not start"
                    )
            elif "emptyDir" in volume:
                local.mkdir(parents=True)
            elif "configMap" in volume or "secret" in volume:
                kind, source, key = (
                    ("ConfigMap", volume["configMap"], "name")
                    if "configMap" in volume
                    else ("Secret", volume["secret"], "secretName")
                )
                files = self.manifests.files(kind, source[key], self.namespace)
                writer = KubeletVolume(local, source.get("defaultMode", 0o644))
                writer.write({k: transform(name, k, v) for k, v in files.items()})
                self.kubelet_volumes[name] = writer
            else:
                pytest.fail(f"{self.name}: volume {name} is of a kind this simulation does not know: {volume}")

    def environment(self, ports: dict[int, int]) -> dict[str, str]:
        """The container's environment as kubelet builds it: values with earlier variables' `$(VAR)` expanded,
        status.hostIP = HOST_IP, Secret keys from the pod's namespace; then every `HOST_IP:PORT` rewritten to
        the local port that `ports` maps the node port to."""
        env: dict[str, str] = {}
        for item in self.container.get("env", []):
            if "value" in item:
                value = expand(item["value"], env)
            else:
                source = item["valueFrom"]
                if "fieldRef" in source:
                    assert source["fieldRef"]["fieldPath"] == "status.hostIP", source
                    value = HOST_IP
                elif "secretKeyRef" in source:
                    ref = source["secretKeyRef"]
                    files = self.manifests.files("Secret", ref["name"], self.namespace)
                    assert ref["key"] in files, f"Secret {self.namespace}/{ref['name']} has no key {ref['key']}"
                    value = files[ref["key"]].decode()
                else:
                    pytest.fail(f"{self.name}: env {item['name']} comes from {source}, unknown to this simulation")
            env[item["name"]] = value
        return {name: on_local_ports(value, ports) for name, value in env.items()}

    def args(self, ports: dict[int, int]) -> list[str]:
        """The container's args with `$(VAR)` expanded and node ports mapped to local ones (see environment)."""
        env = self.environment(ports)
        return [on_local_ports(expand(arg, env), ports) for arg in self.container.get("args", [])]


def on_local_ports(value: str, ports: dict[int, int]) -> str:
    """`value` with every `HOST_IP:PORT` whose port `ports` maps replaced by HOST_IP and the local port."""

    def replace(match: re.Match[str]) -> str:
        port = int(match.group(1))
        return f"{HOST_IP}:{ports[port]}" if port in ports else match.group(0)

    return re.sub(re.escape(HOST_IP) + r":(\d+)", replace, value)


def token_file_paths(tenants: dict[str, dict[str, Any]]) -> dict[tuple[str, str], str]:
    """(namespace, appId) → apiTokenFile of every app that has one."""
    return {
        (ns, app["appId"]): app["apiTokenFile"]
        for ns, tenant in tenants.items()
        for app in tenant["spec"]["apps"]
        if "apiTokenFile" in app
    }


# ---------------------------------------------------------------------------------------------------------------
# The Containerfile.


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]]  # (INSTRUCTION, rest of the line)

    def runs(self) -> list[str]:
        return [rest for instruction, rest in self.instructions if instruction == "RUN"]

    def apt_installs(self) -> list[str]:
        """The packages the stage's `apt-get install` commands name."""
        packages = []
        for command in self.runs():
            for part in re.split(r"&&|;|\|\|", command):
                words = part.split()
                if words[:1] == ["apt-get"] and "install" in words:
                    after = words[words.index("install") + 1 :]
                    packages += [w for w in after if not w.startswith("-")]
        return packages


def containerfile_stages(path: Path = CONTAINERFILE) -> list[Stage]:
    """The stages of a Dockerfile-syntax file, with continuation lines joined, comments dropped and global
    ARG defaults substituted into FROM."""
    logical: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, f"{path}: the last instruction ends with a line continuation"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        rest = rest.strip()
        if instruction == "ARG" and not stages:
            name, _, default = rest.partition("=")
            global_args[name] = default.strip('"')
        elif instruction == "FROM":
            words = rest.split()
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: global_args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(image, name, []))
        else:
            assert stages, f"{path}: {instruction} before the first FROM"
            stages[-1].instructions.append((instruction, rest))
    return stages


# ---------------------------------------------------------------------------------------------------------------
# Shared libraries and Debian packages.


def linked_libraries(binary: Path) -> dict[str, str]:
    """`ldd binary`: library name → resolved path (the vDSO, which no file provides, is left out)."""
    result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"ldd {binary} failed: {result.stderr}"
    libraries = {}
    for line in result.stdout.splitlines():
        line = line.strip()
        if "=>" in line:
            name, _, rest = line.partition("=>")
            target = rest.split("(")[0].strip()
            assert target and target != "not found", f"ldd: {line}"
            libraries[name.strip()] = target
        elif line.startswith("/"):
            path = line.split("(")[0].strip()
            libraries[Path(path).name] = path
    return libraries


def debian_package(path: str) -> str | None:
    """The Debian package that installed `path` (dpkg -S), also across the /usr merge; None if none did."""
    candidates = [path, os.path.realpath(path)]
    for candidate in list(candidates):
        if candidate.startswith("/usr/"):
            candidates.append(candidate[len("/usr") :])
        else:
            candidates.append("/usr" + candidate)
    for candidate in candidates:
        result = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True, timeout=60)
        if result.returncode == 0:
            owner = result.stdout.splitlines()[0].split(": ")[0]
            return owner.split(",")[0].strip().split(":")[0]
    return None


def with_dependencies(packages: list[str]) -> set[str]:
    """`packages` and, recursively, what they depend on (Depends and Pre-Depends, as dpkg knows them here)."""
    seen: set[str] = set()
    queue = list(packages)
    while queue:
        package = queue.pop()
        if package in seen:
            continue
        seen.add(package)
        result = subprocess.run(
            ["dpkg-query", "-W", "-f=${Depends}, ${Pre-Depends}", package], capture_output=True, text=True, timeout=60
        )
        if result.returncode != 0:
            continue  # not installed here: it counts, its dependencies are not known
        for alternatives in result.stdout.split(","):
            for choice in alternatives.split("|"):
                name = choice.strip().split(" ")[0].split(":")[0]
                if name:
                    queue.append(name)
    return seen
