"""Operations and uses: all or nothing, counts, expiry, withdraw and revoke,
pinned digests, mechanisms, signers, implicit operations, default policy."""

import re
import subprocess
import time

import p11g
from p11g import (U, assert_reply_ok, digest, expect_fail, expect_ok, keyid,
                  op_of, wait_for)

PROD = "pkcs11:token=prod;object=%s"


def test_all_or_nothing(daemon):
    op = daemon.request("orderer", "pkcs11:token=dev;object=aon", PROD % "aon")
    o = daemon.show(op)
    assert o["state"] == "pending"
    assert sorted(k["rule"] for k in o["keys"]) == ["dev", "prod"]
    # the dev key's rule needs nobody, but the operation is not approved yet
    daemon.use_refused("orderer", "dev", "aon", "pending")
    daemon.use_refused("orderer", "dev", "aon", "pending", operation=op)
    daemon.use_refused("orderer", "prod", "aon", "pending")
    daemon.approve("alice", op)
    assert daemon.state_of(op) == "pending"
    daemon.use_refused("orderer", "dev", "aon", "pending")
    daemon.use_refused("orderer", "prod", "aon", "pending")
    daemon.approve("bob", op)
    assert daemon.state_of(op) == "approved"
    assert daemon.use_ok("orderer", "dev", "aon")["operation"] == op
    assert daemon.use_ok("orderer", "prod", "aon")["operation"] == op
    o = daemon.show(op)
    assert sorted((k["rule"], k["uses"], k["used"]) for k in o["keys"]) == \
        [("dev", 1, 1), ("prod", 1, 1)]
    assert o["state"] == "exhausted"


def test_use_counts(daemon):
    op = daemon.request("orderer", (PROD % "cnt", 3))
    daemon.approve("alice", op)
    daemon.approve("bob", op)
    for i in range(1, 4):
        res = daemon.use_ok("orderer", "prod", "cnt", dig=digest(i))
        assert res["operation"] == op
        assert res["remaining"] == 3 - i, "use %d: %r" % (i, res)
    daemon.use_refused("orderer", "prod", "cnt", "exhausted", dig=digest(4))
    o = daemon.show(op)
    assert o["state"] == "exhausted"
    assert [(k["uses"], k["used"]) for k in o["keys"]] == [(3, 3)]
    daemon.use_refused("orderer", "prod", "cnt", "exhausted", dig=digest(5))
    assert [(k["uses"], k["used"]) for k in daemon.show(op)["keys"]] == [(3, 3)]
    assert op in daemon.list_ids("--all", "--state", "exhausted", user="orderer")


def test_expiry(daemon):
    t0 = time.monotonic()
    op = daemon.request("orderer", (PROD % "exp", 2), valid="2s")
    idle = daemon.request("orderer", PROD % "exp-idle", valid="2s")
    daemon.approve("alice", op)
    daemon.approve("bob", op)
    assert time.monotonic() - t0 < 1.5, "setup too slow for a 2 s validity"
    daemon.use_ok("orderer", "prod", "exp")
    # allow for whole-second timestamps on either side
    time.sleep(max(0.0, t0 + 3.2 - time.monotonic()))
    daemon.use_refused("orderer", "prod", "exp", "expired")
    assert daemon.state_of(op) == "expired"
    assert daemon.state_of(idle) == "expired"
    assert {op, idle} <= set(daemon.list_ids("--all", "--state", "expired", user="orderer"))
    assert idle not in daemon.list_ids(user="alice")
    expired = [op_of(r) for r in daemon.audit() if r.get("event") == "expired"]
    assert sorted(expired) == sorted([op, idle]), "expired audit records: %r" % expired
    expect_fail(daemon.cli("approve", idle, "--yes", user="alice"), "expired")


