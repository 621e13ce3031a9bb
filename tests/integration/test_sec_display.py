"""What approvers and auditors see (issue 16, finding 6): text with terminal control
sequences is refused at request time, and what a store already holds is shown escaped,
through a real terminal (tmux) as well as byte for byte."""

import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time

import lmdb
import pytest

import p11g
from p11g import U, assert_refused, assert_reply_ok, expect_ok, keyid

PROD = "pkcs11:token=prod;object=%s"
ESC = "\x1b"

# Principals are users, not groups: other test runs on this machine add and remove group
# members while these run.
POLICY = {
    "default": "deny",
    "rules": [
        {"name": "prod", "keys": ["pkcs11:token=prod"], "orderers": ["user:p11gt-orderer"],
         "approvers": ["user:p11gt-alice", "user:p11gt-bob"], "approvals": 2,
         "admins": ["user:p11gt-dave"], "max_uses": 10, "max_validity": "1h"},
        {"name": "dev", "keys": ["pkcs11:token=dev"], "orderers": ["user:p11gt-orderer"],
         "approvals": 0},
    ],
}


@pytest.fixture
def daemon(start_daemon):
    return start_daemon(POLICY)

# What a terminal obeys and a person does not see: each must be refused in every text field
# (C0 but tab, DEL, C1, the bidirectional overrides, embeddings, isolates and marks, and the
# Unicode line and paragraph separators).  NUL is not here: "\u0000" never gets past the
# frame decoder (the connection is closed).
FORBIDDEN = {
    "esc": "\x1b",
    "bel": "\x07",
    "lf": "\n",
    "cr": "\r",
    "del": "\x7f",
    "c1-csi": "\x9b",
    "c1-nel": "\x85",
    "rlo": "\u202e",
    "lre": "\u202a",
    "pdf": "\u202c",
    "lri": "\u2066",
    "pdi": "\u2069",
    "lrm": "\u200e",
    "rlm": "\u200f",
    "alm": "\u061c",
    "line-sep": "\u2028",
    "para-sep": "\u2029",
}

# Code points that must never reach a screen raw (the same set, plus tab in tables).
RAW_BAD = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def call(d, user, req):
    return d.call(dict(req, v=1), user=user)


def no_new_operation(d, before):
    assert d.list_ids("--all") == before, "a refused request left an operation behind"


# ------------------------------------------------------------ refused at request time --

@pytest.mark.parametrize("name", sorted(FORBIDDEN))
def test_request_text_with_a_control_character_is_refused(daemon, name):
    ch = FORBIDDEN[name]
    base = {"verb": "request", "keys": [{"uri": PROD % "fw-ec", "uses": 1}], "valid": 600,
            "description": "release 1.2"}
    cases = {
        "description": dict(base, description="release" + ch + "1.2"),
        "context": dict(base, context="job" + ch + "7"),
        "keys[0].uri": dict(base, keys=[{"uri": PROD % ("fw" + ch + "ec"), "uses": 1}]),
    }
    for member, req in cases.items():
        err = assert_refused(call(daemon, "orderer", req), "bad_request", "for %s" % member)
        assert member in err["message"], "the message must name %s: %r" % (member, err)
        assert not RAW_BAD.search(err["message"]), "the message echoes it raw: %r" % err
    no_new_operation(daemon, [])


def test_request_uri_query_with_escape_is_refused(daemon):
    """The finding's own case: raw ESC inside ?pin-value= of a key URI."""
    uri = PROD % "fw-ec" + "?pin-value=" + ESC + "[2K" + ESC + "[1A"
    err = assert_refused(call(daemon, "orderer", {
        "verb": "request", "keys": [{"uri": uri, "uses": 10}], "valid": 600,
        "description": "x"}), "bad_request")
    assert "keys[0].uri" in err["message"] and "U+001B" in err["message"], err
    r = daemon.cli("request", "--key", uri, "--uses", "10", user="orderer")
    p11g.expect_fail(r, "bad_request")
    assert ESC not in r.err and ESC not in r.out, r
    no_new_operation(daemon, [])


