"""The gate in front of SoftHSMv2, driven by real PKCS#11 clients and an exact ctypes client.

Every test taking the `token` fixture runs in both deployments:
  local     p11gate.so loaded by the client, which also holds the PIN and the token files;
  isolated  approvald hosts SoftHSMv2 (token directory and PIN file readable by root only) and
            serves the gate over p11-kit's RPC; clients load p11-kit-client.so and no PIN.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import p11g  # noqa: E402

BUILD = os.environ.get("P11GATE_BUILD", os.path.join(os.path.dirname(__file__), "../../build"))
GATE = os.path.join(BUILD, "module", "p11gate.so")
SOFTHSM = os.environ.get("SOFTHSM_MODULE", "/usr/lib/softhsm/libsofthsm2.so")
P11KIT_CLIENT = os.path.join(subprocess.run(["pkg-config", "--variable", "p11_module_path",
                                             "p11-kit-1"], capture_output=True,
                                            text=True).stdout.strip() or
                             "/usr/lib/x86_64-linux-gnu/pkcs11", "p11-kit-client.so")
PK11 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pk11.py")
PIN = "1234"
TOKEN = "p11gt"
DIGEST = hashlib.sha256(b"release 1.0").digest()  # what a CI job would sign with CKM_ECDSA


def sanitizer_env():
    """A sanitized p11gate.so (the ASan build) can only be loaded by an uninstrumented host
    program (pkcs11-tool, openssl, python) with the ASan runtime loaded first.  Leak checks
    are off for those hosts: SoftHSMv2 and the hosts leak on their own; the module's own
    leaks are valgrind's job."""
    try:
        with open(GATE, "rb") as f:
            if b"__asan_init" not in f.read():
                return {}
    except OSError:
        return {}
    lib = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                         text=True).stdout.strip()
    return {"LD_PRELOAD": lib, "ASAN_OPTIONS": "detect_leaks=0:verify_asan_link_order=0",
            "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}


SANITIZER_ENV = None


def host_env(env):
    global SANITIZER_ENV
    if SANITIZER_ENV is None:
        SANITIZER_ENV = sanitizer_env()
    return dict(env, **SANITIZER_ENV)


def sanitized():
    return bool(host_env({}))


# Foreign clients (pkcs11-tool, openssl, p11tool, ssh-keygen) have sanitizer findings of their
# own (pkcs11-tool --read-object: a use-after-free inside libcrypto's EC code), so they cannot
# load a sanitized p11gate.so: locally they run in the normal build only; the ctypes client runs
# in both.  In the isolated deployment they load p11-kit-client.so and run in both builds (the
# sanitized gate is then inside approvald).
def foreign(token):
    if token.mode == "local" and sanitized():
        pytest.skip("foreign clients load p11gate.so in the normal build only")


def foreign_ok(token):
    return token.mode != "local" or not sanitized()


def sh(args, env, check=True, input=None, timeout=60):
    r = subprocess.run(args, env=env, capture_output=True, timeout=timeout, input=input)
    if check and r.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s\n%s" % (args, r.returncode,
                             r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")))
    return r


class Token:
    """A SoftHSMv2 token in a temporary directory with an RSA and an EC key, and how clients
    reach it in one deployment (mode "local" or "isolated", see the module docstring)."""

    def __init__(self, mode="local"):
        self.mode = mode
        self.module = GATE if mode == "local" else P11KIT_CLIENT
        self.daemon = None
        self.dir = tempfile.mkdtemp(prefix="p11gt-hsm-")
        os.chmod(self.dir, 0o755)
        # isolated: the token files and the PIN belong to approvald's user (root) alone
        os.mkdir(os.path.join(self.dir, "tokens"), 0o755 if mode == "local" else 0o700)
        self.pin_file = os.path.join(self.dir, "pin")
        with open(os.open(self.pin_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(PIN + "\n")
        self.pkcs11_sock = os.path.join(self.dir, "pkcs11.sock")
        self.conf = os.path.join(self.dir, "softhsm2.conf")
        with open(self.conf, "w") as f:
            f.write("directories.tokendir = %s/tokens\nobjectstore.backend = file\n"
                    "log.level = ERROR\n" % self.dir)
        self.env = dict(os.environ, SOFTHSM2_CONF=self.conf)
        sh(["softhsm2-util", "--init-token", "--free", "--label", TOKEN, "--so-pin", "12345678",
            "--pin", PIN], self.env)
        for label, kid, kt in (("rsa", "01", "rsa:2048"), ("ec", "02", "EC:prime256v1")):
            sh(["pkcs11-tool", "--module", SOFTHSM, "--token-label", TOKEN, "--login", "--pin",
                PIN, "--keypairgen", "--key-type", kt, "--label", label, "--id", kid], self.env)
        self.pub = {}
        for label in ("rsa", "ec"):
            der = os.path.join(self.dir, label + ".der")
            sh(["pkcs11-tool", "--module", SOFTHSM, "--token-label", TOKEN, "--read-object",
                "--type", "pubkey", "--label", label, "--output-file", der], self.env)
            pem = os.path.join(self.dir, label + ".pem")
            sh(["openssl", "pkey", "-pubin", "-inform", "DER", "-in", der, "-out", pem], self.env)
            self.pub[label] = pem

    def start(self, start_daemon, policy, **config):
        """approvald with policy; isolated: also hosting this token on its PKCS#11 socket."""
        if self.mode != "local":
            config = dict({"pkcs11_socket": self.pkcs11_sock, "pkcs11_module": SOFTHSM,
                           "pin_file": self.pin_file,
                           "pkcs11_env": "SOFTHSM2_CONF=" + self.conf}, **config)
        self.daemon = start_daemon(policy, config=config or None)
        return self.daemon

    def gate_env(self, daemon):
        """The environment of a client program."""
        if self.mode == "local":
            conf = os.path.join(self.dir, "p11gate.conf")
            with open(conf, "w") as f:
                f.write("module = %s\nsocket = %s\n" % (SOFTHSM, daemon.sock))
            return dict(self.env, P11GATE_CONF=conf)
        # no SOFTHSM2_CONF, no PIN: only the socket
        env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
        return dict(env, P11_KIT_SERVER_ADDRESS="unix:path=" + self.pkcs11_sock)

    def refusals(self, out_stderr):
        """The p11gate refusal lines: the client's stderr locally, approvald's log isolated."""
        text = out_stderr if self.mode == "local" else self.daemon.stderr()
        return [ln for ln in text.splitlines() if ln.startswith("p11gate:")]

    def pk11(self, scenario, env, **args):
        args.setdefault("module", self.module)
        return pk11(scenario, env, **args)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class PlainServer:
    """`p11-kit server` serving a token over the same RPC without any gate: what the isolated
    deployment is compared with (the RPC has differences of its own from a loaded module)."""

    def __init__(self, token):
        self.sock = os.path.join(token.dir, "plain.sock")
        self.proc = subprocess.Popen(["p11-kit", "server", "-f", "--provider", SOFTHSM, "-n",
                                      self.sock, "pkcs11:token=" + TOKEN], env=token.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        p11g.wait_for(lambda: os.path.exists(self.sock) or self.proc.poll() is not None, 10)
        assert self.proc.poll() is None, self.proc.stderr.read()
        env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
        self.env = dict(env, P11_KIT_SERVER_ADDRESS="unix:path=" + self.sock)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()


@pytest.fixture(params=["local", "isolated"])
def token(accounts, request):
    if not os.path.exists(GATE):
        pytest.fail("p11gate.so not built at %s" % GATE)
    t = Token(request.param)
    yield t
    t.cleanup()


def rule(name, keys, approvals=0, **extra):
    r = {"name": name, "keys": keys, "orderers": ["uid:0"]}
    if approvals:
        r.update(approvers=["group:p11gt-approvers"], approvals=approvals)
    else:
        r["approvals"] = 0
    r.update(extra)
    return r


OPEN = {"default": "deny", "rules": [rule("all", ["pkcs11:token=%s" % TOKEN], allow_raw=True)]}


def guarded(**extra):
    return {"default": "deny", "rules": [
        rule("ec", ["pkcs11:token=%s;object=ec" % TOKEN], approvals=2, **extra),
        rule("rsa", ["pkcs11:token=%s;object=rsa" % TOKEN], approvals=2)]}


def pk11(scenario, env, **args):
    args.setdefault("module", GATE)
    args.setdefault("token", TOKEN)
    args.setdefault("pin", PIN)
    r = subprocess.run(["/usr/bin/python3", PK11, scenario, json.dumps(args)], env=host_env(env),
                       capture_output=True, timeout=120)
    assert r.returncode == 0, "pk11 %s failed:\n%s" % (scenario, r.stderr.decode(errors="replace"))
    out = json.loads(r.stdout)
    out["stderr"] = r.stderr.decode(errors="replace")
    return out


def uses_of(daemon, op):
    return daemon.show(op)["keys"][0]["used"]


def granted(daemon):
    return [r for r in daemon.audit() if r["event"] == "use_granted"]


# ---- a. real clients see SoftHSMv2 unchanged ----------------------------------------------

def test_pkcs11_tool_test_output_equals_direct(token, start_daemon):
    foreign(token)
    d = token.start(start_daemon, OPEN)
    env = token.gate_env(d)
    args = ["--login", "--pin", PIN, "--token-label", TOKEN, "--test"]
    if token.mode != "local":
        # SoftHSMv2 lists objects in the order of its allocations, which differs between
        # approvald's process and p11-kit server's, and pkcs11-tool's tests depend on the
        # order of the keys: one key pair (the RSA one, which it signs with) makes it the same
        for t in ("privkey", "pubkey"):
            sh(["pkcs11-tool", "--module", SOFTHSM, "--token-label", TOKEN, "--login", "--pin",
                PIN, "--delete-object", "--type", t, "--label", "ec"], token.env)
    if token.mode == "local":
        direct = sh(["pkcs11-tool", "--module", SOFTHSM] + args, token.env, check=False)
    else:
        # the same token over the same RPC, ungated (p11-kit's RPC refuses
        # C_GenerateRandom(buf, 0), so a loaded module is not the reference here)
        with PlainServer(token) as plain:
            direct = sh(["pkcs11-tool", "--module", P11KIT_CLIENT] + args, plain.env,
                        check=False)
    gated = sh(["pkcs11-tool", "--module", token.module] + args, env, check=False)
    # The same output up to the decryption tests (signatures and key tests included).  There
    # the guarded RSA key is refused: no private-key operation but C_Sign is open for a
    # guarded key, allow_raw or not (a raw RSA decryption is a signature; test_sec_gate.py),
    # where SoftHSMv2 itself fails only the later OAEP-with-label test.
    assert b"Signatures" in direct.stdout or b"Signature" in direct.stdout, direct.stdout
    cut = b"Decryption (currently only for RSA)"
    g = gated.stdout.replace(token.module.encode(), b"M")
    dr = direct.stdout.replace(SOFTHSM.encode(), b"M").replace(P11KIT_CLIENT.encode(), b"M")
    assert cut in dr and cut in g, (dr, g)
    assert g.split(cut)[0] == dr.split(cut)[0]
    assert direct.returncode != 0 and gated.returncode != 0
    assert b"RSA-PKCS: OK" in dr.split(cut)[1], dr
    assert b"RSA-PKCS: OK" not in g.split(cut)[1], g
    assert b"C_DecryptInit failed: rv = CKR_KEY_FUNCTION_NOT_PERMITTED" in gated.stderr, gated.stderr
    assert len(granted(d)) > 0, "pkcs11-tool --test signed nothing through the gate"


def test_pkcs11_tool_sign_then_openssl_verify(token, start_daemon):
    foreign(token)
    d = token.start(start_daemon, OPEN)
    env = token.gate_env(d)
    data = os.path.join(token.dir, "digest.bin")
    with open(data, "wb") as f:
        f.write(DIGEST)
    sig = os.path.join(token.dir, "sig.der")
    sh(["pkcs11-tool", "--module", token.module, "--token-label", TOKEN, "--login", "--pin", PIN,
        "--sign", "--mechanism", "ECDSA", "--id", "02", "--input-file", data, "--output-file",
        sig, "--signature-format", "openssl"], env)
    sh(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", token.pub["ec"], "-in", data,
        "-sigfile", sig], env)
    g = granted(d)
    assert len(g) == 1 and g[0]["digest"] == "sha256:" + DIGEST.hex()


def openssl_engine_env(token, env):
    cnf = os.path.join(token.dir, "openssl.cnf")
    with open(cnf, "w") as f:
        f.write("openssl_conf = init\n[init]\nengines = engines\n[engines]\npkcs11 = pkcs11\n"
                "[pkcs11]\nengine_id = pkcs11\nMODULE_PATH = %s\ninit = 0\n" % token.module)
    return dict(env, OPENSSL_CONF=cnf)


def openssl_sign(token, env, label, out):
    data = os.path.join(token.dir, "digest.bin")
    with open(data, "wb") as f:
        f.write(DIGEST)
    uri = "pkcs11:token=%s;object=%s;type=private;pin-value=%s" % (TOKEN, label, PIN)
    r = sh(["openssl", "pkeyutl", "-sign", "-engine", "pkcs11", "-keyform", "engine", "-inkey",
            uri, "-in", data, "-out", out], openssl_engine_env(token, env), check=False)
    return r, data


def test_openssl_engine_sign_verifies(token, start_daemon):
    foreign(token)
    d = token.start(start_daemon, OPEN)
    env = token.gate_env(d)
    sig = os.path.join(token.dir, "sig")
    r, data = openssl_sign(token, env, "ec", sig)
    assert r.returncode == 0, r.stderr
    sh(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", token.pub["ec"], "-in", data,
        "-sigfile", sig], env)
    assert len(granted(d)) == 1


def test_p11tool_test_sign(token, start_daemon):
    foreign(token)
    d = token.start(start_daemon, OPEN)
    env = dict(token.gate_env(d), GNUTLS_PIN=PIN)
    r = sh(["p11tool", "--provider", token.module, "--login", "--test-sign",
            "pkcs11:token=%s;object=ec" % TOKEN], env, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert b"Signing using ECDSA-SHA256... ok" in r.stderr
    assert b"Verifying against public key in the token... ok" in r.stderr
    assert len(granted(d)) >= 1


def test_ssh_keygen_lists_same_keys(token, start_daemon):
    foreign(token)
    d = token.start(start_daemon, OPEN)
    env = token.gate_env(d)
    direct = sh(["ssh-keygen", "-D", SOFTHSM], token.env)
    gated = sh(["ssh-keygen", "-D", token.module], env)
    # the same keys; in the order SoftHSMv2 lists them, which follows its allocations (and
    # differs between approvald's process and this one)
    assert sorted(gated.stdout.splitlines()) == sorted(direct.stdout.splitlines())
    assert gated.stdout.count(b"\n") == 2


# ---- b. a 2-approver rule -------------------------------------------------------------------

def test_refused_before_approval_then_exactly_n_uses(token, start_daemon):
    d = token.start(start_daemon, guarded())
    env = token.gate_env(d)
    # refused before any operation: exact return code, one line naming the reason
    out = token.pk11("sign", env, label="ec", mech="CKM_ECDSA", data=DIGEST.hex(),
                     then_sign_again=True)
    first, again = out["results"]
    assert first["steps"][-1] == ["C_Sign", "CKR_FUNCTION_REJECTED"] and first["signature"] is None
    assert again["steps"][0] == ["C_SignInit", "CKR_OK"], "session unusable after a refusal"
    lines = token.refusals(out["stderr"])
    assert len(lines) == 2 and all("(no_operation)" in ln for ln in lines), lines
    if token.mode != "local":
        # approvald's log names the client the refusal was for
        assert all("PKCS#11 client uid 0 pid " in ln for ln in lines), lines
    if foreign_ok(token):
        before = len(token.refusals(""))
        r = sh(["pkcs11-tool", "--module", token.module, "--token-label", TOKEN, "--login",
                "--pin", PIN, "--sign", "--mechanism", "ECDSA", "--id", "02", "--input-file",
                "/dev/null"], env, check=False)
        assert r.returncode != 0
        assert b"p11gate: " in r.stderr if token.mode == "local" else \
            len(token.refusals("")) > before
        r, _ = openssl_sign(token, env, "ec", os.path.join(token.dir, "x"))
        assert r.returncode != 0
        if token.mode == "local":
            assert b"p11gate: " in r.stderr

    op = d.request("root", ("pkcs11:token=%s;object=ec" % TOKEN, 3))
    out = token.pk11("sign", env, label="ec", mech="CKM_ECDSA", data=DIGEST.hex())
    assert out["results"][0]["steps"][-1] == ["C_Sign", "CKR_FUNCTION_REJECTED"]
    assert "(pending)" in token.refusals(out["stderr"])[-1]
    d.approve("alice", op)
    assert token.pk11("sign", env, label="ec", mech="CKM_ECDSA",
                      data=DIGEST.hex())["results"][0]["signature"] is None
    d.approve("bob", op)

    # length query and a too-small buffer consume nothing
    out = token.pk11("sign", env, label="ec", mech="CKM_ECDSA", data=DIGEST.hex(),
                     length_query=True, small_buffer=True)
    assert out["results"][0]["steps"] == [["C_SignInit", "CKR_OK"], ["C_Sign(NULL)", "CKR_OK"],
                                          ["C_Sign(small)", "CKR_BUFFER_TOO_SMALL"]]
    assert uses_of(d, op) == 0
    # three signatures by three clients, then exhausted
    out = token.pk11("sign", env, label="ec", mech="CKM_ECDSA", data=DIGEST.hex())
    assert out["results"][0]["signature"]
    if not foreign_ok(token):
        out = token.pk11("sign", env, label="ec", mech="CKM_ECDSA", data=DIGEST.hex(), count=2)
        assert all(r["signature"] for r in out["results"])
    else:
        sig = os.path.join(token.dir, "sig")
        r, data = openssl_sign(token, env, "ec", sig)
        assert r.returncode == 0, r.stderr
        sh(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", token.pub["ec"], "-in", data,
            "-sigfile", sig], env)
        digest_file = os.path.join(token.dir, "d.bin")
        with open(digest_file, "wb") as f:
            f.write(DIGEST)
        sh(["pkcs11-tool", "--module", token.module, "--token-label", TOKEN, "--login", "--pin",
            PIN, "--sign", "--mechanism", "ECDSA", "--id", "02", "--input-file", digest_file,
            "--output-file", os.path.join(token.dir, "s3")], env)
    assert uses_of(d, op) == 3 and d.state_of(op) == "exhausted"
    out = token.pk11("sign", env, label="ec", mech="CKM_ECDSA", data=DIGEST.hex())
    assert out["results"][0]["steps"][-1] == ["C_Sign", "CKR_FUNCTION_REJECTED"]
    assert "(exhausted)" in token.refusals(out["stderr"])[-1]
    assert len([g for g in granted(d) if g.get("op") == op]) == 3


def test_pinned_digest_signs_that_digest_only(token, start_daemon):
    d = token.start(start_daemon, guarded(bind_digest=True))
    env = token.gate_env(d)
    op = d.request("root", ("pkcs11:token=%s;object=ec" % TOKEN, 2),
                   digests=["sha256:" + DIGEST.hex()])
    d.approve("alice", op)
    d.approve("bob", op)
    other = hashlib.sha256(b"something else").digest()
    out = token.pk11("sign", env, label="ec", mech="CKM_ECDSA", data=other.hex())
    assert out["results"][0]["steps"][-1] == ["C_Sign", "CKR_FUNCTION_REJECTED"]
    assert "(digest_mismatch)" in token.refusals(out["stderr"])[-1]
    out = token.pk11("sign", env, label="ec", mech="CKM_ECDSA", data=DIGEST.hex())
    assert out["results"][0]["signature"]
    assert uses_of(d, op) == 1


# ---- c. other paths to a guarded key --------------------------------------------------------

BYPASSES = ["C_DecryptInit CKM_RSA_X_509", "C_DecryptInit CKM_RSA_PKCS", "C_SignRecoverInit",
            "C_WrapKey", "C_SetAttributeValue CKA_EXTRACTABLE", "C_SetAttributeValue CKA_LABEL",
            "C_CopyObject"]


def test_bypasses_refused_on_guarded_key(token, start_daemon):
    d = token.start(start_daemon, guarded())
    wrap = "CKM_AES_KEY_WRAP_PAD" if token.mode == "local" else "CKM_AES_ECB"
    res = token.pk11("bypass", token.gate_env(d), label="rsa", wrap_mech=wrap,
                     destroy=True)["results"]
    for b in BYPASSES:
        assert res[b] == "CKR_KEY_FUNCTION_NOT_PERMITTED", (b, res)
    # deleting it is no signature, but not the gate's clients' to do either
    assert res["C_DestroyObject"] == "CKR_ACTION_PROHIBITED", res
    # the key is still there, under its name
    res2 = token.pk11("sign", token.gate_env(d), label="rsa", mech="CKM_SHA256_RSA_PKCS",
                      data="00")
    assert res2["results"][0]["steps"][0] == ["C_SignInit", "CKR_OK"]


def test_unguarded_key_behaves_as_softhsm(token, start_daemon):
    # isolated: the client (root) manages token objects only as one of pkcs11_object_admins
    # (test_sec_daemon.py has the refusals for everyone else)
    admins = {} if token.mode == "local" else {"pkcs11_object_admins": "uid:0"}
    d = token.start(start_daemon, {"default": "allow", "rules": [
        rule("ec-only", ["pkcs11:token=%s;object=ec" % TOKEN], approvals=2)]}, **admins)
    env = token.gate_env(d)
    wrap = "CKM_AES_KEY_WRAP_PAD" if token.mode == "local" else "CKM_AES_ECB"
    gated = token.pk11("bypass", env, label="rsa", wrap_mech=wrap)["results"]
    # the same calls straight to SoftHSMv2 on a fresh token (they rename and copy the key);
    # isolated: through `p11-kit server`, the same RPC without the gate
    fresh = Token()
    try:
        if token.mode == "local":
            direct = pk11("bypass", fresh.env, label="rsa", module=SOFTHSM)["results"]
        else:
            with PlainServer(fresh) as plain:
                direct = pk11("bypass", plain.env, label="rsa", module=P11KIT_CLIENT,
                              wrap_mech=wrap)["results"]
    finally:
        fresh.cleanup()
    assert gated == direct
    assert "CKR_KEY_FUNCTION_NOT_PERMITTED" not in [gated[b] for b in BYPASSES[:2]]


# ---- d. threads and fork ---------------------------------------------------------------------

def test_16_threads_exactly_100_signatures(token, start_daemon):
    d = token.start(start_daemon, guarded())
    env = token.gate_env(d)
    op = d.request("root", ("pkcs11:token=%s;object=ec" % TOKEN, 100))
    d.approve("alice", op)
    d.approve("bob", op)
    out = token.pk11("threads", env, label="ec", mech="CKM_ECDSA", data=DIGEST.hex(),
                     threads=16, per_thread=8)
    assert out["ok"] == 100 and out["refused"] == 28 and out["other"] == 0, out
    assert uses_of(d, op) == 100
    assert len([g for g in granted(d) if g.get("op") == op]) == 100


def test_forked_child_signs_after_reinitialising(token, start_daemon):
    if token.mode != "local":
        pytest.skip("fork handling is p11gate.so's; p11-kit-client.so has its own")
    d = token.start(start_daemon, OPEN)
    out = token.pk11("fork", token.gate_env(d), label="ec", mech="CKM_ECDSA", data=DIGEST.hex())
    c = out["child"]
    assert c["before_reinit"] == "CKR_CRYPTOKI_NOT_INITIALIZED", out
    assert c["reinit"] == "CKR_OK" and c["child_sign"] == "CKR_OK" and c["child_signature"], out
    assert out["parent_sign"] == "CKR_OK" and out["parent_signature"], out
    assert len(granted(d)) == 2


# ---- e. approvald down: fail closed ------------------------------------------------------------

def test_daemon_down_fails_closed(token, start_daemon):
    d = token.start(start_daemon, OPEN)
    env = token.gate_env(d)
    good = token.pk11("sign", env, label="ec", mech="CKM_ECDSA", data=DIGEST.hex())["results"][0]
    assert good["signature"]
    assert d.stop() == 0
    if token.mode != "local":
        # approvald is the only way to the token: nothing at all, signatures included
        r = subprocess.run(["/usr/bin/python3", PK11, "sign", json.dumps(dict(
            module=token.module, token=TOKEN, pin=PIN, label="ec", mech="CKM_ECDSA",
            data=DIGEST.hex()))], env=env, capture_output=True, timeout=60)
        assert r.returncode != 0 and b'"signature"' not in r.stdout, r
        assert not os.path.exists(token.pkcs11_sock)
        return
    out = token.pk11("sign", env, label="ec", mech="CKM_ECDSA", data=DIGEST.hex())
    assert out["results"][0]["signature"] is None
    assert out["results"][0]["steps"][-1] == ["C_Sign", "CKR_FUNCTION_REJECTED"]
    assert "not reachable" in out["stderr"] and d.sock in out["stderr"], out["stderr"]
    if not sanitized():
        r = sh(["pkcs11-tool", "--module", GATE, "--token-label", TOKEN, "--list-objects"], env)
        assert b"label:      ec" in r.stdout and b"label:      rsa" in r.stdout
    v = token.pk11("verify", env, label="ec", mech="CKM_ECDSA", data=DIGEST.hex(),
                   signature=good["signature"])
    assert v == {"C_VerifyInit": "CKR_OK", "C_Verify": "CKR_OK", "stderr": v["stderr"]}


# ---- its configuration ------------------------------------------------------------------------

INIT_ONLY = """
import sys
sys.path.insert(0, %r)
import pk11
print(pk11.rvname(pk11.Module(sys.argv[1]).init()))
""" % os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize("text,where,msg", [
    # FILE:LINE:COLUMN, the column of what is wrong: an unknown key, the key
    ("module = %s\n  sokcet = /x\n" % SOFTHSM, "2:3", 'unknown setting "sokcet"'),
    # a bad value, the value
    ("module = %s\nwait =\t soon\n" % SOFTHSM, "2:9", "wait must be a number of seconds"),
    ("module =  lib.so\n", "1:11", "module must be an absolute path"),
    # no '=', what stands where it should; nothing before it, the '='
    ("module %s\n" % SOFTHSM, "1:8", 'expected "key = value"'),
    ("module = %s\n\t= 1\n" % SOFTHSM, "2:2", 'expected "key = value"'),
    # a NUL byte, the NUL
    ("module = %s\nwait = 1\x000\n" % SOFTHSM, "2:9", "a NUL byte in a setting"),
])
def test_a_bad_configuration_line_fails_c_initialize_naming_its_line_and_column(tmp_path, text,
                                                                                 where, msg):
    conf = tmp_path / "p11gate.conf"
    conf.write_bytes(text.encode())
    env = {k: v for k, v in os.environ.items() if not k.startswith("P11GATE_")}
    env["P11GATE_CONF"] = str(conf)
    r = subprocess.run(["/usr/bin/python3", "-c", INIT_ONLY, GATE], env=host_env(env),
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "CKR_GENERAL_ERROR", r
    assert "p11gate: %s:%s: %s" % (conf, where, msg) in r.stderr, r.stderr


# ---- a PKCS#11 3.0 module behind the gate ------------------------------------------------------

MOCK3 = os.path.join(BUILD, "tests", "mock", "mock3.so")


def test_mock3_message_sign_gated_and_lists_never_leak(accounts, start_daemon, tmp_path):
    d = start_daemon({"default": "deny", "rules": [
        rule("mock", ["pkcs11:token=mock;object=mk"], approvals=2)]})
    log = tmp_path / "calls.log"
    conf = tmp_path / "p11gate.conf"
    conf.write_text("module = %s\nsocket = %s\n" % (MOCK3, d.sock))
    env = dict(os.environ, P11GATE_CONF=str(conf), GATEMOCK_LOG=str(log))
    direct = pk11("mock3", env, module=MOCK3)
    assert direct["C_MessageSignInit"] == "CKR_OK" and direct["sign"][-1] == ["C_Sign", "CKR_OK"]
    log.write_text("")
    gated = pk11("mock3", env, module=GATE, real=MOCK3)
    assert gated["interface"] == "PKCS 11" and gated["version"] == [3, 0]
    assert gated["C_MessageSignInit"] == "CKR_KEY_FUNCTION_NOT_PERMITTED", gated
    assert gated["sign"][-1] == ["C_Sign", "CKR_FUNCTION_REJECTED"], gated
    calls = log.read_text().split()
    assert "C_MessageSignInit" not in calls and "C_Sign" not in calls, calls
    assert "C_SignInit" in calls  # the real module was reached, just not for a signature
    assert gated["gate_pointers"] >= 2 and gated["real_pointers"] >= 2
    assert gated["leaked"] == [], "p11gate.so handed out the real module's function list"


def test_unreadable_class_fails_closed(accounts, start_daemon, tmp_path):
    """A key whose CKA_CLASS the module will not give is not taken for "no private key":
    the gate answers the module's error and never starts the signature."""
    d = start_daemon({"default": "allow", "rules": []})
    log = tmp_path / "calls.log"
    conf = tmp_path / "p11gate.conf"
    conf.write_text("module = %s\nsocket = %s\n" % (MOCK3, d.sock))
    env = dict(os.environ, P11GATE_CONF=str(conf), GATEMOCK_LOG=str(log), GATEMOCK_CLASS_FAILS="1")
    direct = pk11("sign", env, module=MOCK3, token="mock", label="mk", mech="CKM_ECDSA",
                  data="11" * 32, pin=None)
    assert direct["results"][0]["signature"], direct  # the mock signs when asked directly
    log.write_text("")
    gated = pk11("sign", env, module=GATE, token="mock", label="mk", mech="CKM_ECDSA",
                 data="11" * 32, pin=None)
    assert gated["results"][0]["steps"] == [["C_SignInit", "0x30"]], gated  # CKR_DEVICE_ERROR
    assert "C_SignInit" not in log.read_text().split()
