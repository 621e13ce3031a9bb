"""The wire protocol under bad input, and per-peer limits: a bad peer loses
only its own connection."""

import struct
import subprocess
import sys
import time

import pytest

import p11g
from p11g import assert_refused, assert_reply_ok, digest, frame, keyid


def status_ok(d, user=None):
    assert_reply_ok(d.call({"verb": "status"}, user=user))


BAD_FRAMES = {
    "10MiB-length": struct.pack(">I", 10 * 1024 * 1024) + b"{" * 1024,
    "64KiB+1-length": struct.pack(">I", 64 * 1024 + 1) + b" " * 1024,
    "max-length": struct.pack(">I", 0xFFFFFFFF),
    "zero-length": struct.pack(">I", 0),
    "invalid-json": frame(b'{"v":1,"verb":'),
    "not-json": frame(b"\x00\xff\xfe garbage"),
    "json-array": frame(b'[{"v":1,"verb":"status"}]'),
    "json-string": frame(b'"status"'),
    "trailing-bytes": frame(b'{"v":1,"verb":"status"} {}'),
    "duplicate-keys": frame(b'{"v":1,"verb":"status","verb":"status"}'),
    "invalid-utf8": frame(b'{"v":1,"verb":"st\xc3\x28tus"}'),
}


@pytest.mark.parametrize("name", sorted(BAD_FRAMES))
def test_bad_frame_closes_only_that_connection(daemon, name):
    with daemon.conn() as good:
        assert_reply_ok(good.call({"verb": "status"}))
        with daemon.conn() as bad:
            bad.send_raw(BAD_FRAMES[name])
            assert bad.wait_closed(3.0), "daemon kept the connection open after %s" % name
        # the other connection, opened before, is still served
        assert_reply_ok(good.call({"verb": "status"}))
    status_ok(daemon)
    assert daemon.alive()


def test_truncated_frame_then_close(daemon):
    for data in (b"\x00\x00", struct.pack(">I", 100) + b'{"v":1,', frame({"verb": "status"})[:-1]):
        c = daemon.conn()
        c.send_raw(data)
        c.close()
    status_ok(daemon)
    # a frame split across writes is fine
    with daemon.conn() as c:
        f = frame({"v": 1, "verb": "status"})
        for i in range(len(f)):
            c.send_raw(f[i:i + 1])
        assert_reply_ok(c.recv())
    assert daemon.alive()


def test_unknown_verb_keeps_connection(daemon):
    with daemon.conn() as c:
        assert_refused(c.call({"verb": "frobnicate"}), "unknown_verb")
        assert_reply_ok(c.call({"verb": "status"}))
        assert_refused(c.call({"verb": ""}), "unknown_verb")
        assert_reply_ok(c.call({"verb": "status"}))


def test_many_requests_on_one_connection(daemon):
    with daemon.conn() as c:
        for _ in range(50):
            assert_reply_ok(c.call({"verb": "status"}))


PROD_KEY = [{"uri": "pkcs11:token=prod;object=bad", "uses": 1}]
BAD_REQUESTS = {
    "uses-string": {"verb": "request", "keys": [{"uri": "pkcs11:token=prod;object=bad",
                                                 "uses": "three"}],
                    "valid": 60, "description": "x"},
    "keys-string": {"verb": "request", "keys": "x", "valid": 60, "description": "x"},
    "keys-empty": {"verb": "request", "keys": [], "valid": 60, "description": "x"},
    "key-not-uri": {"verb": "request", "keys": [{"uri": "prod/fw", "uses": 1}],
                    "valid": 60, "description": "x"},
    "valid-string": {"verb": "request", "keys": PROD_KEY, "valid": "1h", "description": "x"},
    "description-number": {"verb": "request", "keys": PROD_KEY, "valid": 60, "description": 5},
    "digest-bad": {"verb": "request", "keys": PROD_KEY, "valid": 60, "description": "x",
                   "digests": ["sha256:xyz"]},
    "for-bad": {"verb": "request", "keys": PROD_KEY, "valid": 60, "description": "x",
                "for": "everyone"},
    "show-id-string": {"verb": "show", "id": "abc"},
    "show-id-missing": {"verb": "show"},
    "show-id-float": {"verb": "show", "id": 1.5},
    "approve-id-bool": {"verb": "approve", "id": True},
    "list-all-string": {"verb": "list", "all": "yes"},
    "audit-since-string": {"verb": "audit", "since": "1"},
    "use-key-string": {"verb": "use", "key": "pkcs11:token=prod;object=bad",
                       "mechanism": "CKM_ECDSA", "digest": digest(1)},
    "use-key-unknown-member": {"verb": "use", "key": dict(keyid("prod", "bad"), colour="red"),
                               "mechanism": "CKM_ECDSA", "digest": digest(1)},
    "use-key-id-not-hex": {"verb": "use", "key": keyid("prod", "bad", "zz"),
                           "mechanism": "CKM_ECDSA", "digest": digest(1)},
    "use-mechanism-number": {"verb": "use", "key": keyid("prod", "bad"),
                             "mechanism": 4161, "digest": digest(1)},
    "use-digest-bad-hex": {"verb": "use", "key": keyid("prod", "bad"),
                           "mechanism": "CKM_ECDSA", "digest": "sha256:zz"},
    "verb-number": {"verb": 5},
    "verb-missing": {"id": 1},
}


