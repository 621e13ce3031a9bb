"""Helpers for the approvald integration tests.

Test accounts, running the CLI as a given user, a raw wire-protocol client
(also runnable as a given user), and a daemon wrapper (temporary state,
policy and socket; started as root; stopped with SIGTERM).

Everything here follows the contract in DESIGN.md and include/p11gate/wire.h;
nothing in it knows how approvald is implemented.
"""

import grp
import hashlib
import json
import os
import pickle
import pwd
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("P11GATE_SRC") or os.path.dirname(os.path.dirname(HERE))
BUILD = os.environ.get("P11GATE_BUILD") or os.path.join(SRC, "build")
APPROVALD = os.path.join(BUILD, "approvald", "approvald")

PREFIX = "p11gt-"
USERS = ["orderer", "alice", "bob", "carol", "dave", "mallory", "ci"]
GROUPS = {
    "approvers": ["alice", "bob", "carol"],
    "security": ["dave"],
    "ci": ["ci", "orderer"],
}

FRAME_MAX = 64 * 1024
CLI_TIMEOUT = 10
CALL_TIMEOUT = 5

# The events the contract names (DESIGN.md "Audit").
AUDIT_EVENTS = {
    "created", "approved", "withdrawn", "rejected", "revoked", "expired",
    "use_granted", "use_refused", "policy_loaded", "recorded",
}


def U(name):
    """Full account name of a test user or group: U("alice") -> "p11gt-alice"."""
    if name is None or name == "root" or name.startswith(PREFIX):
        return name
    return PREFIX + name


# ---------------------------------------------------------------- accounts --

def _group_exists(name):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def _user_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _sh(args):
    r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(args), r.returncode, r.stderr.strip()))


def ensure_accounts():
    """Creates the p11gt- users and groups if missing and sets the three test
    groups' member lists exactly (idempotent; repairs a membership a crashed
    run left changed)."""
    for g in GROUPS:
        if not _group_exists(U(g)):
            _sh(["groupadd", "-r", U(g)])
    for u in USERS:
        name = U(u)
        if _user_exists(name):
            continue
        args = ["useradd", "-r", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin"]
        if _group_exists(name):
            args += ["-g", name]
        else:
            args += ["-U"]
        _sh(args + [name])
    for g, members in GROUPS.items():
        want = sorted(U(m) for m in members)
        if sorted(grp.getgrnam(U(g)).gr_mem) != want:
            _sh(["gpasswd", "-M", ",".join(want), U(g)])


def group_remove(user, group):
    _sh(["gpasswd", "-d", U(user), U(group)])


def group_add(user, group):
    _sh(["gpasswd", "-a", U(user), U(group)])


def ids(user):
    """(uid, gid, [supplementary gids]) of a test user."""
    pw = pwd.getpwnam(U(user))
    return pw.pw_uid, pw.pw_gid, os.getgrouplist(pw.pw_name, pw.pw_gid)


def uid_of(user):
    return pwd.getpwnam(U(user)).pw_uid


def drop_to(user):
    """In a child process: become user (groups, gid, uid)."""
    uid, gid, groups = ids(user)
    os.setgroups(groups)
    os.setgid(gid)
    os.setuid(uid)


# ------------------------------------------------------------ running CLI --

CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}

ERROR_LINE = re.compile(r"^approvald: (.+) \(([a-z_]+)\)$")


class Result:
    def __init__(self, args, user, rc, out, err, elapsed):
        self.args, self.user, self.rc, self.out, self.err = args, user, rc, out, err
        self.elapsed = elapsed

    @property
    def err_lines(self):
        return [l for l in self.err.splitlines() if l.strip()]

    @property
    def code(self):
        """The stable error code from the last stderr line `approvald: msg (code)`."""
        lines = self.err_lines
        if not lines:
            return None
        m = ERROR_LINE.match(lines[-1].strip())
        return m.group(2) if m else None

    def json(self):
        try:
            return json.loads(self.out)
        except ValueError as e:
            raise AssertionError("stdout of %s is not JSON (%s):\n%s" % (self.cmd, e, self.out))

    @property
    def cmd(self):
        return "[%s] %s" % (self.user or "root", " ".join(self.args[1:]))

    def __repr__(self):
        return "<%s: exit %s\n--- stdout:\n%s--- stderr:\n%s>" % (self.cmd, self.rc, self.out, self.err)


