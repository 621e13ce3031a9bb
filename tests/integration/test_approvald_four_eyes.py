"""Four eyes: who may approve, each person counts once, group membership is
read at the time of the action, quorum clauses, auto-approval, rejection."""

import os
import pwd
import re

from p11g import (U, assert_refused, assert_reply_ok, epoch, expect_fail, expect_ok, group_add,
                  group_remove)

PROD = "pkcs11:token=prod;object=%s"


def approvals_of(op):
    return sorted(a.get("user") for a in op.get("approvals", []))


def test_orderer_cannot_approve_own_operation(daemon):
    # p11gt-orderer orders but is in no approver set.
    op = daemon.request("orderer", PROD % "fe-self1")
    expect_fail(daemon.cli("approve", op, "--yes", user="orderer"), "self_approval")
    # alice may order prod keys and is an approver: still not for her own operation.
    op2 = daemon.request("alice", PROD % "fe-self2")
    expect_fail(daemon.cli("approve", op2, "--yes", user="alice"), "self_approval")
    expect_fail(daemon.cli("reject", op2, "--reason", "mine", user="alice"), "self_approval")
    o = daemon.show(op2)
    assert o["state"] == "pending" and o.get("approvals", []) == []
    # Two other approvers satisfy the quorum of alice's operation.
    daemon.approve("bob", op2)
    assert daemon.state_of(op2) == "pending"
    daemon.approve("carol", op2)
    o = daemon.show(op2)
    assert o["state"] == "approved"
    assert approvals_of(o) == [U("bob"), U("carol")]
    assert o["orderer"]["user"] == U("alice")


def test_same_approver_twice_counts_once(daemon):
    op = daemon.request("orderer", PROD % "fe-twice")
    r = daemon.approve("alice", op)
    assert "pending" in r.out.lower(), "approve output should mention the state: %r" % r
    expect_fail(daemon.cli("approve", op, "--yes", user="alice"), "already_approved")
    o = daemon.show(op)
    assert o["state"] == "pending"
    assert approvals_of(o) == [U("alice")]
    # the operation cannot be used yet
    daemon.use_refused("orderer", "prod", "fe-twice", "pending")
    # a second, distinct member completes the quorum
    r = daemon.approve("bob", op)
    assert "approved" in r.out.lower(), "approve output should mention the state: %r" % r
    o = daemon.show(op)
    assert o["state"] == "approved"
    assert approvals_of(o) == [U("alice"), U("bob")]
    assert all(isinstance(a.get("uid"), int) and a.get("time") for a in o["approvals"])
    # once approved, a third approver is too late
    expect_fail(daemon.cli("approve", op, "--yes", user="carol"), "already_decided")
    daemon.use_ok("orderer", "prod", "fe-twice")


def test_non_member_is_not_approver(daemon):
    op = daemon.request("orderer", PROD % "fe-mallory")
    expect_fail(daemon.cli("approve", op, "--yes", user="mallory"), "not_approver")
    expect_fail(daemon.cli("reject", op, "--reason", "no", user="mallory"), "not_approver")
    # dave is a rule admin, which does not make him an approver
    expect_fail(daemon.cli("approve", op, "--yes", user="dave"), "not_approver")
    o = daemon.show(op)
    assert o["state"] == "pending" and o.get("approvals", []) == []


def test_removed_group_member_can_no_longer_approve(daemon):
    op = daemon.request("orderer", PROD % "fe-removed")
    daemon.approve("alice", op)
    group_remove("carol", "approvers")
    try:
        # the daemon reads the group database at the time of the action
        expect_fail(daemon.cli("approve", op, "--yes", user="carol"), "not_approver")
        assert daemon.state_of(op) == "pending"
        assert op not in daemon.list_ids(user="carol")
    finally:
        group_add("carol", "approvers")
    # restored: carol counts again
    assert op in daemon.list_ids(user="carol")
    daemon.approve("carol", op)
    assert daemon.state_of(op) == "approved"