def test_nested_strings_and_member_names_are_checked(daemon):
    base = {"verb": "request", "keys": [{"uri": PROD % "nest", "uses": 1}], "valid": 600,
            "description": "x"}
    for req, member in [
        (dict(base, oci={"registry": "ghcr.io" + ESC + "[8m", "repository": "a",
                         "digest": p11g.digest("i")}), "oci.registry"),
        (dict(base, digests=[p11g.digest("a"), "sha256:" + ESC]), "digests[1]"),
        (dict(base, **{"for": "user:p11gt-ci\u202e"}), "for"),
        (dict(base, **{"descr" + ESC + "iption": "x"}), "descr\\x1biption"),
        (dict(base, keys=[{"uri": PROD % "nest", "u\u202eses": 1}]), "keys[0].u\\u202eses"),
    ]:
        err = assert_refused(call(daemon, "orderer", req), "bad_request", "for %s" % member)
        assert member in err["message"], "the message must name %s: %r" % (member, err)
        assert not RAW_BAD.search(err["message"]), err
    no_new_operation(daemon, [])


def test_a_tab_and_ordinary_unicode_are_accepted(daemon):
    op = daemon.request("orderer", PROD % "tab", description="build\t42 f\u00fcr M\u00fcller "
                        "\u05e9\u05dc\u05d5\u05dd \u4e2d\u6587")
    o = daemon.show(op)
    assert o["description"] == "build\t42 f\u00fcr M\u00fcller \u05e9\u05dc\u05d5\u05dd " \
                               "\u4e2d\u6587", o


@pytest.mark.parametrize("verb", ["reject", "revoke"])
def test_reasons_with_control_characters_are_refused(daemon, verb):
    op = daemon.request("orderer", PROD % ("reason-" + verb))
    user = "alice" if verb == "reject" else "orderer"
    for ch in (ESC, "\n", "\u202e", "\x9b"):
        err = assert_refused(call(daemon, user, {"verb": verb, "id": op,
                                                  "reason": "no" + ch + "[2A"}),
                             "bad_request", "for %r" % ch)
        assert "reason" in err["message"], err
        r = daemon.cli(verb, op, "--reason", "no" + ch + "x", user=user)
        p11g.expect_fail(r, "bad_request")
    assert daemon.state_of(op) == "pending"
    recs = daemon.audit()
    assert not any(r.get("event") in ("rejected", "revoked") for r in recs), recs


@pytest.mark.parametrize("verb", ["approve", "withdraw", "show", "list", "audit", "wait"])
def test_other_verbs_refuse_control_characters_too(daemon, verb):
    """Every verb a person's client sends checks its strings; none echoes them raw."""
    op = daemon.request("orderer", PROD % ("other-" + verb))
    req = {"verb": verb, "id": op, ESC + "[2J": "x"}
    if verb in ("list", "audit"):
        req = {"verb": verb, "state" if verb == "list" else ESC: "pending" + ESC}
    err = assert_refused(call(daemon, "alice", req), "bad_request")
    assert "U+001B" in err["message"] and ESC not in err["message"], err
    assert daemon.state_of(op) == "pending"


def test_a_token_label_with_escape_is_not_refused_by_use_or_key(daemon):
    """Key labels come from the token: the module's verbs are judged as before (here: no
    operation), and what lands in the audit log is percent-encoded."""
    label = "fw" + ESC + "[2Kec"
    rep = daemon.use("orderer", "prod", label)
    assert rep.get("ok") is False and rep["error"]["code"] == "no_operation", rep
    rep = call(daemon, "orderer", {"verb": "key", "key": keyid("prod", label)})
    res = assert_reply_ok(rep, "for key")
    assert res.get("guarded") is True, res
    recs = [r for r in daemon.audit() if r.get("event") == "use_refused"]
    assert recs and "fw%1B%5B2Kec" in recs[-1]["key"], recs


# ----------------------------------------------- a store written before the check --

