"""The Kubernetes deployment (daemonset/kubernetes) and the image (daemonset/Containerfile).

The manifests are rendered with `kubectl kustomize`, validated against the Kubernetes schema and yamllint, and
held to the invariants the design depends on: an app pod mounts only its own socket directory, the token it
sends is the one the daemon reads, the DaemonSet's flags exist and point into the right volumes, the daemon keeps
only the capabilities it needs. Then the rendered DaemonSet runs: the real hangard with its exact arguments, its
volumes laid out as kubelet lays them out, under the capabilities its security context leaves, and the example
app's SDK with its Deployment's environment, as its uid. ConfigMap and Secret volumes are updated the way
kubelet's atomic writer does it, and the daemon must follow.

No Docker engine is needed: the image is checked statically (its runtime stage against `ldd hangard`).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from packaging.version import Version

from hangar_e2e import HANGARD, REPO_ROOT, Hangard, free_port, http_request
from kubernetes_manifests import (
    BASE,
    EXAMPLE,
    HOST_IP,
    KubeletVolume,
    Manifests,
    Node,
    Pod,
    containerfile_stages,
    debian_package,
    flag_values,
    hangard_container,
    linked_libraries,
    port_number,
    render,
    security_context,
    token_file_paths,
    with_dependencies,
)
from tenancy_files import STORE, component_yaml, tenant_yaml, wait_until

KUSTOMIZATIONS = {"base": BASE, "example": EXAMPLE}
SOCKET_ROOT = "/run/hangar"
# What the DaemonSet may add after dropping ALL, and why (its comments say it at length).
CAPABILITIES = {
    "CHOWN": "hand each app's directory and sockets to the app's uid/gid",
    "DAC_OVERRIDE": "reach into directories owned by an app's uid",
    "FOWNER": "chmod what an app's uid owns, on every restart",
}

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv (util-linux): hangard chowns to the app's uid, the app runs as that uid",
)


@pytest.fixture(scope="module")
def example() -> Manifests:
    return Manifests(EXAMPLE)


def hangard_help() -> str:
    result = subprocess.run([str(HANGARD), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"hangard --help exited {result.returncode}: {result.stderr}"
    return result.stdout


# ---------------------------------------------------------------------------------------------------------------
# Rendering and schema.


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_kubectl_kustomize_renders_the_kustomization(name):
    manifests = Manifests(KUSTOMIZATIONS[name])
    kinds = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in manifests.objects}
    expected = {
        ("Namespace", None, "hangar-system"),
        ("ServiceAccount", "hangar-system", "hangard"),
        ("ConfigMap", "hangar-system", "hangar-tenancy"),
        ("ConfigMap", "hangar-system", "hangar-resources"),
        ("Secret", "hangar-system", "hangar-tokens"),
        ("DaemonSet", "hangar-system", "hangard"),
    }
    if name == "example":
        expected |= {("Namespace", None, "shop"), ("Deployment", "shop", "cart")}
    assert expected <= kinds, f"missing: {expected - kinds}"
    image = hangard_container(manifests)["image"]
    assert re.fullmatch(r"ghcr\.io/hangar-dev/hangard:[\w.-]+", image), f"hangard's image is {image!r}: no tag set"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_rendered_object_validates_against_the_kubernetes_schema(name):
    """Strict: a misspelt or misplaced field is an error, not silently dropped as the API server would."""
    version = str(max((Version(v) for v in kubernetes_validate.utils.all_versions())))
    errors = []
    for obj in Manifests(KUSTOMIZATIONS[name]).objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as error:
            errors.append(f"{obj['kind']} {obj['metadata']['name']}: {str(error).splitlines()[0]}")
    assert not errors, f"against Kubernetes {version}:\n" + "\n".join(errors)


def yamllint(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "yamllint", "--strict", "-f", "parsable", "-c", str(REPO_ROOT / ".yamllint"), *args],
        input=stdin, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )


def test_the_yaml_files_pass_yamllint():
    result = yamllint("daemonset")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_the_rendered_manifests_pass_yamllint(name):
    result = yamllint("-", stdin=render(KUSTOMIZATIONS[name]))
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------------------------
# The DaemonSet.


def test_every_flag_in_the_daemonset_args_is_one_hangard_accepts(example):
    accepted = set(re.findall(r"^\s+(--[a-z][a-z0-9-]*)", hangard_help(), re.MULTILINE))
    assert "--socket-root" in accepted, f"could not read the flags from hangard --help: {sorted(accepted)}"
    used = set(flag_values(hangard_container(example)["args"]))
    assert used <= accepted, f"flags hangard --help does not list: {sorted(used - accepted)}"


def test_the_flag_values_match_the_volumes(example):
    """Sockets and data on the host, configuration from ConfigMaps, tokens from the Secret."""
    daemonset = example.daemonset()
    pod = Pod.of(Node(Path("/nonexistent")), example, daemonset, "hangard")
    flags = flag_values(pod.container["args"])

    def volume(flag: str) -> dict[str, Any]:
        found = pod.mount_of(flags[flag])
        assert found is not None, f"{flag} {flags[flag]} is in no volume (the root filesystem is read-only)"
        return found

    for flag in ("--socket-root", "--data-dir"):
        host = volume(flag).get("hostPath")
        assert host is not None, f"{flag} {flags[flag]} is not on a hostPath volume: {volume(flag)}"
        assert host["type"] == "DirectoryOrCreate"
    # App pods mount <socket root on the host>/<namespace>/<appId>: the container's path is the host's.
    assert flags["--socket-root"] == SOCKET_ROOT
    assert volume("--socket-root")["hostPath"]["path"] == SOCKET_ROOT
    # The objects' own names, without a hash suffix: an edit then updates the object the running pod mounts
    # (live reload) instead of creating a new one.
    for flag, configmap in (("--tenancy", "hangar-tenancy"), ("--resources", "hangar-resources")):
        mounted = volume(flag)
        assert mounted.get("configMap", {}).get("name") == configmap, f"{flag} is not the {configmap} ConfigMap"
        mount = next(m for m in pod.container["volumeMounts"] if m["name"] == mounted["name"])
        assert mount["mountPath"] == flags[flag], "hangard must watch the ConfigMap's own directory"
    token_files = token_file_paths(example.tenants())
    assert token_files, "the example's tenants read no apiTokenFile"
    for (ns, app), path in token_files.items():
        assert path.startswith("/"), f"{ns}/{app}: apiTokenFile {path} is relative to the ConfigMap's directory"
        secret = (pod.mount_of(path) or {}).get("secret")
        assert secret, f"{ns}/{app}: apiTokenFile {path} is not in the tokens Secret's volume"
        assert secret["secretName"] == "hangar-tokens"
        key = Path(path).name
        assert key in example.files("Secret", secret["secretName"], "hangar-system"), (
            f"{ns}/{app}: the Secret {secret['secretName']} has no key {key}"
        )


def test_the_daemon_keeps_only_chown_dac_override_and_fowner(example):
    spec = example.daemonset()["spec"]["template"]["spec"]
    context = security_context(spec, hangard_container(example))
    assert context["capabilities"]["drop"] == ["ALL"]
    assert sorted(context["capabilities"]["add"]) == sorted(CAPABILITIES)
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context.get("privileged", False) is False
    assert context["seccompProfile"]["type"] == "RuntimeDefault"
    assert context.get("runAsUser", 0) == 0, "hangard must be root to chown app directories"
    # No API credential at all, and no RBAC to go with one.
    assert spec["automountServiceAccountToken"] is False
    assert example.get("ServiceAccount", spec["serviceAccountName"], "hangar-system")
    rbac = [o["kind"] for o in example.objects if o["apiVersion"].startswith("rbac.authorization.k8s.io/")]
    assert not rbac, f"hangard reads nothing from the API server, yet the render has {rbac}"


def test_the_daemonset_runs_on_every_node_and_updates_by_surging_a_pod_that_takes_over(example):
    daemonset = example.daemonset()
    spec = daemonset["spec"]["template"]["spec"]
    strategy = daemonset["spec"]["updateStrategy"]
    ctr = hangard_container(example)
    flags = flag_values(ctr["args"])
    assert strategy["type"] == "RollingUpdate"
    # The new pod starts beside the old one, which is deleted only once the new one is available.
    assert strategy["rollingUpdate"]["maxSurge"] == 1
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    assert daemonset["spec"].get("minReadySeconds", 0) > 0
    # With hostNetwork a container port is a host port, and the scheduler would keep the surging pod off the node.
    assert not ctr.get("ports"), "declared ports block the surging pod (hostPort conflict with the old pod)"
    # Both pods see the same socket root (the control socket, the apps' sockets) and data directory (SQLite).
    hosts = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    mounts = {m["mountPath"]: m["name"] for m in ctr["volumeMounts"]}
    assert mounts[flags["--socket-root"]] in hosts and mounts[flags["--data-dir"]] in hosts
    assert flags.get("--take-over", "auto") == "auto"
    # An exited container is restarted, and its hangard would take the sockets back: the old one idles instead.
    assert flags["--after-hand-over"] == "wait"
    assert spec["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in spec["tolerations"]
    assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    drain = float(flags.get("--drain-timeout", "10"))
    assert spec["terminationGracePeriodSeconds"] > drain


def test_the_socket_root_on_the_host_is_run_hangar(example):
    volumes = example.daemonset()["spec"]["template"]["spec"]["volumes"]
    hosts = {v["hostPath"]["path"] for v in volumes if "hostPath" in v}
    assert SOCKET_ROOT in hosts, hosts


def test_resources_leave_cpu_unlimited_and_memory_bounded(example):
    resources = hangard_container(example)["resources"]
    assert "cpu" not in resources.get("limits", {}), "a CPU limit throttles every app's calls on the node"
    assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]


def memory_quantity(value: str) -> int:
    """A Kubernetes memory quantity (`512Mi`, `1G`, `536870912`) in bytes."""
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}
    units |= {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    match = re.fullmatch(r"(\d+)([KMGT]i|[kMGT])?", str(value))
    assert match, f"unexpected memory quantity {value!r}"
    return int(match.group(1)) * units.get(match.group(2) or "", 1)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_the_buffer_budget_is_set_from_the_memory_limit(name):
    """--max-buffered-bytes = (limits.memory - 128Mi) / 2: hangard's RSS grows by up to 1.75x the bytes it counts
    (daemonset/kubernetes/README.md, "Memory"), so the budget must move with the limit."""
    ctr = hangard_container(Manifests(KUSTOMIZATIONS[name]))
    limit = memory_quantity(ctr["resources"]["limits"]["memory"])
    budget = int(flag_values(ctr["args"])["--max-buffered-bytes"])
    assert budget == (limit - (128 << 20)) // 2, f"limit {limit} bytes wants a budget of {(limit - (128 << 20)) // 2}"
    max_request = int(flag_values(ctr["args"]).get("--max-request-bytes", 4 << 20))
    assert budget >= max_request, "hangard refuses a budget below --max-request-bytes"


def test_prometheus_scrapes_the_metrics_listener(example):
    daemonset = example.daemonset()
    annotations = daemonset["spec"]["template"]["metadata"]["annotations"]
    ctr = hangard_container(example)
    listen = flag_values(ctr["args"])["--metrics-listen"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert listen.rsplit(":", 1)[1] == annotations["prometheus.io/port"]


# ---------------------------------------------------------------------------------------------------------------
# The example app.


def app_deployments(manifests: Manifests) -> list[dict[str, Any]]:
    return [d for d in manifests.all("Deployment") if d["metadata"]["namespace"] != "hangar-system"]


def grpc_endpoint_app(env: list[dict[str, Any]]) -> tuple[str, str]:
    """(directory, appId) of DAPR_GRPC_ENDPOINT = unix://<directory>/dapr-<appId>-grpc.socket."""
    value = next(e["value"] for e in env if e["name"] == "DAPR_GRPC_ENDPOINT")
    match = re.fullmatch(r"unix://(/.+)/dapr-([a-z0-9-]+)-grpc\.socket", value)
    assert match, f"DAPR_GRPC_ENDPOINT {value!r} is not unix://<dir>/dapr-<appId>-grpc.socket"
    return match.group(1), match.group(2)