def test_group_change_applies_on_a_kept_connection(daemon):
    """A connection held open (p11gate.so keeps a pool of them) sees a group change at its
    next request: approvald shares one lookup among the requests of one event-loop round only."""
    op = daemon.request("orderer", PROD % "fe-kept")
    daemon.approve("alice", op)
    carol = pwd.getpwnam(U("carol"))
    # SO_PEERCRED records the effective ids at connect()
    os.setegid(carol.pw_gid)
    os.seteuid(carol.pw_uid)
    try:
        c = daemon.conn()
    finally:
        os.seteuid(0)
        os.setegid(0)

    def pending_ids():
        res = assert_reply_ok(c.call({"verb": "list"}))
        return [o["id"] for o in res["operations"]]

    with c:
        assert op in pending_ids()
        group_remove("carol", "approvers")
        try:
            assert op not in pending_ids()
            assert_refused(c.call({"verb": "approve", "id": op}), "not_approver")
        finally:
            group_add("carol", "approvers")
        assert op in pending_ids()
        assert_reply_ok(c.call({"verb": "approve", "id": op}))
    assert daemon.state_of(op) == "approved"


def test_default_list_shows_what_the_caller_may_approve(daemon):
    a = daemon.request("orderer", PROD % "fe-list-a")
    b = daemon.request("alice", PROD % "fe-list-b")
    dev = daemon.request("orderer", "pkcs11:token=dev;object=fe-list")  # approved at once
    assert daemon.list_ids(user="bob") == [a, b]
    assert daemon.list_ids(user="alice") == [a]      # not her own operation
    assert daemon.list_ids(user="mallory") == []
    assert daemon.list_ids(user="orderer") == []     # not an approver
    daemon.approve("bob", a)
    assert daemon.list_ids(user="bob") == [b]        # approved it already
    assert daemon.list_ids(user="carol") == [a, b]
    # --all: what each may see
    assert {a, b, dev} <= set(daemon.list_ids("--all", user=None))          # root
    assert set(daemon.list_ids("--all", user="orderer")) >= {a, dev}
    assert b not in daemon.list_ids("--all", user="orderer")
    assert {a, b} <= set(daemon.list_ids("--all", user="dave"))             # prod admin
    assert daemon.list_ids("--all", user="mallory") == []
    # --state filters
    assert daemon.list_ids("--all", "--state", "approved", user=None) == [dev]
    assert daemon.list_ids("--all", "--state", "pending", user=None) == [a, b]


def test_quorum_clauses_each_person_once(daemon):
    op = daemon.request("orderer", "pkcs11:token=quorum;object=q1")
    daemon.approve("alice", op)
    o = daemon.show(op)
    assert o["state"] == "pending"
    assert "group:p11gt-security" in o.get("needs", ""), \
        "needs should say what is missing: %r" % o.get("needs")
    daemon.approve("bob", op)   # a second approver does not satisfy the security clause
    assert daemon.state_of(op) == "pending"
    daemon.use_refused("orderer", "quorum", "q1", "pending")
    daemon.approve("dave", op)
    assert daemon.state_of(op) == "approved"
    daemon.use_ok("orderer", "quorum", "q1")


def test_auto_approve_only_for_listed_orderer(daemon):
    mine = daemon.request("orderer", "pkcs11:token=auto;object=a1")
    assert daemon.state_of(mine) == "approved"
    daemon.use_ok("orderer", "auto", "a1")
    theirs = daemon.request("ci", "pkcs11:token=auto;object=a2")
    assert daemon.state_of(theirs) == "pending"
    daemon.use_refused("ci", "auto", "a2", "pending")


def test_reject(daemon):
    op = daemon.request("orderer", PROD % "fe-reject")
    daemon.approve("alice", op)
    r = expect_ok(daemon.cli("reject", op, "--reason", "wrong build", user="carol"))
    assert "rejected" in r.out.lower(), r
    o = daemon.show(op)
    assert o["state"] == "rejected"
    assert o["rejection"]["user"] == U("carol")
    assert o["rejection"]["reason"] == "wrong build"
    daemon.use_refused("orderer", "prod", "fe-reject", "rejected")
    expect_fail(daemon.cli("approve", op, "--yes", user="bob"), "already_decided")
    expect_fail(daemon.cli("reject", op, "--reason", "again", user="bob"), "already_decided")
    assert daemon.state_of(op) == "rejected"


