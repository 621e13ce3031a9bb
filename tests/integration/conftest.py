"""pytest fixtures for the approvald integration tests (see p11g.py)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import p11g  # noqa: E402

import re  # noqa: E402

SANITIZER_REPORT = re.compile(r"ERROR: (Address|Leak)Sanitizer|runtime error: ")


@pytest.fixture(scope="session")
def accounts():
    """The p11gt- test users and groups (created once, left in place)."""
    if os.geteuid() != 0:
        pytest.fail("the approvald integration tests run as root (they create test "
                    "accounts and run clients as those users)")
    if not os.access(p11g.APPROVALD, os.X_OK):
        pytest.fail("approvald binary not found at %s (set P11GATE_BUILD)" % p11g.APPROVALD)
    p11g.ensure_accounts()
    return p11g


@pytest.fixture
def start_daemon(accounts):
    """Factory: start_daemon(policy=None, files=None) -> a running p11g.Daemon.
    Each is stopped with SIGTERM at teardown and must exit 0 within 5 s."""
    started = []

    def start(policy=None, files=None, config=None):
        d = p11g.Daemon(policy=policy, files=files, config=config)
        started.append(d)
        d.start()
        return d

    yield start
    problems = []
    for d in started:
        if d.stopped or not d.ready:
            # the test stopped it (and checked how), or it never started
            d.kill()
            d.cleanup()
            continue
        was_alive = d.alive()
        rc = d.stop(5.0)
        if not was_alive:
            problems.append("approvald died during the test (exit %s); stderr:\n%s"
                            % (d.proc.returncode if d.proc else None, d.stderr()))
        elif rc is None:
            problems.append("approvald did not exit within 5 s of SIGTERM; stderr:\n%s"
                            % d.stderr())
        elif rc != 0:
            problems.append("approvald exited %s after SIGTERM; stderr:\n%s" % (rc, d.stderr()))
        elif SANITIZER_REPORT.search(d.stderr()):
            # approvald's children (approvald-web, approvald-notify, ...) write to its log: a
            # report from one that was then started again fails the test too
            problems.append("a sanitizer report in approvald's log:\n%s" % d.stderr())
        d.cleanup()
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture
def daemon(start_daemon):
    """A daemon running the default test policy (p11g.default_policy())."""
    return start_daemon()


# ---- ocisign (ocireg.py is imported here only when a test asks for these) ----

@pytest.fixture
def oci_registry():
    """docker-registry on 127.0.0.1 over plain http with htpasswd auth (ocireg.PLAIN_HTTP)."""
    import ocireg
    r = ocireg.Registry(auth="htpasswd").start()
    yield r
    r.stop()


@pytest.fixture
def oci_token(accounts):
    """A SoftHSMv2 token with ocireg.SoftToken's keys, owned by the orderer, so that ocisign run
    as the orderer can sign with it."""
    import ocireg
    t = ocireg.SoftToken(owner="orderer")
    yield t
    t.cleanup()
