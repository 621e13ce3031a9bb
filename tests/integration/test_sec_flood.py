"""A uid with no role cannot flood the audit and the store with refused uses (issue 16, 8).

Every refused use was a durable, hash-chained record and any uid may send one.  Now the first
refusal of each kind per uid and minute is written at once and the rest are counted into one
record written when the minute is over (or when approvald stops); callers with a part in the
key's rule keep their records one by one (up to 120 a minute).
"""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import p11g  # noqa: E402

KEYS = 8  # P11G_REFUSALS_KEYS


def flood(d, user, n, labels):
    """n refused uses by user on one connection, cycling through labels of token prod."""
    def go():
        out = []
        with p11g.Conn(d.sock) as c:
            for i in range(n):
                rep = c.call({"verb": "use", "key": p11g.keyid("prod", labels[i % len(labels)]),
                              "mechanism": "CKM_ECDSA", "digest": p11g.digest(i)})
                out.append(rep.get("error", {}).get("code") if not rep.get("ok") else "ok")
        return out
    return p11g.in_child(p11g.U(user), go, 60)


def refusals_by(recs, user):
    return [r for r in recs if r["event"] == "use_refused" and p11g.actor_name(r) == p11g.U(user)]


def offline_audit(d):
    r = p11g.run([p11g.APPROVALD, "audit", "--state-dir", d.state, "--json"])
    assert r.rc == 0, r
    import json
    return [json.loads(line) for line in r.out.splitlines()]


def test_no_role_flood_writes_a_bounded_number_of_records_and_counts_the_rest(daemon):
    labels = ["k%d" % i for i in range(50)]
    codes = flood(daemon, "mallory", 400, labels)
    assert len(codes) == 400 and "ok" not in codes, set(codes)
    recs = refusals_by(daemon.audit(), "mallory")
    # the first of each (key, reason) for 8 keys, then one for the pair the rest fold into
    assert len(recs) == KEYS + 1, [r.get("key") for r in recs]
    assert all(not r.get("aggregated") for r in recs)
    assert daemon.stop() == 0
    recs = refusals_by(offline_audit(daemon), "mallory")
    agg = [r for r in recs if r.get("aggregated")]
    assert agg, recs
    # nothing is lost: every refusal is a record or counted in one
    assert len(recs) - len(agg) + sum(r["count"] for r in agg) == 400
    for r in agg:
        assert r["first"] <= r["last"] and r["count"] >= 1
    v = p11g.run([p11g.APPROVALD, "audit", "--state-dir", daemon.state, "--verify"])
    assert v.rc == 0, v


def test_the_same_refusal_repeated_is_one_record_and_a_count(daemon):
    codes = flood(daemon, "mallory", 300, ["same"])
    assert set(codes) == {codes[0]} and codes[0] != "ok", set(codes)
    assert len(refusals_by(daemon.audit(), "mallory")) == 1
    assert daemon.stop() == 0
    recs = refusals_by(offline_audit(daemon), "mallory")
    assert len(recs) == 2, recs
    assert recs[1]["aggregated"] is True and recs[1]["count"] == 299
    assert recs[1]["key"] == recs[0]["key"] and recs[1]["reason"] == recs[0]["reason"]


def test_a_caller_with_a_role_keeps_its_records_one_by_one(daemon):
    # p11gt-orderer may order for prod: each of its refusals says what to do, each is kept,
    # 120 a minute; past that they are counted like anyone's
    codes = flood(daemon, "orderer", 30, ["same"])
    assert "ok" not in codes
    assert len(refusals_by(daemon.audit(), "orderer")) == 30
    flood(daemon, "orderer", 170, ["same"])
    assert len(refusals_by(daemon.audit(), "orderer")) == 121  # 120, then the pair's first
    assert daemon.stop() == 0
    recs = refusals_by(offline_audit(daemon), "orderer")
    agg = [r for r in recs if r.get("aggregated")]
    assert len(recs) - len(agg) + sum(r["count"] for r in agg) == 200


def test_a_flood_does_not_keep_others_from_signing(daemon):
    """While mallory floods, the orderer's approved operation still signs, every use."""
    op = daemon.request("orderer", ("pkcs11:token=prod;object=fw", 5))
    daemon.approve("alice", op)
    daemon.approve("bob", op)
    code = r'''
import json, socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
for i in range(3000):
    req = json.dumps({"v": 1, "verb": "use", "mechanism": "CKM_ECDSA",
                      "digest": "sha256:" + "%064x" % i,
                      "key": {"token": {"label": "prod", "manufacturer": "", "model": "",
                                        "serial": ""}, "label": "x%d" % i, "id": "01"}}).encode()
    s.sendall(struct.pack(">I", len(req)) + req)
    n, = struct.unpack(">I", s.recv(4, socket.MSG_WAITALL))
    s.recv(n, socket.MSG_WAITALL)
'''
    uid, gid, groups = p11g.ids("mallory")
    floods = [subprocess.Popen(["/usr/bin/python3", "-c", code, daemon.sock], user=uid,
                               group=gid, extra_groups=groups, cwd="/") for _ in range(2)]
    try:
        for _ in range(5):
            daemon.use_ok("orderer", "prod", "fw")
    finally:
        for p in floods:
            assert p.wait(120) == 0
    daemon.use_refused("orderer", "prod", "fw", "exhausted")
    assert len(refusals_by(daemon.audit(), "mallory")) <= KEYS + 1


def test_an_orderer_cannot_grow_the_store_by_request_and_revoke(start_daemon):
    """The pending quota let an orderer loop request -> revoke without bound (28 MB in 2 s in
    review): requests a uid may file are counted per minute, in number and in bytes."""
    d = start_daemon(p11g.default_policy(), config={"max_requests_per_minute": "5",
                                                    "max_request_bytes_per_minute": "100000"})
    for i in range(5):
        op = d.request("orderer", ("pkcs11:token=prod;object=q%d" % i, 1))
        p11g.expect_ok(d.cli("revoke", str(op), "--reason", "loop", user="orderer"))
    r = d.cli("request", "--key", "pkcs11:token=prod;object=q9", "--description", "sixth",
              user="orderer")
    p11g.expect_fail(r, "limit_exceeded")
    assert "in the last minute" in r.err and "try again in" in r.err, r.err
    # another uid is not charged for it
    d.request("alice", ("pkcs11:token=prod;object=a", 1))


def test_request_bytes_are_counted_per_minute(start_daemon):
    d = start_daemon(p11g.default_policy(), config={"max_request_bytes_per_minute": "6000"})
    big = "x" * 1000
    made = 0
    for i in range(10):
        r = d.cli("request", "--key", "pkcs11:token=prod;object=b%d" % i, "--description", big,
                  "--context", big * 2, user="orderer")
        if r.rc != 0:
            p11g.expect_fail(r, "limit_exceeded")
            break
        made += 1
    assert made == 1, made  # each request is over 3 000 bytes: the second would pass 6 000
