"""The command line: exit codes, error lines, ids, JSON output."""

import json
import os
import re
import socket
import tempfile

import pytest

import p11g
from p11g import U, approvald, expect_ok

PROD = "pkcs11:token=prod;object=%s"

CLIENT_VERBS = [
    ["status"],
    ["status", "--json"],
    ["list"],
    ["list", "--all", "--json"],
    ["show", "1"],
    ["approve", "1", "--yes"],
    ["reject", "1", "--reason", "no"],
    ["withdraw", "1"],
    ["revoke", "1"],
    ["request", "--key", PROD % "x"],
    ["audit"],
    ["audit", "--json"],
    ["audit", "--verify"],
]


def assert_error_line(r, code, rc):
    assert r.rc == rc, "expected exit %d: %r" % (rc, r)
    assert len(r.err_lines) == 1, "expected exactly one line on stderr: %r" % r
    line = r.err_lines[0]
    assert p11g.ERROR_LINE.match(line), "not `approvald: message (code)`: %r" % line
    assert r.code == code, r
    return line


@pytest.fixture
def dead_sockets(accounts):
    d = tempfile.mkdtemp(prefix="p11gt-dead-")
    os.chmod(d, 0o755)
    missing = os.path.join(d, "missing.sock")
    stale = os.path.join(d, "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(stale)
    s.close()  # the file stays, nobody listens
    os.chmod(stale, 0o666)
    yield missing, stale
    import shutil
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("args", CLIENT_VERBS, ids=lambda a: "-".join(a[:2]).strip("-"))
def test_daemon_down_exits_3(dead_sockets, args):
    for path in dead_sockets:
        r = approvald(args[0], "--socket", path, *args[1:], user="orderer")
        line = assert_error_line(r, "unavailable", 3)
        assert path in line, "message should name the socket: %r" % line
    # APPROVALD_SOCKET is used when there is no --socket
    r = approvald(*args, user="orderer", env={"APPROVALD_SOCKET": dead_sockets[0]})
    line = assert_error_line(r, "unavailable", 3)
    assert dead_sockets[0] in line


def test_socket_from_environment(daemon):
    r = approvald("status", env={"APPROVALD_SOCKET": daemon.sock})
    assert r.rc == 0, r
    r = approvald("request", "--key", PROD % "env", user="orderer",
                  env={"APPROVALD_SOCKET": daemon.sock})
    assert r.rc == 0 and re.fullmatch(r"\d+\n?", r.out), r


def test_unknown_operation(daemon):
    assert_error_line(daemon.cli("show", "999999"), "not_found", 1)
    assert_error_line(daemon.cli("show", "999999", "--json"), "not_found", 1)
    assert_error_line(daemon.cli("approve", "999999", "--yes", user="alice"), "not_found", 1)
    assert_error_line(daemon.cli("revoke", "999999", user="orderer"), "not_found", 1)
    # an operation the caller may not see is not found either
    op = daemon.request("orderer", PROD % "hidden")
    assert_error_line(daemon.cli("show", op, user="mallory"), "not_found", 1)


def test_refusals_are_one_line(daemon):
    op = daemon.request("orderer", PROD % "oneline")
    assert_error_line(daemon.cli("approve", op, "--yes", user="mallory"), "not_approver", 1)
    assert_error_line(daemon.cli("approve", op, "--yes", user="orderer"), "self_approval", 1)
    assert_error_line(daemon.cli("request", "--key", "pkcs11:token=none;object=x",
                                 user="orderer"), "no_rule", 1)


def test_request_prints_only_the_id(daemon):
    ids = []
    for i in range(3):
        r = expect_ok(daemon.cli("request", "--key", PROD % ("id%d" % i), "--description",
                                 "build %d" % i, user="orderer"))
        assert re.fullmatch(r"[0-9]+\n?", r.out), "stdout is not just the id: %r" % r
        ids.append(int(r.out))
    assert ids == sorted(ids) and len(set(ids)) == 3
    # with several keys, uses, validity, digests, context and a signer
    r = expect_ok(daemon.cli("request", "--key", PROD % "m1", "--uses", "2",
                             "--key", "pkcs11:token=dev;object=m2", "--uses", "3",
                             "--valid", "15m", "--description", "multi", "--context", "job 7",
                             "--digest", p11g.digest("a"), "--digest", p11g.digest("b"),
                             "--for", "user:p11gt-ci", user="orderer"))
    assert re.fullmatch(r"[0-9]+\n?", r.out), r
    o = daemon.show(int(r.out))
    assert [(k["rule"], k["uses"], k["used"]) for k in o["keys"]] == [("prod", 2, 0), ("dev", 3, 0)]
    assert "object=m1" in o["keys"][0]["uri"] and "object=m2" in o["keys"][1]["uri"]
    assert o["digests"] == [p11g.digest("a"), p11g.digest("b")]
    assert o["signer"] == "user:p11gt-ci"
    assert o["description"] == "multi" and o["context"] == "job 7"
    assert 890 <= p11g.epoch(o["expires"]) - p11g.epoch(o["created"]) <= 901


OP_FIELDS = ["id", "state", "orderer", "signer", "created", "expires", "description",
             "context", "digests", "keys", "approvals", "needs"]


def test_json_outputs(daemon):
    r = expect_ok(daemon.cli("request", "--key", PROD % "js", "--description", "json test",
                             "--context", "pipeline 1", "--json", user="orderer"))
    j = r.json()
    assert isinstance(j, dict) and j["state"] == "pending", r
    op = int(j["id"])
    dev = daemon.request("orderer", "pkcs11:token=dev;object=js")

    r = expect_ok(daemon.cli("show", op, "--json"))
    o = r.json()
    assert isinstance(o, dict), r
    for f in OP_FIELDS:
        assert f in o, "operation object lacks %r: %r" % (f, o)
    assert o["id"] == op and o["state"] == "pending"
    assert o["orderer"]["user"] == U("orderer") and o["orderer"]["uid"] == p11g.uid_of("orderer")
    assert o["signer"] in ("user:p11gt-orderer", "uid:%d" % p11g.uid_of("orderer"))
    assert o["description"] == "json test" and o["context"] == "pipeline 1"
    assert o["digests"] == [] and o["approvals"] == []
    assert [(k["rule"], k["uses"], k["used"]) for k in o["keys"]] == [("prod", 1, 0)]
    assert "object=js" in o["keys"][0]["uri"]
    assert isinstance(o["needs"], str) and o["needs"]

    r = expect_ok(daemon.cli("list", "--json", user="alice"))
    lst = r.json()
    assert isinstance(lst, list), "list --json must print one JSON array: %r" % r
    assert [x["id"] for x in lst] == [op]
    for f in OP_FIELDS:
        assert f in lst[0], f
    lst = expect_ok(daemon.cli("list", "--all", "--json")).json()
    assert isinstance(lst, list) and sorted(x["id"] for x in lst) == [op, dev]
    assert expect_ok(daemon.cli("list", "--json", user="mallory")).json() == []

    r = expect_ok(daemon.cli("audit", "--json"))
    lines = [l for l in r.out.splitlines() if l.strip()]
    assert len(lines) >= 3
    for l in lines:
        assert isinstance(json.loads(l), dict), l


def test_status_json(daemon):
    daemon.request("orderer", PROD % "st1")
    daemon.request("orderer", "pkcs11:token=dev;object=st2")
    st = expect_ok(daemon.cli("status", "--json")).json()
    assert st["pending"] == 1 and st["approved"] == 1, st
    assert st["policy"]["files"] == 1
    assert st["policy"]["rules"] == len(p11g.default_policy()["rules"])
    assert expect_ok(daemon.cli("status", "--json", user="alice")).json()["pending_for_you"] == 1
    assert expect_ok(daemon.cli("status", "--json", user="mallory")).json()["pending_for_you"] == 0
    # wire.h: status ; {pending, pending_for_you, approved, total, policy: {files, rules, loaded}}
    assert st.get("total") == 2, "status --json lacks total: %r" % st
    assert "loaded" in st["policy"], "status --json lacks policy.loaded: %r" % st
    # counted from the store's indexes: what ends leaves the counts
    p3 = daemon.request("orderer", PROD % "st3")
    daemon.approve("alice", p3)
    st = expect_ok(daemon.cli("status", "--json")).json()
    assert (st["pending"], st["approved"], st["total"]) == (2, 1, 3), st
    daemon.approve("bob", p3)
    daemon.use_ok("orderer", "dev", "st2")
    st = expect_ok(daemon.cli("status", "--json")).json()
    assert (st["pending"], st["approved"]) == (1, 1), st
    expect_ok(daemon.cli("reject", st["total"] - 2, "--reason", "no", user="carol"))
    st = expect_ok(daemon.cli("status", "--json")).json()
    assert (st["pending"], st["approved"]) == (0, 1), st
    assert expect_ok(daemon.cli("status", "--json", user="alice")).json()["pending_for_you"] == 0


def test_human_output(daemon):
    op = daemon.request("orderer", PROD % "human")
    r = expect_ok(daemon.cli("show", op))
    assert str(op) in r.out and "pending" in r.out, r
    r = expect_ok(daemon.cli("list", user="alice"))
    assert str(op) in r.out, r
    expect_ok(daemon.cli("status"))
    r = expect_ok(daemon.cli("audit"))
    assert "created" in r.out, r


USAGE = [
    [],
    ["frobnicate"],
    ["list", "--bogus"],
    ["show"],
    ["approve"],
    ["reject", "1"],
    ["request"],
    ["request", "--key"],
    ["request", "--key", PROD % "u", "--uses"],
    ["request", "--uses", "2"],
]


@pytest.mark.parametrize("args", USAGE, ids=lambda a: "-".join(a) or "none")
def test_usage_errors_exit_2(daemon, args):
    r = approvald(*(args[:1] + ["--socket", daemon.sock] + args[1:] if args else []),
                  user="orderer")
    assert r.rc == 2, "expected a usage error: %r" % r
    if args:
        assert any(l.startswith("approvald: ") for l in r.err_lines), r
    else:
        assert r.err.strip(), r
    # nothing reached the daemon
    assert daemon.list_ids("--all") == []


def test_serve_help():
    r = approvald("serve", "--help")
    assert r.rc == 0 and "--state-dir" in (r.out + r.err), r


def test_client_binary_links_jansson_and_libc_only():
    """The client verbs start without libcrypto, p11-kit or LMDB (3 of `show`'s 5 ms): those
    are approvald-local's, which the local verbs re-execute."""
    r = p11g.run(["readelf", "-d", p11g.APPROVALD])
    assert r.rc == 0, r
    needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", r.out))
    assert needed, r.out
    sanitizers = {n for n in needed if n.startswith(("libasan", "libubsan", "libm.", "libgcc_s",
                                                      "libstdc++", "libdl.", "libpthread."))}
    assert needed - sanitizers == {"libjansson.so.4", "libc.so.6"}, needed
    r = p11g.run(["readelf", "-d", os.path.join(os.path.dirname(p11g.APPROVALD),
                                               "approvald-local")])
    assert "liblmdb" in r.out and "libcrypto" in r.out, r.out


@pytest.mark.parametrize("args", [["serve", "--state-dir", "STATE"],
                                  ["policy", "check", "/nonexistent"],
                                  ["audit", "--state-dir", "STATE", "--verify"]],
                         ids=["serve", "policy-check", "audit-state-dir"])
def test_local_verbs_without_approvald_local(args):
    """A client binary without approvald-local beside it (nor installed) says so, exit 1."""
    with tempfile.TemporaryDirectory() as d:
        lone = os.path.join(d, "approvald")
        with open(p11g.APPROVALD, "rb") as src, open(lone, "wb") as dst:
            dst.write(src.read())
        os.chmod(lone, 0o755)
        state = os.path.join(d, "state")
        r = p11g.run([lone] + [state if a == "STATE" else a for a in args])
        assert r.rc == 1, r
        assert len(r.err_lines) == 1 and "approvald-local" in r.err, r
        assert re.match(r"^approvald: cannot run /\S+/approvald-local: ", r.err_lines[0]), r
        assert not os.path.exists(state), "nothing may be created"
        # the client verbs still work without it
        r = p11g.run([lone, "--help"])
        assert r.rc == 0 and "request" in r.out, r


@pytest.mark.parametrize("line,msg", [
    # FILE:LINE:COLUMN, the column of what is wrong:
    # a NUL byte (it once ended the key, so this set max_requests_per_minute): the NUL
    ("max_requests_per_minute\x00junk = 5\n", ":1:24: a NUL byte in a setting"),
    ("max_requests_per_minute = 5\x00 0\n", ":1:28: a NUL byte in a setting"),
    # no '=': what stands where it should; nothing before it: the '='
    ("socket /run/x.sock\n", ':1:8: expected "key = value"'),
    ("# fine\nmax_requests_per_minute\n", ':2:24: expected "key = value"'),
    ("= 5\n", ':1:1: expected "key = value"'),
    # an unknown key: the key; a bad value: the value
    ("no_such_setting = 1\n", ":1:1: no_such_setting: unknown setting"),
    ("# fine\n\tno_such_setting = 1\n", ":2:2: no_such_setting: unknown setting"),
    ("  max_requests_per_minute =  many\n",
     ":1:30: max_requests_per_minute: expected a positive number"),
    ("durability=sometimes\n", ":1:12: durability: durability is full or process"),
])
def test_a_bad_configuration_line_stops_the_daemon_naming_its_line_and_column(line, msg):
    d = p11g.Daemon({"default": "deny", "rules": []}, config=line)
    try:
        with pytest.raises(AssertionError) as e:
            d.start(timeout=10)
        assert "approvald.conf" + msg in str(e.value), str(e.value)
    finally:
        d.kill()
        d.cleanup()
