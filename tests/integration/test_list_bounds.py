"""`list` reads a bounded number of stored operations per call (issue 18, item 1): a page may end
where the scan did, with few operations or none, and says so with `more` and `next`; the CLI
follows `next` and prints the whole listing.  The store is filled past the bound with
tests/bench/bench_store (operations of uid 1000 under a "bench" rule no test user has a part in),
around operations the test users file through the CLI."""

import os
import re
import subprocess

import pytest

import p11g
from p11g import U, assert_reply_ok, expect_ok

FILL = os.path.join(os.environ.get("P11GATE_BUILD", "build"), "tests", "bench", "bench_store")
SRC = os.environ.get("P11GATE_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))
PROD = "pkcs11:token=prod;object=%s"


def scan_max():
    """approvald's bound (ops_view.c's LIST_SCAN_MAX), so the store outgrows it whatever it is."""
    with open(os.path.join(SRC, "approvald", "ops_view.c")) as f:
        return int(re.search(r"^#define LIST_SCAN_MAX\s+(\d+)", f.read(), re.M).group(1))


def policy():
    p = p11g.default_policy()
    p["rules"].append({"name": "bench", "keys": ["pkcs11:token=bench;object=k"],
                       "orderers": ["uid:1000"], "approvers": ["uid:2001"], "approvals": 1})
    return p


def fill(d, n, pending=0):
    """n operations of uid 1000 appended to d's store (approvald stopped): the first n - pending
    used up (exhausted, outside the index of active ones), the rest pending."""
    if not os.access(FILL, os.X_OK):
        pytest.fail("bench_store not built at %s" % FILL)
    r = subprocess.run([FILL, d.state, d.policy_dir, str(n), "1", str(pending)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


def pages(d, user, req):
    """Every page of a listing over the raw protocol, following `next`, as user."""
    def go():
        out, after = [], 0
        with p11g.Conn(d.sock, 10) as c:
            while True:
                res = assert_reply_ok(c.call(dict(req, verb="list", after=after)))
                out.append(res)
                if not res["more"]:
                    return out
                assert isinstance(res.get("next"), int) and res["next"] > after, res
                after = res["next"]
    return p11g.in_child(U(user), go, 120)


def ids(ps):
    got = [o["id"] for p in ps for o in p["operations"]]
    assert len(got) == len(set(got)), "an operation listed twice: %r" % got
    return sorted(got)


@pytest.fixture
def store(start_daemon):
    """A daemon whose store holds, in id order: bound + 10 exhausted bench operations, three of
    the orderer's (one rejected, two pending), bound + 10 exhausted and bound + 5 pending bench
    operations, and one more pending of the orderer's."""
    bound = scan_max()
    d = start_daemon(policy())
    d.stop()
    fill(d, bound + 10)
    d.start()
    mine = [d.request("orderer", PROD % ("b%d" % i)) for i in range(3)]
    expect_ok(d.cli("reject", mine[0], "--reason", "not this one", user="alice"))
    d.stop()
    fill(d, 2 * bound + 15, pending=bound + 5)
    d.start()
    mine.append(d.request("orderer", PROD % "b3"))
    d.bound, d.mine, d.total = bound, mine, mine[-1]
    assert d.total == 3 * bound + 29
    return d


def test_one_call_reads_at_most_the_bound(store):
    d = store
    ps = pages(d, "mallory", {"all": True, "state": "rejected"})
    # a uid that may see nothing: every page is empty, and none reads past the bound (a call
    # also ends after about a millisecond, LIST_SCAN_US: then it read fewer)
    assert ps[0]["operations"] == [] and ps[0]["more"] is True and 0 < ps[0]["next"] <= d.bound
    nexts = [0] + [p["next"] for p in ps[:-1]]
    assert all(0 < b - a <= d.bound for a, b in zip(nexts, nexts[1:])), nexts
    assert len(ps) > 1 and len(ps) >= -(-d.total // d.bound)
    assert ids(ps) == [] and "next" not in ps[-1]
    # without --all: the index of active operations (pending), also read a bound at a time
    ps = pages(d, "mallory", {})
    assert len(ps) > 1 and ids(ps) == []
    assert "next" not in ps[-1]


def test_pages_carry_what_the_caller_may_see(store):
    d = store
    assert ids(pages(d, "orderer", {"all": True})) == d.mine
    assert ids(pages(d, "orderer", {"all": True, "state": "rejected"})) == d.mine[:1]
    assert ids(pages(d, "alice", {})) == d.mine[1:]   # waiting for her decision
    # a page full at limit goes on after its last operation, not past what it left out
    ps = pages(d, "orderer", {"all": True, "limit": 1})
    assert ids(ps) == d.mine
    assert all(len(p["operations"]) <= 1 for p in ps)


def test_cli_prints_the_whole_listing(store):
    d = store
    assert d.list_ids("--all", user="orderer") == d.mine
    assert d.list_ids("--all", "--state", "rejected", user="orderer") == d.mine[:1]
    assert d.list_ids("--all", "--state", "pending", user="orderer") == d.mine[1:]
    assert d.list_ids(user="alice") == d.mine[1:]
    assert d.list_ids("--all") == list(range(1, d.total + 1))
    # --json stays one array, whatever the pages
    r = expect_ok(d.cli("list", "--all", "--json", user="mallory"))
    assert r.out.strip() == "[]"
    r = expect_ok(d.cli("list", "--all", "--state", "rejected", user="mallory"))
    assert r.out == "no operations\n"
    r = expect_ok(d.cli("list", user="mallory"))
    assert r.out == "nothing waits for your approval\n"
