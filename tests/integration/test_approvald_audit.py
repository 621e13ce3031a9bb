"""Audit: the events of a scenario with their actors, the hash chain, live
and offline verification, and tampering with a copy of the store."""

import json
import os
import re
import shutil
import struct
import tempfile

import lmdb
import pytest

import p11g
from p11g import U, actor_name, digest, expect_ok, op_of

PROD = "pkcs11:token=prod;object=%s"
HEX64 = re.compile(r"[0-9a-f]{64}")


def scenario(d):
    """Runs a scenario; returns (expected [(event, op, actor)], details)."""
    exp = []
    op1 = d.request("orderer", PROD % "au1")
    exp.append(("created", op1, "orderer"))
    d.approve("alice", op1)
    exp.append(("approved", op1, "alice"))
    d.approve("bob", op1)
    exp.append(("approved", op1, "bob"))
    d.use_ok("orderer", "prod", "au1", dig=digest("au1-a"))
    exp.append(("use_granted", op1, "orderer"))
    d.use_refused("orderer", "prod", "au1", "exhausted", dig=digest("au1-b"))
    exp.append(("use_refused", None, "orderer"))
    op2 = d.request("orderer", PROD % "au2")
    exp.append(("created", op2, "orderer"))
    expect_ok(d.cli("reject", op2, "--reason", "bad build", user="carol"))
    exp.append(("rejected", op2, "carol"))
    op3 = d.request("ci", PROD % "au3")
    exp.append(("created", op3, "ci"))
    expect_ok(d.cli("revoke", op3, "--reason", "no longer needed", user="dave"))
    exp.append(("revoked", op3, "dave"))
    op4 = d.request("orderer", PROD % "au4")
    exp.append(("created", op4, "orderer"))
    d.approve("alice", op4)
    exp.append(("approved", op4, "alice"))
    expect_ok(d.cli("withdraw", op4, user="alice"))
    exp.append(("withdrawn", op4, "alice"))
    return exp, dict(op1=op1, op2=op2, op3=op3, op4=op4)


def check_chain(recs):
    assert recs, "empty audit log"
    for i, r in enumerate(recs, 1):
        for f in ("seq", "time", "event", "prev", "hash"):
            assert f in r, "record %d lacks %r: %r" % (i, f, r)
        assert r["seq"] == i, "records not numbered 1..N: %r" % [x.get("seq") for x in recs]
        assert HEX64.fullmatch(r["hash"]) and HEX64.fullmatch(r["prev"]), r
        assert r["event"] in p11g.AUDIT_EVENTS, "unknown event %r" % r
    assert recs[0]["prev"] == "0" * 64
    for a, b in zip(recs, recs[1:]):
        assert b["prev"] == a["hash"], "record %d: prev does not link to record %d" % (b["seq"], a["seq"])
    assert len({r["hash"] for r in recs}) == len(recs)


def test_audit_records_scenario(daemon):
    exp, ops = scenario(daemon)
    recs = daemon.audit()
    check_chain(recs)
    assert recs[0]["event"] == "policy_loaded"
    got = []
    for r in recs:
        if r["event"] == "policy_loaded":
            continue
        op = op_of(r)
        if r["event"] == "use_refused":
            assert op in (None, ops["op1"]), r
            op = None
        got.append((r["event"], op, actor_name(r)))
    assert got == [(e, o, U(a)) for e, o, a in exp]

    by = {(r["event"], op_of(r)): r for r in recs}
    granted = by[("use_granted", ops["op1"])]
    assert "au1" in json.dumps(granted.get("key")), granted
    assert granted.get("mechanism") == "CKM_ECDSA"
    assert granted.get("digest") == digest("au1-a")
    refused = [r for r in recs if r["event"] == "use_refused"][0]
    assert "au1" in json.dumps(refused.get("key")), refused
    assert refused.get("digest") == digest("au1-b")
    assert "exhausted" in json.dumps(refused.get("reason")), refused
    assert by[("rejected", ops["op2"])].get("reason") == "bad build"
    assert by[("revoked", ops["op3"])].get("reason") == "no longer needed"
    created = by[("created", ops["op1"])]
    assert "au1" in json.dumps(created), created

    # --since N: exactly the records after N
    k = [r["seq"] for r in recs if (r["event"], op_of(r)) == ("created", ops["op3"])][0]
    assert daemon.audit("--since", k) == recs[k:]
    assert daemon.audit("--since", len(recs)) == []

    # the human listing works too
    r = expect_ok(daemon.cli("audit"))
    assert r.out.strip()