def run(args, user=None, timeout=CLI_TIMEOUT, env=None, input=None):
    """Runs a command as root (user None) or as a test user; never raises on
    a non-zero exit.  A timeout is an assertion failure."""
    kw = {}
    if user is not None:
        uid, gid, groups = ids(user)
        kw = dict(user=uid, group=gid, extra_groups=groups)
    e = dict(CLEAN_ENV)
    if env:
        e.update(env)
    t0 = time.monotonic()
    try:
        p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           input=input, timeout=timeout, env=e, cwd="/", **kw)
    except subprocess.TimeoutExpired as ex:
        raise AssertionError("%s did not finish within %ss (stdout %r, stderr %r)"
                             % (" ".join(args), timeout, ex.stdout, ex.stderr))
    return Result(args, U(user), p.returncode, p.stdout, p.stderr, time.monotonic() - t0)


def approvald(*args, user=None, timeout=CLI_TIMEOUT, env=None):
    return run([APPROVALD] + [str(a) for a in args], user=user, timeout=timeout, env=env)


def expect_ok(r):
    assert r.rc == 0, "expected success: %r" % r
    return r


def expect_fail(r, code, rc=1):
    """The CLI refused with exit rc and `approvald: ... (code)` on stderr."""
    assert r.rc == rc, "expected exit %d with (%s): %r" % (rc, code, r)
    assert r.code == code, "expected error code (%s): %r" % (code, r)
    return r


# ------------------------------------------------------- raw wire client --

def frame(obj):
    if isinstance(obj, (bytes, bytearray)):
        body = bytes(obj)
    elif isinstance(obj, str):
        body = obj.encode()
    else:
        body = json.dumps(obj, separators=(",", ":")).encode()
    return struct.pack(">I", len(body)) + body


class Closed(Exception):
    """The daemon closed the connection."""


class Conn:
    """One raw protocol connection (in this process, as whoever runs it)."""

    def __init__(self, path, timeout=CALL_TIMEOUT):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.timeout = timeout

    def close(self):
        self.s.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send_raw(self, data):
        self.s.sendall(data)

    def send(self, obj):
        self.s.sendall(frame(obj))

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            try:
                chunk = self.s.recv(n - len(buf))
            except ConnectionResetError:
                raise Closed("connection reset")
            if not chunk:
                raise Closed("connection closed after %d of %d bytes" % (len(buf), n))
            buf += chunk
        return buf

    def recv(self):
        """One reply frame as a dict.  Raises Closed on EOF/reset and
        socket.timeout when nothing arrives in time."""
        (n,) = struct.unpack(">I", self._recv_exact(4))
        assert 0 < n <= FRAME_MAX, "reply frame length %d out of range" % n
        return json.loads(self._recv_exact(n))

    def call(self, req, v=1):
        if v is not None and "v" not in req:
            req = dict(req, v=v)
        self.send(req)
        return self.recv()

    def wait_closed(self, timeout=3.0):
        """True when the daemon closes the connection within timeout (any
        bytes it sends before closing are ignored)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.s.settimeout(left)
            try:
                chunk = self.s.recv(65536)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not chunk:
                return True


def in_child(user, fn, timeout=CALL_TIMEOUT + 5):
    """Runs fn() in a forked child as user (None: root) and returns its
    result (must pickle).  Exceptions in the child are re-raised here as
    AssertionError with the child's repr."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(r)
            if user is not None:
                drop_to(user)
            res = ("ok", fn())
        except BaseException as e:  # noqa: B902 - report everything to the parent
            res = ("exc", "%s: %s" % (type(e).__name__, e))
        try:
            data = pickle.dumps(res)
            while data:
                n = os.write(w, data)
                data = data[n:]
        except BaseException:
            code = 1
        os._exit(code)
    os.close(w)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError("child as %s timed out after %ss" % (user, timeout))
            rd, _, _ = select.select([r], [], [], left)
            if not rd:
                continue
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    kind, val = pickle.loads(b"".join(chunks))
    if kind == "exc":
        raise AssertionError("in child as %s: %s" % (user, val))
    return val