def test_request_refusals(daemon):
    expect_fail(daemon.cli("request", "--key", PROD % "r1", "--uses", "11", user="orderer"),
                "limit_exceeded")
    expect_fail(daemon.cli("request", "--key", PROD % "r1", "--valid", "2h", user="orderer"),
                "limit_exceeded")
    expect_fail(daemon.cli("request", "--key", "pkcs11:token=nowhere;object=x", user="orderer"),
                "no_rule")
    expect_fail(daemon.cli("request", "--key", PROD % "r1", user="mallory"), "not_orderer")
    # bob is an approver, not an orderer
    expect_fail(daemon.cli("request", "--key", PROD % "r1", user="bob"), "not_orderer")
    # none of that created anything
    assert daemon.list_ids("--all") == []
    # within the ceilings: fine; the ci group orders too
    op = daemon.request("ci", (PROD % "r1", 10), valid="1h")
    o = daemon.show(op)
    assert o["state"] == "pending"
    assert [(k["uses"], k["used"]) for k in o["keys"]] == [(10, 0)]
    assert o["keys"][0]["rule"] == "prod"
    assert o["orderer"]["user"] == U("ci")
    assert 3590 <= epoch(o["expires"]) - epoch(o["created"]) <= 3601
    # a 0-approval rule: approved on creation
    dev = daemon.request("orderer", "pkcs11:token=dev;object=r2")
    assert daemon.state_of(dev) == "approved"
    # default validity is one hour
    o = daemon.show(dev)
    assert 3590 <= epoch(o["expires"]) - epoch(o["created"]) <= 3601
    assert re.fullmatch(r"\d+", str(o["id"])) and int(o["id"]) == dev


def test_quorum_person_counts_once_overall(daemon):
    # alice in both clauses' groups still counts for one clause only
    group_add("alice", "security")
    try:
        op = daemon.request("orderer", "pkcs11:token=quorum;object=q2")
        daemon.approve("alice", op)
        assert daemon.state_of(op) == "pending"
        daemon.use_refused("orderer", "quorum", "q2", "pending")
        # bob fills the approvers clause, alice's approval the security one
        daemon.approve("bob", op)
        assert daemon.state_of(op) == "approved"
    finally:
        group_remove("alice", "security")


def test_approval_recorded_before_leaving_the_group_counts(daemon):
    op = daemon.request("orderer", PROD % "fe-left")
    daemon.approve("alice", op)
    group_remove("alice", "approvers")
    try:
        daemon.approve("bob", op)
        assert daemon.state_of(op) == "approved"
    finally:
        group_add("alice", "approvers")


def test_withdraw_only_own_approval(daemon):
    op = daemon.request("orderer", PROD % "fe-wd")
    daemon.approve("alice", op)
    for who in ("bob", "mallory", "orderer"):
        r = daemon.cli("withdraw", op, user=who)
        assert r.rc == 1 and r.code, "withdraw by %s should be refused: %r" % (who, r)
    o = daemon.show(op)
    assert o["state"] == "pending" and [a["user"] for a in o["approvals"]] == [U("alice")]


def test_decided_operations_stay_decided(daemon):
    op = daemon.request("orderer", PROD % "fe-decided")
    daemon.approve("alice", op)
    daemon.approve("bob", op)
    # pending -> rejected only; an approved operation is not rejected afterwards
    expect_fail(daemon.cli("reject", op, "--reason", "late", user="carol"), "already_decided")
    assert daemon.state_of(op) == "approved"
    expect_ok(daemon.cli("revoke", op, "--reason", "first", user="orderer"))
    r = daemon.cli("revoke", op, "--reason", "second", user="dave")
    assert r.rc == 1, "revoking a revoked operation again: %r" % r
    o = daemon.show(op)
    assert o["state"] == "revoked"
    assert o["revocation"]["user"] == U("orderer") and o["revocation"]["reason"] == "first"
    r = daemon.cli("withdraw", op, user="alice")
    assert r.rc == 1, "withdraw from a revoked operation: %r" % r
    assert daemon.state_of(op) == "revoked"
