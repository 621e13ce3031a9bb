"""Issue 18, items 1 and 4: the operations checked against the audit log, and audit --verify
away from the event loop.

Every change of an operation writes, in its audit record, the state it left ("after"); the
operation names that record (audit_seq).  A use spends only an operation that agrees with its
last record; audit --verify replays every record and compares every stored operation with
them.  The walk runs in a child process of approvald: other requests are answered meanwhile,
one verify per uid at a time, and a repeated verify walks only what is new."""

import hashlib
import json
import os
import re
import select
import shutil
import struct
import tempfile
import time

import lmdb
import pytest

import p11g
from p11g import assert_refused, digest, expect_ok

PROD = "pkcs11:token=prod;object=%s"


def key8(n):
    return struct.pack(">Q", n)


def open_env(path):
    return lmdb.open(path, max_dbs=16, map_size=1 << 32)


def edit_op(state, op, fn):
    """fn(operation dict) edits operation op in the store at state, behind approvald."""
    env = open_env(state)
    try:
        db = env.open_db(b"ops", create=False)
        with env.begin(write=True, db=db) as txn:
            rec = json.loads(txn.get(key8(op)))
            assert rec["id"] == op
            fn(rec)
            txn.put(key8(op), json.dumps(rec, separators=(",", ":")).encode())
    finally:
        env.close()