def test_withdraw(daemon):
    op = daemon.request("orderer", (PROD % "wd", 2))
    daemon.approve("alice", op)
    daemon.approve("bob", op)
    assert daemon.state_of(op) == "approved"
    expect_ok(daemon.cli("withdraw", op, user="alice"))
    o = daemon.show(op)
    assert o["state"] == "pending"
    assert [a["user"] for a in o["approvals"]] == [U("bob")]
    daemon.use_refused("orderer", "prod", "wd", "pending")
    daemon.approve("carol", op)
    assert daemon.state_of(op) == "approved"
    assert daemon.use_ok("orderer", "prod", "wd")["remaining"] == 1
    expect_fail(daemon.cli("withdraw", op, user="bob"), "already_used")
    o = daemon.show(op)
    assert o["state"] == "approved"
    assert sorted(a["user"] for a in o["approvals"]) == [U("bob"), U("carol")]
    assert daemon.use_ok("orderer", "prod", "wd")["remaining"] == 0


def test_revoke(daemon):
    op = daemon.request("orderer", (PROD % "rv1", 5))
    daemon.approve("alice", op)
    daemon.approve("bob", op)
    daemon.use_ok("orderer", "prod", "rv1")
    expect_fail(daemon.cli("revoke", op, "--reason", "mine now", user="mallory"), "forbidden")
    # approving does not make one an admin
    expect_fail(daemon.cli("revoke", op, user="alice"), "forbidden")
    assert daemon.state_of(op) == "approved"
    r = expect_ok(daemon.cli("revoke", op, "--reason", "done", user="orderer"))
    assert "revoked" in r.out.lower(), r
    o = daemon.show(op)
    assert o["state"] == "revoked"
    assert o["revocation"]["user"] == U("orderer")
    assert o["revocation"]["reason"] == "done"
    daemon.use_refused("orderer", "prod", "rv1", "revoked")
    expect_fail(daemon.cli("approve", op, "--yes", user="carol"), "already_decided")

    # a rule admin (dave, group p11gt-security) revokes someone else's operation
    op2 = daemon.request("ci", PROD % "rv2")
    daemon.approve("alice", op2)
    daemon.approve("bob", op2)
    expect_ok(daemon.cli("revoke", op2, "--reason", "incident", user="dave"))
    o = daemon.show(op2)
    assert o["state"] == "revoked" and o["revocation"]["user"] == U("dave")
    daemon.use_refused("ci", "prod", "rv2", "revoked")
    # ... and a pending one
    op3 = daemon.request("ci", PROD % "rv3")
    expect_ok(daemon.cli("revoke", op3, user="dave"))
    assert daemon.state_of(op3) == "revoked"
    # dave is no admin of the dev rule
    dev = daemon.request("ci", "pkcs11:token=dev;object=rv4")
    expect_fail(daemon.cli("revoke", dev, user="dave"), "forbidden")
    assert daemon.state_of(dev) == "approved"


def test_pinned_digests(daemon):
    d1, d2, d3 = digest("build-1"), digest("evil"), digest("build-3")
    op = daemon.request("orderer", ("pkcs11:token=pinned;object=p1", 2), digests=[d1, d3])
    o = daemon.show(op)
    assert o["digests"] == [d1, d3]
    daemon.approve("alice", op)
    assert daemon.state_of(op) == "approved"
    daemon.use_refused("orderer", "pinned", "p1", "digest_mismatch", dig=d2)
    assert daemon.use_ok("orderer", "pinned", "p1", dig=d1)["remaining"] == 1
    daemon.use_refused("orderer", "pinned", "p1", "digest_mismatch", dig=d2)
    assert daemon.use_ok("orderer", "pinned", "p1", dig=d3)["remaining"] == 0
    assert daemon.state_of(op) == "exhausted"


def test_mechanisms(daemon):
    op = daemon.request("orderer", ("pkcs11:token=mech;object=m1", 2))
    daemon.approve("alice", op)
    daemon.use_refused("orderer", "mech", "m1", "mechanism_not_allowed", mechanism="CKM_ECDSA")
    res = daemon.use_ok("orderer", "mech", "m1", mechanism="CKM_SHA256_RSA_PKCS")
    assert res["operation"] == op and res["remaining"] == 1
    k = assert_reply_ok(daemon.call({"verb": "key", "key": keyid("mech", "m1")}))
    assert k["guarded"] is True and k["rule"] == "mech"
    assert k["mechanisms"] == ["CKM_SHA256_RSA_PKCS"]
    assert k["allow_raw"] is False


