"""Signers and approvers on other machines over SSH (issue 23): the transport p11-kit documents
for remote tokens, with identity still from the kernel.  A real sshd (openssh-server) listens on
127.0.0.1 with its own host key and configuration; each account may only forward Unix sockets
(`restrict,port-forwarding` in its key's line; in a `Match` block `AllowStreamLocalForwarding
local`, and `AllowTcpForwarding local` with `PermitOpen [PATH]:*` naming approvald's sockets,
which limits both kinds of forward: OpenSSH checks Unix-socket forwards against the TCP
settings).  The "runner" is root here, on the "other machine"'s side of the
tunnel: approvald sees the SSH account sshd connects as, never the runner.

- a CI account forwards approvald's PKCS#11 and control sockets: its request is its own, its
  signature is refused before approval and made after, and the audit names the account;
- an approver approves through a forwarded control socket, identity their SSH account;
- an account with no rule gets nothing;
- a dropped SSH connection mid-signature costs no use and leaks no process.

sshd runs without PAM here, and so refuses accounts whose password field is locked ("!", as
useradd leaves the test users): the test sets the three accounts' fields to "*" (no password
either way)."""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import p11g  # noqa: E402
from test_isolated import server_children  # noqa: E402
from test_module_gate import (DIGEST, P11KIT_CLIENT, PIN, PK11, TOKEN, Token, rule,  # noqa: E402
                              uses_of)

SSHD = "/usr/sbin/sshd"
EC = "pkcs11:token=%s;object=ec" % TOKEN
ACCOUNTS = ("ci", "alice", "mallory")  # the SSH accounts, each a test user


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(path):
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(path)
            return True
        except OSError:
            return False


def sh(args, **kw):
    r = subprocess.run(args, capture_output=True, text=True, timeout=30, **kw)
    assert r.returncode == 0, "%s: %s %s" % (args, r.stdout, r.stderr)
    return r.stdout


