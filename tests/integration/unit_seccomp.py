#!/usr/bin/python3
"""unit_seccomp.py [--extra=NAME,...] UNIT COMMAND...: runs COMMAND under the system-call filter a systemd unit
asks for (its SystemCallFilter= lines, groups expanded as `systemd-analyze syscall-filter`
lists them on this machine, SystemCallErrorNumber=, else EPERM), applied with libseccomp as
systemd would apply it, so that a test runs approvald the way approvald.service runs it.
Calls libseccomp does not know on this architecture are left out, as systemd leaves them.
--extra adds calls a test harness needs (a sanitizer's)."""

import errno
import os
import subprocess
import sys

import seccomp


def groups():
    out = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True,
                         check=True).stdout
    g, cur = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            cur = g.setdefault(line.strip(), [])
        elif cur is not None and line.strip() and not line.strip().startswith("#"):
            cur.append(line.strip())
    return g


def expand(name, g, seen=None):
    seen = set() if seen is None else seen
    if not name.startswith("@"):
        return {name}
    if name in seen:
        return set()
    seen.add(name)
    if name not in g:
        raise SystemExit("unit_seccomp: unknown group %s" % name)
    out = set()
    for m in g[name]:
        out |= expand(m, g, seen)
    return out


def main():
    args = sys.argv[1:]
    extra = set()
    if args and args[0].startswith("--extra="):
        extra = set(args.pop(0)[len("--extra="):].split(","))
    unit, cmd = args[0], args[1:]
    g = groups()
    allowed, denied, err = set(), set(), errno.EPERM
    for line in open(unit).read().splitlines():
        key, _, value = line.partition("=")
        if key == "SystemCallFilter" and value:
            neg = value.startswith("~")
            names = set()
            for item in value.lstrip("~").split():
                names |= expand(item, g)
            (denied if neg else allowed).update(names)
        elif key == "SystemCallErrorNumber":
            err = getattr(errno, value.strip())
    if not allowed:
        raise SystemExit("unit_seccomp: %s has no SystemCallFilter allow-list" % unit)
    allowed |= extra
    f = seccomp.SyscallFilter(defaction=seccomp.ERRNO(err))
    for name in sorted(allowed - denied):
        try:
            f.add_rule(seccomp.ALLOW, name)
        except (RuntimeError, ValueError, OSError):
            pass  # not a call of this architecture
    f.load()
    os.execv(cmd[0], cmd)


main()