def test_the_app_mounts_only_its_own_socket_directory(example):
    deployments = app_deployments(example)
    assert deployments, "the example has no app Deployment"
    tenants = example.tenants()
    for deployment in deployments:
        ns = deployment["metadata"]["namespace"]
        pod = Pod.of(Node(Path("/nonexistent")), example, deployment)
        directory, app_id = grpc_endpoint_app(pod.container["env"])
        hostpaths = [v for v in pod.spec["volumes"] if "hostPath" in v]
        assert [v["hostPath"]["path"] for v in hostpaths] == [f"{SOCKET_ROOT}/{ns}/{app_id}"], (
            f"{ns}/{deployment['metadata']['name']} must mount exactly {SOCKET_ROOT}/{ns}/{app_id} from the host"
        )
        assert hostpaths[0]["hostPath"]["type"] == "Directory"
        assert pod.mount_of(directory) == hostpaths[0], f"{directory} is not the app's socket directory"
        # The tenant really declares that app, for the uid and gid the pod runs as.
        assert ns in tenants, f"no Tenant {ns} in hangar-tenancy (tenants: {sorted(tenants)})"
        apps = {a["appId"]: a for a in tenants[ns]["spec"]["apps"]}
        assert app_id in apps, f"Tenant {ns} declares no app {app_id} (apps: {sorted(apps)})"
        context = security_context(pod.spec, pod.container)
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] in apps[app_id].get("uids", []), "the pod's uid is not one the Tenant allows"
        assert context["runAsGroup"] in apps[app_id].get("gids", []), "the pod's gid is not one the Tenant allows"
        assert context["allowPrivilegeEscalation"] is False and context["capabilities"]["drop"] == ["ALL"]
        assert context["readOnlyRootFilesystem"] is True


