"""approvald tells systemd when it is ready (Type=notify in approvald.service): READY=1 once
every socket listens, RELOADING=1 then READY=1 around a SIGHUP's policy reload, STOPPING=1 on
SIGTERM; nothing, and no harm, without $NOTIFY_SOCKET or with a socket nobody reads."""

import os
import signal
import socket
import subprocess
import tempfile
import time

import pytest

import p11g

POLICY = '{"default": "deny", "rules": []}\n'


def serve(tmp, notify):
    policy = os.path.join(tmp, "policy")
    os.makedirs(policy, exist_ok=True)
    with open(os.path.join(policy, "a.json"), "w") as f:
        f.write(POLICY)
    env = dict(p11g.CLEAN_ENV)
    if notify is not None:
        env["NOTIFY_SOCKET"] = notify
    sock = os.path.join(tmp, "approvald.sock")
    p = subprocess.Popen([p11g.APPROVALD, "serve", "--state-dir", os.path.join(tmp, "state"),
                          "--socket", sock, "--policy-dir", policy], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return p, sock


def messages(rx, until, timeout=15):
    """Datagrams until one holds `until` (a line); the datagrams in order."""
    got = []
    deadline = time.monotonic() + timeout
    while True:
        rx.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            got.append(rx.recv(4096).decode())
        except socket.timeout:
            raise AssertionError("no %r within %ss; got %r" % (until, timeout, got))
        if until in got[-1].split("\n"):
            return got


def stop(p):
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    return err


@pytest.mark.parametrize("abstract", [False, True])
def test_ready_reloading_stopping(abstract):
    with tempfile.TemporaryDirectory(prefix="p11gt-notify-") as tmp:
        rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = "@p11gt-notify-%d" % os.getpid()
            rx.bind("\0" + name[1:])
        else:
            name = os.path.join(tmp, "notify")
            rx.bind(name)
        p, sock = serve(tmp, name)
        try:
            got = messages(rx, "READY=1")
            # ready means serving: the first client is answered
            r = p11g.approvald("status", "--socket", sock)
            assert r.rc == 0, r
            assert got[-1].startswith("READY=1\nSTATUS=serving on %s: 0 rules" % sock), got
            # a reload is told as one
            with open(os.path.join(tmp, "policy", "a.json"), "w") as f:
                f.write('{"default": "allow", "rules": []}\n')
            before = time.monotonic_ns() // 1000
            p.send_signal(signal.SIGHUP)
            got = messages(rx, "READY=1")
            assert len(got) == 2 and got[1] == "READY=1", got
            first = got[0].split("\n")
            assert first[0] == "RELOADING=1" and first[1].startswith("MONOTONIC_USEC="), got
            # CLOCK_MONOTONIC in µs, as Type=notify-reload reads it
            assert before <= int(first[1].split("=")[1]) <= time.monotonic_ns() // 1000, got
        finally:
            err = stop(p)
        assert "policy reloaded" in err, err
        assert messages(rx, "STOPPING=1") == ["STOPPING=1"]
        rx.close()


def test_nothing_without_a_socket_and_no_harm_with_a_dead_one(tmp_path):
    # no NOTIFY_SOCKET: serves, no warning
    p, sock = serve(str(tmp_path / "a"), None)
    try:
        assert p11g.wait_for(lambda: p11g.approvald("status", "--socket", sock).rc == 0, 15)
    finally:
        err = stop(p)
    assert "systemd" not in err, err
    # a socket path nobody listens on: a warning, and it serves all the same
    p, sock = serve(str(tmp_path / "b"), str(tmp_path / "nobody"))
    try:
        assert p11g.wait_for(lambda: p11g.approvald("status", "--socket", sock).rc == 0, 15)
    finally:
        err = stop(p)
    assert 'telling systemd "READY=1' in err, err