def jansson_string(s):
    """A string as jansson's json_dumps writes it (the audit log's canonical form)."""
    short = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
             "\t": "\\t"}
    out = []
    for ch in s:
        if ch in short:
            out.append(short[ch])
        elif ord(ch) < 0x20:
            out.append("\\u%04X" % ord(ch))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def edit_store(d, op_id, op_fn=None, audit_old=None, audit_new=None):
    """With the daemon stopped: edit operation op_id's stored object, and replace one string
    in the last audit record, re-hashing it and the chain head as approvald would have
    written them (the store of an approvald from before the check)."""
    assert d.stop() == 0
    env = lmdb.open(d.state, max_dbs=8, map_size=1 << 30)
    try:
        ops = env.open_db(b"ops", create=False)
        audit = env.open_db(b"audit", create=False)
        meta = env.open_db(b"meta", create=False)
        with env.begin(write=True) as txn:
            if op_fn:
                key = struct.pack(">Q", op_id)
                op = json.loads(txn.get(key, db=ops))
                op_fn(op)
                txn.put(key, json.dumps(op).encode(), db=ops)
            if audit_old is not None:
                head = json.loads(txn.get(b"audit_head", db=meta))
                key = struct.pack(">Q", head["seq"])
                text = txn.get(key, db=audit).decode()
                m = re.fullmatch(r'(.*),"hash":"[0-9a-f]{64}"\}', text, re.S)
                assert m, text
                canon = m.group(1) + "}"
                old, new = jansson_string(audit_old), jansson_string(audit_new)
                assert canon.count(old) == 1, (canon, old)
                canon = canon.replace(old, new)
                prev = bytes.fromhex(json.loads(canon)["prev"])
                h = hashlib.sha256(prev + canon.encode()).hexdigest()
                txn.put(key, (canon[:-1] + ',"hash":"%s"}' % h).encode(), db=audit)
                txn.put(b"audit_head", ('{"seq":%d,"hash":"%s"}' % (head["seq"], h)).encode(),
                        db=meta)
    finally:
        env.close()
    d.start()