def test_the_app_sends_the_token_the_daemon_reads(example):
    """The token lives in two Secrets (hangar-system for the daemon, the app's namespace for the app): they
    must hold the same value. The daemon trims its file; the app sends its variable as it is, and a trailing
    newline there makes the header invalid (the SDK's health probe then fails)."""
    token_files = token_file_paths(example.tenants())
    daemon_tokens = example.files("Secret", "hangar-tokens", "hangar-system")
    for deployment in app_deployments(example):
        ns = deployment["metadata"]["namespace"]
        pod = Pod.of(Node(Path("/nonexistent")), example, deployment)
        _, app_id = grpc_endpoint_app(pod.container["env"])
        token = pod.environment({})["DAPR_API_TOKEN"]
        path = token_files[(ns, app_id)]
        assert token == token.strip(), f"{ns}/{app_id}: DAPR_API_TOKEN {token!r} has surrounding whitespace"
        assert token == daemon_tokens[Path(path).name].decode().strip(), (
            f"{ns}/{app_id}: DAPR_API_TOKEN differs from the daemon's {path}"
        )
        other_keys = set(example.files("Secret", next(
            e["valueFrom"]["secretKeyRef"]["name"] for e in pod.container["env"] if e["name"] == "DAPR_API_TOKEN"
        ), ns)) - {Path(path).name}
        assert not other_keys, f"{ns}/{app_id}'s token Secret also holds {other_keys}"
        http = next(e["value"] for e in pod.container["env"] if e["name"] == "DAPR_HTTP_ENDPOINT")
        http_listen = flag_values(hangard_container(example)["args"])["--http-listen"]
        assert http == f"http://$(HOST_IP):{http_listen.rsplit(':', 1)[1]}"


