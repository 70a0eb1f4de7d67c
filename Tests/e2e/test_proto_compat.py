"""Wire-compatibility check of Hangar's .proto subset against the official Dapr Python SDK.

Hangar serves a hand-maintained subset of the Dapr runtime API
(Sources/HangarGRPC/Protos). Every message, field, enum value and rpc declared there must be
identical to the descriptors compiled into the `dapr` Python SDK (and, for google.rpc.*, into
googleapis-common-protos, which the SDK depends on): same full name, field number, field name,
type, label, referenced message/enum type, oneof membership and JSON name.

Our protos are compiled with the system `protoc` (grpcio-tools is deliberately not required)
into a FileDescriptorSet, which is loaded into a private DescriptorPool and compared with the
SDK's default pool. The well-known types they import come from where scripts/generate-protos.sh
takes them (scripts/lib/swift-protobuf-source.sh --include: swift-protobuf's own source), not from
wherever the machine's protoc keeps them. scripts/test.sh installs protoc; without it these tests fail.

Run with:  python -m pytest Tests/e2e/test_proto_compat.py
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from google.protobuf import descriptor_pb2, descriptor_pool

# Importing these registers the SDK's descriptors (and all their dependencies) in the
# default pool.
from dapr.proto.common.v1 import common_pb2  # noqa: F401
from dapr.proto.runtime.v1 import appcallback_pb2, dapr_pb2  # noqa: F401
from google.rpc import error_details_pb2, status_pb2  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO_ROOT / "Sources" / "HangarGRPC" / "Protos"

# Packages whose messages must match upstream. hangar.* protos are Hangar's own.
CHECKED_PACKAGES = ("dapr.proto.", "google.rpc")

# The runtime service whose rpcs we document in dapr/proto/runtime/v1/dapr.proto, and the app-side
# services Hangar calls (the app channel), in dapr/proto/runtime/v1/appcallback.proto.
DAPR_SERVICE = "dapr.proto.runtime.v1.Dapr"
APP_SERVICES = (
    "dapr.proto.runtime.v1.AppCallback",
    "dapr.proto.runtime.v1.AppCallbackAlpha",
    "dapr.proto.runtime.v1.AppCallbackHealthCheck",
)

# Fields of the SDK's messages that Hangar's protos deliberately leave out, as
# "<message full name>.<field name>". Anything missing that is not listed here fails
# test_no_unexpected_omissions (so a field dropped by mistake, or a field added by a newer
# SDK, gets noticed). Messages that are absent altogether are not affected.
DELIBERATELY_OMITTED_FIELDS: frozenset[str] = frozenset()


@dataclass(frozen=True)
class OurProtos:
    pool: descriptor_pool.DescriptorPool
    files: tuple[str, ...]  # our .proto files (not the well-known types pulled in by imports)


def _well_known_types_include() -> Path:
    """Directory holding google/protobuf/*.proto: the one rule generate-protos.sh also follows."""
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "lib" / "swift-protobuf-source.sh"), "--include"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"scripts/lib/swift-protobuf-source.sh failed:\n{result.stderr}"
    include = Path(result.stdout.strip())
    assert (include / "google" / "protobuf" / "any.proto").is_file(), f"no google/protobuf/any.proto in {include}"
    return include


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> OurProtos:
    protoc = shutil.which("protoc")
    assert protoc is not None, "protoc is not installed (scripts/test.sh installs Debian's protobuf-compiler)"
    include = _well_known_types_include()

    proto_files = sorted(p.relative_to(PROTO_DIR).as_posix() for p in PROTO_DIR.rglob("*.proto"))
    assert proto_files, f"no .proto files under {PROTO_DIR}"

    out = tmp_path_factory.mktemp("protos") / "hangar.pb"
    result = subprocess.run(
        [
            protoc,
            f"--proto_path={PROTO_DIR}",
            f"--proto_path={include}",
            f"--descriptor_set_out={out}",
            "--include_imports",
            *proto_files,
        ],
        cwd=PROTO_DIR,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"protoc failed:\n{result.stderr}"

    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file_proto in fds.file:  # --include_imports emits dependencies first
        pool.Add(file_proto)
    return OurProtos(pool=pool, files=tuple(proto_files))


@pytest.fixture(scope="module")
def sdk() -> descriptor_pool.DescriptorPool:
    return descriptor_pool.Default()


def _files(ours: OurProtos):
    return [ours.pool.FindFileByName(name) for name in ours.files]


def _checked(full_name: str) -> bool:
    return full_name.startswith(CHECKED_PACKAGES)


def _walk_messages(messages):
    for message in messages:
        yield message
        yield from _walk_messages(message.nested_types)


def _our_messages(ours: OurProtos):
    for file in _files(ours):
        for message in _walk_messages(file.message_types_by_name.values()):
            if _checked(message.full_name):
                yield message


def _our_enums(ours: OurProtos):
    for file in _files(ours):
        yield from (e for e in file.enum_types_by_name.values() if _checked(e.full_name))
        for message in _walk_messages(file.message_types_by_name.values()):
            yield from (e for e in message.enum_types if _checked(e.full_name))


def _label(field) -> str:
    # FieldDescriptor.label was removed in protobuf 7; derive it the same way for both pools.
    if field.is_repeated:
        return "repeated"
    if getattr(field, "is_required", False):
        return "required"
    return "optional"


def _signature(field) -> dict:
    return {
        "number": field.number,
        "name": field.name,
        "type": descriptor_pb2.FieldDescriptorProto.Type.Name(field.type),
        "label": _label(field),
        "type_name": (
            field.message_type.full_name
            if field.message_type is not None
            else field.enum_type.full_name
            if field.enum_type is not None
            else None
        ),
        "oneof": field.containing_oneof.name if field.containing_oneof is not None else None,
        "json_name": field.json_name,
        "deprecated": field.GetOptions().deprecated,
    }


def _sdk_message(sdk, full_name):
    try:
        return sdk.FindMessageTypeByName(full_name)
    except KeyError:
        return None


def test_protos_compile_and_cover_expected_files(ours):
    names = set(ours.files)
    for expected in (
        "dapr/proto/common/v1/common.proto",
        "dapr/proto/runtime/v1/dapr.proto",
        "dapr/proto/runtime/v1/appcallback.proto",
        "google/rpc/status.proto",
        "google/rpc/error_details.proto",
    ):
        assert expected in names


def test_messages_match_sdk(ours, sdk):
    problems: list[str] = []
    checked = 0
    for message in _our_messages(ours):
        upstream = _sdk_message(sdk, message.full_name)
        if upstream is None:
            problems.append(f"{message.full_name}: no such message in the SDK")
            continue
        if message.GetOptions().map_entry != upstream.GetOptions().map_entry:
            problems.append(f"{message.full_name}: map_entry differs")
        for field in message.fields:
            checked += 1
            theirs = upstream.fields_by_number.get(field.number)
            if theirs is None:
                problems.append(f"{message.full_name}.{field.name} = {field.number}: no field with that number in the SDK")
                continue
            mine_sig, their_sig = _signature(field), _signature(theirs)
            for key in mine_sig:
                if mine_sig[key] != their_sig[key]:
                    problems.append(
                        f"{message.full_name}.{field.name} = {field.number}: {key} is {mine_sig[key]!r}, SDK has {their_sig[key]!r}"
                    )
    assert checked > 0, "no dapr.proto.* / google.rpc.* fields found in our protos"
    assert not problems, "Hangar protos differ from the Dapr SDK descriptors:\n  " + "\n  ".join(problems)


def test_enums_match_sdk(ours, sdk):
    problems: list[str] = []
    for enum in _our_enums(ours):
        try:
            upstream = sdk.FindEnumTypeByName(enum.full_name)
        except KeyError:
            problems.append(f"{enum.full_name}: no such enum in the SDK")
            continue
        for value in enum.values:
            theirs = upstream.values_by_name.get(value.name)
            if theirs is None:
                problems.append(f"{enum.full_name}.{value.name}: no such value in the SDK")
            elif theirs.number != value.number:
                problems.append(f"{enum.full_name}.{value.name}: number {value.number}, SDK has {theirs.number}")
        missing = sorted(set(upstream.values_by_name) - set(enum.values_by_name))
        if missing:
            problems.append(f"{enum.full_name}: values missing compared to the SDK: {missing}")
    assert not problems, "Hangar enums differ from the Dapr SDK:\n  " + "\n  ".join(problems)


def test_no_unexpected_omissions(ours, sdk):
    """Messages we define should carry every field the SDK defines, unless deliberately omitted."""
    missing: list[str] = []
    for message in _our_messages(ours):
        upstream = _sdk_message(sdk, message.full_name)
        if upstream is None:
            continue  # reported by test_messages_match_sdk
        for theirs in upstream.fields:
            key = f"{message.full_name}.{theirs.name}"
            if theirs.number not in message.fields_by_number and key not in DELIBERATELY_OMITTED_FIELDS:
                missing.append(f"{key} = {theirs.number}")
    assert not missing, (
        "SDK fields missing from Hangar's protos (add them, or list them in DELIBERATELY_OMITTED_FIELDS):\n  "
        + "\n  ".join(missing)
    )


@pytest.mark.parametrize("service_name", (DAPR_SERVICE, *APP_SERVICES))
def test_service_methods_match_sdk(ours, sdk, service_name):
    service = ours.pool.FindServiceByName(service_name)
    upstream = sdk.FindServiceByName(service_name)
    assert len(service.methods) > 0
    problems: list[str] = []
    for method in service.methods:
        theirs = upstream.methods_by_name.get(method.name)
        if theirs is None:
            problems.append(f"rpc {method.name}: not in the SDK's {service_name}")
            continue
        for attr in ("input_type", "output_type"):
            mine_t, their_t = getattr(method, attr).full_name, getattr(theirs, attr).full_name
            if mine_t != their_t:
                problems.append(f"rpc {method.name}: {attr} is {mine_t}, SDK has {their_t}")
        for attr in ("client_streaming", "server_streaming"):
            if getattr(method, attr) != getattr(theirs, attr):
                problems.append(f"rpc {method.name}: {attr} is {getattr(method, attr)}, SDK has {getattr(theirs, attr)}")
        if method.GetOptions().deprecated != theirs.GetOptions().deprecated:
            problems.append(f"rpc {method.name}: deprecated option differs from the SDK")
    assert not problems, f"service {service_name} differs from the SDK:\n  " + "\n  ".join(problems)


def test_only_known_services_are_declared_in_dapr_package(ours):
    """Keep each service declaration unique so a doc block can't drift into a second copy."""
    services = [
        s.full_name
        for f in _files(ours)
        for s in f.services_by_name.values()
        if s.full_name.startswith("dapr.")
    ]
    assert sorted(services) == sorted([DAPR_SERVICE, *APP_SERVICES])
