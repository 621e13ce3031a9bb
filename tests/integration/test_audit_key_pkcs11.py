"""Issue 18, item 4: audit checkpoints signed by a key on a token (`audit_key = pkcs11:...`).

approvald never loads the module itself: approvald-audit-signer, executed fresh for each
checkpoint (and once at start for the public key), logs in with pin_file's PIN, finds the one
private key the URI names and signs; approvald verifies each signature with the public key it
read at start before it appends the checkpoint.  Auditors get the public key with
`approvald audit --export-pubkey --config FILE` and check with `audit --verify --pubkey`."""

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import p11g  # noqa: E402
from p11g import expect_ok  # noqa: E402
from test_module_gate import PIN, SOFTHSM, TOKEN, Token, sh  # noqa: E402

AUDIT_EC = "pkcs11:token=%s;object=audit-ec;type=private" % TOKEN
AUDIT_RSA = "pkcs11:token=%s;object=audit-rsa" % TOKEN
AUDIT_ED = "pkcs11:token=%s;object=audit-ed" % TOKEN


@pytest.fixture
def hsm(accounts):
    """A SoftHSMv2 token (root's alone, as approvald's) with an EC P-256 and an RSA audit key
    besides the test keys, and their public keys as the token holds them (DER)."""
    t = Token("isolated")
    t.audit_pub = {}
    for label, kid, kt in (("audit-ec", "10", "EC:prime256v1"), ("audit-rsa", "11", "rsa:2048"),
                           ("audit-ed", "13", "EC:edwards25519")):
        sh(["pkcs11-tool", "--module", SOFTHSM, "--token-label", TOKEN, "--login", "--pin", PIN,
            "--keypairgen", "--key-type", kt, "--label", label, "--id", kid], t.env)
        der = os.path.join(t.dir, label + ".der")
        sh(["pkcs11-tool", "--module", SOFTHSM, "--token-label", TOKEN, "--read-object",
            "--type", "pubkey", "--label", label, "--output-file", der], t.env)
        with open(der, "rb") as f:
            data = f.read()
        if data.startswith(b"-----BEGIN PUBLIC KEY-----"):
            # pkcs11-tool writes an EdDSA key as PEM
            data = base64.b64decode(b"".join(data.splitlines()[1:-1]))
        t.audit_pub[label] = data
    yield t
    t.cleanup()


def token_config(t, uri=AUDIT_EC, **extra):
    """The local deployment: no pkcs11_socket, only what approvald needs to log in."""
    conf = {"pkcs11_module": SOFTHSM, "pin_file": t.pin_file,
            "pkcs11_env": "SOFTHSM2_CONF=" + t.conf, "audit_key": uri,
            "audit_checkpoint_records": 3, "audit_checkpoint_seconds": 3600}
    conf.update(extra)
    return {k: v for k, v in conf.items() if v is not None}


def checkpoints(d):
    return [r for r in d.audit() if r["event"] == "checkpoint"]


def approved(d, label, uses=1):
    op = d.request("orderer", ("pkcs11:token=prod;object=%s" % label, uses))
    d.approve("alice", op)
    d.approve("bob", op)
    return op


def export_pubkey(config, work):
    r = p11g.approvald("audit", "--export-pubkey", "--config", config)
    assert r.rc == 0 and r.out.startswith("-----BEGIN PUBLIC KEY-----"), r
    pub = os.path.join(work, "audit.pub")
    with open(pub, "w") as f:
        f.write(r.out)
    return pub, r


def spki_id(pem_path):
    """sha256:HEX of the PEM's DER SubjectPublicKeyInfo, as openssl makes it."""
    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", pem_path, "-outform", "DER"],
                         check=True, stdout=subprocess.PIPE).stdout
    return "sha256:" + hashlib.sha256(der).hexdigest(), der


def start_failure(config):
    d = p11g.Daemon({"default": "deny", "rules": []}, config=config)
    try:
        with pytest.raises(AssertionError) as e:
            d.start(timeout=20)
        return str(e.value)
    finally:
        d.kill()
        d.cleanup()