class Sshd:
    def __init__(self, paths):
        """sshd letting ACCOUNTS forward to the Unix sockets paths, and nowhere else."""
        assert os.access(SSHD, os.X_OK), "openssh-server is not installed (tools/debian-packages)"
        self.dir = tempfile.mkdtemp(prefix="p11gt-sshd-")
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        host = os.path.join(self.dir, "host_ed25519")
        sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host])
        keys = os.path.join(self.dir, "authorized")
        os.mkdir(keys, 0o755)
        self.keys = {}
        for a in ACCOUNTS:
            k = os.path.join(self.dir, "id_" + a)
            sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", k])
            self.keys[a] = k
            with open(os.path.join(keys, p11g.U(a)), "w") as f:
                # forwarding, and nothing else: no shell, pty, agent, X11 or commands
                f.write("restrict,port-forwarding,command=\"/usr/sbin/nologin\" %s"
                        % open(k + ".pub").read())
            # sshd (without PAM) turns away accounts whose password field is locked ("!");
            # "*" has no password either, so keys alone log in
            sh(["usermod", "-p", "*", p11g.U(a)])
        self.known_hosts = os.path.join(self.dir, "known_hosts")
        with open(self.known_hosts, "w") as f:
            f.write("[127.0.0.1]:%d %s" % (self.port, open(host + ".pub").read()))
        self.config = os.path.join(self.dir, "sshd_config")
        users = ",".join(p11g.U(a) for a in ACCOUNTS)
        with open(self.config, "w") as f:
            f.write("""Port %d
ListenAddress 127.0.0.1
HostKey %s
PidFile %s/sshd.pid
AuthorizedKeysFile %s/%%u
StrictModes no
UsePAM no
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AllowUsers %s
AllowTcpForwarding no
AllowStreamLocalForwarding no
DisableForwarding no
AllowAgentForwarding no
X11Forwarding no
PermitTTY no
PermitTunnel no
PermitUserRC no
Match User %s
    AuthenticationMethods publickey
    PasswordAuthentication no
    ForceCommand /usr/sbin/nologin
    AllowStreamLocalForwarding local
    AllowTcpForwarding local
    PermitOpen %s
    PermitListen none
    PermitTunnel no
    X11Forwarding no
    AllowAgentForwarding no
    PermitTTY no
""" % (self.port, host, self.dir, keys, " ".join(p11g.U(a) for a in ACCOUNTS), users,
       " ".join("[%s]:*" % p for p in paths)))
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # its privilege separation dir
        sh([SSHD, "-t", "-f", self.config])
        self.log = open(os.path.join(self.dir, "sshd.log"), "w+")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", self.config], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert self.proc.poll() is None and time.monotonic() < deadline, self.text()
                time.sleep(0.05)

    def text(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def forward(self, account, pairs):
        """`ssh -N -L local:remote ...` as the runner (root) for account: the local sockets
        once they exist, and the ssh process."""
        local = []
        args = ["ssh", "-N", "-p", str(self.port), "-i", self.keys[account],
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + self.known_hosts,
                "-o", "ExitOnForwardFailure=yes", "-o", "StreamLocalBindUnlink=yes"]
        self.n = getattr(self, "n", 0) + 1
        for remote in pairs:
            # a new name each time: a killed ssh leaves its socket file behind
            path = os.path.join(self.dir, "%s-%d-%d.sock" % (account, self.n, len(local)))
            local.append(path)
            args += ["-L", "%s:%s" % (path, remote)]
        p = subprocess.Popen(args + ["%s@127.0.0.1" % p11g.U(account)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 15
        while not all(listening(x) for x in local):
            if p.poll() is not None or time.monotonic() > deadline:
                p.kill()
                raise AssertionError("ssh -L for %s failed: %s\nsshd: %s"
                                     % (account, p.communicate()[1], self.text()[-2000:]))
            time.sleep(0.05)
        return local, p

    def stop(self):
        stop(self.proc)
        self.log.close()
        subprocess.run(["rm", "-rf", self.dir])


@pytest.fixture
def sshd(accounts):
    """sshd(paths): started once the sockets it may forward to are known."""
    started = []

    def start(paths):
        started.append(Sshd(paths))
        return started[-1]
    yield start
    for s in started:
        s.stop()


@pytest.fixture
def iso(accounts):
    t = Token("isolated")
    yield t
    t.cleanup()


def policy():
    return {"default": "deny", "rules": [
        rule("ci-images", [EC], approvals=1, orderers=["user:" + p11g.U("ci")])]}


def sign_through(sock, count=1):
    """pk11.py (root, the runner) through p11-kit-client.so and the forwarded socket."""
    args = dict(module=P11KIT_CLIENT, token=TOKEN, pin=PIN, label="ec", mech="CKM_ECDSA",
                data=DIGEST.hex(), count=count)
    env = {"P11_KIT_SERVER_ADDRESS": "unix:path=" + sock}
    r = p11g.run(["/usr/bin/python3", PK11, "sign", json.dumps(args)], env=env, timeout=60)
    assert r.rc == 0, r
    return json.loads(r.out)["results"]


def processes_of(user):
    uid = p11g.uid_of(user)
    out = []
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and os.stat("/proc/" + pid).st_uid == uid:
                out.append(int(pid))
        except OSError:
            pass
    return out


def stop(p):
    p.terminate()
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def test_runner_signs_through_ssh_as_its_account(iso, sshd, start_daemon):
    d = iso.start(start_daemon, policy())
    sshd = sshd([iso.pkcs11_sock, d.sock])
    (pk, ctl), ci = sshd.forward("ci", [iso.pkcs11_sock, d.sock])
    (actl,), alice = sshd.forward("alice", [d.sock])
    try:
        # the runner orders through the tunnel: the operation is the CI account's
        r = p11g.approvald("request", "--socket", ctl, "--key", EC, "--uses", "1",
                           "--description", "release 1.0 from the runner")
        assert r.rc == 0, (r, sshd.text()[-2000:])
        op = int(r.out.strip())
        shown = d.show(op)
        assert shown["orderer"]["user"] == p11g.U("ci"), shown
        # refused before approval
        res = sign_through(pk)
        assert res[0]["signature"] is None and res[0]["steps"][-1] == [
            "C_Sign", "CKR_FUNCTION_REJECTED"], res
        assert uses_of(d, op) == 0
        # the approver, from "another machine": identity their SSH account
        r = p11g.approvald("approve", "--yes", "--socket", actl, op)
        assert r.rc == 0, r
        approved = [x for x in d.audit() if x["event"] == "approved" and x.get("op") == op]
        assert approved and p11g.actor_name(approved[-1]) == p11g.U("alice"), approved
        # signs after, and the audit names the CI account
        res = sign_through(pk)
        assert res[0]["signature"], res
        assert uses_of(d, op) == 1
        used = [x for x in d.audit() if x["event"] == "use_granted"]
        assert used and all(p11g.actor_name(x) == p11g.U("ci") for x in used), used
    finally:
        stop(ci)
        stop(alice)


def test_account_without_a_rule_gets_nothing(iso, sshd, start_daemon):
    d = iso.start(start_daemon, policy())
    op = d.request("ci", (EC, 2))
    d.approve("alice", op)
    sshd = sshd([iso.pkcs11_sock, d.sock])
    (pk, ctl), m = sshd.forward("mallory", [iso.pkcs11_sock, d.sock])
    try:
        r = p11g.approvald("request", "--socket", ctl, "--key", EC)
        assert r.rc == 1 and r.code == "not_orderer", r
        res = sign_through(pk)
        assert res[0]["signature"] is None, res
        assert uses_of(d, op) == 0
        refused = [x for x in d.audit() if x["event"] == "use_refused"]
        assert refused and all(p11g.actor_name(x) == p11g.U("mallory") for x in refused)
    finally:
        stop(m)


HOLD = r"""
import ctypes as C, json, sys, time
sys.path.insert(0, sys.argv[1])
import pk11
m = pk11.Module(sys.argv[2])
m.init()
h = m.open(sys.argv[3], sys.argv[4])
key = m.find(h, pk11.CKO_PRIVATE_KEY, "ec")
mech = pk11.Mech(pk11.MECH["CKM_ECDSA"], None, 0)
print("signinit", pk11.rvname(m.C_SignInit(h, C.byref(mech), key)), flush=True)
time.sleep(120)
"""


def test_dropped_connection_mid_signature_costs_nothing(iso, sshd, start_daemon):
    d = iso.start(start_daemon, policy())
    op = d.request("ci", (EC, 1))
    d.approve("alice", op)
    sshd = sshd([iso.pkcs11_sock])
    (pk,), ci = sshd.forward("ci", [iso.pkcs11_sock])
    holder = None
    try:
        holder = subprocess.Popen(
            ["/usr/bin/python3", "-c", HOLD, os.path.dirname(PK11), P11KIT_CLIENT, TOKEN, PIN],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(p11g.CLEAN_ENV, P11_KIT_SERVER_ADDRESS="unix:path=" + pk))
        line = holder.stdout.readline()
        assert line.strip() == "signinit CKR_OK", (line, holder.stderr.read()
                                                     if holder.poll() is not None else "")
        assert server_children(d), "no per-client process while the client is connected"
        assert processes_of("ci"), "no sshd process of the CI account while it is connected"
        # the connection drops: the runner's ssh dies
        ci.kill()
        ci.wait()
        assert p11g.wait_for(lambda: not server_children(d), 10), \
            "approvald's per-client process outlived the SSH connection"
        assert p11g.wait_for(lambda: not processes_of("ci"), 10), \
            "sshd processes of the CI account outlived the connection: %s" % processes_of("ci")
        assert uses_of(d, op) == 0
        # the use is still there for the next connection
        (pk2,), ci = sshd.forward("ci", [iso.pkcs11_sock])
        res = sign_through(pk2)
        assert res[0]["signature"], res
        assert uses_of(d, op) == 1
    finally:
        if holder:
            holder.kill()
            holder.wait()
        stop(ci)


def test_accounts_forward_to_the_named_sockets_only(iso, sshd, start_daemon):
    """PermitOpen [PATH]:* names the sockets; any other path, and any TCP port, is refused by
    sshd (streamlocal forwarding needs AllowTcpForwarding local in OpenSSH, so the TCP side is
    closed by the same list)."""
    iso.start(start_daemon, policy())
    sshd = sshd([iso.pkcs11_sock])
    other = os.path.join(sshd.dir, "other.sock")
    with socket.socket(socket.AF_UNIX) as srv:
        srv.bind(other)
        srv.listen(1)
        os.chmod(other, 0o777)
        port = free_port()
        args = ["ssh", "-N", "-p", str(sshd.port), "-i", sshd.keys["ci"], "-o", "BatchMode=yes",
                "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", "UserKnownHostsFile=" + sshd.known_hosts,
                "-L", "%s:%s" % (os.path.join(sshd.dir, "x.sock"), other),
                "-L", "127.0.0.1:%d:127.0.0.1:%d" % (port, sshd.port),
                "%s@127.0.0.1" % p11g.U("ci")]
        p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert p11g.wait_for(lambda: listening(os.path.join(sshd.dir, "x.sock")), 10), \
                p.communicate(timeout=5) if p.poll() is not None else "no x.sock"
            # the other socket: the channel is refused, nothing reaches it
            with socket.socket(socket.AF_UNIX) as c:
                c.settimeout(10)
                c.connect(os.path.join(sshd.dir, "x.sock"))
                assert c.recv(1) == b""
            srv.settimeout(0.5)
            with pytest.raises(socket.timeout):
                srv.accept()
            # TCP through the account: refused too (sshd's own port, which would answer)
            assert p11g.wait_for(lambda: subprocess.run(
                ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/%d" % port]).returncode == 0, 10)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                assert c.recv(64) == b"", "a TCP forward reached sshd"
            assert p11g.wait_for(lambda: "but the request was denied" in sshd.text(), 10), \
                sshd.text()
            log = sshd.text()
            assert "connect to path %s, but the request was denied" % other in log, log
            assert "127.0.0.1 port %d, but the request was denied" % sshd.port in log, log
        finally:
            stop(p)


def readme_sshd_block():
    """The README's sshd_config.d/p11gate.conf, as a reader would copy it."""
    with open(os.path.join(p11g.SRC, "README.md")) as f:
        text = f.read()
    start = text.index("# /etc/ssh/sshd_config.d/p11gate.conf\n")
    return text[start:text.index("```", start)]


def effective(config, user):
    """sshd -T: the settings sshd would apply to a connection of `user`, lower-cased keys."""
    out = sh([SSHD, "-T", "-f", config, "-C", "user=%s,host=runner,addr=127.0.0.1" % user])
    return dict((ln.split(" ", 1) + [""])[:2] for ln in out.splitlines())


def test_readme_match_blocks_hold_on_their_own(tmp_path):
    """The README's Match blocks restrict the accounts by themselves, under global settings
    that allow everything (the sshd fixture above also restricts globally, so its logins do
    not show that); what sshd would apply, from sshd -T."""
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd -t/-T want it too
    host = str(tmp_path / "host")
    sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host])
    config = str(tmp_path / "sshd_config")
    with open(config, "w") as f:
        f.write("HostKey %s\nUsePAM no\nPasswordAuthentication yes\nAllowTcpForwarding yes\n"
                "AllowStreamLocalForwarding yes\nPermitTTY yes\nX11Forwarding yes\n"
                "AllowAgentForwarding yes\nPermitTunnel yes\n" % host + readme_sshd_block())
    sh([SSHD, "-t", "-f", config])
    closed = {"authenticationmethods": "publickey", "passwordauthentication": "no",
              "forcecommand": "/usr/sbin/nologin", "allowstreamlocalforwarding": "local",
              "allowtcpforwarding": "local", "permitlisten": "none", "permittunnel": "no",
              "x11forwarding": "no", "allowagentforwarding": "no", "permittty": "no"}
    both = "[/run/approvald/pkcs11.sock]:* [/run/approvald/approvald.sock]:*"
    for user, opens in (("ci-app", both), ("approver-alice", "[/run/approvald/approvald.sock]:*")):
        got = effective(config, user)
        want = dict(closed, permitopen=opens)
        assert {k: got.get(k) for k in want} == want, (user, got)
    # an account neither block names keeps the permissive globals: the blocks did the closing
    got = effective(config, "bob")
    assert (got["forcecommand"], got["allowtcpforwarding"], got["permitopen"],
            got["permittty"]) == ("none", "yes", "any", "yes"), got