def copy_store(d):
    """A copy of the daemon's store (data.mdb only), taken after a status call."""
    d.status()
    dst = tempfile.mkdtemp(prefix="p11gt-store-")
    shutil.copy2(os.path.join(d.state, "data.mdb"), os.path.join(dst, "data.mdb"))
    return dst


def seqkey(n):
    return struct.pack(">Q", n)


def tamper(path, fn, count):
    env = lmdb.open(path, max_dbs=8, map_size=1 << 30)
    try:
        db = env.open_db(b"audit", create=False)
        with env.begin(write=True, db=db) as txn:
            # make sure this is the audit table the contract describes
            assert txn.stat(db)["entries"] == count
            for n in (1, count):
                rec = json.loads(txn.get(seqkey(n)))
                assert rec["seq"] == n
            fn(txn)
    finally:
        env.close()


def verify_offline(path):
    # no --socket: the offline check must not need a daemon
    return p11g.approvald("audit", "--verify", "--state-dir", path)


def records_count(r):
    m = re.search(r"\b(\d+) records?\b", r.out + r.err)
    return int(m.group(1)) if m else None


@pytest.fixture
def audited(daemon):
    exp, ops = scenario(daemon)
    recs = daemon.audit()
    check_chain(recs)
    copies = []
    yield daemon, recs, copies
    for c in copies:
        shutil.rmtree(c, ignore_errors=True)


def test_audit_verify_live_and_offline(audited):
    d, recs, copies = audited
    r = expect_ok(d.cli("audit", "--verify"))
    assert records_count(r) == len(recs), r
    c = copy_store(d)
    copies.append(c)
    r = verify_offline(c)
    assert r.rc == 0, r
    assert records_count(r) == len(recs), r


def _find(recs, event, actor):
    return [r["seq"] for r in recs if r["event"] == event and actor_name(r) == U(actor)][0]


def check_broken(d, recs, copies, fn, names):
    c = copy_store(d)
    copies.append(c)
    tamper(c, fn, len(recs))
    r = verify_offline(c)
    assert r.rc not in (0, 2, 3), "tampered store verified (or usage/connect error): %r" % r
    text = r.out + r.err
    assert re.search(names, text), "verify output does not name %s: %r" % (names, r)
    # the original is untouched and still verifies
    r = expect_ok(d.cli("audit", "--verify"))
    assert records_count(r) == len(recs), r
    return text


def test_audit_altered_record(audited):
    d, recs, copies = audited
    t = _find(recs, "approved", "alice")

    def alter(txn):
        rec = json.loads(txn.get(seqkey(t)))
        rec["event"] = "rejected"
        txn.put(seqkey(t), json.dumps(rec, separators=(",", ":")).encode())
    check_broken(d, recs, copies, alter, r"record %d\b" % t)


def test_audit_deleted_record(audited):
    d, recs, copies = audited
    t = _find(recs, "approved", "bob")

    def delete(txn):
        assert txn.delete(seqkey(t))
    check_broken(d, recs, copies, delete, r"record (%d|%d)\b" % (t, t + 1))


def test_audit_swapped_records(audited):
    d, recs, copies = audited
    t = _find(recs, "approved", "alice")

    def swap(txn):
        a, b = txn.get(seqkey(t)), txn.get(seqkey(t + 1))
        txn.put(seqkey(t), b)
        txn.put(seqkey(t + 1), a)
    check_broken(d, recs, copies, swap, r"record %d\b" % t)


def test_audit_deleted_newest_record(audited):
    d, recs, copies = audited
    n = len(recs)

    def delete_last(txn):
        assert txn.delete(seqkey(n))
    check_broken(d, recs, copies, delete_last, r"(chain head|record %d\b)" % n)


def test_audit_rehashed_record_breaks_the_link(audited):
    """Altering a record and fixing up its own hash still breaks the chain at
    the next record (prev no longer matches)."""
    d, recs, copies = audited
    t = _find(recs, "approved", "bob")

    def alter_and_fake(txn):
        rec = json.loads(txn.get(seqkey(t)))
        rec["event"] = "withdrawn"
        rec["hash"] = "f" * 64
        txn.put(seqkey(t), json.dumps(rec, separators=(",", ":")).encode())
    check_broken(d, recs, copies, alter_and_fake, r"record (%d|%d)\b" % (t, t + 1))