TERM_ENV = {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TERM": "screen", "PAGER": "cat"}


class Terminal:
    """A tmux server of its own; run() shows one command as a user in a 250x60 pane."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="p11gt-tmux-")
        self.sock = os.path.join(self.dir, "tmux")
        conf = os.path.join(self.dir, "tmux.conf")
        with open(conf, "w") as f:
            f.write("set -g status off\nset -g default-size 250x60\n")
        self.conf = conf
        self.n = 0

    def tmux(self, *args, check=True):
        r = subprocess.run(["tmux", "-u", "-S", self.sock, "-f", self.conf] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10,
                           env=dict(p11g.CLEAN_ENV, **TERM_ENV))
        if check:
            assert r.returncode == 0, "tmux %s: %r" % (args, r.stderr)
        return r.stdout.decode("utf-8", "replace")

    def start(self, args, user):
        """Starts `approvald ARGS` as user in a new window; returns its target."""
        self.n += 1
        uid, gid, _ = p11g.ids(user)
        env = " ".join("%s=%s" % kv for kv in dict(p11g.CLEAN_ENV, **TERM_ENV).items())
        # The shell prints a marker after the command's last byte and stays: a pane whose
        # process has exited may be marked dead before tmux has read all it wrote.
        script = '"$0" "$@"; printf "\\n[exit %d]\\n" $?; exec sleep 600'
        cmd = ("exec setpriv --reuid=%d --regid=%d --init-groups env -i %s sh -c %s %s %s"
               % (uid, gid, env, shlex.quote(script), p11g.APPROVALD,
                  " ".join(shlex.quote(a) for a in args)))
        name = "w%d" % self.n
        if self.n == 1:
            self.tmux("new-session", "-d", "-x", "250", "-y", "60", "-s", "t", "-n", name, cmd)
        else:
            self.tmux("new-window", "-d", "-t", "t", "-n", name, cmd)
        return "t:" + name

    def screen(self, target):
        return self.tmux("capture-pane", "-p", "-J", "-S", "-", "-t", target)

    def wait(self, target, pred, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            s = self.screen(target)
            if pred(s):
                return s
            assert time.monotonic() < deadline, "screen never got there:\n%s" % s
            time.sleep(0.05)

    def run(self, args, user):
        """The screen once the command has ended, which must be with exit status 0."""
        t = self.start(args, user)
        s = self.wait(t, lambda s: re.search(r"^\[exit \d+\]$", s, re.M))
        assert "\n[exit 0]\n" in s, s
        return s

    def close(self):
        self.tmux("kill-server", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def term(accounts):
    if not shutil.which("tmux"):
        pytest.fail("tmux is needed (tools/debian-packages)")
    t = Terminal()
    yield t
    t.close()


def raw_out(d, *args, user=None):
    """stdout and stderr of `approvald ARGS --socket ...` as bytes."""
    uid, gid, groups = p11g.ids(user) if user else (0, 0, [])
    argv = [p11g.APPROVALD, args[0], "--socket", d.sock] + [str(a) for a in args[1:]]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10,
                       env=dict(p11g.CLEAN_ENV, **TERM_ENV), user=uid, group=gid,
                       extra_groups=groups, cwd="/")
    assert p.returncode == 0, (argv, p.returncode, p.stdout, p.stderr)
    return p.stdout, p.stderr


def assert_clean_bytes(data, what):
    text = data.decode("utf-8")  # also: nothing but UTF-8
    bad = RAW_BAD.search(text.replace("\n", ""))  # the program's own line ends only
    assert not bad, "%s holds U+%04X raw at %d: %r" % (what, ord(bad.group()), bad.start(), text)


def lines_of(screen):
    return [l.rstrip() for l in screen.splitlines()]


# The decoy a crafted URI drew over the real key line: "rule dev, used 0 of 1".
DECOY_KEY = "    pkcs11:token=dev;object=dev-ec  (rule dev, used 0 of 1)"
# Draws the decoy over its own line, then pins the rest of that line to the last column.
KEY_ATTACK = "?pin-value=\r" + ESC + "[2K" + DECOY_KEY + ESC + "[?7l" + ESC + "[999C"
DESC_ATTACK = "release 1.2 \u202e" + "ce-wf" + "\u202c" + ESC + "]0;title" + "\x07"


def prepared_operation(d):
    """A pending prod operation (fw-ec, 10 uses) whose stored URI, description and context
    carry control sequences, as an approvald before the check stored them."""
    op = d.request("orderer", (PROD % "fw-ec", 10), description="placeholder")

    def evil(o):
        o["keys"][0]["uri"] = PROD % "fw-ec" + KEY_ATTACK
        o["description"] = DESC_ATTACK
        o["context"] = "job\x9b2J\x7f 7"
    edit_store(d, op, evil)
    return op


def check_op_screen(screen, op):
    ls = lines_of(screen)
    # the real key, its rule and its count are on the screen, on one line
    key = [l for l in ls if "object=fw-ec" in l]
    assert len(key) == 1, screen
    assert key[0].startswith("    pkcs11:token=prod;object=fw-ec?pin-value=\\r\\x1b[2K    "
                             "pkcs11:token=dev;object=dev-ec  (rule dev, used 0 of 1)"
                             "\\x1b[?7l\\x1b[999C"), screen
    assert key[0].endswith("(rule prod, used 0 of 10)"), screen
    # the decoy never stands as a line of its own
    assert DECOY_KEY not in ls and not any(l.startswith(DECOY_KEY) for l in ls), screen
    assert "  description: release 1.2 \\u202ece-wf\\u202c\\x1b]0;title\\x07" in ls, screen
    assert "  context:     job\\u009b2J\\x7f 7" in ls, screen
    assert ls[0].startswith("operation %d: pending" % op), screen


def test_show_and_approve_confirmation_through_a_terminal(start_daemon, term):
    d = start_daemon(POLICY)
    op = prepared_operation(d)

    check_op_screen(term.run(["show", str(op), "--socket", d.sock], "alice"), op)

    # approve asks on the terminal: the approver sees the real key before answering
    t = term.start(["approve", str(op), "--socket", d.sock], "alice")
    screen = term.wait(t, lambda s: "Approve operation %d? [y/N]" % op in s)
    check_op_screen(screen, op)
    term.tmux("send-keys", "-t", t, "n", "Enter")
    term.wait(t, lambda s: "approvald: not approved\n\n[exit 1]" in s)
    assert d.state_of(op) == "pending"

    out, err = raw_out(d, "show", op, user="alice")
    assert_clean_bytes(out, "show")
    assert b"\\x1b[2K" in out and b"\\u202e" in out, out


def test_list_through_a_terminal(start_daemon, term):
    d = start_daemon(POLICY)
    first = d.request("orderer", (PROD % "fw-rsa", 2), description="nightly")
    op = d.request("orderer", (PROD % "fw-ec", 10), description="placeholder")
    fake = "%-6d %-9s %-16s %-40s %-10s %s" % (op, "pending", U("orderer"),
                                               "pkcs11:token=dev;object=dev-ec (0/1)",
                                               "in 59m", "nightly")
    # erase this row and the one above it, then draw one fake row
    attack = "\r" + ESC + "[2K" + ESC + "[1A\r" + ESC + "[2K" + fake

    def evil(o):
        o["description"] = attack
    edit_store(d, op, evil)

    screen = term.run(["list", "--socket", d.sock], "alice")
    ls = lines_of(screen)
    assert ls[0].startswith("ID "), screen
    rows = [l for l in ls[1:] if re.match(r"^\d+ ", l)]
    assert [int(l.split()[0]) for l in rows] == [first, op], screen
    assert "object=fw-rsa (0/2)" in rows[0] and "object=fw-ec (0/10)" in rows[1], screen
    assert rows[1].endswith("\\r\\x1b[2K\\x1b[1A\\r\\x1b[2K" + fake), screen
    assert fake not in ls, screen

    out, _ = raw_out(d, "list", user="alice")
    assert_clean_bytes(out, "list")


def test_audit_through_a_terminal(start_daemon, term):
    """A crafted revoke reason (stored before the check) neither hides rows nor adds one."""
    d = start_daemon(POLICY)
    op = d.request("orderer", (PROD % "fw-ec", 10), description="release")
    expect_ok(d.cli("approve", op, "--yes", user="alice"))
    expect_ok(d.cli("revoke", op, "--reason", "PLACEHOLDER", user="orderer"))
    recs = d.audit()
    fake = "%-6d %-23s %-14s %-24s %-6d %s" % (recs[-1]["seq"], "2026-01-01 00:00:00 UTC",
                                               "withdrawn", "p11gt-alice (uid %d)"
                                               % p11g.uid_of("alice"), op, "")
    # erase this row and the two above it, then draw one fake row
    reason = ("\r" + ESC + "[2K" + (ESC + "[1A\r" + ESC + "[2K") * 2 + fake.rstrip()
              + "\u202e")

    def evil(o):
        o["revocation"]["reason"] = reason
    edit_store(d, op, evil, "PLACEHOLDER", reason)
    expect_ok(d.cli("audit", "--verify"))  # the chain is as approvald would have written it

    recs = d.audit()
    assert any(r.get("reason") == reason for r in recs), recs  # --json keeps the value
    screen = term.run(["audit", "--socket", d.sock], "root")
    ls = lines_of(screen)
    rows = [l for l in ls if re.match(r"^\d+ ", l)]
    assert [int(l.split()[0]) for l in rows] == [r["seq"] for r in recs], screen
    revoked = [l for l in rows if " revoked " in l]
    assert len(revoked) == 1 and revoked[0].endswith(
        "reason=\\r\\x1b[2K\\x1b[1A\\r\\x1b[2K\\x1b[1A\\r\\x1b[2K" + fake.rstrip() + "\\u202e"), \
        screen
    assert any(" approved " in l and U("alice") in l for l in rows), screen
    assert not any(l.startswith(fake.rstrip()) for l in ls), screen
    assert not any(" withdrawn " in l and "reason=" not in l for l in ls), screen

    # show's revocation line, and the bytes of every output
    screen = term.run(["show", str(op), "--socket", d.sock], "root")
    assert any(l.startswith("  revoked: by ") and l.endswith(
        ": \\r\\x1b[2K\\x1b[1A\\r\\x1b[2K\\x1b[1A\\r\\x1b[2K" + fake.rstrip() + "\\u202e")
        for l in lines_of(screen)), screen
    for args in (["audit"], ["show", op]):
        out, _ = raw_out(d, *args)
        assert_clean_bytes(out, " ".join(map(str, args)))
    # the offline audit of a store directory (approvald-local) alike
    p = subprocess.run([p11g.APPROVALD, "audit", "--state-dir", d.state], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=10, env=dict(p11g.CLEAN_ENV, **TERM_ENV))
    assert p.returncode == 0, p
    assert_clean_bytes(p.stdout, "audit --state-dir")
    assert ("reason=\\r\\x1b[2K\\x1b[1A\\r\\x1b[2K\\x1b[1A\\r\\x1b[2K" + fake.rstrip()
            + "\\u202e\n").encode() in p.stdout, p


def test_json_output_escapes_c1_and_bidi(start_daemon):
    """--json stays JSON with the same values, and no raw control or bidi character."""
    d = start_daemon(POLICY)
    op = prepared_operation(d)
    for args in (["show", op, "--json"], ["list", "--all", "--json"]):
        out, _ = raw_out(d, *args, user="alice")
        assert_clean_bytes(out, " ".join(map(str, args)))
        o = json.loads(out)
        o = o[0] if isinstance(o, list) else o
        assert o["description"] == DESC_ATTACK and o["keys"][0]["uri"].endswith(KEY_ATTACK), o
    out, _ = raw_out(d, "audit", "--json")
    assert_clean_bytes(out, "audit --json")
    # ordinary non-ASCII text stays readable in JSON
    ok = d.request("orderer", PROD % "utf8", description="f\u00fcr M\u00fcller")
    out, _ = raw_out(d, "show", ok, "--json")
    assert "f\u00fcr M\u00fcller".encode() in out, out


class FakeDaemon:
    """A socket that answers every request with one canned reply (stands in for a daemon, or
    a store, that hands the CLI text holding control characters)."""

    def __init__(self, reply):
        self.dir = tempfile.mkdtemp(prefix="p11gt-fake-")
        os.chmod(self.dir, 0o755)
        self.sock = os.path.join(self.dir, "sock")
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.bind(self.sock)
        os.chmod(self.sock, 0o666)
        self.s.listen(8)
        self.reply = json.dumps(dict(reply, v=1)).encode()
        self.t = threading.Thread(target=self.serve, daemon=True)
        self.t.start()

    def serve(self):
        while True:
            try:
                c, _ = self.s.accept()
            except OSError:
                return
            with c:
                try:
                    (n,) = struct.unpack(">I", c.recv(4, socket.MSG_WAITALL))
                    c.recv(n, socket.MSG_WAITALL)
                    c.sendall(struct.pack(">I", len(self.reply)) + self.reply)
                except OSError:
                    pass

    def close(self):
        self.s.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def test_error_messages_from_the_daemon_are_escaped(accounts):
    """The one error line shows a daemon's message escaped, whatever it holds."""
    fake = FakeDaemon({"ok": False, "error": {
        "code": "forbidden", "message": "no\r\x1b[2K\x1b[1Aok\u202e\x9b (approved)"}})
    try:
        p = subprocess.run([p11g.APPROVALD, "show", "--socket", fake.sock, "7"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10,
                           env=dict(p11g.CLEAN_ENV, **TERM_ENV))
        assert p.returncode == 1, p
        assert_clean_bytes(p.stderr, "the error line")
        assert p.stderr.decode() == ("approvald: no\\r\\x1b[2K\\x1b[1Aok\\u202e\\u009b "
                                     "(approved) (forbidden)\n"), p
    finally:
        fake.close()
    fake = FakeDaemon({"ok": False, "error": {
        "code": "audit_broken", "message": "record 3\r\x1b[2Kaudit chain intact\x1b[8m"}})
    try:
        p = subprocess.run([p11g.APPROVALD, "audit", "--verify", "--socket", fake.sock],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10,
                           env=dict(p11g.CLEAN_ENV, **TERM_ENV))
        assert p.returncode == 1, p
        assert_clean_bytes(p.stderr, "the error line")
        assert p.stderr.decode() == ("approvald: audit chain broken: record 3\\r\\x1b[2Kaudit "
                                     "chain intact\\x1b[8m (audit_broken)\n"), p
    finally:
        fake.close()


def test_status_from_the_daemon_is_escaped(accounts):
    fake = FakeDaemon({"ok": True, "result": {
        "pending": 0, "pending_for_you": 0, "approved": 0, "total": 0,
        "policy": {"files": 1, "rules": 1, "default": "deny\x1b[2J\u202e",
                   "digest": "ab\x1bcd\x7f", "loaded": 1}}})
    try:
        p = subprocess.run([p11g.APPROVALD, "status", "--socket", fake.sock],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10,
                           env=dict(p11g.CLEAN_ENV, **TERM_ENV))
        assert p.returncode == 0, p
        assert_clean_bytes(p.stdout, "status")
        assert b"default deny\\x1b[2J\\u202e, sha256 ab\\x1bcd\\x7f" in p.stdout, p
    finally:
        fake.close()


def test_policy_check_messages_are_escaped(accounts):
    """`policy check` quotes a policy's own text in its errors: a file under review cannot
    drive the terminal of whoever checks it."""
    d = tempfile.mkdtemp(prefix="p11gt-pol-")
    try:
        f = os.path.join(d, "bad.json")
        rule = {"name": "a", "keys": ["pkcs11:token=x"], "orderers": ["user:root"],
                "approvals": 0, "b\x1b[2J\u202ex": 1}
        with open(f, "w") as fh:
            json.dump({"default": "deny", "rules": [rule]}, fh)
        p = subprocess.run([p11g.APPROVALD, "policy", "check", f], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=10)
        assert p.returncode == 1, p
        assert_clean_bytes(p.stderr, "policy check")
        assert b'unknown member "b\\x1b[2J\\u202ex"' in p.stderr, p
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_pipeline_claims_through_the_approval_confirmation(start_daemon, term):
    """A pipeline's ID token is the requester's text too (issue 19): a claim that draws a line
    of its own on the approver's terminal stays one escaped line of the identity."""
    from test_pipeline_identity import AUD, ISS, Issuer
    issuer = Issuer()
    tdir = tempfile.mkdtemp(prefix="p11gt-tok-")
    os.chmod(tdir, 0o755)
    try:
        jwks = os.path.join(tdir, "gh.jwks")
        with open(jwks, "w") as f:
            json.dump(issuer.jwks(), f)
        policy = json.loads(json.dumps(POLICY))
        policy["issuers"] = [{"name": "gh", "issuer": ISS, "audience": AUD,
                              "jwks_file": jwks, "show": ["repository", "ref"]}]
        policy["rules"].append({"name": "ci", "keys": ["pkcs11:token=ci"],
                                "orderers": ["user:p11gt-orderer"],
                                "approvers": ["group:p11gt-approvers"], "approvals": 1,
                                "claims": {"issuer": "gh", "match": {"repository": "acme/*"}}})
        d = start_daemon(policy)
        fake = "    ref              refs/tags/v9.9"
        evil = "acme/app\r" + ESC + "[2K" + fake + ESC + "[?7l"
        tok = os.path.join(tdir, "tok")
        with open(tok, "w") as f:
            f.write(issuer.token(issuer.claims(repository=evil, ref="refs/heads/evil")))
        os.chmod(tok, 0o644)
        r = d.cli("request", "--key", "pkcs11:token=ci;object=k", "--id-token", tok,
                  user=U("orderer"))
        op = int(expect_ok(r).out)
        t = term.start(["approve", str(op), "--socket", d.sock], "alice")
        screen = term.wait(t, lambda s: "Approve operation %d? [y/N]" % op in s)
        ls = lines_of(screen)
        assert fake not in ls, screen
        assert "    ref              refs/heads/evil" in ls, screen
        assert [l for l in ls if l.startswith("    repository       acme/app\\r\\x1b[2K")], screen
        term.tmux("send-keys", "-t", t, "n", "Enter")
        term.wait(t, lambda s: "approvald: not approved\n\n[exit 1]" in s)
        out, err = raw_out(d, "show", op, user="alice")
        assert_clean_bytes(out, "show")
    finally:
        shutil.rmtree(tdir, ignore_errors=True)