def canonical(rec):
    body = {k: v for k, v in rec.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def seal(rec, prev_hex):
    """rec's stored text with prev and hash as approvald writes them."""
    rec = dict(rec, prev=prev_hex)
    canon = canonical(rec)
    h = hashlib.sha256(bytes.fromhex(prev_hex) + canon.encode()).hexdigest()
    return (canon[:-1] + ',"hash":"%s"}' % h).encode(), h


def rewrite_chain(state, edits):
    """Applies edits {seq: fn(record dict)} and re-hashes every later record and the head, as
    someone with approvald's uid (or a copy of its files) can: the chain alone stays intact."""
    env = open_env(state)
    try:
        audit = env.open_db(b"audit", create=False)
        meta = env.open_db(b"meta", create=False)
        with env.begin(write=True) as txn:
            first = min(edits)
            prev = "0" * 64
            if first > 1:
                prev = json.loads(txn.get(key8(first - 1), db=audit))["hash"]
            cur = txn.cursor(db=audit)
            assert cur.set_key(key8(first))
            seq = None
            for k, v in list(cur.iternext()):
                seq = struct.unpack(">Q", k)[0]
                rec = json.loads(v)
                if seq in edits:
                    edits[seq](rec)
                text, prev = seal(rec, prev)
                txn.put(k, text, db=audit)
            txn.put(b"audit_head", json.dumps({"seq": seq, "hash": prev},
                                              separators=(",", ":")).encode(), db=meta)
    finally:
        env.close()


TERMS = ("orderer", "signer", "keys", "created", "expires", "pinned", "digests", "rules",
         "images", "oci")


def terms_hash(after):
    """The hash approvald gives an operation's terms (p11g_op_terms_hash)."""
    t = {k: after[k] for k in TERMS}
    return hashlib.sha256(json.dumps(t, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


def copy_store(d):
    d.status()
    dst = tempfile.mkdtemp(prefix="p11gt-store-")
    shutil.copy2(os.path.join(d.state, "data.mdb"), os.path.join(dst, "data.mdb"))
    return dst


def verify_offline(path):
    return p11g.approvald("audit", "--verify", "--state-dir", path)


def records(d):
    return d.audit()


def approved(d, label, uses):
    op = d.request("orderer", (PROD % label, uses))
    d.approve("alice", op)
    d.approve("bob", op)
    return op


# ---- every change records the state it left ---------------------------------------------

def test_every_change_records_the_state_it_left(daemon):
    op = approved(daemon, "st0", 3)
    daemon.use_ok("orderer", "prod", "st0", dig=digest("st0-a"))
    recs = [r for r in records(daemon) if r.get("op") == op]
    assert [r["event"] for r in recs] == ["created", "approved", "approved", "use_granted"]
    # the terms whole where they begin, then by their hash and that record's number
    created = recs[0]["after"]
    assert created["keys"] == [{"uri": PROD % "st0", "rule": "prod", "uses": 3}], created
    assert created["terms"] == terms_hash(created), created
    for r in recs[1:]:
        assert "keys" not in r["after"] and r["after"]["terms_seq"] == recs[0]["seq"], r
        assert r["after"]["terms"] == created["terms"], r
    assert [r["after"]["state"] for r in recs] == ["pending", "pending", "approved", "approved"]
    assert [len(r["after"]["approvals"]) for r in recs] == [0, 1, 2, 2]
    assert [r["after"]["used"] for r in recs] == [[0], [0], [0], [1]]
    r = expect_ok(daemon.cli("audit", "--verify"))
    assert "operations agree with their records" in r.out, r


# ---- a store edited behind approvald ----------------------------------------------------

def test_raised_count_in_the_store_is_refused_and_named(daemon):
    """The issue's case: an approved operation's uses raised from 3 to 1000 directly in LMDB.
    Before, the next use was granted and audit --verify said the chain was intact."""
    d = daemon
    op = approved(d, "st1", 3)
    d.use_ok("orderer", "prod", "st1", dig=digest("st1-a"))
    edit_op(d.state, op, lambda o: o["keys"][0].__setitem__("uses", 1000))
    assert_refused(d.use("orderer", "prod", "st1", dig=digest("st1-b")), "audit_broken")
    assert re.search(r"operation %d refused: keys\[0\]\.uses is 1000 in the store, 3 in its "
                     r"record \d+" % op, d.stderr()), d.stderr()
    # nothing was spent, and both verifies name the operation and the field
    r = d.cli("audit", "--verify")
    assert r.rc == 1 and "audit_broken" in r.err, r
    assert re.search(r"operation %d: keys\[0\]\.uses is 1000 in the store, 3 in its record"
                     % op, r.err), r
    c = copy_store(d)
    try:
        r = verify_offline(c)
        assert r.rc == 1 and re.search(r"operation %d: keys\[0\]\.uses is 1000" % op, r.err), r
    finally:
        shutil.rmtree(c, ignore_errors=True)
    # put back as it was: the use goes through again
    edit_op(d.state, op, lambda o: o["keys"][0].__setitem__("uses", 3))
    d.use_ok("orderer", "prod", "st1", dig=digest("st1-c"))


@pytest.mark.parametrize("field,edit", [
    ("state", lambda o: o.__setitem__("state", "approved")),
    ("expires", lambda o: o.__setitem__("expires", o["expires"] + 86400 * 365)),
    ("keys[0].uri", lambda o: o["keys"][0].__setitem__("uri", PROD % "other")),
    ("signer", lambda o: o.__setitem__("signer", "uid:0")),
    ("approvals", lambda o: o["approvals"].append(dict(o["approvals"][0], uid=0))),
])
def test_each_edited_field_is_named(daemon, field, edit):
    d = daemon
    op = d.request("orderer", (PROD % "st2", 2))
    d.approve("alice", op)
    edit_op(d.state, op, edit)
    r = d.cli("audit", "--verify")
    assert r.rc == 1, r
    assert re.search(r"operation %d: %s(\[0\])? is .* in the store" % (op, re.escape(field)),
                     r.err), r


def test_record_removed_with_the_edit_is_not_blessed_at_start(start_daemon):
    """Removing the operation's audit_seq with the edit, then restarting: approvald records
    the state of operations older versions left without one, but not of one of its own."""
    d = start_daemon()
    op = approved(d, "st3", 3)
    assert d.stop() == 0

    def edit(o):
        del o["audit_seq"]
        o["keys"][0]["uses"] = 1000
    edit_op(d.state, op, edit)
    d.start()
    assert_refused(d.use("orderer", "prod", "st3", dig=digest("st3-a")), "audit_broken")
    assert "operation %d names no audit record of its state" % op in d.stderr()
    r = d.cli("audit", "--verify")
    assert r.rc == 1 and "operation %d" % op in r.err, r


def test_rewritten_history_is_caught_by_the_replay(start_daemon):
    """Raising the count in the store and in the operation's last record, and re-hashing the
    chain after it, while approvald is down: the chain and the use-time check agree, the
    replay does not (the count granted never changes after creation)."""
    d = start_daemon()
    op = approved(d, "st4", 3)
    recs = [r for r in records(d) if r.get("op") == op]
    last = recs[-1]["seq"]
    raised = dict(recs[0]["after"])
    raised["keys"] = [dict(raised["keys"][0], uses=1000)]
    assert d.stop() == 0
    edit_op(d.state, op, lambda o: o["keys"][0].__setitem__("uses", 1000))
    rewrite_chain(d.state, {last: lambda r: r["after"].__setitem__("terms", terms_hash(raised))})
    d.start()
    # the use-time check agrees with the rewritten record: only the replay can tell
    d.use_ok("orderer", "prod", "st4", dig=digest("st4-a"))
    r = d.cli("audit", "--verify", "--full")
    assert r.rc == 1, r
    assert re.search(r"record %d: operation %d: its terms .* changed since record \d+"
                     % (last, op), r.err), r


def test_verify_reports_what_it_compared(daemon):
    d = daemon
    for i in range(3):
        approved(d, "st5-%d" % i, 1)
    r = expect_ok(d.cli("audit", "--verify"))
    # the first verify of a daemon walks all
    m = re.search(r"audit chain intact: (\d+) records; (\d+) operations agree", r.out)
    assert m and int(m.group(1)) == len(d.audit()) and int(m.group(2)) == 3, r
    approved(d, "st5-x", 1)
    head = len(d.audit())
    r = expect_ok(d.cli("audit", "--verify"))
    m = re.search(r"audit chain intact: (\d+) records \(records (\d+) to (\d+) walked now, the "
                  r"rest verified before by this approvald\); (\d+) operations agree", r.out)
    assert m and int(m.group(1)) == head and int(m.group(3)) == head, r
    assert 1 < int(m.group(2)) <= head and int(m.group(4)) == 4, r


# ---- the walk leaves the event loop -----------------------------------------------------

FILLER = 300000


def fill_chain(state, n):
    """Appends n records to the store's chain (as if approvald had written them)."""
    env = open_env(state)
    try:
        audit = env.open_db(b"audit", create=False)
        meta = env.open_db(b"meta", create=False)
        with env.begin(write=True) as txn:
            head = json.loads(txn.get(b"audit_head", db=meta))
            seq, prev = head["seq"], head["hash"]
            for i in range(n):
                seq += 1
                text, prev = seal({"event": "policy_loaded", "seq": seq, "time": 1,
                                   "path": "/filler", "digest": "0" * 64, "rules": 1,
                                   "files": 1, "default": "deny"}, prev)
                txn.put(key8(seq), text, db=audit, append=True)
            txn.put(b"audit_head", json.dumps({"seq": seq, "hash": prev},
                                              separators=(",", ":")).encode(), db=meta)
        return seq
    finally:
        env.close()


def readable(conn):
    return bool(select.select([conn.s], [], [], 0)[0])


def test_verify_leaves_the_loop_one_per_uid_and_goes_on_from_its_mark(start_daemon):
    d = start_daemon()
    approved(d, "st6", 1)
    assert d.stop() == 0
    fill_chain(d.state, FILLER)
    d.start(timeout=30)
    head = d.audit("--since", str(FILLER))[-1]["seq"]

    a = d.conn(timeout=300)
    a.send({"v": 1, "verb": "verify"})
    time.sleep(0.05)  # the walk has begun
    # status is answered while the walk goes on (before: it waited for the whole walk)
    t0 = time.monotonic()
    rep = d.call({"verb": "status"})
    status_s = time.monotonic() - t0
    assert rep.get("ok") is True, rep
    walking = not readable(a)
    # the same uid may not start a second verify meanwhile
    with d.conn() as b:
        rep_b = b.call({"verb": "verify"})
    # another approver's verify waits for the next walk
    with d.conn(timeout=300) as c:
        rep_a = a.recv()
        assert walking, ("verify answered before a status sent after it (%.3f s): the walk "
                         "ran in the loop" % status_s)
        if rep_b.get("ok") is not True:
            assert rep_b["error"]["code"] == "limit_exceeded", rep_b
        else:
            raise AssertionError("a second verify of one uid was accepted while the first "
                                 "walked: %r" % rep_b)
        assert rep_a.get("ok") is True, rep_a
        res = rep_a["result"]
        assert res["records"] >= head and res["from"] == 1, res
        # the next verify walks only what is new since the mark
        rep = p11g.call_as("alice", d.sock, {"verb": "verify"}, timeout=300)
        assert rep.get("ok") is True, rep
        assert rep["result"]["from"] == res["records"] + 1, rep
        assert rep["result"]["records"] >= res["records"], rep
        c.close()
    a.close()


def test_incremental_verify_sees_a_rewrite_before_its_mark(daemon):
    """A verify remembers (in approvald's memory, not the store) the last record it verified
    and its hash; a later verify starts there, and first checks that record is unchanged: a
    rewrite before it that re-hashed the chain changes it."""
    d = daemon
    approved(d, "st7", 1)
    first = expect_ok(d.cli("audit", "--verify"))
    assert "walked now" not in first.out, first
    approved(d, "st8", 1)
    r = expect_ok(d.cli("audit", "--verify"))
    assert re.search(r"records [2-9]\d* to \d+ walked now", r.out), r
    rewrite_chain(d.state, {1: lambda rec: rec.__setitem__("path", "/elsewhere")})
    r = d.cli("audit", "--verify")
    assert r.rc == 1 and re.search(r"record \d+: no longer the record verified before", r.err), r


# ---- signed checkpoints -----------------------------------------------------------------

def make_key(d, name="audit.key", alg="ed25519"):
    path = os.path.join(d, name)
    args = ["openssl", "genpkey", "-out", path]
    args += ["-algorithm", "ed25519"] if alg == "ed25519" else [
        "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
    r = p11g.run(args)
    assert r.rc == 0, r
    os.chmod(path, 0o600)
    return path


@pytest.fixture
def keyed(start_daemon):
    """A daemon that signs checkpoints (every 5 records, or 1 s after new ones), its key's
    public half exported with approvald audit --export-pubkey."""
    work = tempfile.mkdtemp(prefix="p11gt-key-")
    key = make_key(work)
    conf = {"audit_key_file": key, "audit_checkpoint_records": 5,
            "audit_checkpoint_seconds": 3600}
    d = start_daemon(config=conf)
    pub = os.path.join(work, "audit.pub")
    r = p11g.approvald("audit", "--export-pubkey", "--config", d.config)
    assert r.rc == 0 and "-----BEGIN PUBLIC KEY-----" in r.out, r
    with open(pub, "w") as f:
        f.write(r.out)
    yield d, work, key, pub
    shutil.rmtree(work, ignore_errors=True)


def checkpoints(d):
    return [r for r in d.audit() if r["event"] == "checkpoint"]


def test_checkpoints_signed_listed_and_verified(keyed):
    d, work, key, pub = keyed
    # one at start, signing what the start wrote
    assert len(checkpoints(d)) == 1
    for i in range(3):
        approved(d, "cp1-%d" % i, 1)
    assert p11g.wait_for(lambda: len(checkpoints(d)) >= 2, 5), d.audit()
    cps = checkpoints(d)
    recs = d.audit()
    for c in cps:
        assert c["through"] == c["seq"] - 1 and c["head"] == recs[c["seq"] - 2]["hash"], c
        assert c["key"].startswith("sha256:") and c["sig"], c
    # the copy outside the store: approvald's log (and syslog)
    assert "audit checkpoint through=%d head=%s" % (cps[-1]["through"], cps[-1]["head"]) \
        in d.stderr()
    r = expect_ok(d.cli("audit", "--checkpoints"))
    lines = r.out.splitlines()
    assert lines[0].split()[:3] == ["SEQ", "THROUGH", "SIGNED"], r
    assert len(lines) == 1 + len(cps), r
    r = expect_ok(d.cli("audit", "--verify", "--pubkey", pub))
    assert re.search(r"checkpoints: %d, each signed by the audit key; records 1 to %d covered"
                     % (len(cps), cps[-1]["seq"]), r.out), r
    c = copy_store(d)
    try:
        r = verify_offline_pub(c, pub)
        assert r.rc == 0 and "checkpoints: %d" % len(cps) in r.out, r
    finally:
        shutil.rmtree(c, ignore_errors=True)


def verify_offline_pub(path, pub):
    return p11g.approvald("audit", "--verify", "--pubkey", pub, "--state-dir", path)


def test_records_after_the_last_checkpoint_are_counted(start_daemon):
    work = tempfile.mkdtemp(prefix="p11gt-key-")
    try:
        key = make_key(work, alg="ec")
        d = start_daemon(config={"audit_key_file": key})
        pub = os.path.join(work, "audit.pub")
        r = p11g.approvald("audit", "--export-pubkey", "--config", d.config)
        assert r.rc == 0, r
        with open(pub, "w") as f:
            f.write(r.out)
        covered = checkpoints(d)[-1]["seq"]
        approved(d, "cp2", 1)
        head = d.audit()[-1]["seq"]
        r = expect_ok(d.cli("audit", "--verify", "--pubkey", pub))
        assert "%d records after record %d not yet covered by a checkpoint" % (
            head - covered, covered) in r.out, r
        # at shutdown approvald signs the rest
        assert d.stop() == 0
        r = verify_offline_pub(d.state, pub)
        assert r.rc == 0 and "not yet covered" not in r.out, r
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_rewrite_before_a_checkpoint_is_detected(keyed):
    d, work, key, pub = keyed
    for i in range(3):
        approved(d, "cp3-%d" % i, 1)
    assert p11g.wait_for(lambda: len(checkpoints(d)) >= 2, 5)
    cp = checkpoints(d)[-1]
    prior = checkpoints(d)[-2]
    target = prior["seq"] + 1  # a record between the two checkpoints
    c = copy_store(d)
    try:
        rewrite_chain(c, {target: lambda rec: rec.__setitem__("time", rec["time"] - 3600)})
        # the chain alone cannot tell: every hash was made again
        r = verify_offline(c)
        assert r.rc == 0, r
        # the checkpoint's signature can: it signed the hash the record had
        r = verify_offline_pub(c, pub)
        assert r.rc == 1, r
        assert re.search(r"records %d to %d: rewritten \(the checkpoint in record %d signed "
                         r"another hash for record %d\)" % (prior["seq"] + 1,
                                                             cp["through"], cp["seq"],
                                                             cp["through"]), r.err), r
    finally:
        shutil.rmtree(c, ignore_errors=True)


@pytest.mark.parametrize("forgery", ["bad signature", "other key"])
def test_forged_checkpoint_is_detected(keyed, forgery):
    d, work, key, pub = keyed
    approved(d, "cp4", 1)
    c = copy_store(d)
    try:
        env = open_env(c)
        with env.begin() as txn:
            head = json.loads(txn.get(b"audit_head", db=env.open_db(b"meta", txn=txn)))
        env.close()
        real = checkpoints(d)[0]
        key_id = real["key"] if forgery == "bad signature" else "sha256:" + "ab" * 32
        # a checkpoint appended after the head, made to look like approvald's
        forged = {"event": "checkpoint", "through": head["seq"], "head": head["hash"],
                  "signed": int(time.time()), "key": key_id, "sig": real["sig"],
                  "seq": head["seq"] + 1, "time": int(time.time())}
        env = open_env(c)
        try:
            audit = env.open_db(b"audit", create=False)
            meta = env.open_db(b"meta", create=False)
            with env.begin(write=True) as txn:
                text, h = seal(forged, head["hash"])
                txn.put(key8(head["seq"] + 1), text, db=audit)
                txn.put(b"audit_head", json.dumps({"seq": head["seq"] + 1, "hash": h}).encode(),
                        db=meta)
        finally:
            env.close()
        assert verify_offline(c).rc == 0
        r = verify_offline_pub(c, pub)
        want = "signature does not verify" if forgery == "bad signature" else "signed by another key"
        assert r.rc == 1 and re.search(r"record %d: a checkpoint that is not approvald's \(%s\)"
                                       % (head["seq"] + 1, want), r.err), r
    finally:
        shutil.rmtree(c, ignore_errors=True)


def test_audit_key_file_others_can_read_is_refused(accounts):
    work = tempfile.mkdtemp(prefix="p11gt-key-")
    try:
        key = make_key(work)
        os.chmod(key, 0o644)
        d = p11g.Daemon(config={"audit_key_file": key})
        try:
            with pytest.raises(AssertionError, match="readable by it alone"):
                d.start()
        finally:
            d.kill()
            d.cleanup()
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---- what a review found: each a way around the checks above -----------------------------

def test_operation_put_back_to_an_earlier_record_is_refused(daemon):
    """Used up, then put back in the store to its state after the approvals (record and all):
    the operation agrees with that record, but approvald wrote a later one."""
    d = daemon
    op = approved(d, "rb1", 1)
    d.use_ok("orderer", "prod", "rb1", dig=digest("rb1-a"))
    recs = [r for r in records(d) if r.get("op") == op]
    earlier = recs[-2]
    assert earlier["event"] == "approved" and recs[-1]["event"] == "use_granted"

    def back(o):
        o["state"] = "approved"
        o["keys"][0]["used"] = 0
        o["audit_seq"] = earlier["seq"]
    edit_op(d.state, op, back)
    rep = d.use("orderer", "prod", "rb1", dig=digest("rb1-b"))
    assert_refused(rep, "audit_broken")
    assert "put back to an earlier state" in rep["error"]["message"], rep
    r = d.cli("audit", "--verify")
    assert r.rc == 1 and "operation %d" % op in r.err, r


def test_approval_added_in_the_store_does_not_count(daemon):
    """A fake approval put into a pending operation, then one real approval: the approval
    refuses (the operation disagrees with its record), nothing is signed."""
    d = daemon
    op = d.request("orderer", (PROD % "fa1", 1))

    def fake(o):
        o["approvals"].append({"uid": 0, "user": "root", "groups": [], "time": o["created"]})
    edit_op(d.state, op, fake)
    r = d.cli("approve", op, "--yes", user="alice")
    assert r.rc == 1 and "audit_broken" in r.err, r
    assert_refused(d.use("orderer", "prod", "fa1", dig=digest("fa1")), "pending")
    assert d.state_of(op) == "pending"
    r = d.cli("audit", "--verify")
    assert r.rc == 1 and re.search(r"operation %d: approvals" % op, r.err), r


def test_rules_as_approved_are_part_of_the_terms(daemon):
    """The rule snapshot a use is judged against (mechanisms, digests bound) is covered."""
    d = daemon
    op = approved(d, "ru1", 2)

    def widen(o):
        for snap in o["rules"].values():
            snap["mechanisms"] = ["CKM_ECDSA", "CKM_RSA_PKCS"]
    edit_op(d.state, op, widen)
    rep = d.use("orderer", "prod", "ru1", dig=digest("ru1"))
    assert_refused(rep, "audit_broken")
    assert "rules is" in rep["error"]["message"], rep


def test_a_full_verify_of_implicit_uses_is_intact(daemon):
    """A rule needing no approvals makes a one-use operation at the use; its records replay
    like any other's (they did not: every first verify of such a store failed)."""
    d = daemon
    d.use_ok("orderer", "dev", "im1", dig=digest("im1"))
    ops = {r["op"] for r in records(d) if r.get("op")}
    assert ops, records(d)
    r = expect_ok(d.cli("audit", "--verify", "--full"))
    assert "%d operations agree" % len(ops) in r.out, r


def test_a_full_verify_still_checks_the_remembered_record(daemon):
    d = daemon
    approved(d, "fm1", 1)
    expect_ok(d.cli("audit", "--verify"))
    rewrite_chain(d.state, {1: lambda rec: rec.__setitem__("path", "/elsewhere")})
    for args in (["--verify"], ["--verify", "--full"], ["--verify"]):
        r = d.cli("audit", *args)
        assert r.rc == 1 and "no longer the record verified before" in r.err, (args, r)


def test_pubkey_on_a_log_no_checkpoint_covers_fails(daemon):
    work = tempfile.mkdtemp(prefix="p11gt-key-")
    try:
        key = make_key(work)
        pub = os.path.join(work, "audit.pub")
        r = p11g.run(["openssl", "pkey", "-in", key, "-pubout", "-out", pub])
        assert r.rc == 0, r
        approved(daemon, "np1", 1)
        r = daemon.cli("audit", "--verify", "--pubkey", pub)
        assert r.rc == 1 and "no checkpoint signed by this audit key" in r.err, r
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_a_chain_changed_while_approvald_runs_records_nothing(keyed):
    """A record appended (or the chain re-hashed) behind a running approvald: its next write
    finds a head it did not write and refuses, so nothing is granted, and no checkpoint signs
    the forged record."""
    d, work, key, pub = keyed
    op = approved(d, "hd1", 2)
    before = len(checkpoints(d))
    env = open_env(d.state)
    try:
        audit = env.open_db(b"audit", create=False)
        meta = env.open_db(b"meta", create=False)
        with env.begin(write=True) as txn:
            head = json.loads(txn.get(b"audit_head", db=meta))
            forged = {"event": "approved", "op": op, "seq": head["seq"] + 1, "time": 1,
                      "actor": {"uid": 0, "user": "root", "pid": 1}, "state": "approved"}
            text, h = seal(forged, head["hash"])
            txn.put(key8(head["seq"] + 1), text, db=audit)
            txn.put(b"audit_head", json.dumps({"seq": head["seq"] + 1, "hash": h}).encode(),
                    db=meta)
    finally:
        env.close()
    assert_refused(d.use("orderer", "prod", "hd1", dig=digest("hd1")), "audit_broken")
    r = d.cli("request", "--key", PROD % "hd2", user="orderer")
    assert r.rc == 1 and "audit_broken" in r.err, r
    assert "the audit chain's head is record %d, approvald last wrote record %d" % (
        head["seq"] + 1, head["seq"]) in d.stderr()
    time.sleep(1.5)  # a tick: a checkpoint would be due (5 records), none is written
    assert len(checkpoints(d)) == before