def test_signer(daemon):
    op = daemon.request("orderer", PROD % "sg", for_="user:p11gt-ci")
    daemon.approve("alice", op)
    daemon.approve("bob", op)
    assert daemon.show(op)["signer"] == "user:p11gt-ci"
    assert op in daemon.list_ids("--all", user="ci")       # the signer sees it
    daemon.use_refused("orderer", "prod", "sg", "not_signer")
    assert daemon.use_ok("ci", "prod", "sg")["operation"] == op
    # without --for the orderer is the signer, and only the orderer
    op2 = daemon.request("orderer", PROD % "sg2")
    daemon.approve("alice", op2)
    daemon.approve("bob", op2)
    daemon.use_refused("ci", "prod", "sg2", "not_signer")
    assert daemon.use_ok("orderer", "prod", "sg2")["operation"] == op2


def test_no_operation(daemon):
    daemon.use_refused("orderer", "prod", "never-requested", "no_operation")


def test_implicit_operation_for_zero_approval_rule(daemon):
    r1 = daemon.use_ok("ci", "dev", "impl", dig=digest("one"))
    r2 = daemon.use_ok("ci", "dev", "impl", dig=digest("two"))
    ops = [r1["operation"], r2["operation"]]
    assert all(isinstance(o, int) for o in ops) and ops[0] != ops[1], ops
    assert r1["remaining"] == 0 and r2["remaining"] == 0
    o = daemon.show(ops[0])
    assert o["state"] == "exhausted"
    assert [(k["rule"], k["uses"], k["used"]) for k in o["keys"]] == [("dev", 1, 1)]
    assert o["orderer"]["user"] == U("ci")
    recs = daemon.audit()
    granted = [r for r in recs if r.get("event") == "use_granted"]
    assert [op_of(r) for r in granted] == ops
    assert all(p11g.actor_name(r) == U("ci") for r in granted)
    assert granted[0].get("digest") == digest("one")


def test_default_deny(daemon):
    daemon.use_refused("orderer", "nowhere", "k", "denied_by_default")
    k = assert_reply_ok(daemon.call({"verb": "key", "key": keyid("prod", "x")}))
    assert k["guarded"] is True and k["rule"] == "prod"
    refused = [r for r in daemon.audit() if r.get("event") == "use_refused"]
    assert len(refused) == 1, refused
    assert p11g.actor_name(refused[0]) == U("orderer"), refused


def test_default_allow(start_daemon):
    pol = {"default": "allow",
           "rules": [{"name": "dev", "keys": ["pkcs11:token=dev"],
                      "orderers": p11g.ORDERERS, "approvals": 0}]}
    d = start_daemon(pol)
    assert_reply_ok(d.use("mallory", "free", "k"))
    k = assert_reply_ok(d.call({"verb": "key", "key": keyid("free", "k")}))
    assert k["guarded"] is False
    k = assert_reply_ok(d.call({"verb": "key", "key": keyid("dev", "k")}))
    assert k["guarded"] is True and k["rule"] == "dev"