# ---------------------------------------------------------------------------------------------------------------
# The image.


def test_the_runtime_image_installs_every_library_hangard_links():
    """Every shared library `ldd hangard` reports, but the Swift runtime's (the image links it statically with
    --static-swift-stdlib), comes from a package the runtime stage installs, a dependency of one, or one that
    debian:bookworm-slim has."""
    stages = containerfile_stages()
    runtime = stages[-1]
    assert runtime.image == "debian:bookworm-slim", runtime.image
    in_slim = {"libc6", "libgcc-s1", "libstdc++6"}
    provided = in_slim | with_dependencies(runtime.apt_installs())
    missing = {}
    for name, path in linked_libraries(HANGARD).items():
        if "/lib/swift/" in path:
            continue
        package = debian_package(path)
        assert package is not None, f"{name} ({path}) comes from no Debian package"
        if package not in provided:
            missing[name] = package
    assert not missing, f"the runtime stage does not install (library: package): {missing}"


def test_the_image_builds_hangard_statically_on_the_runtime_debian_release():
    build, runtime = containerfile_stages()[0], containerfile_stages()[-1]
    assert build.image.startswith("swift:6.") and build.image.endswith("-bookworm"), build.image
    assert "libsystemd-dev" in build.apt_installs()
    builds = [r for r in build.runs() if "swift build" in r]
    assert builds and all(f in builds[0] for f in ("-c release", "--product hangard", "--static-swift-stdlib"))
    # The image holds the binary scripts/run.sh starts and the benchmarks measure: the same release flags as
    # scripts/lib/build-hangard.sh (Package.swift adds the release link options to both).
    script = (REPO_ROOT / "scripts" / "lib" / "build-hangard.sh").read_text()
    release_flags = re.search(r"^\s*release\) flags=\(([^)]*)\)", script, re.MULTILINE)
    assert release_flags, "scripts/lib/build-hangard.sh has no release) flags=(...) line"
    for flag in release_flags.group(1).split():
        assert flag in builds[0].split(), f"the Containerfile's build lacks {flag} (scripts/lib/build-hangard.sh)"
    copied = [rest for instruction, rest in runtime.instructions if instruction == "COPY"]
    assert any(c.startswith(f"--from={build.name} ") and c.endswith("/usr/local/bin/hangard") for c in copied)
    instructions = dict(runtime.instructions)
    assert json.loads(instructions["ENTRYPOINT"]) == ["/usr/local/bin/hangard"]
    assert instructions.get("USER", "0:0").split(":")[0] in ("0", "root"), "hangard must run as root to chown"


