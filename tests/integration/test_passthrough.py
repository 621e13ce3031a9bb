"""The gate keeps the real module's answers (issue 18, item 5).

Every call below is made once straight to SoftHSMv2 (or, for the isolated deployment, through
an ungated `p11-kit server`: the RPC has differences of its own) and once through the gate, and
the return codes must be the same: calls on a handle that names nothing (the module's code, not
the gate's), wrong arguments, a mechanism the module does not sign with (and no refusal line),
an unknown user type.  The keys rsa and ec are guarded; a call the gate refuses for a guarded key
is not in the table (test_sec_gate.py has those).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from test_module_gate import PIN, SOFTHSM, TOKEN, PlainServer, guarded, token  # noqa: E402,F401
from test_sec_gate import client, faulty_start  # noqa: E402

NOTHING = 0x7FFF0123  # a handle no object has

TABLE = r'''
h = m.open(a["token"], a["pin"])
bogus = CK_ULONG(a["nothing"])
rsa = find_all(h, pk11.CKO_PRIVATE_KEY, "rsa")[0]
pub = find_all(h, pk11.CKO_PUBLIC_KEY, "ec")[0]
T = C.c_ubyte(1)
F = C.c_ubyte(0)

def mech(t):
    return C.byref(Mech(t, None, 0))

def rv(x):
    return rvname(x)

# a session AES key (extractable) to wrap with a wrapping key that is nothing
aes = CK_ULONG(0)
vl = CK_ULONG(32)
kt = (Attr * 3)(Attr(0x161, C.cast(C.byref(vl), C.c_void_p), C.sizeof(vl)),
                Attr(0x162, C.cast(C.byref(T), C.c_void_p), 1),
                Attr(0x1, C.cast(C.byref(F), C.c_void_p), 1))
out["gen_aes"] = rv(m.C_GenerateKey(h, mech(0x1080), kt, CK_ULONG(3), C.byref(aes)))

out["sign_init_nothing"] = rv(m.C_SignInit(h, mech(0x1041), bogus))
out["decrypt_init_nothing"] = rv(m.C_DecryptInit(h, mech(0x1), bogus))
out["encrypt_init_nothing"] = rv(m.C_EncryptInit(h, mech(0x1), bogus))
out["sign_recover_init_nothing"] = rv(m.C_SignRecoverInit(h, mech(0x3), bogus))
out["verify_recover_init_nothing"] = rv(m.C_VerifyRecoverInit(h, mech(0x3), bogus))
new = CK_ULONG(0)
out["derive_nothing"] = rv(m.C_DeriveKey(h, mech(0x391), bogus, kt, CK_ULONG(3), C.byref(new)))
buf = C.create_string_buffer(512)
n = CK_ULONG(512)
out["wrap_with_nothing"] = rv(m.C_WrapKey(h, mech(0x210A), bogus, aes, buf, C.byref(n)))
n = CK_ULONG(512)
out["wrap_nothing_with_nothing"] = rv(m.C_WrapKey(h, mech(0x210A), bogus, bogus, buf, C.byref(n)))
wrapped = C.create_string_buffer(40)
out["unwrap_with_nothing"] = rv(m.C_UnwrapKey(h, mech(0x210A), bogus, wrapped, CK_ULONG(40),
                                              kt, CK_ULONG(3), C.byref(new)))
out["copy_nothing_null_template"] = rv(m.C_CopyObject(h, bogus, None, CK_ULONG(1), C.byref(new)))
out["copy_nothing"] = rv(m.C_CopyObject(h, bogus, kt, CK_ULONG(0), C.byref(new)))
out["set_attr_nothing_null"] = rv(m.C_SetAttributeValue(h, bogus, None, CK_ULONG(1)))
val = C.create_string_buffer(64)
at = (Attr * 1)(Attr(0x11, C.cast(val, C.c_void_p), 64))
out["get_value_nothing"] = rv(m.C_GetAttributeValue(h, bogus, at, CK_ULONG(1)))
out["destroy_nothing"] = rv(m.C_DestroyObject(h, bogus))
# wrong objects and mechanisms
out["sign_init_public_key"] = rv(m.C_SignInit(h, mech(0x1041), pub))
out["decrypt_init_public_key"] = rv(m.C_DecryptInit(h, mech(0x1), pub))
out["sign_init_aes_ecb_guarded_rsa"] = rv(m.C_SignInit(h, mech(0x1081), rsa))
out["sign_init_null_mechanism_nothing"] = rv(m.C_SignInit(h, None, bogus))
out["login_type_99"] = rv(m.C_Login(h, CK_ULONG(99), C.c_char_p(a["pin"].encode()),
                                    CK_ULONG(len(a["pin"]))))
# the session still works: a search finds the key
out["after"] = len(find_all(h, pk11.CKO_PRIVATE_KEY, "rsa"))
'''


def run_table(tok, env, module):
    return client(tok, env, TABLE, module=module, token=TOKEN, pin=PIN, nothing=NOTHING)


def test_the_gate_answers_as_the_module_does(token, start_daemon):
    d = token.start(start_daemon, guarded())
    if token.mode == "local":
        base = run_table(token, token.env, SOFTHSM)
        gated = run_table(token, token.gate_env(d), token.module)
    else:
        with PlainServer(token) as plain:
            base = run_table(token, plain.env, token.module)
        gated = run_table(token, token.gate_env(d), token.module)
    base_err, gated_err = base.pop("stderr"), gated.pop("stderr")
    assert base["gen_aes"] == "CKR_OK", (base, base_err)
    differ = {k: (base[k], gated.get(k)) for k in base if base[k] != gated.get(k)}
    assert differ == {}, "module vs gate: %r\n%s" % (differ, gated_err)
    # a handle that names nothing is no key the gate refused, nor is a mechanism the module
    # does not sign with
    assert base["sign_init_nothing"] != "CKR_OK"
    assert base["sign_init_aes_ecb_guarded_rsa"] == "CKR_MECHANISM_INVALID"
    assert token.refusals(gated_err) == [], token.refusals(gated_err)
    assert gated["after"] == 1
    assert [r for r in d.audit() if r["event"].startswith("use_")] == []


CONTRADICTED = r'''
h = m.open(a["token"], a["pin"])
key = find_all(h, pk11.CKO_PRIVATE_KEY, "ec")[0]
out["r"] = sign(h, key, "CKM_ECDSA", bytes.fromhex(a["digest"]))
n = CK_ULONG(0)
out["after"] = rvname(m.C_Sign(h, C.create_string_buffer(32), CK_ULONG(32), None, C.byref(n)))
'''


def test_a_key_that_names_nothing_is_asked_of_the_module_as_no_key(token, start_daemon):
    """A handle whose class read says it names nothing (faulty.so's CLASS_NOTHING, while the
    module signs with it) is forwarded as CK_INVALID_HANDLE, never as itself: the handle could
    name a guarded key by the time the module looks."""
    log = os.path.join(token.dir, "faults.log")
    d, env = faulty_start(token, start_daemon, guarded(), "CLASS_NOTHING%100", log)
    out = client(token, env, CONTRADICTED, token=TOKEN, pin=PIN, digest="11" * 32)
    assert out["r"] == {"init": "CKR_OBJECT_HANDLE_INVALID"}, out
    assert out["after"] == "CKR_OPERATION_NOT_INITIALIZED", out
    with open(log) as f:
        assert "CLASS_NOTHING" in f.read()
    assert [r for r in d.audit() if r["event"].startswith("use_")] == []


def test_a_module_that_accepts_no_key_signs_nothing(token, start_daemon):
    """A module that starts a signature for CK_INVALID_HANDLE (faulty.so's ZERO_IS_KEY: with
    the guarded key its last search found) cannot be gated: the session is closed, the call
    refused, and no signature made."""
    log = os.path.join(token.dir, "faults.log")
    d, env = faulty_start(token, start_daemon, guarded(), "CLASS_NOTHING%100,ZERO_IS_KEY%100",
                          log)
    out = client(token, env, CONTRADICTED, token=TOKEN, pin=PIN, digest="11" * 32)
    assert out["r"] == {"init": "CKR_KEY_HANDLE_INVALID"}, out
    assert out["after"] in ("CKR_SESSION_HANDLE_INVALID", "CKR_OPERATION_NOT_INITIALIZED"), out
    assert any("accepted CK_INVALID_HANDLE for a key" in ln
               for ln in token.refusals(out["stderr"])), out["stderr"]
    with open(log) as f:
        assert "ZERO_IS_KEY" in f.read()
    assert [r for r in d.audit() if r["event"].startswith("use_")] == []
