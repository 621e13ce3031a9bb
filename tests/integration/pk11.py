"""A minimal PKCS#11 client over ctypes, run as a subprocess by the module tests.

It calls any module's functions exactly (return codes included), releases the GIL
during calls so threads really run in parallel, and prints one JSON object.
Usage: python3 pk11.py SCENARIO JSON-ARGS
"""
import ctypes as C
import json
import os
import sys
import threading

CK_ULONG = C.c_ulong

NAMES = """C_Initialize C_Finalize C_GetInfo C_GetFunctionList C_GetSlotList C_GetSlotInfo
C_GetTokenInfo C_GetMechanismList C_GetMechanismInfo C_InitToken C_InitPIN C_SetPIN
C_OpenSession C_CloseSession C_CloseAllSessions C_GetSessionInfo C_GetOperationState
C_SetOperationState C_Login C_Logout C_CreateObject C_CopyObject C_DestroyObject
C_GetObjectSize C_GetAttributeValue C_SetAttributeValue C_FindObjectsInit C_FindObjects
C_FindObjectsFinal C_EncryptInit C_Encrypt C_EncryptUpdate C_EncryptFinal C_DecryptInit
C_Decrypt C_DecryptUpdate C_DecryptFinal C_DigestInit C_Digest C_DigestUpdate C_DigestKey
C_DigestFinal C_SignInit C_Sign C_SignUpdate C_SignFinal C_SignRecoverInit C_SignRecover
C_VerifyInit C_Verify C_VerifyUpdate C_VerifyFinal C_VerifyRecoverInit C_VerifyRecover
C_DigestEncryptUpdate C_DecryptDigestUpdate C_SignEncryptUpdate C_DecryptVerifyUpdate
C_GenerateKey C_GenerateKeyPair C_WrapKey C_UnwrapKey C_DeriveKey C_SeedRandom
C_GenerateRandom C_GetFunctionStatus C_CancelFunction C_WaitForSlotEvent""".split()

NAMES_3_0 = NAMES + """C_GetInterfaceList C_GetInterface C_LoginUser C_SessionCancel
C_MessageEncryptInit C_EncryptMessage C_EncryptMessageBegin C_EncryptMessageNext
C_MessageEncryptFinal C_MessageDecryptInit C_DecryptMessage C_DecryptMessageBegin
C_DecryptMessageNext C_MessageDecryptFinal C_MessageSignInit C_SignMessage C_SignMessageBegin
C_SignMessageNext C_MessageSignFinal C_MessageVerifyInit C_VerifyMessage C_VerifyMessageBegin
C_VerifyMessageNext C_MessageVerifyFinal""".split()

RV = {0x0: "CKR_OK", 0x5: "CKR_GENERAL_ERROR", 0x6: "CKR_FUNCTION_FAILED",
      0x7: "CKR_ARGUMENTS_BAD", 0x54: "CKR_FUNCTION_NOT_SUPPORTED",
      0x63: "CKR_KEY_TYPE_INCONSISTENT", 0x68: "CKR_KEY_FUNCTION_NOT_PERMITTED",
      0x6A: "CKR_KEY_UNEXTRACTABLE", 0x70: "CKR_MECHANISM_INVALID",
      0x82: "CKR_OBJECT_HANDLE_INVALID", 0x90: "CKR_OPERATION_ACTIVE",
      0x91: "CKR_OPERATION_NOT_INITIALIZED", 0x100: "CKR_USER_ALREADY_LOGGED_IN",
      0x150: "CKR_BUFFER_TOO_SMALL", 0x190: "CKR_CRYPTOKI_NOT_INITIALIZED",
      0x191: "CKR_CRYPTOKI_ALREADY_INITIALIZED", 0x10: "CKR_ATTRIBUTE_READ_ONLY",
      0x200: "CKR_FUNCTION_REJECTED", 0x21: "CKR_DATA_LEN_RANGE", 0x60: "CKR_KEY_HANDLE_INVALID",
      0x13: "CKR_ATTRIBUTE_VALUE_INVALID", 0x1B: "CKR_ACTION_PROHIBITED", 0x12: "CKR_ATTRIBUTE_TYPE_INVALID",
      0xD1: "CKR_TEMPLATE_INCONSISTENT", 0xD0: "CKR_TEMPLATE_INCOMPLETE",
      0x113: "CKR_WRAPPING_KEY_HANDLE_INVALID", 0xF0: "CKR_UNWRAPPING_KEY_HANDLE_INVALID",
      0x103: "CKR_USER_TYPE_INVALID", 0x71: "CKR_MECHANISM_PARAM_INVALID",
      0xB3: "CKR_SESSION_HANDLE_INVALID"}