def test_the_build_context_leaves_out_build_output():
    ignored = {line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()}
    assert {".build", ".build-*", ".venv", ".git"} <= ignored


# ---------------------------------------------------------------------------------------------------------------
# The rendered DaemonSet, running.


def capability_prefix(context: dict[str, Any]) -> list[str]:
    """setpriv arguments that leave root only the capabilities `context` adds (what the container runtime
    does with `drop: [ALL]` and `add`) and set no_new_privs for allowPrivilegeEscalation: false."""
    assert context["capabilities"]["drop"] == ["ALL"]
    keep = "".join(f",+{c.lower()}" for c in context["capabilities"].get("add", []))
    prefix = ["setpriv", f"--bounding-set=-all{keep}", "--inh-caps=-all"]
    if context.get("allowPrivilegeEscalation") is False:
        prefix.append("--no-new-privs")
    return prefix


class RenderedHangard(Hangard):
    """hangard run as the DaemonSet runs it: its args, with paths inside the simulated volumes and the node's
    ports on free local ones; as root, under the capabilities the security context leaves."""

    def __init__(self, pod: Pod, prefix: list[str], apps: tuple[tuple[str, str], ...]):
        flags = flag_values(pod.container["args"])
        super().__init__(
            pod.node.root,
            tenancy=None,
            resources=None,
            apps=apps,
            socket_root=pod.local(flags["--socket-root"]),
            data_dir=pod.local(flags["--data-dir"]),
        )
        self.pod = pod
        self.prefix = prefix

        def port(flag: str) -> int:
            return int(flags[flag].rsplit(":", 1)[1])

        # The node's ports (hostNetwork: the container ports) → local ones.
        self.ports = {port("--http-listen"): self.http_port, port("--grpc-listen"): self.grpc_port}
        self.ports[port("--metrics-listen")] = free_port()

    @property
    def command(self) -> list[str]:
        args = [str(self.pod.local(a)) if a.startswith("/") else a for a in self.pod.args(self.ports)]
        return [*self.prefix, str(HANGARD), *args]


