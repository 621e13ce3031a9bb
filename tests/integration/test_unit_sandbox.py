"""approvald runs under approvald.service's system-call filter (issue 23): the isolated
deployment (whose per-client process loads its own seccomp filter: `seccomp` must be in the
unit's list, which `@system-service` alone is not), the approvals page, a policy reload and a
clean stop, with the filter applied as systemd applies it (unit_seccomp.py).  The same unit
without `seccomp` in its list stops approvald at start: the check bites."""

import os
import re
import signal
import socket
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import p11g  # noqa: E402
from test_isolated import approved_op  # noqa: E402
from test_module_gate import DIGEST, Token, guarded  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
UNIT = os.path.join(p11g.BUILD, "approvald", "approvald.service")


@pytest.fixture
def iso(accounts):
    t = Token("isolated")
    yield t
    t.cleanup()


def wrap(monkeypatch, unit):
    assert os.path.exists(unit), "approvald.service not built at %s" % unit
    # LeakSanitizer stops the process's threads with ptrace to scan them at exit
    # (meson says "none" for the normal build: the unit's list alone there)
    extra = "--extra=ptrace " if os.environ.get("P11GATE_SANITIZE", "") not in ("", "none") \
        else ""
    monkeypatch.setenv("P11GATE_APPROVALD_WRAPPER", "/usr/bin/python3 %s %s%s"
                       % (os.path.join(HERE, "unit_seccomp.py"), extra, unit))


def test_approvald_serves_under_the_units_filter(iso, start_daemon, monkeypatch, tmp_path):
    wrap(monkeypatch, UNIT)
    web = str(tmp_path / "web.sock")
    os.chmod(str(tmp_path), 0o755)
    d = iso.start(start_daemon, guarded(), web_socket=web)
    env = iso.gate_env(d)
    # the per-client process loaded its filter and the module: refused, then signs
    out = iso.pk11("sign", env, label="ec", mech="CKM_ECDSA", data=DIGEST.hex())
    assert out["results"][0]["signature"] is None, out
    approved_op(d, 1)
    out = iso.pk11("sign", env, label="ec", mech="CKM_ECDSA", data=DIGEST.hex())
    assert out["results"][0]["signature"], out
    # approvald-web answers
    with socket.socket(socket.AF_UNIX) as c:
        c.settimeout(10)
        c.connect(web)
        c.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        reply = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 ") and b"<html" in reply, reply[:300]
    # a reload, then the fixture's SIGTERM must end it with 0
    d.proc.send_signal(signal.SIGHUP)
    assert p11g.wait_for(lambda: "policy unchanged" in d.stderr(), 10), d.stderr()
    assert "Operation not permitted" not in d.stderr(), d.stderr()


def test_without_seccomp_in_the_list_it_refuses_to_start(iso, start_daemon, monkeypatch,
                                                         tmp_path):
    bad = str(tmp_path / "approvald.service")
    text = open(UNIT).read()
    assert re.search(r"(?m)^SystemCallFilter=@system-service seccomp$", text), text
    with open(bad, "w") as f:
        f.write(re.sub(r"(?m)^SystemCallFilter=@system-service seccomp$",
                       "SystemCallFilter=@system-service", text))
    wrap(monkeypatch, bad)
    with pytest.raises(AssertionError) as e:
        iso.start(start_daemon, guarded())
    # approvald's own refusal (host_sandbox.c: loading the seccomp filter), not a failure of
    # the wrapper (its messages name it; the start's message cuts approvald's lines short)
    assert "seccomp" in str(e.value), e.value
    assert "unit_seccomp" not in str(e.value) and "No module named" not in str(e.value), e.value
