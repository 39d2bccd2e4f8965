#!/usr/bin/env python3
"""Runs a command inside the seccomp filters that systemd installs for two settings of
conf/systemd/clipproxy.service, so a test can check that clipproxy works under them without a
running systemd:

  --memory-deny-write-execute   MemoryDenyWriteExecute=yes as systemd 252 builds it: mmap with
                                PROT_WRITE|PROT_EXEC, mprotect/pkey_mprotect adding PROT_EXEC and
                                shmat with SHM_EXEC fail with EPERM.
  --syscall-filter SET          SystemCallFilter=SET (e.g. @system-service), expanded by
                                `systemd-analyze syscall-filter`; `--deny SET` removes a set again
                                (SystemCallFilter=~SET). Stricter than the unit's
                                SystemCallErrorNumber=EPERM: any other call kills the process
                                with SIGSYS, so a test sees it instead of a quietly failing call.

Usage: unit_sandbox.py [--memory-deny-write-execute] [--syscall-filter SET [--deny SET]] -- COMMAND [ARG...]
Uses libseccomp (libseccomp2, a dependency of systemd) through ctypes; Linux x86-64 or arm64.
"""
import argparse
import ctypes
import os
import subprocess
import sys

SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_MASKED_EQ = 7
PROT_WRITE, PROT_EXEC = 0x2, 0x4
SHM_EXEC = 0o100000
EPERM = 1


def scmp_act_errno(errno):
    return 0x00050000 | (errno & 0xFFFF)


class ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                       ctypes.c_uint, ctypes.POINTER(ArgCmp)]
lib.seccomp_load.argtypes = [ctypes.c_void_p]


def syscall_number(name):
    """The syscall's number on this architecture, or None when it has none here."""
    number = lib.seccomp_syscall_resolve_name(name.encode())
    return number if number >= 0 else None


def check(result, what):
    if result != 0:
        sys.exit(f"unit_sandbox: {what} failed: {os.strerror(-result)}")


def expand(name, groups):
    """The syscalls of a set such as @system-service, nested sets included."""
    if not name.startswith("@"):
        return {name}
    if name not in groups:
        sys.exit(f"unit_sandbox: systemd-analyze does not know {name}")
    found = set()
    for member in groups[name]:
        found |= expand(member, groups)
    return found


def syscall_groups():
    out = subprocess.run(["systemd-analyze", "syscall-filter"], check=True, capture_output=True, text=True).stdout
    groups, current = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            current = line.strip()
            groups[current] = []
        elif current and line.strip() and not line.strip().startswith("#"):
            groups[current].append(line.strip())
    return groups


def deny_write_execute():
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    rules = [("mmap", 2, PROT_WRITE | PROT_EXEC), ("mprotect", 2, PROT_EXEC),
             ("pkey_mprotect", 2, PROT_EXEC), ("shmat", 2, SHM_EXEC)]
    for name, arg, mask in rules:
        number = syscall_number(name)
        if number is None:
            continue
        cmp = ArgCmp(arg, SCMP_CMP_MASKED_EQ, mask, mask)
        check(lib.seccomp_rule_add_array(ctx, scmp_act_errno(EPERM), number, 1, ctypes.byref(cmp)), f"rule for {name}")
    check(lib.seccomp_load(ctx), "loading the write-execute filter")


def allow_only(allowed):
    ctx = lib.seccomp_init(SCMP_ACT_KILL_PROCESS)
    for name in sorted(allowed):
        number = syscall_number(name)
        if number is not None:
            check(lib.seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, number, 0, None), f"allowing {name}")
    check(lib.seccomp_load(ctx), "loading the system call filter")


def main():
    parser = argparse.ArgumentParser(description="Run a command under systemd-like seccomp filters.")
    parser.add_argument("--memory-deny-write-execute", action="store_true")
    parser.add_argument("--syscall-filter", action="append", default=[])
    parser.add_argument("--deny", action="append", default=[])
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    allowed = None
    if args.syscall_filter:
        groups = syscall_groups()
        allowed = set().union(*(expand(name, groups) for name in args.syscall_filter))
        for name in args.deny:
            allowed -= expand(name, groups)
        allowed.add("execve")  # the exec below; systemd installs its filter just before it too
    if args.memory_deny_write_execute:
        deny_write_execute()
    if allowed is not None:
        allow_only(allowed)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
