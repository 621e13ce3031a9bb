"""Ways to a signature from a guarded key without approval, closed in the gate (issue 16).

Each test runs in both deployments (p11gate.so loaded by the client, and approvald hosting
SoftHSMv2), with the exact ctypes client of pk11.py driving the calls an attacker would make.
"""

import hashlib
import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import p11g  # noqa: E402
from test_module_gate import (BUILD, PIN, SOFTHSM, TOKEN, Token, guarded, host_env, rule,  # noqa: E402,F401
                              sh, token)

FAULTY = os.path.join(BUILD, "tests", "mock", "faulty.so")
HERE = os.path.dirname(os.path.abspath(__file__))
DIGEST = hashlib.sha256(b"release 1.0").digest()

# A small ctypes program per scenario, run in its own process (as a client would be).
CLIENT = r'''
import ctypes as C, json, sys
sys.path.insert(0, %(here)r)
import pk11
from pk11 import Attr, Mech, CK_ULONG, rvname

a = json.loads(sys.argv[1])
m = pk11.Module(a["module"])
out = {"init": rvname(m.init())}

def find_all(h, cls, label):
    lab = label.encode()
    c = CK_ULONG(cls)
    t = (Attr * 2)(Attr(pk11.CKA_CLASS, C.cast(C.byref(c), C.c_void_p), C.sizeof(c)),
                   Attr(pk11.CKA_LABEL, C.cast(C.c_char_p(lab), C.c_void_p), len(lab)))
    m.C_FindObjectsInit(h, t, CK_ULONG(2))
    objs = (CK_ULONG * 16)()
    n = CK_ULONG(0)
    m.C_FindObjects(h, objs, CK_ULONG(16), C.byref(n))
    m.C_FindObjectsFinal(h)
    return [objs[i] for i in range(n.value)]

def sign(h, key, mech, data):
    mm = Mech(pk11.MECH[mech], None, 0)
    rv = m.C_SignInit(h, C.byref(mm), CK_ULONG(key))
    if rv:
        return {"init": rvname(rv)}
    buf = C.create_string_buffer(data)
    n = CK_ULONG(1024)
    sig = C.create_string_buffer(1024)
    rv = m.C_Sign(h, buf, CK_ULONG(len(data)), sig, C.byref(n))
    return {"init": "CKR_OK", "sign": rvname(rv), "sig": sig.raw[:n.value].hex() if rv == 0 else None}

def transform(h, fn, mech, key, data, param=None):
    if param is not None:
        p = C.create_string_buffer(param)
        mm = Mech(mech, C.cast(p, C.c_void_p), len(param))
    else:
        mm = Mech(mech, None, 0)
    init = getattr(m, fn + "Init")
    rv = init(h, C.byref(mm), CK_ULONG(key))
    if rv:
        return {"init": rvname(rv)}
    buf = C.create_string_buffer(data)
    n = CK_ULONG(1024)
    res = C.create_string_buffer(1024)
    rv = getattr(m, fn)(h, buf, CK_ULONG(len(data)), res, C.byref(n))
    return {"init": "CKR_OK", "call": rvname(rv), "out": res.raw[:n.value].hex() if rv == 0 else None}

%(body)s
m.C_Finalize(None)
print(json.dumps(out))
'''