# A request with no verb string: bad_request or unknown_verb, but a reply.
EITHER = {"verb-number", "verb-missing"}


def send_bad_request(d, name):
    req = dict(BAD_REQUESTS[name], v=1)
    # requests go out as an orderer of prod keys, so only the malformed
    # argument is wrong; audit as root
    rep = d.call(req, user=None if req.get("verb") == "audit" else "orderer")
    if name in EITHER:
        assert isinstance(rep, dict) and rep.get("ok") is False, rep
        assert rep["error"]["code"] in ("bad_request", "unknown_verb"), rep
    else:
        assert_refused(rep, "bad_request", "for %s" % name)


@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
def test_wrong_types_are_bad_request(daemon, name):
    send_bad_request(daemon, name)
    assert daemon.list_ids("--all") == []


def test_version_must_be_there(daemon):
    with daemon.conn() as c:
        assert_refused(c.call({"verb": "status"}, v=None), "bad_request")
    with daemon.conn() as c:
        assert_refused(c.call({"v": "1", "verb": "status"}, v=None), "bad_request")


def test_bad_input_leaves_daemon_working(daemon):
    """Everything above in a row on one daemon, then ordinary work."""
    for data in BAD_FRAMES.values():
        with daemon.conn() as c:
            c.send_raw(data)
            assert c.wait_closed(3.0)
    for name in BAD_REQUESTS:
        send_bad_request(daemon, name)
    with daemon.conn() as c:
        assert_refused(c.call({"verb": "status"}, v=None), "bad_request")
    p11g.expect_ok(daemon.cli("status"))
    op = daemon.request("orderer", "pkcs11:token=dev;object=after-bad")
    assert daemon.state_of(op) == "approved"
    assert daemon.alive()


HOLDER = r"""
import os, socket, struct, sys, time
path, n = sys.argv[1], int(sys.argv[2])
conns, refused = [], 0
for i in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError:
        refused += 1
        continue
    # some send nothing, some half a length, some a length and half a body
    try:
        if i % 3 == 1:
            s.send(b"\x00\x00")
        elif i % 3 == 2:
            s.send(struct.pack(">I", 200) + b'{"v":1,"verb":')
    except OSError:
        pass
    conns.append(s)
print("ready", len(conns), refused, flush=True)
sys.stdin.read()
"""


def test_idle_connections_of_one_uid_do_not_starve_others(daemon):
    uid, gid, groups = p11g.ids("mallory")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, daemon.sock, "100"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              user=uid, group=gid, extra_groups=groups, cwd="/",
                              env=dict(p11g.CLEAN_ENV))
    try:
        line = holder.stdout.readline()
        assert line.startswith("ready"), "holder failed: %r" % line
        t0 = time.monotonic()
        status_ok(daemon, user="alice")
        r = daemon.cli("status", user="bob", timeout=5)
        assert r.rc == 0, r
        op = daemon.request("orderer", "pkcs11:token=prod;object=lim")
        daemon.approve("alice", op)
        daemon.approve("bob", op)
        daemon.use_ok("orderer", "prod", "lim")
        assert time.monotonic() - t0 < 5, "other users were served slowly"
        # root too
        status_ok(daemon)
    finally:
        holder.stdin.close()
        holder.wait(10)
    assert daemon.alive()
    # mallory is served again once she lets go
    def mallory_served():
        try:
            rep = daemon.call({"verb": "status"}, user="mallory")
        except AssertionError:
            return False
        return rep.get("ok") is True
    assert p11g.wait_for(mallory_served, 3, 0.2)


def test_frame_of_exactly_64KiB_is_read(daemon):
    base = {"v": 1, "verb": "show", "id": 999999, "pad": ""}
    n = len(frame(base)) - 4
    req = dict(base, pad="x" * (p11g.FRAME_MAX - n))
    body = frame(req)
    assert len(body) == 4 + p11g.FRAME_MAX
    with daemon.conn() as c:
        c.send_raw(body)
        rep = c.recv()      # an answer (whatever it says), not a closed connection
        assert rep.get("v") == 1 and rep.get("ok") is False, rep
        assert_reply_ok(c.call({"verb": "status"}))


def test_sigterm_with_clients_connected(daemon):
    """A waiting client and idle peers do not hold up a clean stop."""
    uid, gid, groups = p11g.ids("mallory")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, daemon.sock, "10"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              user=uid, group=gid, extra_groups=groups, cwd="/",
                              env=dict(p11g.CLEAN_ENV))
    uid, gid, groups = p11g.ids("orderer")
    waiter = subprocess.Popen(
        [p11g.APPROVALD, "request", "--socket", daemon.sock,
         "--key", "pkcs11:token=prod;object=term", "--wait=30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
        env=dict(p11g.CLEAN_ENV), user=uid, group=gid, extra_groups=groups)
    try:
        assert holder.stdout.readline().startswith("ready")
        assert p11g.wait_for(lambda: daemon.list_ids(user="alice"), 5)
        t0 = time.monotonic()
        rc = daemon.stop(5.0)
        assert rc == 0, "approvald exit %s on SIGTERM with clients:\n%s" % (rc, daemon.stderr())
        assert time.monotonic() - t0 < 5
        waiter.communicate(timeout=5)   # the client does not hang either
    finally:
        holder.stdin.close()
        holder.wait(10)
        if waiter.poll() is None:
            waiter.kill()
            waiter.communicate()