def start_example_node(factory: Any, prefix: list[str] | None = None) -> tuple[RenderedHangard, Manifests]:
    """The example overlay's DaemonSet running on a simulated node; `prefix` defaults to the capabilities of
    its security context when the tests run as root."""
    manifests = Manifests(EXAMPLE)
    node = Node(factory.root())
    os.chmod(node.root, 0o755)  # the app's uid must reach its socket directory
    pod = Pod.of(node, manifests, manifests.daemonset(), "hangard")
    tenancy = (pod.mount_of(flag_values(pod.container["args"])["--tenancy"]) or {}).get("name")

    def relocate(volume: str, key: str, data: bytes) -> bytes:
        # An absolute apiTokenFile names the path inside the container: point it at the simulated volume.
        if volume != tenancy:
            return data
        text = re.sub(r"(apiTokenFile:\s*)(/\S+)", lambda m: m.group(1) + str(pod.local(m.group(2))), data.decode())
        return text.encode()

    pod.lay_out_volumes(relocate)
    if prefix is None:
        prefix = capability_prefix(security_context(pod.spec, pod.container)) if os.geteuid() == 0 else []
    apps = tuple((ns, a["appId"]) for ns, t in manifests.tenants().items() for a in t["spec"]["apps"])
    daemon = RenderedHangard(pod, prefix, apps)
    factory.daemons.append(daemon)
    return daemon, manifests


def test_the_probes_answer_on_the_daemon_the_daemonset_runs(hangard_factory):
    daemon, manifests = start_example_node(hangard_factory)
    daemon.start()
    ctr = daemon.pod.container
    http_port = int(flag_values(ctr["args"])["--http-listen"].rsplit(":", 1)[1])
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = ctr[kind]["httpGet"]
        port = port_number(ctr, probe["port"])
        assert port == http_port, f"{kind} probes port {port}, the HTTP listener is on {http_port}"
        assert probe.get("scheme", "HTTP") == "HTTP"
        answer = http_request(
            http.client.HTTPConnection(HOST_IP, daemon.ports[port], timeout=5), "GET", probe["path"]
        )
        assert 200 <= answer.status < 300, f"{kind} GET {probe['path']}: {answer}"


APP_CLIENT = r"""
import json, sys
from dapr.clients import DaprClient
store, key, value = sys.argv[1:4]
with DaprClient() as client:  # DAPR_GRPC_ENDPOINT, DAPR_HTTP_ENDPOINT and DAPR_API_TOKEN from the environment
    if value:
        client.save_state(store, key, value)
    print(json.dumps({"value": client.get_state(store, key).data.decode(),
                      "appId": client.get_metadata().application_id}))
"""


def run_app(pod: Pod, ports: dict[int, int], store: str, key: str, value: str = "") -> dict[str, Any]:
    """The official SDK as the app's pod runs it: its environment, its uid and gid, its socket directory."""
    env = pod.environment(ports)
    directory, _ = grpc_endpoint_app(pod.container["env"])
    env["DAPR_GRPC_ENDPOINT"] = env["DAPR_GRPC_ENDPOINT"].replace(directory, str(pod.local(directory)), 1)
    context = security_context(pod.spec, pod.container)
    uid, gid = context["runAsUser"], context["runAsGroup"]
    result = subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--no-new-privs",
         sys.executable, "-I", "-c", APP_CLIENT, store, key, value],
        env={"PATH": os.environ["PATH"], "DAPR_API_TIMEOUT_SECONDS": "10", "DAPR_HEALTH_TIMEOUT": "10", **env},
        capture_output=True, text=True, timeout=60,
    )
    assert "No module named 'dapr'" not in result.stderr, (
        f"uid {uid} cannot read the Dapr SDK in {sys.prefix}: the repository (and its .venv) must be in a directory "
        "other users can traverse (mode 0755 up the path), as the app's uid runs the SDK from it")
    assert result.returncode == 0, f"the app (uid {uid}, gid {gid}, env {env}) failed:\n{result.stderr[-3000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


