"""Policy files: `approvald policy check` on good and bad files (with exact
file:line:column positions), and SIGHUP reloads."""

import glob
import json
import os
import re
import shutil
import struct
import tempfile
import time

import lmdb
import pytest

import p11g
from p11g import ORDERERS, assert_reply_ok, expect_fail, keyid, wait_for


@pytest.fixture
def tmpdir_policy(accounts):
    d = tempfile.mkdtemp(prefix="p11gt-policy-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def check(path):
    return p11g.approvald("policy", "check", path)


def test_policy_check_examples(accounts):
    ex = os.path.join(p11g.SRC, "policy", "examples")
    files = sorted(glob.glob(os.path.join(ex, "*.json")))
    assert files, "no example policies in %s" % ex
    for f in files:
        r = check(f)
        assert r.rc == 0, r


def test_policy_check_good(tmpdir_policy):
    f = os.path.join(tmpdir_policy, "good.json")
    with open(f, "w") as fh:
        json.dump(p11g.default_policy(), fh, indent=2)
    assert check(f).rc == 0, check(f)
    assert check(tmpdir_policy).rc == 0, check(tmpdir_policy)
    # an empty directory is an empty deny-all policy
    empty = os.path.join(tmpdir_policy, "empty")
    os.mkdir(empty)
    r = check(empty)
    assert r.rc == 0, r


# Each bad case: (text, (line, first column, last column) of the place the
# error must be reported at, given as substrings of one line: the error
# position must fall from the start of `lo` to the end of `hi`, 1-based).

def case(text, lo, hi=None):
    return (text, lo, hi or lo)


def R(rule_json):
    """A policy whose rules are the given one-line JSON texts, one per line."""
    return ('{\n  "default": "deny",\n  "rules": [\n    '
            + ',\n    '.join(rule_json) + '\n  ]\n}\n')


OG = '"orderers": ["group:p11gt-ci"]'
GOOD = '{"name": "a", %s, "keys": ["pkcs11:token=a"], "approvals": 0}' % OG


def rule(name, rest):
    """One rule on one line: name, orderers, then rest."""
    return '{"name": "%s", %s, %s}' % (name, OG, rest)


BAD = {
    "invalid-token": case(R([rule("a", '"keys": ["pkcs11:token=a"], "approvals": zero')]),
                          "zero"),
    "missing-comma": case(R(['{"name": "a" %s, "keys": ["pkcs11:token=a"], "approvals": 0}' % OG]),
                          ' "orderers"', '"orderers"'),
    "unknown-key": case(R([GOOD, rule("b", '"colour": "red", "keys": ["pkcs11:token=b"], '
                                           '"approvals": 0')]),
                        '"colour"', '"red"'),
    "unknown-top-key": case('{\n  "default": "deny",\n  "ruels": []\n}\n', '"ruels"', "[]"),
    "wrong-type-approvals": case(R([rule("a", '"keys": ["pkcs11:token=a"], "approvals": "two"')]),
                                 '"approvals"', '"two"'),
    "wrong-type-keys": case(R([rule("a", '"keys": "pkcs11:token=a", "approvals": 0')]),
                            '"keys"', '"pkcs11:token=a"'),
    "wrong-type-rules": case('{\n  "default": "deny",\n  "rules": {"name": "a"}\n}\n',
                             '"rules"', '{"name": "a"}'),
    "duplicate-key": case('{\n  "default": "deny",\n  "rules": [\n    {\n      "name": "a",\n'
                          '      "orderers": ["group:p11gt-ci"],\n'
                          '      "keys": ["pkcs11:token=a"],\n      "name": "b",\n'
                          '      "approvals": 0\n    }\n  ]\n}\n',
                          '"name": "b"'),
    "duplicate-top-key": case('{\n  "default": "deny",\n  "rules": [],\n  "default": "allow"\n}\n',
                              '"default": "allow"'),
    "overlapping-rules": case(R([rule("a", '"keys": ["pkcs11:token=prod"], "approvals": 0'),
                                 rule("b", '"keys": ["pkcs11:token=prod;object=fw"], '
                                           '"approvals": 0')]),
                              '{"name": "b"', '"approvals": 0}'),
    "duplicate-rule-name": case(R([rule("a", '"keys": ["pkcs11:token=a"], "approvals": 0'),
                                   rule("a", '"keys": ["pkcs11:token=b"], "approvals": 1')]),
                                '{"name": "a", %s, "keys": ["pkcs11:token=b"]' % OG,
                                '"approvals": 1}'),
    "missing-keys": case(R([GOOD, rule("b", '"approvals": 0')]),
                         '{"name": "b"', '"approvals": 0}'),
    "bad-duration": case(R([rule("a", '"keys": ["pkcs11:token=a"], "approvals": 0, '
                                      '"max_validity": "1 hour"')]),
                         '"max_validity"', '"1 hour"'),
    "bad-principal": case(R(['{"name": "a", "orderers": ["usr:alice"], '
                             '"keys": ["pkcs11:token=a"], "approvals": 0}']),
                          '"orderers"', '"usr:alice"]'),
    "unknown-mechanism": case(R([rule("a", '"keys": ["pkcs11:token=a"], "approvals": 0, '
                                           '"mechanisms": ["CKM_FROBNICATE"]')]),
                              '"mechanisms"', '"CKM_FROBNICATE"]'),
    "bad-default": case('{\n  "rules": [],\n  "default": "maybe"\n}\n', '"default"', '"maybe"'),
    "approvers-without-approvals": case(R([rule("a", '"keys": ["pkcs11:token=a"], '
                                                     '"approvers": ["group:p11gt-approvers"]')]),
                                        '{"name": "a"', '"approvers": ["group:p11gt-approvers"]}'),
    "bad-uri": case(R([rule("a", '"keys": ["https://example.com/key"], "approvals": 0')]),
                    '"keys"', '"https://example.com/key"]'),
}


def position(text, lo, hi):
    """(line, first column, last column), 1-based, of the span from the start
    of substring lo to the end of substring hi (hi searched from lo on)."""
    assert text.count(lo) == 1, "ambiguous anchor %r" % lo
    a = text.index(lo)
    b = text.index(hi, a) + len(hi) - 1
    line = text.count("\n", 0, a) + 1
    assert text.count("\n", 0, b) + 1 == line, "span crosses lines"
    bol = text.rfind("\n", 0, a) + 1
    return line, a - bol + 1, b - bol + 1


def assert_error_at(r, fname, line, c_lo, c_hi):
    assert r.rc == 1, "expected exit 1: %r" % r
    assert len(r.err_lines) == 1, "expected exactly one line on stderr: %r" % r
    m = re.search(re.escape(fname) + r":(\d+):(\d+): \S", r.err)
    assert m, "no `%s:LINE:COLUMN: message` on stderr: %r" % (fname, r)
    got = (int(m.group(1)), int(m.group(2)))
    # one column of slack after the span: some parsers report the position
    # just past the offending token
    assert got[0] == line and c_lo <= got[1] <= c_hi + 1, \
        "error at %d:%d, expected line %d, column %d..%d: %r" % (got + (line, c_lo, c_hi, r))


@pytest.mark.parametrize("name", sorted(BAD))
def test_policy_check_bad(tmpdir_policy, name):
    text, lo, hi = BAD[name]
    fname = "bad-%s.json" % name
    path = os.path.join(tmpdir_policy, fname)
    with open(path, "w") as f:
        f.write(text)
    line, c_lo, c_hi = position(text, lo, hi)
    assert_error_at(check(path), fname, line, c_lo, c_hi)
    # the same file inside a directory with a good one
    with open(os.path.join(tmpdir_policy, "00-good.json"), "w") as f:
        f.write('{"rules": []}\n')
    assert_error_at(check(tmpdir_policy), fname, line, c_lo, c_hi)


def test_policy_check_directory_conflicts(tmpdir_policy):
    a = R([rule("a", '"keys": ["pkcs11:token=prod"], "approvals": 0')])
    with open(os.path.join(tmpdir_policy, "10-a.json"), "w") as f:
        f.write(a)
    assert check(tmpdir_policy).rc == 0
    # a rule in a later file overlapping one in an earlier file
    b = '{\n  "rules": [\n    %s\n  ]\n}\n' % rule("b", '"keys": ["pkcs11:object=fw"], "approvals": 0')
    with open(os.path.join(tmpdir_policy, "20-b.json"), "w") as f:
        f.write(b)
    line, lo, hi = position(b, '{"name": "b"', '"approvals": 0}')
    assert_error_at(check(tmpdir_policy), "20-b.json", line, lo, hi)
    # the same rule name in two files
    b = '{\n  "rules": [\n    %s\n  ]\n}\n' % rule("a", '"keys": ["pkcs11:token=dev"], "approvals": 0')
    with open(os.path.join(tmpdir_policy, "20-b.json"), "w") as f:
        f.write(b)
    line, lo, hi = position(b, '{"name": "a"', '"approvals": 0}')
    assert_error_at(check(tmpdir_policy), "20-b.json", line, lo, hi)
    # conflicting defaults
    b = '{\n  "default": "allow",\n  "rules": []\n}\n'
    with open(os.path.join(tmpdir_policy, "20-b.json"), "w") as f:
        f.write(b)
    line, lo, hi = position(b, '"default"', '"allow"')
    assert_error_at(check(tmpdir_policy), "20-b.json", line, lo, hi)
    # non-.json files are not policy
    os.unlink(os.path.join(tmpdir_policy, "20-b.json"))
    with open(os.path.join(tmpdir_policy, "README"), "w") as f:
        f.write("not json\n")
    assert check(tmpdir_policy).rc == 0


def policy_loaded_count(d):
    return sum(1 for r in d.audit() if r.get("event") == "policy_loaded")


def key_rule(d, token):
    rep = d.call({"verb": "key", "key": keyid(token, "k")})
    if rep.get("ok") is not True:
        return None
    res = assert_reply_ok(rep)
    return res.get("rule") if res.get("guarded") else None


EXTRA_RULE = {"name": "extra", "keys": ["pkcs11:token=extra"], "orderers": ORDERERS,
              "approvals": 0}


def test_sighup_bad_policy_keeps_old_then_good_policy_applies(start_daemon):
    d = start_daemon(files={"10-main.json": p11g.default_policy()})
    n_rules = len(p11g.default_policy()["rules"])
    st = d.status()
    assert st["policy"]["rules"] == n_rules and st["policy"]["files"] == 1, st
    n0 = policy_loaded_count(d)
    assert n0 == 1

    bad = json.dumps({"rules": [dict(EXTRA_RULE, colour="red")]}, indent=2) + "\n"
    d.write_policy("20-extra.json", bad)
    d.hup()
    assert wait_for(lambda: re.search(r"20-extra\.json:\d+:\d+: ", d.stderr()), 2), \
        "the daemon did not log the policy error:\n" + d.stderr()
    assert d.alive()
    # the old policy is in force, unchanged
    assert key_rule(d, "extra") is None
    expect_fail(d.cli("request", "--key", "pkcs11:token=extra;object=k", user="orderer"), "no_rule")
    op = d.request("orderer", "pkcs11:token=prod;object=hup")
    d.approve("alice", op)
    d.approve("bob", op)
    d.use_ok("orderer", "prod", "hup")
    d.use_ok("ci", "dev", "hup")
    st = d.status()
    assert st["policy"]["rules"] == n_rules and st["policy"]["files"] == 1, st
    assert policy_loaded_count(d) == n0

    d.write_policy("20-extra.json", {"rules": [EXTRA_RULE]})
    t0 = time.monotonic()
    d.hup()
    assert wait_for(lambda: key_rule(d, "extra") == "extra", 1.0, 0.02), \
        "new rule not in force 1 s after SIGHUP"
    assert time.monotonic() - t0 <= 1.5
    op2 = d.request("orderer", "pkcs11:token=extra;object=k")
    assert d.state_of(op2) == "approved"
    assert d.use_ok("orderer", "extra", "k")["operation"] == op2
    st = d.status()
    assert st["policy"]["rules"] == n_rules + 1 and st["policy"]["files"] == 2, st
    assert policy_loaded_count(d) == n0 + 1
    # operations from before the reload are still there
    assert d.state_of(op) == "exhausted"


def test_reload_keeps_the_rule_an_operation_was_approved_under(start_daemon):
    d = start_daemon()
    op = d.request("orderer", ("pkcs11:token=prod;object=keep", 2))
    d.approve("alice", op)
    d.approve("bob", op)
    n0 = policy_loaded_count(d)
    pol = p11g.default_policy()
    prod = pol["rules"][0]
    assert prod["name"] == "prod"
    prod["approvals"] = 3
    prod["max_uses"] = 1
    d.write_policy("10-test.json", pol)
    d.hup()
    assert wait_for(lambda: policy_loaded_count(d) == n0 + 1, 2, 0.1), d.stderr()
    # new requests are under the new rule ...
    expect_fail(d.cli("request", "--key", "pkcs11:token=prod;object=keep2", "--uses", "2",
                      user="orderer"), "limit_exceeded")
    # ... the approved operation keeps its own
    assert d.state_of(op) == "approved"
    assert d.use_ok("orderer", "prod", "keep")["remaining"] == 1
    assert d.use_ok("orderer", "prod", "keep")["remaining"] == 0
    d.use_refused("orderer", "prod", "keep", "exhausted")


def test_each_operation_is_judged_by_its_own_rule_snapshot_use_after_use(start_daemon):
    """approvald keeps parsed rule snapshots between uses: two operations on one key, ordered
    under two versions of a rule that allow different mechanisms, must each keep answering by
    their own version however the uses alternate."""
    d = start_daemon()
    pol = p11g.default_policy()
    prod = pol["rules"][0]
    prod["mechanisms"] = ["CKM_ECDSA"]
    d.write_policy("10-test.json", pol)
    n0 = policy_loaded_count(d)
    d.hup()
    assert wait_for(lambda: policy_loaded_count(d) == n0 + 1, 2, 0.1), d.stderr()
    old = d.request("orderer", ("pkcs11:token=prod;object=snap", 3))
    d.approve("alice", old)
    d.approve("bob", old)
    prod["mechanisms"] = ["CKM_ECDSA_SHA256"]
    d.write_policy("10-test.json", pol)
    d.hup()
    assert wait_for(lambda: policy_loaded_count(d) == n0 + 2, 2, 0.1), d.stderr()
    new = d.request("orderer", ("pkcs11:token=prod;object=snap", 3))
    d.approve("alice", new)
    d.approve("bob", new)
    for left in (2, 1, 0):
        r = d.use_ok("orderer", "prod", "snap", mechanism="CKM_ECDSA")
        assert (r["operation"], r["remaining"]) == (old, left), r
        r = d.use_ok("orderer", "prod", "snap", mechanism="CKM_ECDSA_SHA256")
        assert (r["operation"], r["remaining"]) == (new, left), r
    d.use_refused("orderer", "prod", "snap", "exhausted", mechanism="CKM_ECDSA")
    d.use_refused("orderer", "prod", "snap", "exhausted", mechanism="CKM_ECDSA_SHA256")


def test_an_operation_whose_rule_snapshot_is_damaged_signs_nothing_and_says_so(start_daemon):
    """An approved operation whose stored rule snapshot no longer reads back (an offline
    edit, a damaged store) is never spent: a use refuses with internal naming the operation,
    approvald's log says why each time, and an intact operation for the same key still
    answers (the damaged one does not hide it, and is named in the log all the same)."""
    d = start_daemon()
    bad = d.request("orderer", ("pkcs11:token=prod;object=broken", 2))
    d.approve("alice", bad)
    d.approve("bob", bad)
    assert d.stop() == 0
    env = lmdb.open(d.state, max_dbs=8, map_size=1 << 30)
    try:
        db = env.open_db(b"ops", create=False)
        with env.begin(write=True, db=db) as txn:
            op = json.loads(txn.get(struct.pack(">Q", bad)))
            assert op["id"] == bad and op["state"] == "approved", op
            name = op["keys"][0]["rule"]
            assert name in op["rules"], op
            op["rules"][name]["approvals"] = "two"  # not a count: the snapshot cannot load
            txn.put(struct.pack(">Q", bad), json.dumps(op).encode())
    finally:
        env.close()
    d.start()
    log_at = len(d.stderr())
    err = d.use_refused("orderer", "prod", "broken", "internal")
    assert "operation %d " % bad in err["message"] and "cannot be used" in err["message"], err
    assert "operation %d cannot be used" % bad in d.stderr()[log_at:], d.stderr()
    good = d.request("orderer", ("pkcs11:token=prod;object=broken", 1))
    d.approve("alice", good)
    d.approve("bob", good)
    log_at = len(d.stderr())
    r = d.use_ok("orderer", "prod", "broken")
    assert (r["operation"], r["remaining"]) == (good, 0), r
    assert "operation %d cannot be used" % bad in d.stderr()[log_at:], d.stderr()
    d.use_refused("orderer", "prod", "broken", "internal")
    shown = d.show(bad)
    assert shown["state"] == "approved" and shown["keys"][0]["used"] == 0, shown