def call_as(user, path, req, timeout=CALL_TIMEOUT, v=1):
    """One request/reply on a fresh connection, as user (None: root)."""
    def go():
        with Conn(path, timeout) as c:
            return c.call(req, v=v)
    return in_child(U(user) if user else None, go, timeout + 5)


def keyid(token, label, id_hex="01"):
    return {"token": {"label": token, "manufacturer": "", "model": "", "serial": ""},
            "label": label, "id": id_hex}


def digest(text):
    """A "sha256:<64 hex>" digest of a text (deterministic per text)."""
    return "sha256:" + hashlib.sha256(str(text).encode()).hexdigest()


def assert_reply_ok(rep, what=""):
    assert isinstance(rep, dict) and rep.get("v") == 1, "bad reply %r %s" % (rep, what)
    assert rep.get("ok") is True, "expected ok reply %s, got %r" % (what, rep)
    assert isinstance(rep.get("result"), dict), "ok reply without result object: %r" % rep
    return rep["result"]


def assert_refused(rep, code, what=""):
    assert isinstance(rep, dict) and rep.get("v") == 1, "bad reply %r %s" % (rep, what)
    assert rep.get("ok") is False, "expected refusal (%s) %s, got %r" % (code, what, rep)
    err = rep.get("error")
    assert isinstance(err, dict), "error reply without error object: %r" % rep
    assert err.get("code") == code, "expected (%s) %s, got %r" % (code, what, err)
    assert isinstance(err.get("message"), str) and err["message"], "error without message: %r" % err
    return err


def actor_name(rec):
    """User name of an audit record's actor, whatever its shape
    ("p11gt-x", "user:p11gt-x", {"user": ...}, {"uid": N})."""
    a = rec.get("actor")
    if isinstance(a, dict):
        if a.get("user"):
            return a["user"]
        if "uid" in a:
            return _uid_name(a["uid"])
        return None
    if isinstance(a, int):
        return _uid_name(a)
    if isinstance(a, str):
        for p in ("user:", "uid:"):
            if a.startswith(p):
                a = a[len(p):]
                return _uid_name(int(a)) if p == "uid:" and a.isdigit() else a
        return a
    return None


def _uid_name(uid):
    try:
        return pwd.getpwuid(int(uid)).pw_name
    except (KeyError, ValueError):
        return str(uid)


def op_of(rec):
    """Operation id of an audit record, as int (None when absent)."""
    o = rec.get("op", rec.get("operation"))
    if isinstance(o, dict):
        o = o.get("id")
    try:
        return int(o) if o is not None else None
    except (TypeError, ValueError):
        return None


# ----------------------------------------------------------------- policy --

ORDERERS = ["group:p11gt-ci", "user:p11gt-orderer"]
APPROVERS = ["group:p11gt-approvers"]


def default_policy():
    """The policy most tests run under.  Every rule guards one token so each
    test can use fresh object labels."""
    return {
        "default": "deny",
        "rules": [
            {"name": "prod", "keys": ["pkcs11:token=prod"],
             "orderers": ORDERERS + ["user:p11gt-alice"],
             "approvers": APPROVERS, "approvals": 2,
             "admins": ["group:p11gt-security"],
             "max_uses": 10, "max_validity": "1h"},
            {"name": "dev", "keys": ["pkcs11:token=dev"],
             "orderers": ORDERERS, "approvals": 0},
            {"name": "pinned", "keys": ["pkcs11:token=pinned"],
             "orderers": ORDERERS, "approvers": APPROVERS, "approvals": 1,
             "bind_digest": True, "mechanisms": ["CKM_ECDSA"]},
            {"name": "mech", "keys": ["pkcs11:token=mech"],
             "orderers": ORDERERS, "approvers": APPROVERS, "approvals": 1,
             "mechanisms": ["CKM_SHA256_RSA_PKCS"]},
            {"name": "quorum", "keys": ["pkcs11:token=quorum"],
             "orderers": ORDERERS,
             "quorum": [{"from": ["group:p11gt-approvers"], "count": 1},
                        {"from": ["group:p11gt-security"], "count": 1}]},
            {"name": "auto", "keys": ["pkcs11:token=auto"],
             "orderers": ORDERERS, "approvers": APPROVERS, "approvals": 2,
             "auto_approve": ["user:p11gt-orderer"]},
        ],
    }


