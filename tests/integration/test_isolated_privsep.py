"""The isolated deployment's privilege separation (issue #18, item 3): each PKCS#11 client's
process is approvald-pkcs11-host, executed fresh, running as pkcs11_user with no new
privileges, non-dumpable, under a seccomp allow-list, its link to approvald limited to the
gate's verbs.  A hostile module (tests/mock/hostile.c) loaded by that process attacks
approvald from inside it."""

import json
import os
import pwd
import re
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import p11g  # noqa: E402
from test_isolated import pk11_as, server_children  # noqa: E402
from test_module_gate import (DIGEST, P11KIT_CLIENT, PK11, SOFTHSM, TOKEN, Token,  # noqa: E402
                              guarded, uses_of)

EC = "pkcs11:token=%s;object=ec" % TOKEN
HOSTILE = os.path.join(p11g.BUILD, "tests", "mock", "hostile.so")
HOST_PROGRAM = os.path.join(p11g.BUILD, "approvald", "approvald-pkcs11-host")
HSM_USER = "p11gt-hsm"
SIGSYS = 31


def ensure_hsm_user():
    """An unprivileged account for pkcs11_user: in no group of the test policies."""
    try:
        return p11g.uid_of(HSM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", HSM_USER], check=True)
        return p11g.uid_of(HSM_USER)


class Deployment:
    """An isolated approvald whose host loads hostile.so in front of SoftHSMv2 (or SoftHSMv2
    itself), the token owned by pkcs11_user."""

    def __init__(self, policy, module=HOSTILE, user=HSM_USER, own_token=True, **settings):
        if not os.path.exists(HOSTILE) or not os.path.exists(HOST_PROGRAM):
            pytest.fail("hostile.so or approvald-pkcs11-host not built in %s" % p11g.BUILD)
        self.uid = ensure_hsm_user()
        self.tok = Token("isolated")
        if own_token:
            for root, dirs, files in os.walk(os.path.join(self.tok.dir, "tokens")):
                for n in [root] + [os.path.join(root, f) for f in dirs + files]:
                    os.chown(n, self.uid, -1)
        # what the hostile module writes to: the host's user's alone
        self.results = os.path.join(self.tok.dir, "hostile")
        os.mkdir(self.results, 0o700)
        os.chown(self.results, self.uid, -1)
        self.d = p11g.Daemon(policy)
        lines = ["pkcs11_socket = %s" % self.tok.pkcs11_sock,
                 "pkcs11_module = %s" % module,
                 "pin_file = %s" % self.tok.pin_file,
                 "pkcs11_env = SOFTHSM2_CONF=%s" % self.tok.conf,
                 "pkcs11_env = HOSTILE_MODULE=%s" % SOFTHSM,
                 "pkcs11_env = HOSTILE_DIR=%s" % self.results,
                 "pkcs11_env = HOSTILE_STATE=%s" % self.d.state]
        if user:
            lines.append("pkcs11_user = %s" % user)
        lines += ["%s = %s" % kv for kv in settings.items()]
        self.d.config = os.path.join(self.d.dir, "approvald.conf")
        with open(self.d.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.env = self.tok.gate_env(None)

    def start(self):
        self.d.start()
        return self

    def arm(self, what):
        with open(os.path.join(self.results, "armed"), "w") as f:
            f.write(what + "\n")

    def disarm(self):
        os.unlink(os.path.join(self.results, "armed"))
        for n in os.listdir(self.results):
            os.unlink(os.path.join(self.results, n))

    def outcomes(self):
        """{step: outcome} of the one process that ran the attacks, and its first line."""
        files = [n for n in os.listdir(self.results) if n.startswith("result-")]
        assert len(files) == 1, files
        with open(os.path.join(self.results, files[0])) as f:
            lines = f.read().splitlines()
        steps = {}
        for ln in lines[1:]:
            name, _, rest = ln.partition(" ")
            steps[name] = rest
        return lines[0], steps

    def sign(self, user=None):
        return pk11_as(user, "sign", self.env, label="ec", mech="CKM_ECDSA", data=DIGEST.hex())

    def close(self):
        try:
            if self.d.alive():
                assert self.d.stop() == 0, self.d.stderr()
        finally:
            self.d.kill()
            self.d.cleanup()
            self.tok.cleanup()


@pytest.fixture
def deploy(accounts):
    made = []

    def make(policy, **kw):
        dep = Deployment(policy, **kw)
        made.append(dep)
        return dep.start()

    yield make
    for dep in made:
        dep.close()


def reply_error(outcome):
    assert outcome.startswith("reply "), outcome
    rep = json.loads(outcome[len("reply "):])
    assert rep.get("ok") is False, rep
    return rep["error"]["code"], rep["error"]["message"]


def refused_lines(d, verb):
    return [ln for ln in d.stderr().splitlines()
            if 'its PKCS#11 host process sent "%s", which it may not; refused' % verb in ln]


def test_hostile_module_cannot_open_state_approve_or_trace(deploy):
    # log mode: nothing outside the list kills, so each attempt's own outcome shows
    dep = deploy(guarded(), pkcs11_seccomp="log")
    d = dep.d
    op = d.request("root", (EC, 1))
    dep.arm("probe %s" % op)
    client = subprocess.Popen(["/usr/bin/python3", PK11, "sign", json.dumps(dict(
        module=P11KIT_CLIENT, token=TOKEN, pin="1234", label="ec", mech="CKM_ECDSA",
        data=DIGEST.hex()))], env=dep.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = client.communicate(timeout=60)
    head, steps = dep.outcomes()
    # the host runs as pkcs11_user, a child of approvald
    assert head == "uid %d ppid %d" % (dep.uid, d.proc.pid), head
    # the state directory and the store: not for the host's user
    assert steps["state_dir"] == "errno:EACCES", steps
    assert steps["data_mdb"] == "errno:EACCES", steps
    # the link answers the gate's verbs only: approve, revoke, audit are refused and logged
    assert steps["link"] != "-1", steps
    for verb in ("approve", "revoke", "audit"):
        code, msg = reply_error(steps[verb])
        assert code == "forbidden" and "not served to a PKCS#11 host" in msg, steps[verb]
        lines = refused_lines(d, verb)
        assert lines and all("client uid 0 pid %d:" % client.pid in ln for ln in lines), \
            d.stderr()
    # approvald is neither traceable nor readable
    assert steps["ptrace"] == "errno:EPERM", steps
    assert steps.get("done") == "", steps
    # nothing was decided: the operation is pending, nothing signed, approvald up
    assert d.state_of(op) == "pending"
    assert not any(r["event"] in ("approved", "revoked") for r in d.audit())
    assert client.returncode == 0, (out, err)
    assert json.loads(out)["results"][0]["signature"] is None, out
    assert d.alive()
    # the module works otherwise: approved, the same deployment signs
    dep.disarm()
    d.approve("alice", op)
    d.approve("bob", op)
    rc, res, err = dep.sign()
    assert res["results"][0]["signature"], (res, err)
    assert uses_of(d, op) == 1


def test_kill_mode_kills_the_host_on_a_call_outside_the_list(deploy):
    dep = deploy(guarded())  # pkcs11_seccomp: kill, the default
    d = dep.d
    op = d.request("root", (EC, 1))
    d.approve("alice", op)
    d.approve("bob", op)
    dep.arm("probe %s" % op)
    rc, out, err = dep.sign()
    head, steps = dep.outcomes()
    assert steps["state_dir"] == "errno:EACCES" and steps["data_mdb"] == "errno:EACCES", steps
    for verb in ("approve", "revoke", "audit"):
        assert reply_error(steps[verb])[0] == "forbidden", steps
    # ptrace is outside the list (in every build): the process died at the call
    assert steps["ptrace"] == "start" and "done" not in steps, steps
    assert out is None or out["results"][0]["signature"] is None, (out, err)
    assert "was killed by its seccomp filter (signal %d, SIGSYS)" % SIGSYS in d.stderr()
    # another call outside the list: killed too
    dep.disarm()
    dep.arm("keyctl")
    rc, out, err = dep.sign()
    head, steps = dep.outcomes()
    assert steps["keyctl"] == "start" and "done" not in steps, steps
    assert out is None or out["results"][0]["signature"] is None, (out, err)
    assert p11g.wait_for(lambda: d.stderr().count("killed by its seccomp filter") == 2, 5), \
        d.stderr()
    # a new user namespace (every capability inside it), netfilter's netlink: killed too
    for n, attack in enumerate(("userns", "netfilter"), 3):
        dep.disarm()
        dep.arm(attack)
        rc, out, err = dep.sign()
        head, steps = dep.outcomes()
        assert steps[attack] == "start" and "done" not in steps, (attack, steps)
        assert p11g.wait_for(lambda: d.stderr().count("killed by its seccomp filter") == n,
                             5), d.stderr()
    # approvald stays up; the next client signs (a killed host used nothing)
    dep.disarm()
    assert d.alive()
    rc, out, err = dep.sign()
    assert out["results"][0]["signature"], (out, err)
    assert uses_of(d, op) == 1


def test_host_process_holds_nothing_of_approvalds(deploy):
    dep = deploy({"default": "allow", "rules": []}, module=SOFTHSM)
    d = dep.d
    # a client holding a session open
    hold = ("import sys\n"
            "sys.path.insert(0, %r)\n"
            "import pk11\n"
            "m = pk11.Module(%r); m.init(); h = m.open(%r)\n"
            "print('open', flush=True)\n"
            "sys.stdin.read()\n" % (os.path.dirname(PK11), P11KIT_CLIENT, TOKEN))
    before = set(server_children(d))
    proc = subprocess.Popen(["/usr/bin/python3", "-c", hold], env=dep.env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"open"
        mine = set(server_children(d)) - before
        assert len(mine) == 1, (before, mine)
        pid = mine.pop()
        proc_dir = "/proc/%d" % pid
        # a program of its own, not a fork of approvald
        assert os.readlink(proc_dir + "/exe") == os.path.realpath(HOST_PROGRAM)
        with open(proc_dir + "/status") as f:
            status = dict(ln.split(":", 1) for ln in f.read().splitlines())
        assert status["Uid"].split() == [str(dep.uid)] * 4, status["Uid"]
        gid = str(pwd.getpwuid(dep.uid).pw_gid)
        assert status["Gid"].split() == [gid] * 4, status["Gid"]
        assert status["CapEff"].strip() == "0000000000000000", status["CapEff"]
        assert status["CapPrm"].strip() == "0000000000000000", status["CapPrm"]
        assert status["NoNewPrivs"].strip() == "1", status
        assert status["Seccomp"].strip() == "2", status
        # not dumpable: /proc/PID is root's although the process is not
        assert os.stat(proc_dir + "/status").st_uid == 0
        # no mapping of the store
        with open(proc_dir + "/maps") as f:
            maps = f.read()
        assert "data.mdb" not in maps and "lock.mdb" not in maps and d.state not in maps, maps
        # its descriptors: stdio, the client's connection, the link, p11-kit's input (one end of
        # a socket pair, the other closed: host_frames.c);
        # nothing of approvald's (no state, no listening socket, no other connection)
        fds = {int(n): os.readlink("%s/fd/%s" % (proc_dir, n))
               for n in os.listdir(proc_dir + "/fd")}
        assert not any(t.startswith(d.state) or t.startswith(d.policy_dir) or
                       t in (d.sock, dep.tok.pkcs11_sock, dep.tok.pin_file)
                       for t in fds.values()), fds
        assert fds[0] == fds[1] == "/dev/null" and fds[2] == d.log, fds
        assert fds[3].startswith("socket:") and fds[4].startswith("socket:"), fds
        assert not any(t.startswith("pipe:") for t in fds.values()), fds  # setup: read, closed
        others = {n: t for n, t in fds.items() if n > 4 and not t.startswith("socket:")}
        assert not others, fds
        assert sum(t.startswith("socket:") for t in fds.values()) == 3, fds
        # an environment of pkcs11_env alone: no PIN, no approvald settings
        with open(proc_dir + "/environ", "rb") as f:
            env = [e.decode() for e in f.read().split(b"\0") if e]
        names = {e.split("=", 1)[0] for e in env}
        assert names - {"ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"} == \
            {"SOFTHSM2_CONF", "HOSTILE_MODULE", "HOSTILE_DIR", "HOSTILE_STATE"}, env
        with open(proc_dir + "/cmdline", "rb") as f:
            assert f.read().split(b"\0")[:-1] == [b"approvald-pkcs11-host"]
    finally:
        proc.stdin.close()
        proc.wait(10)


def test_configuration_of_the_host(accounts, tmp_path):
    def start(**kw):
        dep = Deployment({"default": "deny", "rules": []}, **kw)
        try:
            with pytest.raises(AssertionError) as e:
                dep.d.start(timeout=10)
            return str(e.value)
        finally:
            dep.close()

    msg = start(user="p11gt-nosuchuser")
    assert re.search(r"approvald\.conf:8:\d+: pkcs11_user: no user \"p11gt-nosuchuser\"", msg), \
        msg
    msg = start(pkcs11_seccomp="sometimes")
    assert re.search(r"approvald\.conf:9:\d+: pkcs11_seccomp: pkcs11_seccomp is kill, log or off",
                     msg), msg
    # the start-up log-in runs as pkcs11_user: a token it cannot read stops approvald
    msg = start(module=SOFTHSM, own_token=False)
    assert "cannot serve PKCS#11" in msg, msg
    # approvald as root without pkcs11_user: served, with a warning
    dep = Deployment({"default": "allow", "rules": []}, module=SOFTHSM, user=None,
                     own_token=False)
    try:
        dep.start()
        assert "pkcs11_user is not set: each PKCS#11 client's process runs as root" in \
            dep.d.stderr()
        rc, out, err = dep.sign()
        assert out["results"][0]["signature"], (out, err)
    finally:
        dep.close()