MECH = {"CKM_RSA_PKCS": 0x1, "CKM_RSA_X_509": 0x3, "CKM_SHA256_RSA_PKCS": 0x40,
        "CKM_ECDSA": 0x1041, "CKM_AES_KEY_GEN": 0x1080, "CKM_AES_KEY_WRAP_PAD": 0x210A,
        "CKM_AES_CBC_PAD": 0x1085, "CKM_EDDSA": 0x1057, "CKM_AES_ECB": 0x1081}

CKA_CLASS, CKA_TOKEN, CKA_LABEL, CKA_ID = 0x0, 0x1, 0x3, 0x102
CKA_VALUE_LEN, CKA_EXTRACTABLE, CKA_WRAP, CKA_SENSITIVE = 0x161, 0x162, 0x106, 0x103
CKO_PUBLIC_KEY, CKO_PRIVATE_KEY = 2, 3


class Attr(C.Structure):
    _fields_ = [("type", CK_ULONG), ("pValue", C.c_void_p), ("ulValueLen", CK_ULONG)]


class Mech(C.Structure):
    _fields_ = [("mechanism", CK_ULONG), ("pParameter", C.c_void_p), ("ulParameterLen", CK_ULONG)]


class InitArgs(C.Structure):
    _fields_ = [("create", C.c_void_p), ("destroy", C.c_void_p), ("lock", C.c_void_p),
                ("unlock", C.c_void_p), ("flags", CK_ULONG), ("reserved", C.c_void_p)]


CKF_OS_LOCKING_OK = 0x2


class FunctionList(C.Structure):
    _fields_ = [("version", C.c_ubyte * 2)] + [(n, C.c_void_p) for n in NAMES]


class FunctionList30(C.Structure):
    _fields_ = [("version", C.c_ubyte * 2)] + [(n, C.c_void_p) for n in NAMES_3_0]


class Interface(C.Structure):
    _fields_ = [("name", C.c_char_p), ("functions", C.c_void_p), ("flags", CK_ULONG)]


def rvname(rv):
    return RV.get(rv, "0x%x" % rv)