def signs_and_verifies(d, t, label, work):
    """Checkpoints of d: one at start, more as records come, each verified live and offline
    with the exported key, whose id is the token's public key's."""
    pub, r = export_pubkey(d.config, work)
    kid, der = spki_id(pub)
    # the token's own public key object, as pkcs11-tool reads it
    assert der == t.audit_pub[label]
    assert "audit key %s" % kid in r.err, r
    assert len(checkpoints(d)) == 1, d.audit()
    for i in range(3):
        approved(d, "%s-%d" % (label, i))
    assert p11g.wait_for(lambda: len(checkpoints(d)) >= 2, 10), d.stderr()
    cps = checkpoints(d)
    assert all(c["key"] == kid for c in cps), cps
    assert "audit checkpoints signed on the token by" in d.stderr()
    assert "audit checkpoint through=%d" % cps[-1]["through"] in d.stderr()
    r = expect_ok(d.cli("audit", "--verify", "--pubkey", pub))
    assert re.search(r"checkpoints: %d, each signed by the audit key" % len(cps), r.out), r
    # at shutdown the rest is signed; the store verifies offline with the same key
    approved(d, label + "-last")
    assert d.stop() == 0
    r = p11g.approvald("audit", "--verify", "--pubkey", pub, "--state-dir", d.state)
    assert r.rc == 0 and "not yet covered" not in r.out, r
    assert len(checkpoints_offline(d)) > len(cps)
    # a key that is not the token's is refused
    other = os.path.join(work, "other.pem")
    sh(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-out", other], os.environ)
    r = p11g.approvald("audit", "--verify", "--pubkey", other, "--state-dir", d.state)
    assert r.rc == 1 and "signed by another key" in r.err, r


def checkpoints_offline(d):
    r = p11g.approvald("audit", "--state-dir", d.state, "--json")
    assert r.rc == 0, r
    recs = [json.loads(ln) for ln in r.out.splitlines() if ln.strip()]
    return [x for x in recs if x.get("event") == "checkpoint"]


def test_ec_key_on_token_signs_checkpoints_local_deployment(hsm, start_daemon):
    work = tempfile.mkdtemp(prefix="p11gt-akey-")
    try:
        d = start_daemon(config=token_config(hsm))
        assert not os.path.exists(hsm.pkcs11_sock)
        signs_and_verifies(d, hsm, "audit-ec", work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_rsa_key_on_token_signs_checkpoints(hsm, start_daemon):
    work = tempfile.mkdtemp(prefix="p11gt-akey-")
    try:
        d = start_daemon(config=token_config(hsm, AUDIT_RSA))
        signs_and_verifies(d, hsm, "audit-rsa", work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_ed25519_key_on_token_signs_checkpoints(hsm, start_daemon):
    # SoftHSMv2 has CKM_EDDSA: Ed25519 signs the checkpoint's text itself
    work = tempfile.mkdtemp(prefix="p11gt-akey-")
    try:
        d = start_daemon(config=token_config(hsm, AUDIT_ED))
        signs_and_verifies(d, hsm, "audit-ed", work)
        r = p11g.run(["openssl", "pkey", "-pubin", "-in", os.path.join(work, "audit.pub"),
                      "-noout", "-text"])
        assert r.rc == 0 and "ED25519 Public-Key" in r.out, r
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_failed_signing_appends_nothing_and_is_retried(hsm, start_daemon):
    work = tempfile.mkdtemp(prefix="p11gt-akey-")
    tokens = os.path.join(hsm.dir, "tokens")
    try:
        d = start_daemon(config=token_config(hsm))
        pub, _ = export_pubkey(d.config, work)
        assert len(checkpoints(d)) == 1
        # the token gone: each tick's attempt fails, says why, appends nothing
        os.rename(tokens, tokens + ".away")
        for i in range(3):
            approved(d, "retry-%d" % i)
        assert p11g.wait_for(lambda: d.stderr().count("audit checkpoint: audit_key") >= 2, 10), \
            d.stderr()
        assert "(signing a checkpoint with %s)" % SOFTHSM in d.stderr()
        assert len(checkpoints(d)) == 1
        assert all(r["event"] != "checkpoint" or r.get("sig") for r in d.audit())
        # back: the next tick signs all of it
        os.rename(tokens + ".away", tokens)
        assert p11g.wait_for(lambda: len(checkpoints(d)) == 2, 10), d.stderr()
        r = expect_ok(d.cli("audit", "--verify", "--pubkey", pub))
        assert "checkpoints: 2, each signed by the audit key" in r.out, r
    finally:
        if os.path.exists(tokens + ".away"):
            os.rename(tokens + ".away", tokens)
        shutil.rmtree(work, ignore_errors=True)


def test_same_token_in_the_isolated_deployment(hsm, start_daemon):
    work = tempfile.mkdtemp(prefix="p11gt-akey-")
    try:
        # the token approvald serves on its PKCS#11 socket; the URI names no token:
        # pkcs11_token picks it
        uri = "pkcs11:object=audit-ec;id=%10"
        d = start_daemon(config=token_config(hsm, uri, pkcs11_socket=hsm.pkcs11_sock,
                                             pkcs11_token=TOKEN))
        assert os.path.exists(hsm.pkcs11_sock)
        assert "serving PKCS#11" in d.stderr()
        signs_and_verifies(d, hsm, "audit-ec", work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_approvald_never_loads_the_module(hsm, start_daemon):
    d = start_daemon(config=token_config(hsm))
    with open("/proc/%d/maps" % d.proc.pid) as f:
        maps = f.read()
    assert "softhsm" not in maps
    assert len(checkpoints(d)) == 1


def test_wrong_key_or_pin_stops_approvald_at_start(hsm, tmp_path):
    msg = start_failure(token_config(hsm, "pkcs11:token=%s;object=nope" % TOKEN))
    assert "audit_key pkcs11:token=%s;object=nope: no private key matches it (on 1 token) " \
        "(reading the public key with %s)" % (TOKEN, SOFTHSM) in msg, msg
    msg = start_failure(token_config(hsm, "pkcs11:token=elsewhere;object=audit-ec"))
    assert "audit_key pkcs11:token=elsewhere;object=audit-ec: no initialised token matches " \
        "it" in msg, msg
    # two private keys by that id? no: by no label at all, both audit keys' class matches
    msg = start_failure(token_config(hsm, "pkcs11:object=audit-ec", pkcs11_token="other"))
    assert "no initialised token matches it and pkcs11_token other" in msg, msg
    wrong = tmp_path / "pin-wrong"
    wrong.write_text("0000\n")
    wrong.chmod(0o600)
    msg = start_failure(token_config(hsm, pin_file=str(wrong)))
    assert "audit_key %s: token \"%s\": logging in with pin_file's PIN failed: The password " \
        "or PIN is incorrect" % (AUDIT_EC, TOKEN) in msg, msg
    # one line says it all
    assert len([ln for ln in msg.splitlines() if "audit_key" in ln]) == 1, msg
    # the export says the same and prints nothing
    d = p11g.Daemon(config=token_config(hsm, pin_file=str(wrong)))
    try:
        r = p11g.approvald("audit", "--export-pubkey", "--config", d.config)
        assert r.rc != 0 and r.out == "" and "pin_file's PIN failed" in r.err, r
    finally:
        d.cleanup()


def test_a_uri_naming_two_keys_is_refused(hsm, start_daemon):
    # the same label on a second private key
    sh(["pkcs11-tool", "--module", SOFTHSM, "--token-label", TOKEN, "--login", "--pin", PIN,
        "--keypairgen", "--key-type", "EC:prime256v1", "--label", "audit-ec", "--id", "12"],
       hsm.env)
    msg = start_failure(token_config(hsm))
    assert "audit_key %s: more than one private key matches it" % AUDIT_EC in msg, msg
    # id= picks one: the key of id 10, whose public key is exported
    d = start_daemon(config=token_config(hsm, AUDIT_EC + ";id=%10"))
    work = tempfile.mkdtemp(prefix="p11gt-akey-")
    try:
        pub, _ = export_pubkey(d.config, work)
        kid, der = spki_id(pub)
        assert der == hsm.audit_pub["audit-ec"]
        assert [c["key"] for c in checkpoints(d)] == [kid]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def config_error(content):
    d = p11g.Daemon(config=content)
    try:
        r = p11g.approvald("serve", "--config", d.config, "--state-dir", d.state,
                           "--socket", d.sock, "--policy-dir", d.policy_dir)
        assert r.rc != 0, r
        return r.err
    finally:
        d.cleanup()


def test_configuration_errors_name_file_line_and_column(hsm, tmp_path):
    key = tmp_path / "audit.key"
    sh(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(key)], os.environ)
    key.chmod(0o600)
    base = "pkcs11_module = %s\npin_file = %s\n" % (SOFTHSM, hsm.pin_file)
    err = config_error(base + "audit_key_file = %s\naudit_key = %s\n" % (key, AUDIT_EC))
    assert re.search(r"approvald\.conf:4:13: audit_key: audit_key_file is set too", err), err
    err = config_error(base + "audit_key = %s\naudit_key_file = %s\n" % (AUDIT_EC, key))
    assert re.search(r"approvald\.conf:4:18: audit_key_file: audit_key is set too", err), err
    err = config_error("audit_key = %s\n" % AUDIT_EC)
    assert re.search(r"approvald\.conf:1:13: audit_key: needs pkcs11_module and pin_file",
                     err), err
    err = config_error(base + "audit_key = /etc/audit.key\n")
    assert re.search(r"approvald\.conf:3:13: audit_key: expected a PKCS#11 URI", err), err
    err = config_error(base + "audit_key = pkcs11:token=%s\n" % TOKEN)
    assert re.search(r"approvald\.conf:3:13: audit_key: the URI must name the key", err), err
    err = config_error(base + "audit_key = pkcs11:object=a;type=public\n")
    assert "the audit key is a private key" in err, err
    err = config_error(base + "audit_key = pkcs11:object=a?pin-value=1234\n")
    assert "no PIN in the URI" in err, err


def test_signer_runs_as_pkcs11_user(hsm, start_daemon):
    from test_isolated_privsep import HSM_USER, ensure_hsm_user
    uid = ensure_hsm_user()
    # the token root's alone (0700): approvald-audit-signer, as pkcs11_user, cannot read it
    msg = start_failure(token_config(hsm, pkcs11_user=HSM_USER))
    assert re.search(r"^approvald: audit_key %s: .*\(reading the public key with %s\)$"
                     % (re.escape(AUDIT_EC), re.escape(SOFTHSM)), msg, re.M), msg
    # the token the user's: it signs, approvald (root) still never loads the module
    for root, dirs, files in os.walk(os.path.join(hsm.dir, "tokens")):
        for n in [root] + [os.path.join(root, f) for f in dirs + files]:
            os.chown(n, uid, -1)
    d = start_daemon(config=token_config(hsm, pkcs11_user=HSM_USER))
    approved(d, "as-user")
    assert d.stop() == 0
    work = tempfile.mkdtemp(prefix="p11gt-akey-")
    try:
        pub, _ = export_pubkey(d.config, work)
        r = p11g.approvald("audit", "--verify", "--pubkey", pub, "--state-dir", d.state)
        assert r.rc == 0 and "checkpoints: 2, each signed by the audit key" in r.out, r
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_a_public_key_that_is_not_the_private_keys_stops_approvald(hsm, tmp_path):
    # the private key's public key object replaced by another key's, same label and id
    tool = ["pkcs11-tool", "--module", SOFTHSM, "--token-label", TOKEN, "--login", "--pin", PIN]
    sh(tool + ["--keypairgen", "--key-type", "EC:prime256v1", "--label", "mix", "--id", "30"],
       hsm.env)
    sh(tool + ["--delete-object", "--type", "pubkey", "--id", "30"], hsm.env)
    other = tmp_path / "other.pem"
    der = tmp_path / "other.der"
    sh(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-out", str(other)], os.environ)
    sh(["openssl", "pkey", "-in", str(other), "-pubout", "-outform", "DER", "-out", str(der)],
       os.environ)
    sh(tool + ["--write-object", str(der), "--type", "pubkey", "--label", "mix", "--id", "30"],
       hsm.env)
    msg = start_failure(token_config(hsm, "pkcs11:object=mix"))
    assert "a signature by the audit key does not verify with the public key found for it" \
        in msg, msg


def _signers_of(pid):
    """pids of approvald-audit-signer processes below pid (comm is cut to 15 characters)."""
    kids, found = {pid}, []
    for _ in range(3):  # approvald -> its signing child -> the signer
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % p) as f:
                    st = f.read()
            except OSError:
                continue
            rest = st[st.rindex(")") + 2:].split()
            if int(rest[1]) in kids:
                kids.add(int(p))
                # a signer that has ended (a zombie until reaped) is no signer to stop
                if st[st.index("(") + 1:st.rindex(")")] == "approvald-audit" and \
                        rest[0] not in ("Z", "X"):
                    found.append(int(p))
    return sorted(set(found))


def test_a_checkpoint_being_signed_holds_up_nobody(hsm, start_daemon):
    """The token signs in a child process: a signer that does not answer (stopped here) holds
    up no request, and the checkpoint it makes, appended after the records that came
    meanwhile, names the record it signs and verifies."""
    import signal
    import threading
    import time
    work = tempfile.mkdtemp(prefix="p11gt-akey-")
    # catching a signer that runs for milliseconds may take many requests: no quota on them
    d = start_daemon(config=token_config(hsm, audit_checkpoint_records=1,
                                         max_requests_per_minute=1000000))
    stopped, done = [], threading.Event()

    def state(pid):
        try:
            with open("/proc/%d/stat" % pid) as f:
                st = f.read()
            return st[st.rindex(")") + 2:].split()[0]
        except (OSError, ValueError, IndexError):
            return None

    def catch():
        while not done.is_set() and not stopped:
            for pid in _signers_of(d.proc.pid):
                try:
                    os.kill(pid, signal.SIGSTOP)
                except ProcessLookupError:
                    continue
                # caught only once it is stopped: one that ended meanwhile (SIGSTOP to a
                # zombie succeeds, and then it is reaped) is not
                for _ in range(100):
                    s = state(pid)
                    if s in ("T", "t", "Z", "X", None):
                        break
                    time.sleep(0.005)
                if s in ("T", "t"):
                    stopped.append(pid)
                    break

    t = threading.Thread(target=catch)
    t.start()
    try:
        pub, _ = export_pubkey(d.config, work)
        deadline = time.monotonic() + 60
        i = 0
        while not stopped:
            assert time.monotonic() < deadline, "no signer caught while it ran"
            d.request("orderer", "pkcs11:token=dev;object=cp-%d" % i)
            i += 1
        # the signer stopped: approvald answers at once, again and again
        seq_stopped = d.audit()[-1]["seq"]
        for j in range(5):
            t0 = time.monotonic()
            d.request("orderer", "pkcs11:token=dev;object=meanwhile-%d" % j)
            r = expect_ok(d.cli("status"))
            assert time.monotonic() - t0 < 3, "a request waited %.1f s" % (time.monotonic() - t0)
        assert "pending" in r.out
        before = len(checkpoints(d))
        os.kill(stopped[0], signal.SIGCONT)
        assert p11g.wait_for(lambda: len(checkpoints(d)) > before, 20), d.stderr()
        cps = checkpoints(d)
        late = [c for c in cps if c["through"] < c["seq"] - 1]
        assert late, cps
        assert late[0]["through"] <= seq_stopped, (late, seq_stopped)
        # the records before it are covered by it, and the whole log verifies
        r = expect_ok(d.cli("audit", "--verify", "--pubkey", pub))
        assert "checkpoints: %d, each signed by the audit key" % len(checkpoints(d)) in r.out, r
        # the records after the one it signed, and itself, are signed by a later checkpoint
        # (at the latest as approvald stops): none is left uncovered
        assert d.stop() == 0
        r = p11g.approvald("audit", "--verify", "--pubkey", pub, "--state-dir", d.state)
        assert r.rc == 0 and "not yet covered" not in r.out, r
        last = checkpoints_offline(d)[-1]
        assert last["through"] == last["seq"] - 1, last
    finally:
        done.set()
        t.join()
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        shutil.rmtree(work, ignore_errors=True)


def test_the_audit_key_signs_nothing_through_the_pkcs11_socket(hsm, start_daemon):
    """Issue 18 (found after item 4): with audit_key on the token approvald serves, a client of
    the PKCS#11 socket must not get a signature from the audit key (it would forge
    checkpoints), whatever the policy says of it: default allow here, and a rule covering the
    whole token with no approvals.  Nor may anyone order uses of it."""
    from test_isolated import pk11_as
    from test_module_gate import DIGEST
    policy = {"default": "allow", "rules": [
        {"name": "all", "keys": ["pkcs11:token=%s" % TOKEN], "orderers": ["uid:0"],
         "approvals": 0}]}
    d = hsm.start(start_daemon, policy, **{
        "audit_key": "pkcs11:object=audit-ec;id=%10", "pkcs11_token": TOKEN,
        "audit_checkpoint_records": 3, "audit_checkpoint_seconds": 3600})
    env = hsm.gate_env(d)
    # another key of the token signs as the policy says (allowed by the rule: 0 approvals)
    op = d.request("root", ("pkcs11:token=%s;object=ec" % TOKEN, 1))
    rc, out, err = pk11_as(None, "sign", env, label="ec", mech="CKM_ECDSA", data=DIGEST.hex())
    assert rc == 0 and out["results"][0]["signature"], (out, err, op)
    # the audit key: refused, for root (the rule's orderer) and for anyone else
    for user in (None, "mallory"):
        rc, out, err = pk11_as(user, "sign", env, label="audit-ec", mech="CKM_ECDSA",
                               data=DIGEST.hex())
        assert rc == 0 and out["results"][0]["signature"] is None, (user, out, err)
    assert "audit key" in d.stderr(), d.stderr()
    # and no operation can be ordered for it
    r = d.cli("request", "--key", "pkcs11:token=%s;object=audit-ec" % TOKEN)
    assert r.rc == 1 and "audit key" in r.err, r
    # the checkpoints it signs are still made and verify
    assert len(checkpoints(d)) >= 1