@needs_root
def test_the_example_app_works_as_deployed_and_across_a_daemon_restart(hangard_factory):
    """The SDK with cart's environment, as uid 1000, reaches hangard (run with the DaemonSet's args and
    capabilities) through the hostPath directory its pod mounts; its token from the shop Secret acts as cart
    on TCP; after a restart of the daemon the directory is the same one (a pod's hostPath mount pins the
    directory, so a re-created one would be invisible to running pods) and the data is still there."""
    daemon, manifests = start_example_node(hangard_factory)
    daemon.start()
    deployment = manifests.get("Deployment", "cart", "shop")
    app = Pod.of(daemon.pod.node, manifests, deployment)
    app.lay_out_volumes()  # hostPath type Directory: hangard must have created it
    assert app.volumes["dapr-sockets"] == daemon.app_dir("shop", "cart")
    directory = daemon.app_dir("shop", "cart").stat()
    assert (directory.st_uid, directory.st_gid, stat.S_IMODE(directory.st_mode)) == (1000, 1000, 0o770)
    store = next(
        doc["metadata"]["name"]
        for text in manifests.files("ConfigMap", "hangar-resources", "hangar-system").values()
        for doc in [yaml.safe_load(text)]
        if doc["spec"]["type"].startswith("state.")
    )

    assert run_app(app, daemon.ports, store, "greeting", "hello") == {"value": "hello", "appId": "cart"}
    # Over TCP, the token the app's Secret holds is cart's.
    env = app.environment(daemon.ports)
    endpoint = urlsplit(env["DAPR_HTTP_ENDPOINT"])
    answer = http_request(
        http.client.HTTPConnection(endpoint.hostname, endpoint.port, timeout=5),
        "GET", f"/v1.0/state/{store}/greeting", headers={"dapr-api-token": env["DAPR_API_TOKEN"]},
    )
    assert (answer.status, answer.body) == (200, b"hello"), answer  # the SDK saved the bytes as they are

    daemon.stop()
    daemon.start()
    again = daemon.app_dir("shop", "cart").stat()
    assert (again.st_ino, again.st_dev) == (directory.st_ino, directory.st_dev), "the app directory was re-created"
    assert run_app(app, daemon.ports, store, "greeting") == {"value": "hello", "appId": "cart"}