class Module:
    def __init__(self, path, v3=False):
        self.dll = C.CDLL(path)
        if v3:
            # the PKCS#11 3.0 way in: C_GetInterface("PKCS 11", 3.0)
            gi = self.dll.C_GetInterface
            gi.restype = CK_ULONG
            ver = (C.c_ubyte * 2)(3, 0)
            ip = C.POINTER(Interface)()
            rv = gi(C.c_char_p(b"PKCS 11"), C.byref(ver), C.byref(ip), CK_ULONG(0))
            assert rv == 0, rvname(rv)
            self.interface_name = ip.contents.name.decode()
            self.fl_addr = ip.contents.functions
            self.fl = FunctionList30.from_address(self.fl_addr)
            return
        get = self.dll.C_GetFunctionList
        get.restype = CK_ULONG
        pp = C.POINTER(FunctionList)()
        rv = get(C.byref(pp))
        assert rv == 0, rvname(rv)
        self.fl = pp.contents
        self.fl_addr = C.addressof(self.fl)

    def __getattr__(self, name):
        if not name.startswith("C_"):
            raise AttributeError(name)
        ptr = getattr(self.fl, name)
        fn = C.CFUNCTYPE(CK_ULONG)(ptr)  # args passed explicitly typed by the caller

        def call(*args):
            return fn(*args)
        return call

    # --- conveniences -----------------------------------------------------
    def init(self):
        # the threads scenario needs the module to lock: ask for OS locking, as real clients do
        self.init_args = InitArgs(None, None, None, None, CKF_OS_LOCKING_OK, None)
        return self.C_Initialize(C.byref(self.init_args))

    def open(self, token, pin=None):
        n = CK_ULONG(0)
        self.C_GetSlotList(C.c_ubyte(1), None, C.byref(n))
        slots = (CK_ULONG * n.value)()
        self.C_GetSlotList(C.c_ubyte(1), slots, C.byref(n))

        class TokenInfo(C.Structure):
            _fields_ = [("label", C.c_char * 32), ("rest", C.c_ubyte * 400)]
        for s in slots:
            ti = TokenInfo()
            self.C_GetTokenInfo(CK_ULONG(s), C.byref(ti))
            if ti.label.decode().rstrip() == token:
                h = CK_ULONG(0)
                rv = self.C_OpenSession(CK_ULONG(s), CK_ULONG(6), None, None, C.byref(h))
                assert rv == 0, rvname(rv)
                if pin is not None:
                    rv = self.C_Login(h, CK_ULONG(1), C.c_char_p(pin.encode()), CK_ULONG(len(pin)))
                    assert rv in (0, 0x100), rvname(rv)
                return h
        raise SystemExit("no token " + token)

    def find(self, h, cls, label):
        lab = label.encode()
        c = CK_ULONG(cls)
        tmpl = (Attr * 2)(Attr(CKA_CLASS, C.cast(C.byref(c), C.c_void_p), C.sizeof(c)),
                          Attr(CKA_LABEL, C.cast(C.c_char_p(lab), C.c_void_p), len(lab)))
        self.C_FindObjectsInit(h, tmpl, CK_ULONG(2))
        obj, n = CK_ULONG(0), CK_ULONG(0)
        self.C_FindObjects(h, C.byref(obj), CK_ULONG(1), C.byref(n))
        self.C_FindObjectsFinal(h)
        if n.value != 1:
            raise SystemExit("no object %s" % label)
        return obj

    def sign(self, h, key, mech, data, length_query=False, small_buffer=False):
        """Returns (steps, signature_hex)."""
        steps = []
        m = Mech(MECH[mech], None, 0)
        rv = self.C_SignInit(h, C.byref(m), key)
        steps.append(("C_SignInit", rvname(rv)))
        if rv:
            return steps, None
        buf = C.create_string_buffer(data)
        n = CK_ULONG(0)
        rv = self.C_Sign(h, buf, CK_ULONG(len(data)), None, C.byref(n))
        steps.append(("C_Sign(NULL)", rvname(rv)))
        if rv:
            return steps, None
        if small_buffer:
            tiny = CK_ULONG(1)
            sb = C.create_string_buffer(1)
            rv = self.C_Sign(h, buf, CK_ULONG(len(data)), sb, C.byref(tiny))
            steps.append(("C_Sign(small)", rvname(rv)))
        if length_query:
            # stop after the free steps: the operation stays active, so end it the
            # PKCS#11 way, by a final call that consumes (not used by callers that check counts)
            return steps, None
        out = C.create_string_buffer(n.value)
        rv = self.C_Sign(h, buf, CK_ULONG(len(data)), out, C.byref(n))
        steps.append(("C_Sign", rvname(rv)))
        return steps, (out.raw[:n.value].hex() if rv == 0 else None)


def scenario_sign(a):
    m = Module(a["module"])
    out = {"init": rvname(m.init())}
    h = m.open(a["token"], a.get("pin"))
    key = m.find(h, CKO_PRIVATE_KEY, a["label"])
    results = []
    for _ in range(a.get("count", 1)):
        steps, sig = m.sign(h, key, a["mech"], bytes.fromhex(a["data"]),
                            a.get("length_query", False), a.get("small_buffer", False))
        results.append({"steps": steps, "signature": sig})
    if a.get("then_sign_again"):
        # the session must stay usable after a refusal: a new C_SignInit works
        steps, sig = m.sign(h, key, a["mech"], bytes.fromhex(a["data"]))
        results.append({"steps": steps, "signature": sig})
    out["results"] = results
    m.C_Finalize(None)
    return out


