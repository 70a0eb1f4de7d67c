"""The sandbox of daemonset/systemd/hangard.service, reproduced without systemd, for test_deploy_systemd.py.

The test machines do not run systemd as PID 1, so the unit cannot be started there. What can go wrong with its
hardening is that hangard needs something it forbids: a system call outside SystemCallFilter=, a socket family
outside RestrictAddressFamilies=, writable+executable memory (MemoryDenyWriteExecute=), or a capability outside
CapabilityBoundingSet=. This module builds those restrictions from the unit file itself, the way systemd does:

- the capability bounding set and no_new_privs with `setpriv` (util-linux);
- three seccomp filters with libseccomp (the library systemd uses), loaded through ctypes, one per setting, as
  systemd loads one filter per setting (the kernel applies the most restrictive answer of all of them):
    SystemCallFilter=         allow-list, anything else fails with SystemCallErrorNumber= (EPERM);
    RestrictAddressFamilies=  socket() with another family fails with EAFNOSUPPORT;
    MemoryDenyWriteExecute=   mmap(PROT_WRITE|PROT_EXEC), mprotect(PROT_EXEC), pkey_mprotect(PROT_EXEC) and
                              shmat(SHM_EXEC) fail with EPERM.

Run as a program, it is the launcher that installs the filters and then executes hangard:

    setpriv --bounding-set=... --nnp -- python systemd_sandbox.py FILTER.json -- /path/to/hangard ARGS...

File-system settings (ProtectSystem=, PrivateTmp=, ...) need mount namespaces and are not reproduced; the test
gives hangard the directories the unit would make writable.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

# --- reading the unit --------------------------------------------------------------------------------------------


def unit_settings(path: Path) -> dict[str, list[str]]:
    """Every `Key=value` of a unit file, values in order (continuation lines joined, comments dropped)."""
    settings: dict[str, list[str]] = {}
    logical = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith(("#", ";", "["))):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        key, _, value = logical.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
        logical = ""
    return settings


def expand_syscall_group(name: str, cache: dict[str, set[str]] | None = None) -> set[str]:
    """A system call or an @group, expanded recursively with `systemd-analyze syscall-filter` (the same tables
    systemd uses for the unit)."""
    if not name.startswith("@"):
        return {name}
    cache = {} if cache is None else cache
    if name not in cache:
        output = subprocess.run(
            ["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, check=True, timeout=30
        ).stdout
        members: set[str] = set()
        cache[name] = members  # guards against cycles
        for line in output.splitlines()[1:]:
            entry = line.strip()
            if entry and not entry.startswith("#"):
                members |= expand_syscall_group(entry, cache)
    return cache[name]


def syscall_allow_list(settings: dict[str, list[str]]) -> set[str]:
    """The system calls SystemCallFilter= allows, with systemd's rules: the first line decides whether it is an
    allow-list (no '~'), then each later line removes ('~') or adds, in order; an empty value resets. An
    allow-list always starts with @default (execve, exit, getrlimit, reading the time, sleeping... which
    systemd.exec(5) says are always allowed)."""
    allowed: set[str] | None = None
    cache: dict[str, set[str]] = {}
    for value in settings.get("SystemCallFilter", []):
        if not value:
            allowed = None
            continue
        deny = value.startswith("~")
        names: set[str] = set()
        for item in value.lstrip("~").split():
            names |= expand_syscall_group(item.split(":")[0], cache)
        if allowed is None:
            if deny:
                raise ValueError("SystemCallFilter= starts with a deny-list; this reproduction handles allow-lists")
            allowed = expand_syscall_group("@default", cache) | names
        elif deny:
            allowed -= names
        else:
            allowed |= names
    if allowed is None:
        raise ValueError("the unit has no SystemCallFilter=")
    return allowed


ADDRESS_FAMILIES = {"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10, "AF_NETLINK": 16, "AF_PACKET": 17}


def filter_spec(unit: Path) -> dict:
    """What the launcher needs, read from the unit file."""
    settings = unit_settings(unit)
    error_name = (settings.get("SystemCallErrorNumber") or ["EPERM"])[-1]
    families = (settings.get("RestrictAddressFamilies") or [""])[-1].split()
    return {
        "allow": sorted(syscall_allow_list(settings)),
        "errno": getattr(errno, error_name),
        "families": [ADDRESS_FAMILIES[f] for f in families],
        "memory_deny_write_execute": (settings.get("MemoryDenyWriteExecute") or ["no"])[-1] == "yes",
        "umask": (settings.get("UMask") or ["0022"])[-1],
    }


def setpriv_prefix(unit: Path) -> list[str]:
    """setpriv arguments for CapabilityBoundingSet=, AmbientCapabilities= (empty) and NoNewPrivileges=yes."""
    settings = unit_settings(unit)
    caps = (settings.get("CapabilityBoundingSet") or [""])[-1].split()
    assert all(re.fullmatch(r"CAP_[A-Z_]+", cap) for cap in caps), caps
    bounding = ",".join(["-all"] + ["+" + cap.removeprefix("CAP_").lower() for cap in caps])
    args = ["setpriv", f"--bounding-set={bounding}", "--inh-caps=-all", "--ambient-caps=-all"]
    if (settings.get("NoNewPrivileges") or ["no"])[-1] == "yes":
        args.append("--no-new-privs")
    return args + ["--"]


# --- loading the filters (the launcher) --------------------------------------------------------------------------

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ = 4
SCMP_CMP_GT = 6
SCMP_CMP_MASKED_EQ = 7
PROT_WRITE, PROT_EXEC = 0x2, 0x4
SHM_EXEC = 0o100000


def SCMP_ACT_ERRNO(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class ArgCmp(ctypes.Structure):
    """struct scmp_arg_cmp: argument number, comparison, and one or two operands."""

    _fields_ = [
        ("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64),
    ]  # fmt: skip


def _libseccomp() -> ctypes.CDLL:
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(ArgCmp),
    ]  # fmt: skip
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


def _load(lib: ctypes.CDLL, default: int, rules: list[tuple[int, str, list[tuple[int, int, int, int]]]]) -> None:
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise OSError("seccomp_init failed")
    try:
        for action, name, comparisons in rules:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:  # not a system call on this architecture (e.g. chown32 on x86-64)
                continue
            array = (ArgCmp * max(1, len(comparisons)))(*[ArgCmp(*c) for c in comparisons])
            result = lib.seccomp_rule_add_array(ctx, action, number, len(comparisons), array)
            if result != 0:
                raise OSError(-result, f"seccomp_rule_add {name}: {os.strerror(-result)}")
        result = lib.seccomp_load(ctx)
        if result != 0:
            raise OSError(-result, f"seccomp_load: {os.strerror(-result)}")
    finally:
        lib.seccomp_release(ctx)


def install_filters(spec: dict) -> None:
    lib = _libseccomp()
    # RestrictAddressFamilies=: socket() with a family not listed fails with EAFNOSUPPORT.
    if spec["families"]:
        allowed = set(spec["families"])
        refuse = SCMP_ACT_ERRNO(errno.EAFNOSUPPORT)
        others = [family for family in range(max(allowed)) if family not in allowed]
        rules = [(refuse, "socket", [(0, SCMP_CMP_EQ, family, 0)]) for family in others]
        rules.append((refuse, "socket", [(0, SCMP_CMP_GT, max(allowed), 0)]))
        _load(lib, SCMP_ACT_ALLOW, rules)
    # MemoryDenyWriteExecute=: as systemd's seccomp_memory_deny_write_execute().
    if spec["memory_deny_write_execute"]:
        refuse = SCMP_ACT_ERRNO(errno.EPERM)
        write_exec = PROT_WRITE | PROT_EXEC
        _load(
            lib,
            SCMP_ACT_ALLOW,
            [
                (refuse, "mmap", [(2, SCMP_CMP_MASKED_EQ, write_exec, write_exec)]),
                (refuse, "mprotect", [(2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC)]),
                (refuse, "pkey_mprotect", [(2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC)]),
                (refuse, "shmat", [(2, SCMP_CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC)]),
            ],
        )
    # SystemCallFilter=: an allow-list; everything else fails with SystemCallErrorNumber=. Loaded last (systemd too
    # installs it as its last step before execve()), because it forbids seccomp() itself.
    _load(lib, SCMP_ACT_ERRNO(spec["errno"]), [(SCMP_ACT_ALLOW, name, []) for name in spec["allow"]])


def main(argv: list[str]) -> None:
    if len(argv) < 4 or argv[2] != "--":
        sys.exit(f"usage: {argv[0]} FILTER.json -- PROGRAM [ARGS...]")
    spec = json.loads(Path(argv[1]).read_text())
    os.umask(int(spec.get("umask", "0022"), 8))
    install_filters(spec)
    os.execv(argv[3], argv[3:])


if __name__ == "__main__":
    main(sys.argv)