# Run as the app's uid: GET /v1.0/metadata on its HTTP socket; prints the status, or the errno.
SOCKET_CLIENT = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
try:
    s.connect(sys.argv[1])
    s.sendall(b"GET /v1.0/metadata HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    print(s.recv(64).split(b" ")[1].decode())
except OSError as e:
    print(f"errno {e.errno}")
"""


@needs_root
@pytest.mark.parametrize("dropped", [None, *CAPABILITIES])
def test_each_capability_the_daemonset_adds_is_needed(hangard_factory, dropped):
    """With the DaemonSet's capabilities, hangard starts, starts again over the app directories it handed to
    uid 1000, and the app (uid 1000) is served both times; without any one of them, something in that
    fails."""
    manifests = Manifests(EXAMPLE)
    context = security_context(manifests.daemonset()["spec"]["template"]["spec"], hangard_container(manifests))
    context = json.loads(json.dumps(context))
    context["capabilities"]["add"] = [c for c in context["capabilities"]["add"] if c != dropped]
    daemon, _ = start_example_node(hangard_factory, capability_prefix(context))
    failure = None
    for attempt in ("first start", "restart"):
        try:
            daemon.start()
        except pytest.fail.Exception as error:
            daemon.kill()
            failure = f"{attempt}: {str(error).splitlines()[0]}"
            break
        answer = subprocess.run(
            ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", sys.executable, "-I", "-S", "-c",
             SOCKET_CLIENT, str(daemon.http_socket("shop", "cart"))],
            capture_output=True, text=True, timeout=30,
        ).stdout.strip()
        daemon.stop()
        if answer != "200":
            failure = f"{attempt}: uid 1000 got {answer or 'nothing'} on cart's socket"
            break
    if dropped is None:
        assert failure is None, failure
    else:
        assert failure is not None, f"hangard needs no {dropped} ({CAPABILITIES[dropped]}): drop it"


# ---------------------------------------------------------------------------------------------------------------
# Live reconfiguration through kubelet's volumes.


def accepts_calls(daemon: Hangard, ns: str, app: str) -> bool:
    if not (daemon.grpc_socket(ns, app).is_socket() and daemon.http_socket(ns, app).is_socket()):
        return False
    try:
        return daemon.http(ns, app, "GET", "/v1.0/metadata", timeout=2).status == 200
    except OSError:
        return False


# Long enough that only inotify can apply a change within the tests' waits: the kubelet layout must be seen as
# it happens, not by the periodic re-check.
NO_POLLING = ("--watch-interval", "60")


def test_configmap_updates_written_as_kubelet_writes_them_reconfigure_the_daemon(hangard_factory):
    root = hangard_factory.root()
    tenancy = KubeletVolume(root / "tenancy")
    resources = KubeletVolume(root / "resources")
    team_a = tenant_yaml("team-a", [{"appId": "orders"}])
    store = component_yaml(STORE, "state.sqlite", {"connectionString": "s.db"})
    tenancy.write({"team-a.yaml": team_a})
    resources.write({"statestore.yaml": store})
    daemon = hangard_factory.start(
        root, tenancy=tenancy.path, resources=resources.path, apps=(("team-a", "orders"),), extra_args=NO_POLLING
    )
    entries = sorted(p.name for p in tenancy.path.iterdir())
    assert entries[0].startswith("..2") and entries[1:] == ["..data", "team-a.yaml"], entries

    # One update: a changed key (a second app for team-a) and a new key (tenant team-b).
    team_a_billing = tenant_yaml("team-a", [{"appId": "orders"}, {"appId": "billing"}])
    tenancy.write({"team-a.yaml": team_a_billing, "team-b.yaml": tenant_yaml("team-b", [{"appId": "payments"}])})
    wait_until(lambda: accepts_calls(daemon, "team-b", "payments"), timeout=5)
    wait_until(lambda: accepts_calls(daemon, "team-a", "billing"), timeout=5)
    daemon.client("team-b", "payments").save_state(STORE, "k", "v")

    # A component added to the resources ConfigMap.
    cache = component_yaml("cache", "state.in-memory")
    resources.write({"statestore.yaml": store, "cache.yaml": cache})

    def cache_works() -> bool:
        answer = daemon.http("team-a", "orders", "POST", "/v1.0/state/cache", [{"key": "k", "value": 1}])
        return answer.status == 204

    wait_until(cache_works, timeout=5)

    # A key removed from the ConfigMap: its tenant's app is removed.
    tenancy.write({"team-a.yaml": team_a_billing})
    wait_until(lambda: not daemon.app_dir("team-b", "payments").exists(), timeout=5)
    assert accepts_calls(daemon, "team-a", "orders") and accepts_calls(daemon, "team-a", "billing")
    rejected = [line for line in daemon.log.splitlines() if " error " in line or "rejected" in line]
    assert not rejected, "the kubelet layout's dot entries were taken for configuration:\n" + "\n".join(rejected)


def test_a_token_rotated_in_its_secret_volume_applies_without_a_restart(hangard_factory):
    """An absolute apiTokenFile in a Secret volume, as the DaemonSet uses it: kubelet swaps `..data`, the
    symlink named by apiTokenFile now leads to the new token."""
    root = hangard_factory.root()
    tokens = KubeletVolume(root / "tokens", mode=0o400)
    tokens.write({"orders.token": "first-token\n"})
    tenancy = root / "tenancy"
    tenancy.mkdir()
    token_file = str(tokens.path / "orders.token")
    (tenancy / "team-a.yaml").write_text(tenant_yaml("team-a", [{"appId": "orders", "apiTokenFile": token_file}]))
    resources = root / "resources"
    resources.mkdir()
    (resources / "store.yaml").write_text(component_yaml(STORE, "state.sqlite", {"connectionString": "s.db"}))
    daemon = hangard_factory.start(
        root, tenancy=tenancy, resources=resources, apps=(("team-a", "orders"),), extra_args=NO_POLLING
    )

    def status(token: str) -> int:
        return daemon.tcp_http("GET", "/v1.0/metadata", headers={"dapr-api-token": token}, timeout=2).status

    assert (status("first-token"), status("second-token")) == (200, 401)
    tokens.write({"orders.token": "second-token\n"})
    wait_until(lambda: (status("first-token"), status("second-token")) == (401, 200), timeout=5)