def scenario_bypass(a):
    m = Module(a["module"])
    m.init()
    h = m.open(a["token"], a.get("pin"))
    key = m.find(h, CKO_PRIVATE_KEY, a["label"])
    res = {}
    for name in ("CKM_RSA_X_509", "CKM_RSA_PKCS"):
        mech = Mech(MECH[name], None, 0)
        rv = m.C_DecryptInit(h, C.byref(mech), key)
        res["C_DecryptInit " + name] = rvname(rv)
        if rv == 0:  # end it so the next init is not OPERATION_ACTIVE
            n = CK_ULONG(0)
            m.C_Decrypt(h, C.create_string_buffer(1), CK_ULONG(1), None, C.byref(n))
            m.C_Decrypt(h, None, CK_ULONG(0), None, C.byref(n))
    mech = Mech(MECH["CKM_RSA_X_509"], None, 0)
    res["C_SignRecoverInit"] = rvname(m.C_SignRecoverInit(h, C.byref(mech), key))
    # an AES wrapping key, session object
    vlen, true = CK_ULONG(32), C.c_ubyte(1)
    tmpl = (Attr * 2)(Attr(CKA_VALUE_LEN, C.cast(C.byref(vlen), C.c_void_p), C.sizeof(vlen)),
                      Attr(CKA_WRAP, C.cast(C.byref(true), C.c_void_p), 1))
    aes = CK_ULONG(0)
    gm = Mech(MECH["CKM_AES_KEY_GEN"], None, 0)
    rv = m.C_GenerateKey(h, C.byref(gm), tmpl, CK_ULONG(2), C.byref(aes))
    res["C_GenerateKey AES"] = rvname(rv)
    # wrap_mech: p11-kit's RPC (0.24) carries only some mechanisms (CKM_AES_ECB, not
    # CKM_AES_KEY_WRAP_PAD), so the isolated deployment asks with one it carries
    wm = Mech(MECH[a.get("wrap_mech", "CKM_AES_KEY_WRAP_PAD")], None, 0)
    n = CK_ULONG(0)
    res["C_WrapKey"] = rvname(m.C_WrapKey(h, C.byref(wm), aes, key, None, C.byref(n)))
    false = C.c_ubyte(0)
    ext = (Attr * 1)(Attr(CKA_EXTRACTABLE, C.cast(C.byref(true), C.c_void_p), 1))
    res["C_SetAttributeValue CKA_EXTRACTABLE"] = rvname(m.C_SetAttributeValue(h, key, ext, CK_ULONG(1)))
    newlab = b"renamed"
    lab = (Attr * 1)(Attr(CKA_LABEL, C.cast(C.c_char_p(newlab), C.c_void_p), len(newlab)))
    res["C_SetAttributeValue CKA_LABEL"] = rvname(m.C_SetAttributeValue(h, key, lab, CK_ULONG(1)))
    tok = (Attr * 1)(Attr(CKA_TOKEN, C.cast(C.byref(false), C.c_void_p), 1))
    copy = CK_ULONG(0)
    res["C_CopyObject"] = rvname(m.C_CopyObject(h, key, tok, CK_ULONG(1), C.byref(copy)))
    if a.get("destroy"):
        res["C_DestroyObject"] = rvname(m.C_DestroyObject(h, key))
    m.C_Finalize(None)
    return {"results": res}


def scenario_threads(a):
    m = Module(a["module"])
    m.init()
    first = m.open(a["token"], a["pin"])  # logs the token in for every session
    counts = {"ok": 0, "refused": 0, "other": 0}
    lock = threading.Lock()
    data = bytes.fromhex(a["data"])

    def worker():
        h = m.open(a["token"])
        key = m.find(h, CKO_PRIVATE_KEY, a["label"])
        for _ in range(a["per_thread"]):
            steps, sig = m.sign(h, key, a["mech"], data)
            last = steps[-1][1]
            with lock:
                if sig:
                    counts["ok"] += 1
                elif last == "CKR_FUNCTION_REJECTED":
                    counts["refused"] += 1
                else:
                    counts["other"] += 1
        m.C_CloseSession(h)
    ts = [threading.Thread(target=worker) for _ in range(a["threads"])]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    m.C_CloseSession(first)
    m.C_Finalize(None)
    return counts