def test_request_wait(daemon):
    uid, gid, groups = p11g.ids("orderer")
    p = subprocess.Popen(
        [p11g.APPROVALD, "request", "--socket", daemon.sock, "--key", PROD % "wait",
         "--description", "wait for me", "--wait=20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
        env=dict(p11g.CLEAN_ENV), user=uid, group=gid, extra_groups=groups)
    try:
        ids = wait_for(lambda: daemon.list_ids(user="alice"), 5)
        assert len(ids) == 1, "the waiting request did not file an operation"
        op = ids[0]
        time.sleep(0.3)
        assert p.poll() is None, "request --wait returned before approval: %r" % (p.communicate(),)
        daemon.approve("alice", op)
        time.sleep(0.3)
        assert p.poll() is None, "request --wait returned with one of two approvals"
        daemon.approve("bob", op)
        out, err = p.communicate(timeout=5)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0, (out, err)
    assert re.fullmatch(r"[0-9]+\n?", out) and int(out) == op, (out, err)


def test_state_survives_restart(daemon):
    op = daemon.request("orderer", (PROD % "rs", 3))
    daemon.approve("alice", op)
    daemon.approve("bob", op)
    daemon.use_ok("orderer", "prod", "rs")
    pend = daemon.request("orderer", PROD % "rs-pending")
    before = daemon.audit()
    assert daemon.stop() == 0, daemon.stderr()
    daemon.start()
    o = daemon.show(op)
    assert o["state"] == "approved"
    assert [(k["uses"], k["used"]) for k in o["keys"]] == [(3, 1)]
    assert daemon.state_of(pend) == "pending"
    assert daemon.use_ok("orderer", "prod", "rs")["remaining"] == 1
    new = daemon.request("orderer", PROD % "rs-new")
    assert new > max(op, pend)
    after = daemon.audit()
    assert after[:len(before)] == before
    expect_ok(daemon.cli("audit", "--verify"))


def test_group_signer(daemon):
    op = daemon.request("orderer", (PROD % "gs", 2), for_="group:p11gt-ci")
    daemon.approve("alice", op)
    daemon.approve("bob", op)
    daemon.use_refused("mallory", "prod", "gs", "not_signer")
    assert daemon.use_ok("ci", "prod", "gs")["operation"] == op
    assert daemon.use_ok("orderer", "prod", "gs")["operation"] == op
    daemon.use_refused("ci", "prod", "gs", "exhausted")


def test_next_operation_for_the_same_key(daemon):
    a = daemon.request("orderer", PROD % "seq")
    b = daemon.request("orderer", PROD % "seq")
    for op in (a, b):
        daemon.approve("alice", op)
        daemon.approve("bob", op)
    used = sorted(daemon.use_ok("orderer", "prod", "seq")["operation"] for _ in range(2))
    assert used == [a, b]
    daemon.use_refused("orderer", "prod", "seq", "exhausted")
    assert daemon.state_of(a) == "exhausted" and daemon.state_of(b) == "exhausted"


def test_concurrent_uses_respect_the_count(daemon):
    op = daemon.request("orderer", (PROD % "race", 4))
    daemon.approve("alice", op)
    daemon.approve("bob", op)
    req = {"verb": "use", "key": keyid("prod", "race"), "mechanism": "CKM_ECDSA",
           "digest": digest("race")}
    replies = p11g.call_concurrently("orderer", daemon.sock, [req] * 12)
    ok = [r for r in replies if r.get("ok") is True]
    refused = [r for r in replies if r.get("ok") is False]
    assert len(ok) == 4, replies
    assert sorted(r["result"]["remaining"] for r in ok) == [0, 1, 2, 3]
    assert all(r["error"]["code"] == "exhausted" for r in refused), refused
    o = daemon.show(op)
    assert o["state"] == "exhausted" and o["keys"][0]["used"] == 4
    granted = [r for r in daemon.audit() if r.get("event") == "use_granted"]
    assert len(granted) == 4


def test_use_is_durable_across_a_crash(daemon):
    op = daemon.request("orderer", (PROD % "crash", 2))
    daemon.approve("alice", op)
    daemon.approve("bob", op)
    assert daemon.use_ok("orderer", "prod", "crash")["remaining"] == 1
    daemon.kill()            # SIGKILL right after the answer
    daemon.start()           # over the stale socket file
    o = daemon.show(op)
    assert o["state"] == "approved" and o["keys"][0]["used"] == 1
    assert daemon.use_ok("orderer", "prod", "crash")["remaining"] == 0
    daemon.use_refused("orderer", "prod", "crash", "exhausted")
    expect_ok(daemon.cli("audit", "--verify"))