# ----------------------------------------------------------------- daemon --

class Daemon:
    """approvald serve in a temporary directory, run as root."""

    def __init__(self, policy=None, files=None, config=None):
        """config: extra `key = value` lines for approvald's --config file (str or dict)."""
        self.dir = tempfile.mkdtemp(prefix="p11gt-")
        os.chmod(self.dir, 0o755)
        self.state = os.path.join(self.dir, "state")
        self.policy_dir = os.path.join(self.dir, "policy")
        self.sock = os.path.join(self.dir, "sock")
        self.log = os.path.join(self.dir, "approvald.stderr")
        os.mkdir(self.state, 0o700)
        os.mkdir(self.policy_dir, 0o755)
        if files is None:
            files = {"10-test.json": policy if policy is not None else default_policy()}
        for name, content in files.items():
            self.write_policy(name, content)
        self.config = None
        if config:
            if isinstance(config, dict):
                config = "".join("%s = %s\n" % kv for kv in config.items())
            self.config = os.path.join(self.dir, "approvald.conf")
            with open(self.config, "w") as f:
                f.write(config)
        self.proc = None
        self.ready = False     # start() succeeded
        self.stopped = False   # stop() was called (by a test or the fixture)

    # -- policy files
    def write_policy(self, name, content):
        if not isinstance(content, str):
            content = json.dumps(content, indent=2) + "\n"
        path = os.path.join(self.policy_dir, name)
        with open(path + ".tmp", "w") as f:
            f.write(content)
        os.rename(path + ".tmp", path)
        return path

    # -- lifecycle
    def start(self, timeout=10.0):
        self.ready = self.stopped = False
        with open(self.log, "ab") as log:
            # P11GATE_APPROVALD_WRAPPER: a command prefix such as "valgrind --error-exitcode=99"
            wrapper = os.environ.get("P11GATE_APPROVALD_WRAPPER", "").split()
            args = wrapper + [APPROVALD, "serve", "--state-dir", self.state, "--socket",
                              self.sock, "--policy-dir", self.policy_dir]
            if self.config:
                args += ["--config", self.config]
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=dict(CLEAN_ENV))
        deadline = time.monotonic() + timeout
        last = None
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("approvald serve exited with %s before it was ready:\n%s"
                                     % (self.proc.returncode, self.stderr()))
            if os.path.exists(self.sock):
                try:
                    with Conn(self.sock, 1.0) as c:
                        rep = c.call({"verb": "status"})
                    if rep.get("ok") is True:
                        r = last = self.cli("status", timeout=max(1.0, deadline - time.monotonic()))
                        if r.rc == 0:
                            self.ready = True
                            return self
                except (OSError, Closed, ValueError, AssertionError):
                    pass
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError("approvald not ready within %ss (last `status`: %r); "
                                     "stderr:\n%s" % (timeout, last, self.stderr()))
            time.sleep(0.05)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=5.0):
        """SIGTERM; returns the exit status (None if it had to be killed)."""
        if self.proc is None:
            return 0
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        return self.proc.returncode

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def hup(self):
        self.proc.send_signal(signal.SIGHUP)

    def stderr(self):
        try:
            with open(self.log, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- clients
    def cli(self, verb, *args, user=None, timeout=CLI_TIMEOUT):
        """`approvald VERB --socket SOCK ARGS...` as user."""
        verb = verb.split()
        return approvald(*(verb + ["--socket", self.sock] + [str(a) for a in args]),
                         user=user, timeout=timeout)

    def call(self, req, user=None, timeout=CALL_TIMEOUT):
        return call_as(user, self.sock, req, timeout)

    def conn(self, timeout=CALL_TIMEOUT):
        return Conn(self.sock, timeout)

    # -- verbs, asserting success
    def request(self, user, *keys, valid=None, description="integration test", digests=(),
                for_=None, extra=()):
        """keys: URIs or (URI, uses).  Returns the new operation id."""
        args = []
        for k in keys:
            uri, uses = (k, None) if isinstance(k, str) else k
            args += ["--key", uri]
            if uses is not None:
                args += ["--uses", uses]
        if valid is not None:
            args += ["--valid", valid]
        if description is not None:
            args += ["--description", description]
        for d in digests:
            args += ["--digest", d]
        if for_ is not None:
            args += ["--for", for_]
        args += list(extra)
        r = expect_ok(self.cli("request", *args, user=user))
        out = r.out.strip()
        assert re.fullmatch(r"[0-9]+", out), "request did not print an id alone: %r" % r
        return int(out)

    def approve(self, user, op):
        return expect_ok(self.cli("approve", op, "--yes", user=user))

    def show(self, op, user=None):
        """The operation object (show --json)."""
        r = expect_ok(self.cli("show", op, "--json", user=user))
        o = r.json()
        if isinstance(o, dict) and "operation" in o and "id" not in o:
            o = o["operation"]  # tolerated here; test_approvald_cli checks the exact shape
        assert isinstance(o, dict), "show --json did not print an object: %r" % r
        return o

    def state_of(self, op, user=None):
        return self.show(op, user).get("state")

    def list(self, *args, user=None):
        r = expect_ok(self.cli("list", "--json", *args, user=user))
        o = r.json()
        if isinstance(o, dict) and "operations" in o:
            o = o["operations"]  # tolerated here; test_approvald_cli checks the exact shape
        assert isinstance(o, list), "list --json did not print an array: %r" % r
        return o

    def list_ids(self, *args, user=None):
        return sorted(int(o["id"]) for o in self.list(*args, user=user))

    def status(self, user=None):
        return expect_ok(self.cli("status", "--json", user=user)).json()

    def audit(self, *args, user=None):
        r = expect_ok(self.cli("audit", "--json", *args, user=user))
        recs = []
        for i, line in enumerate(r.out.splitlines()):
            if not line.strip():
                continue
            try:
                recs.append(json.loads(line))
            except ValueError as e:
                raise AssertionError("audit --json line %d is not JSON (%s): %r" % (i + 1, e, line))
        return recs

    def use(self, user, token, label, dig=None, mechanism="CKM_ECDSA", operation=None,
            id_hex="01"):
        req = {"verb": "use", "key": keyid(token, label, id_hex), "mechanism": mechanism,
               "digest": dig if dig is not None else digest("payload")}
        if operation is not None:
            req["operation"] = operation
        return self.call(req, user=user)

    def use_ok(self, user, token, label, **kw):
        return assert_reply_ok(self.use(user, token, label, **kw),
                               "for use of %s/%s by %s" % (token, label, user))

    def use_refused(self, user, token, label, code, **kw):
        return assert_refused(self.use(user, token, label, **kw), code,
                              "for use of %s/%s by %s" % (token, label, user))


def wait_for(pred, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def epoch(v):
    """Seconds since the epoch from a number or an ISO 8601 / RFC 3339 text."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, str):
        import datetime
        s = v.strip()
        if re.fullmatch(r"\d+(\.\d+)?", s):
            return float(s)
        if s.endswith("Z"):
            s = s[:-1] + "+00:00"
        return datetime.datetime.fromisoformat(s).timestamp()
    raise AssertionError("not a time: %r" % (v,))


CALL_CODE = r"""
import json, socket, struct, sys
path, req = sys.argv[1], sys.argv[2].encode()
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(path)
sys.stdin.read()          # start together
s.sendall(struct.pack(">I", len(req)) + req)
def exact(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise SystemExit("closed")
        b += c
    return b
n, = struct.unpack(">I", exact(4))
sys.stdout.write(exact(n).decode())
"""


def call_concurrently(user, path, reqs, timeout=15):
    """Sends each request on its own connection, from separate processes
    running as user, released at the same moment; returns the replies."""
    uid, gid, groups = ids(user)
    procs = []
    try:
        for req in reqs:
            procs.append(subprocess.Popen(
                ["/usr/bin/python3", "-c", CALL_CODE, path, json.dumps(dict(req, v=1))],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, user=uid, group=gid, extra_groups=groups, cwd="/",
                env=dict(CLEAN_ENV)))
        time.sleep(0.3)   # let every one connect
        for p in procs:
            p.stdin.close()
        out = []
        for p in procs:
            p.wait(timeout)
            o, e = p.stdout.read(), p.stderr.read()
            assert p.returncode == 0, "concurrent call failed: %r %r" % (o, e)
            out.append(json.loads(o))
        return out
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