def scenario_fork(a):
    m = Module(a["module"])
    m.init()
    h = m.open(a["token"], a["pin"])
    key = m.find(h, CKO_PRIVATE_KEY, a["label"])
    data = bytes.fromhex(a["data"])
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        res = {}
        steps, _ = m.sign(h, key, a["mech"], data)
        res["before_reinit"] = steps[0][1]  # must be CKR_CRYPTOKI_NOT_INITIALIZED
        res["reinit"] = rvname(m.init())
        h2 = m.open(a["token"], a["pin"])
        key2 = m.find(h2, CKO_PRIVATE_KEY, a["label"])
        steps, sig = m.sign(h2, key2, a["mech"], data)
        res["child_sign"] = steps[-1][1]
        res["child_signature"] = bool(sig)
        m.C_Finalize(None)
        os.write(w, json.dumps(res).encode())
        os._exit(0)
    os.close(w)
    child = json.loads(os.read(r, 65536).decode() or "{}")
    os.waitpid(pid, 0)
    steps, sig = m.sign(h, key, a["mech"], data)
    m.C_Finalize(None)
    return {"child": child, "parent_sign": steps[-1][1], "parent_signature": bool(sig)}


def scenario_verify(a):
    """Signs with the private key through one module, verifies through this one."""
    m = Module(a["module"])
    m.init()
    h = m.open(a["token"], a.get("pin"))
    pub = m.find(h, CKO_PUBLIC_KEY, a["label"])
    mech = Mech(MECH[a["mech"]], None, 0)
    rv1 = m.C_VerifyInit(h, C.byref(mech), pub)
    data = bytes.fromhex(a["data"])
    sig = bytes.fromhex(a["signature"])
    rv2 = m.C_Verify(h, C.create_string_buffer(data), CK_ULONG(len(data)),
                     C.create_string_buffer(sig), CK_ULONG(len(sig)))
    m.C_Finalize(None)
    return {"C_VerifyInit": rvname(rv1), "C_Verify": rvname(rv2)}


def pointers(path):
    """Every function-list pointer a module hands out, by every entry point."""
    dll = C.CDLL(path)
    out = set()
    gfl = dll.C_GetFunctionList
    gfl.restype = CK_ULONG
    p = C.c_void_p()
    if gfl(C.byref(p)) == 0:
        out.add(p.value)
    if hasattr(dll, "C_GetInterfaceList"):
        gil = dll.C_GetInterfaceList
        gil.restype = CK_ULONG
        n = CK_ULONG(0)
        gil(None, C.byref(n))
        arr = (Interface * n.value)()
        if gil(arr, C.byref(n)) == 0:
            out.update(i.functions for i in arr)
        gi = dll.C_GetInterface
        gi.restype = CK_ULONG
        for ver in (None, (3, 0), (2, 40)):
            ip = C.POINTER(Interface)()
            v = (C.c_ubyte * 2)(*ver) if ver else None
            if gi(None, C.byref(v) if v else None, C.byref(ip), CK_ULONG(0)) == 0:
                out.add(ip.contents.functions)
    return out


def scenario_mock3(a):
    """Message signing and interfaces through a 3.0 module."""
    m = Module(a["module"], v3=True)
    res = {"interface": m.interface_name, "version": list(m.fl.version),
           "init": rvname(m.init())}
    h = m.open("mock")
    key = m.find(h, CKO_PRIVATE_KEY, "mk")
    mech = Mech(MECH["CKM_ECDSA"], None, 0)
    res["C_MessageSignInit"] = rvname(m.C_MessageSignInit(h, C.byref(mech), key))
    steps, sig = m.sign(h, key, "CKM_ECDSA", b"\x11" * 32)
    res["sign"] = steps
    m.C_Finalize(None)
    if a.get("real"):
        gate = pointers(a["module"])
        real = pointers(a["real"])
        res["gate_pointers"] = len(gate)
        res["real_pointers"] = len(real)
        res["leaked"] = sorted(gate & real)
    return res


def main():
    scen = globals()["scenario_" + sys.argv[1]]
    print(json.dumps(scen(json.loads(sys.argv[2]))))


if __name__ == "__main__":
    main()