def client(tok, env, body, **args):
    args.setdefault("module", tok.module)
    code = CLIENT % {"here": HERE, "body": body}
    r = subprocess.run(["/usr/bin/python3", "-c", code, json.dumps(args)], env=host_env(env),
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    out = json.loads(r.stdout)
    out["stderr"] = r.stderr.decode(errors="replace")
    return out


def spki(token, label):
    with open(os.path.join(token.dir, label + ".der"), "rb") as f:
        return f.read()


def verify(token, label, sig_hex, data, digest_name="sha256", raw_ecdsa=False):
    """openssl's word on a signature, with the token's public key of label."""
    sig = os.path.join(token.dir, "sig.bin")
    msg = os.path.join(token.dir, "msg.bin")
    with open(sig, "wb") as f:
        f.write(bytes.fromhex(sig_hex))
    with open(msg, "wb") as f:
        f.write(data)
    r = subprocess.run(["openssl", "dgst", "-" + digest_name, "-verify", token.pub[label],
                        "-signature", sig, msg], capture_output=True)
    return r.returncode == 0


def uses(daemon):
    return [r for r in daemon.audit() if r["event"] in ("use_granted", "use_refused")]


# ---- 1. raw RSA through decryption is a signature -------------------------------------------

def emsa_pkcs1_sha256(data, k=256):
    """The EMSA-PKCS1-v1_5 encoding of SHA-256(data), as C_Decrypt(CKM_RSA_X_509) input."""
    di = bytes.fromhex("3031300d060960864801650304020105000420") + hashlib.sha256(data).digest()
    return b"\x00\x01" + b"\xff" * (k - 3 - len(di)) + b"\x00" + di


RAW_PATHS = r'''
h = m.open(a["token"], a["pin"])
key = find_all(h, pk11.CKO_PRIVATE_KEY, "rsa")[0]
em = bytes.fromhex(a["em"])
out["decrypt_x509"] = transform(h, "C_Decrypt", 0x3, key, em)             # CKM_RSA_X_509
out["decrypt_pkcs"] = transform(h, "C_Decrypt", 0x1, key, em)             # CKM_RSA_PKCS
out["verify_recover"] = transform(h, "C_VerifyRecover", 0x3, key, em)
out["encrypt_x509"] = transform(h, "C_Encrypt", 0x3, key, em)
out["sign_recover"] = transform(h, "C_SignRecover", 0x3, key, em[-51:])
'''


def test_raw_rsa_through_decrypt_is_no_signature_even_with_allow_raw(token, start_daemon, accounts):
    """allow_raw once let any uid turn C_Decrypt(CKM_RSA_X_509) into an unapproved
    RSA-SHA256 signature: every private-key operation other than C_Sign is closed."""
    policy = {"default": "deny", "rules": [
        rule("rsa", ["pkcs11:token=%s;object=rsa" % TOKEN], approvals=2, allow_raw=True)]}
    d = token.start(start_daemon, policy)
    data = b"release 1.0"
    out = client(token, token.gate_env(d), RAW_PATHS, token=TOKEN, pin=PIN,
                 em=emsa_pkcs1_sha256(data).hex())
    for path in ("decrypt_x509", "decrypt_pkcs", "verify_recover", "encrypt_x509",
                 "sign_recover"):
        assert out[path] == {"init": "CKR_KEY_FUNCTION_NOT_PERMITTED"}, (path, out)
    assert "refused (guarded)" in "\n".join(token.refusals(out["stderr"]))
    assert uses(d) == []


def test_raw_rsa_signs_through_c_sign_under_approval_only(token, start_daemon, accounts):
    policy = {"default": "deny", "rules": [
        rule("rsa", ["pkcs11:token=%s;object=rsa" % TOKEN], approvals=2, allow_raw=True)]}
    d = token.start(start_daemon, policy)
    env = token.gate_env(d)
    em = emsa_pkcs1_sha256(b"release 1.0")
    body = r'''
h = m.open(a["token"], a["pin"])
key = find_all(h, pk11.CKO_PRIVATE_KEY, "rsa")[0]
out["r"] = sign(h, key, "CKM_RSA_X_509", bytes.fromhex(a["em"]))
'''
    out = client(token, env, body, token=TOKEN, pin=PIN, em=em.hex())
    assert out["r"]["sign"] == "CKR_FUNCTION_REJECTED", out
    op = d.request("root", ("pkcs11:token=%s;object=rsa" % TOKEN, 1))
    d.approve("alice", op)
    d.approve("bob", op)
    out = client(token, env, body, token=TOKEN, pin=PIN, em=em.hex())
    assert out["r"]["sign"] == "CKR_OK", out
    assert verify(token, "rsa", out["r"]["sig"], b"release 1.0")
    out = client(token, env, body, token=TOKEN, pin=PIN, em=em.hex())
    assert out["r"]["sign"] == "CKR_FUNCTION_REJECTED", out  # one use, spent


# ---- 3. a key handle of another token --------------------------------------------------------

def add_dev_token(token):
    sh(["softhsm2-util", "--init-token", "--free", "--label", "dev", "--so-pin", "12345678",
        "--pin", PIN], token.env)
    sh(["pkcs11-tool", "--module", SOFTHSM, "--token-label", "dev", "--login", "--pin", PIN,
        "--keypairgen", "--key-type", "EC:prime256v1", "--label", "dev-ec", "--id", "09"],
       token.env)


PUBLIC_KEYGEN = r'''
h = m.open(a["token"], a["pin"])
T, F = C.c_ubyte(1), C.c_ubyte(0)
lab, kid = a["label"].encode(), bytes.fromhex(a["id"])
params = bytes.fromhex("06082a8648ce3d030107")
def attr(t, v):
    if isinstance(v, bytes):
        return Attr(t, C.cast(C.c_char_p(v), C.c_void_p), len(v))
    return Attr(t, C.cast(C.byref(v), C.c_void_p), 1)
pub = (Attr * 5)(attr(0x1, T), attr(0x3, lab), attr(0x102, kid), attr(0x180, params),
                 attr(0x10a, T))
# CKA_PRIVATE false: readable by any session of any token once its handle is known
priv = (Attr * 6)(attr(0x1, T), attr(0x2, F), attr(0x3, lab), attr(0x102, kid), attr(0x108, T),
                  attr(0x103, T))
mm = Mech(0x1040, None, 0)
hpub, hpriv = CK_ULONG(0), CK_ULONG(0)
out["gen"] = rvname(m.C_GenerateKeyPair(h, C.byref(mm), pub, CK_ULONG(5), priv, CK_ULONG(6),
                                        C.byref(hpub), C.byref(hpriv)))
'''


CROSS = r'''
prod = m.open(a["token"], a["pin"])
dev = m.open("dev", a["pin"])
key = find_all(prod, pk11.CKO_PRIVATE_KEY, "fw-ec")[0]
out["cross"] = sign(dev, key, "CKM_ECDSA", bytes.fromhex(a["digest"]))
own = find_all(dev, pk11.CKO_PRIVATE_KEY, "dev-ec")[0]
out["own"] = sign(dev, own, "CKM_ECDSA", bytes.fromhex(a["digest"]))
'''


@pytest.mark.parametrize("default", ["deny", "allow"])
def test_key_handle_of_another_token_is_refused(token, start_daemon, accounts, default):
    """A session of token dev (0 approvals) signed with the handle of prod's key: the gate
    judged it by the session's token.  Now a handle that is no object of the session's token
    is CKR_KEY_HANDLE_INVALID, and nothing is asked or recorded."""
    add_dev_token(token)
    gen = client(token, token.env, PUBLIC_KEYGEN, module=SOFTHSM, token=TOKEN, pin=PIN,
                 label="fw-ec", id="07")
    assert gen["gen"] == "CKR_OK", gen
    policy = {"default": default, "rules": [
        rule("dev", ["pkcs11:token=dev"], approvals=0),
        rule("prod", ["pkcs11:token=%s" % TOKEN], approvals=2)]}
    d = token.start(start_daemon, policy)
    out = client(token, token.gate_env(d), CROSS, token=TOKEN, pin=PIN, digest=DIGEST.hex())
    assert out["cross"] == {"init": "CKR_KEY_HANDLE_INVALID"}, out
    assert any("is no object of the token" in ln for ln in token.refusals(out["stderr"]))
    # the dev key itself still signs under its own rule
    assert out["own"]["sign"] == "CKR_OK", out
    recs = [r for r in d.audit() if r["event"] == "use_granted"]
    assert len(recs) == 1 and "token=dev" in recs[0]["key"], recs


# ---- 4. two private keys under one name; the fingerprint in the audit --------------------------

def test_use_records_carry_the_keys_fingerprint(token, start_daemon, accounts):
    d = token.start(start_daemon, {"default": "deny", "rules": [
        rule("all", ["pkcs11:token=%s" % TOKEN], approvals=0)]})
    env = token.gate_env(d)
    body = r'''
h = m.open(a["token"], a["pin"])
for label, mech, data in (("ec", "CKM_ECDSA", bytes.fromhex(a["digest"])),
                          ("rsa", "CKM_SHA256_RSA_PKCS", b"release 1.0")):
    out[label] = sign(h, find_all(h, pk11.CKO_PRIVATE_KEY, label)[0], mech, data)
'''
    out = client(token, env, body, token=TOKEN, pin=PIN, digest=DIGEST.hex())
    assert out["ec"]["sign"] == "CKR_OK" and out["rsa"]["sign"] == "CKR_OK", out
    recs = {r["key"].split("object=")[1].split(";")[0]: r
            for r in d.audit() if r["event"] == "use_granted"}
    for label in ("ec", "rsa"):
        assert recs[label]["key_fingerprint"] == hashlib.sha256(spki(token, label)).hexdigest()


@pytest.mark.parametrize("decoy", [("ec", "02"), ("ec", "0a"), ("ec-2", "02")])
def test_two_private_keys_under_one_guarded_name_sign_with_neither(token, start_daemon,
                                                                    accounts, decoy):
    """A decoy generated with the guarded key's label and id was charged to the real
    operation with records identical to the real key's.  A key sharing only the label, or
    only the id, answers to URIs that name the guarded key by that alone: a twin too."""
    # the decoy, made through the real module (what a client with token access could do)
    sh(["pkcs11-tool", "--module", SOFTHSM, "--token-label", TOKEN, "--login", "--pin", PIN,
        "--keypairgen", "--key-type", "EC:prime256v1", "--label", decoy[0], "--id", decoy[1]],
       token.env)
    d = token.start(start_daemon, guarded())
    op = d.request("root", ("pkcs11:token=%s;object=ec" % TOKEN, 5))
    d.approve("alice", op)
    d.approve("bob", op)
    body = r'''
h = m.open(a["token"], a["pin"])
out["keys"] = [sign(h, k, "CKM_ECDSA", bytes.fromhex(a["digest"]))
               for k in find_all(h, pk11.CKO_PRIVATE_KEY, "ec") +
                        find_all(h, pk11.CKO_PRIVATE_KEY, "ec-2")]
'''
    out = client(token, token.gate_env(d), body, token=TOKEN, pin=PIN, digest=DIGEST.hex())
    assert len(out["keys"]) == 2
    for r in out["keys"]:
        assert r == {"init": "CKR_KEY_FUNCTION_NOT_PERMITTED"}, out
    lines = [ln for ln in token.refusals(out["stderr"])
             if "two private keys" in ln and "share its label or its id" in ln]
    assert lines, token.refusals(out["stderr"])
    assert d.show(op)["keys"][0]["used"] == 0


# ---- 5. a failed read never makes a guarded key unguarded -------------------------------------

# TOKEN_BLANK_*: C_GetTokenInfo answers CKR_OK with a blank token label or serial number, as
# SoftHSMv2 does when it cannot read its token file (another process rewriting it): the key
# was then judged as `pkcs11:token=;serial=;object=ec` (no rule: unguarded under "allow").
FAULTS = ["C_GetTokenInfo", "TOKEN_BLANK_LABEL", "TOKEN_BLANK_SERIAL", "CKA_CLASS", "CKA_LABEL",
          "CKA_ID", "CKA_KEY_TYPE", "C_FindObjectsInit", "CKA_EC_PARAMS"]


def faulty_start(token, start_daemon, policy, fault, log):
    """approvald (and, locally, the client's p11gate.so) in front of faulty.so in front of
    SoftHSMv2, failing `fault` once per process after the client's own key lookup."""
    if not os.path.exists(FAULTY):
        pytest.fail("faulty.so not built at %s" % FAULTY)
    fenv = {"P11G_FAULT_MODULE": SOFTHSM, "P11G_FAULT": fault, "P11G_FAULT_LOG": log}
    if token.mode == "local":
        d = token.start(start_daemon, policy)
        conf = os.path.join(token.dir, "p11gate-faulty.conf")
        with open(conf, "w") as f:
            f.write("module = %s\nsocket = %s\n" % (FAULTY, d.sock))
        return d, dict(token.env, P11GATE_CONF=conf, **fenv)
    config = ("pkcs11_socket = %s\npkcs11_module = %s\npin_file = %s\n"
              "pkcs11_env = SOFTHSM2_CONF=%s\n" % (token.pkcs11_sock, FAULTY, token.pin_file,
                                                   token.conf) +
              "".join("pkcs11_env = %s=%s\n" % kv for kv in fenv.items()))
    token.daemon = start_daemon(policy, config=config)
    return token.daemon, token.gate_env(token.daemon)


ONE_SIGN = r'''
h = m.open(a["token"], a["pin"])
out["r"] = sign(h, find_all(h, pk11.CKO_PRIVATE_KEY, "ec")[0], "CKM_ECDSA",
                bytes.fromhex(a["digest"]))
'''


@pytest.mark.parametrize("default", ["deny", "allow"])
@pytest.mark.parametrize("fault", FAULTS)
def test_a_failed_read_refuses_the_key(token, start_daemon, accounts, fault, default):
    """With "default": "allow", one failed C_GetTokenInfo or CKA_LABEL read at C_SignInit
    made the guarded key be judged as `pkcs11:` (no rule: unguarded) and sign with no use.
    Now a read that keeps failing (every try: "%100") refuses the key with the module's
    error."""
    log = os.path.join(token.dir, "faults.log")
    policy = {"default": default, "rules": [
        rule("ec", ["pkcs11:token=%s;object=ec" % TOKEN], approvals=2)]}
    d, env = faulty_start(token, start_daemon, policy, fault + "%100", log)
    out = client(token, env, ONE_SIGN, token=TOKEN, pin=PIN, digest=DIGEST.hex())
    with open(log) as f:
        assert fault in f.read(), "the fault was not injected"
    assert out["r"]["init"] in ("CKR_DEVICE_ERROR", "0x30"), out  # the fault's own code
    assert any("failed" in ln and "fails closed" in ln for ln in token.refusals(out["stderr"]))
    assert uses(d) == []


@pytest.mark.parametrize("default", ["deny", "allow"])
@pytest.mark.parametrize("fault", FAULTS)
def test_one_failed_read_is_read_again_and_judged_whole(token, start_daemon, accounts, fault,
                                                        default):
    """One passing failure (what SoftHSMv2 does when processes start together) is read
    again: the key is then judged by its whole name, guarded, and signs nothing without an
    operation; with one, it signs and the use is counted."""
    log = os.path.join(token.dir, "faults.log")
    policy = {"default": default, "rules": [
        rule("ec", ["pkcs11:token=%s;object=ec" % TOKEN], approvals=2)]}
    d, env = faulty_start(token, start_daemon, policy, fault, log)
    out = client(token, env, ONE_SIGN, token=TOKEN, pin=PIN, digest=DIGEST.hex())
    with open(log) as f:
        assert fault in f.read(), "the fault was not injected"
    assert out["r"] == {"init": "CKR_OK", "sign": "CKR_FUNCTION_REJECTED", "sig": None}, out
    op = d.request("root", ("pkcs11:token=%s;object=ec" % TOKEN, 1))
    d.approve("alice", op)
    d.approve("bob", op)
    out = client(token, env, ONE_SIGN, token=TOKEN, pin=PIN, digest=DIGEST.hex())
    assert out["r"]["sign"] == "CKR_OK", out
    assert d.show(op)["keys"][0]["used"] == 1


def test_many_processes_with_failing_reads_sign_no_more_than_approved(token, start_daemon,
                                                                      accounts):
    """8 single-signature processes at once per round, each read failing 15% of the time
    (and a token label blank 10%), on an operation of 5 uses with "default":
    "allow": never more than 5 signatures, and every signature is a counted use.  A
    sanitized full run once counted 6: SoftHSMv2 had answered a blank token label and serial
    (CKR_OK), and the key, named `pkcs11:token=;serial=;object=ec`, signed unguarded."""
    log = os.path.join(token.dir, "faults.log")
    policy = {"default": "allow", "rules": [
        rule("ec", ["pkcs11:token=%s;object=ec" % TOKEN], approvals=2)]}
    fault = ",".join(f + "%15" for f in ("C_GetTokenInfo", "CKA_LABEL", "CKA_ID")) + \
        ",TOKEN_BLANK_LABEL%10"
    d, env = faulty_start(token, start_daemon, policy, fault, log)
    op = d.request("root", ("pkcs11:token=%s;object=ec" % TOKEN, 5))
    d.approve("alice", op)
    d.approve("bob", op)
    code = CLIENT % {"here": HERE, "body": ONE_SIGN}
    args = json.dumps({"module": token.module, "token": TOKEN, "pin": PIN,
                       "digest": DIGEST.hex()})
    signed, signers = 0, []
    for _ in range(6):
        procs = [subprocess.Popen(["/usr/bin/python3", "-c", code, args],
                                  env=host_env(dict(env, P11GATE_DEBUG="1")),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(8)]
        for p in procs:
            so, se = p.communicate(timeout=120)
            if p.returncode == 0 and json.loads(so)["r"].get("sign") == "CKR_OK":
                signed += 1
                signers.append(se.decode(errors="replace"))
    with open(log) as f:
        assert f.read().strip(), "no fault was injected"
    granted = [r for r in d.audit() if r["event"] == "use_granted"]
    # first whether every signature was a counted use (a signature judged unguarded would
    # break this), then the bound (a use beyond the operation's count would break that)
    assert signed == len(granted) == d.show(op)["keys"][0]["used"], (signed, granted, signers)
    assert signed <= 5, (signed, granted, signers)


def test_signing_during_the_clients_own_search_leaves_the_search_alone(token, start_daemon,
                                                                         accounts):
    """The gate's search of the token (that the key is the session token's and has no twin)
    runs beside a search the client has open in the same session, not in place of it, and
    the answer is SoftHSMv2's own (one operation at a time in a session)."""
    d = token.start(start_daemon, {"default": "deny", "rules": [
        rule("all", ["pkcs11:token=%s" % TOKEN], approvals=0)]})
    body = r'''
h = m.open(a["token"], a["pin"])
key = find_all(h, pk11.CKO_PRIVATE_KEY, "ec")[0]
c = CK_ULONG(pk11.CKO_PRIVATE_KEY)
t = (Attr * 1)(Attr(pk11.CKA_CLASS, C.cast(C.byref(c), C.c_void_p), C.sizeof(c)))
out["find_init"] = rvname(m.C_FindObjectsInit(h, t, CK_ULONG(1)))
objs, n = (CK_ULONG * 1)(), CK_ULONG(0)
out["first"] = rvname(m.C_FindObjects(h, objs, CK_ULONG(1), C.byref(n)))
got = [objs[0]] if n.value else []
out["r"] = sign(h, key, "CKM_ECDSA", bytes.fromhex(a["digest"]))
while True:
    rv = m.C_FindObjects(h, objs, CK_ULONG(1), C.byref(n))
    if rv or not n.value:
        break
    got.append(objs[0])
out["rest"] = rvname(rv)
out["final"] = rvname(m.C_FindObjectsFinal(h))
out["found"] = len(got)
'''
    out = client(token, token.gate_env(d), body, token=TOKEN, pin=PIN, digest=DIGEST.hex())
    assert out["find_init"] == out["first"] == out["rest"] == out["final"] == "CKR_OK", out
    assert out["r"] == {"init": "CKR_OPERATION_ACTIVE"}, out
    assert out["found"] == 2, out  # the rsa and the ec private key
    assert token.refusals(out["stderr"]) == []


def test_on_demand_request_from_a_program_with_control_characters_in_its_name(start_daemon,
                                                                              accounts):
    """The on-demand request's description names the program (p11gate.so's `wait`): its name
    goes as printable ASCII, or approvald (which refuses control characters in text) would
    refuse the request."""
    token = Token("local")
    try:
        d = token.start(start_daemon, guarded())
        env = token.gate_env(d)
        with open(env["P11GATE_CONF"], "a") as f:
            f.write("wait = 60\n")
        prog = os.path.join(token.dir, "sign\x1b[2Jer\u202e")
        os.symlink("/usr/bin/python3", prog)
        code = CLIENT % {"here": HERE, "body": ONE_SIGN}
        p = subprocess.Popen([prog, "-c", code,
                              json.dumps({"module": token.module, "token": TOKEN, "pin": PIN,
                                          "digest": DIGEST.hex()})],
                             env=host_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert p11g.wait_for(lambda: d.list_ids("--all"), 20), p.poll()
            op = d.list_ids("--all")[0]
            desc = d.show(op)["description"]
            assert desc.startswith("on-demand signature by sign?[2Jer?"), desc
            d.approve("alice", op)
            d.approve("bob", op)
            so, se = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
        assert json.loads(so)["r"]["sign"] == "CKR_OK", (so, se)
    finally:
        token.cleanup()


WEAK_KEYGEN = r'''
h = m.open(a["token"], a["pin"])
T, F = C.c_ubyte(1), C.c_ubyte(0)
params = bytes.fromhex("06082a8648ce3d030107")
def attr(t, v):
    if isinstance(v, bytes):
        return Attr(t, C.cast(C.c_char_p(v), C.c_void_p), len(v))
    return Attr(t, C.cast(C.byref(v), C.c_void_p), 1)
for label, kid in ((b"weak", b"\x0b"), (b"weak-free", b"\x0c")):
    pub = (Attr * 5)(attr(0x1, T), attr(0x3, label), attr(0x102, kid), attr(0x180, params),
                     attr(0x10a, T))
    # CKA_SENSITIVE false, CKA_EXTRACTABLE true: the module hands out CKA_VALUE
    priv = (Attr * 6)(attr(0x1, T), attr(0x3, label), attr(0x102, kid), attr(0x108, T),
                      attr(0x103, F), attr(0x162, T))
    mm = Mech(0x1040, None, 0)
    hpub, hpriv = CK_ULONG(0), CK_ULONG(0)
    out[label.decode()] = rvname(m.C_GenerateKeyPair(h, C.byref(mm), pub, CK_ULONG(5), priv,
                                                     CK_ULONG(6), C.byref(hpub), C.byref(hpriv)))
'''

READ_VALUE = r'''
h = m.open(a["token"], a["pin"])
for label in ("weak", "weak-free"):
    key = find_all(h, pk11.CKO_PRIVATE_KEY, label)[0]
    val = C.create_string_buffer(256)
    lab = C.create_string_buffer(64)
    t = (Attr * 2)(Attr(0x3, C.cast(lab, C.c_void_p), 64), Attr(0x11, C.cast(val, C.c_void_p), 256))
    rv = m.C_GetAttributeValue(h, CK_ULONG(key), t, CK_ULONG(2))
    n = t[1].ulValueLen
    out[label] = {"rv": rvname(rv), "label": lab.raw[:t[0].ulValueLen].decode(),
                  "value_len": n if n < 1 << 32 else -1,
                  "value": val.raw[:n].hex() if n < 256 else None}
'''


def test_a_guarded_keys_private_value_is_never_read(token, start_daemon, accounts):
    """A guarded key made with CKA_SENSITIVE false gave any client its private value through
    C_GetAttributeValue (C_GetAttributeValue was forwarded): unlimited signatures.  Now its
    secret attributes are unavailable through the gate; an unguarded key is as the module."""
    gen = client(token, token.env, WEAK_KEYGEN, module=SOFTHSM, token=TOKEN, pin=PIN)
    assert gen["weak"] == gen["weak-free"] == "CKR_OK", gen
    d = token.start(start_daemon, {"default": "allow", "rules": [
        rule("weak", ["pkcs11:token=%s;object=weak" % TOKEN], approvals=2)]})
    out = client(token, token.gate_env(d), READ_VALUE, token=TOKEN, pin=PIN)
    assert out["weak"]["rv"] in ("CKR_ATTRIBUTE_SENSITIVE", "0x11"), out
    assert out["weak"]["value_len"] == -1 and out["weak"]["label"] == "weak", out
    assert any("reading the private value of" in ln for ln in token.refusals(out["stderr"]))
    # the module's own answer for the same kind of key that no rule guards
    # (a P-256 private value is an integer: SoftHSMv2 drops its leading zero bytes, so one
    # key in 256 has 31 bytes, one in 65 536 has 30)
    assert out["weak-free"]["rv"] == "CKR_OK" and 28 <= out["weak-free"]["value_len"] <= 32, out


SESSION_PUB_THEN_SIGN = r'''
h = m.open(a["token"], a["pin"])
T, F = C.c_ubyte(1), C.c_ubyte(0)
cls, kt = CK_ULONG(2), CK_ULONG(3)            # CKO_PUBLIC_KEY, CKK_EC
label, kid = b"ec", b"\x02"
params, point = bytes.fromhex("06082a8648ce3d030107"), bytes.fromhex(a["point"])
def attr(t, v):
    if isinstance(v, bytes):
        return Attr(t, C.cast(C.c_char_p(v), C.c_void_p), len(v))
    return Attr(t, C.cast(C.byref(v), C.c_void_p), C.sizeof(v))
t = (Attr * 7)(attr(0x0, cls), attr(0x100, kt), attr(0x1, F), attr(0x3, label), attr(0x102, kid),
               attr(0x180, params), attr(0x181, point))
o = CK_ULONG(0)
out["create"] = rvname(m.C_CreateObject(h, t, CK_ULONG(7), C.byref(o)))
out["r"] = sign(h, find_all(h, pk11.CKO_PRIVATE_KEY, "ec")[0], "CKM_ECDSA",
                bytes.fromhex(a["digest"]))
'''


def test_a_session_public_key_under_the_keys_name_changes_no_fingerprint(token, start_daemon,
                                                                         accounts):
    """A client's own session object named like a guarded EC key's public key is no stand-in
    for the token's: the use record carries the token key's fingerprint."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    pt = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    d = token.start(start_daemon, {"default": "deny", "rules": [
        rule("all", ["pkcs11:token=%s" % TOKEN], approvals=0)]})
    out = client(token, token.gate_env(d), SESSION_PUB_THEN_SIGN, token=TOKEN, pin=PIN,
                 digest=DIGEST.hex(), point=(b"\x04\x41" + pt).hex())
    assert out["create"] == "CKR_OK" and out["r"]["sign"] == "CKR_OK", out
    rec = [r for r in d.audit() if r["event"] == "use_granted"][-1]
    assert rec["key_fingerprint"] == hashlib.sha256(spki(token, "ec")).hexdigest(), rec
