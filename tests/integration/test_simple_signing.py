"""ocisign's OpenPGP keys and simple signing (issue #24): the token key exported as an OpenPGP
v4 key with a self-certified user ID, and containers/image's atomic container signatures
written to a lookaside store, as skopeo and podman verify them with a signedBy policy.

What ocisign writes is read here by the programs that must accept it, not by ocisign: GnuPG
(gpg --import, --check-sigs, --verify) and skopeo copy with a signedBy policy, against a real
docker-registry; `ocisign verify --format simple-signing` must agree with skopeo in every
case (a good signature, one made for another image, another key, none, a tampered one, and
claims GnuPG signed for each kind of identity, tagged, by digest or a bare repository).  The
fingerprint is recomputed from the key packet (SHA-1 of 0x99, the length and the body) and
must not move while --created (or the key's CKA_START_DATE) stays the same: it is what
verifiers pin.

Most tests sign with SoftHSM directly (--module), where the gate is not what is tested.  The
last ones go through p11gate.so and approvald: without an operation the token signature is
refused and nothing is written; with --request approvald shows what it read from the OpenPGP
hashed data (the image and the key's fingerprint, or the certified user ID), the one use is
counted, and a rule's registries limit simple-signing requests but not certifications."""

import base64
import hashlib
import http.server
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

import p11g
import ocireg
from ocireg import REPO, ocisign

KEYS = ["ec", "rsa", "ed", "ec384"]
DESC = {"ec": "ECDSA P-256", "rsa": "RSA 2048", "ed": "Ed25519", "ec384": "ECDSA P-384"}
# gpg --with-colons: (algorithm, length) of each key's pub record
GPG_ALGO = {"ec": ("19", "256"), "rsa": ("1", "2048"), "ed": ("22", "255"),
            "ec384": ("19", "384")}
UID = "Release Signing <release@acme.example>"
CREATED = "2024-05-01"  # the OpenPGP keys' creation time: part of their fingerprints
CREATED_EPOCH = 1714521600
TYPE = "atomic container signature"


# ----------------------------------------------------------------- helpers --

def run(args, env=None, check=True, timeout=60):
    r = subprocess.run([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=timeout, env=dict(p11g.CLEAN_ENV, **(env or {})))
    if check:
        assert r.returncode == 0, "%s failed (%d):\n%s%s" % (" ".join(map(str, args)),
                                                            r.returncode, r.stdout, r.stderr)
    return r


def need(*tools):
    for t in tools:
        if not shutil.which(t, path=p11g.CLEAN_ENV["PATH"]):
            pytest.fail("%s is not installed (the simple-signing tests need it)" % t)


def assert_failed(r, *needles):
    """Exit 1 with one `ocisign: ...` line naming each needle; nothing on stdout."""
    assert r.rc == 1, r
    assert len(r.err_lines) == 1 and r.err_lines[0].startswith("ocisign: "), r
    for n in needles:
        assert n in r.err_lines[0], "expected %r in the reason: %r" % (n, r)
    assert r.out == "", r
    return r.err_lines[0]


def assert_rejected_by_the_gate(r):
    """Exit 1, ocisign's last line names the PKCS#11 refusal (p11gate.so says why above it)."""
    assert r.rc == 1, r
    assert r.err_lines and r.err_lines[-1].startswith("ocisign: "), r
    assert "CKR_FUNCTION_REJECTED" in r.err_lines[-1], r
    assert r.out == "", r


def files_under(d):
    return sorted(os.path.relpath(os.path.join(root, n), d)
                  for root, _, names in os.walk(d) for n in names)


def pubkey_pgp(token, key, *extra, created=CREATED):
    """`ocisign pubkey --format openpgp` with SoftHSM directly (created None: no --created)."""
    args = ["pubkey", "--format", "openpgp", "--key", token.uri(key), "--uid", UID,
            "--module", ocireg.SOFTHSM]
    if created is not None:
        args += ["--created", created]
    return ocisign(*args, *extra, env=token.env())


def sign_simple(token, image, stage, key, created=CREATED):
    """`ocisign sign --format simple-signing` with SoftHSM directly."""
    args = ["sign", "--format", "simple-signing", "--sigstore-staging", stage, "--key",
            token.uri(key), "--module", ocireg.SOFTHSM]
    if created is not None:
        args += ["--created", created]
    return ocisign(*args, *ocireg.PLAIN_HTTP, image, env=token.env())


def verify_simple(keyring, sigstore, image):
    return ocisign("verify", "--format", "simple-signing", "--keyring", keyring, "--sigstore",
                   sigstore, *ocireg.PLAIN_HTTP, image)


def sig_path(stage, digest, n=1):
    """containers/image's lookaside layout."""
    return os.path.join(stage, "%s@sha256=%s" % (REPO, digest[7:]), "signature-%d" % n)


def dearmor(text):
    lines = text.strip().splitlines()
    assert lines[0] == "-----BEGIN PGP PUBLIC KEY BLOCK-----", text
    assert lines[-1] == "-----END PGP PUBLIC KEY BLOCK-----", text
    body = lines[1:-1]
    body = body[body.index("") + 1:]  # after the armor headers
    return base64.b64decode("".join(l for l in body if not l.startswith("=")))


def packets(data):
    """[(tag, body)] of an OpenPGP packet sequence (old and new packet formats)."""
    out, i = [], 0
    while i < len(data):
        b = data[i]
        assert b & 0x80, "not a packet header at %d" % i
        if b & 0x40:
            tag, o = b & 0x3F, data[i + 1]
            if o < 192:
                n, i = o, i + 2
            elif o < 224:
                n, i = ((o - 192) << 8) + data[i + 2] + 192, i + 3
            else:
                assert o == 255, "partial length in a key block"
                n, i = int.from_bytes(data[i + 2:i + 6], "big"), i + 6
        else:
            tag, lt = (b >> 2) & 0xF, b & 3
            w = {0: 1, 1: 2, 2: 4}[lt]
            n, i = int.from_bytes(data[i + 1:i + 1 + w], "big"), i + 1 + w
        out.append((tag, data[i:i + n]))
        i += n
    return out


def key_packet(armored):
    tag, body = packets(dearmor(armored))[0]
    assert tag == 6, "the block does not open with a public key packet (tag %d)" % tag
    return body


def v4_fingerprint(body):
    return hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest().upper()


def hashed_data(prefix, sig):
    """What the v4 signature packet body sig hashes after prefix (the document, or the key and
    user ID): its hashed fields and the trailer.  Checked against the packet's left 16 bits."""
    assert sig[0] == 4 and sig[3] in (8, 9), "not a v4 SHA-2 signature: %s" % sig[:4].hex()
    md = hashlib.sha384 if sig[3] == 9 else hashlib.sha256  # P-384 (RFC 6637), the others
    hl = int.from_bytes(sig[4:6], "big")
    fields = sig[:6 + hl]
    ul = int.from_bytes(sig[6 + hl:8 + hl], "big")
    tbs = prefix + fields + b"\x04\xff" + len(fields).to_bytes(4, "big")
    assert md(tbs).digest()[:2] == sig[8 + hl + ul:10 + hl + ul], "not its hash"
    return tbs


def certification_data(armored):
    (t1, key), (t2, uid), (t3, sig) = packets(dearmor(armored))
    assert (t1, t2, t3) == (6, 13, 2), (t1, t2, t3)
    return hashed_data(b"\x99" + len(key).to_bytes(2, "big") + key + b"\xb4" +
                       len(uid).to_bytes(4, "big") + uid, sig)


def signed_message_data(path):
    with open(path, "rb") as f:
        (t1, _), (t2, lit), (t3, sig) = packets(f.read())
    assert (t1, t2, t3) == (4, 11, 2), (t1, t2, t3)
    return hashed_data(lit[2 + lit[1] + 4:], sig)


def gate_digest(key, tbs):
    """The digest p11gate.so binds the token's signature of tbs to: of the data it is given
    (RSA: tbs, hashed by the mechanism; ECDSA: its SHA-256, named as it is, or SHA-384 for
    P-384; EdDSA: its SHA-256, which the gate hashes again)."""
    if key == "ec384":
        return "sha384:" + hashlib.sha384(tbs).hexdigest()
    h = hashlib.sha256(tbs)
    return "sha256:" + (hashlib.sha256(h.digest()) if key == "ed" else h).hexdigest()


def key_line(fpr, key, when="2024-05-01T00:00:00Z", uid=UID):
    return "ocisign: OpenPGP key %s (%s, created %s) for %s" % (fpr, DESC[key], when, uid)


def input_file(d, text):
    fd, path = tempfile.mkstemp(dir=d, suffix=".asc")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


class GPG:
    """gpg in its own home; --no-autostart: nothing here needs (or leaves) a gpg-agent."""

    def __init__(self, parent):
        self.home = tempfile.mkdtemp(prefix="gnupg-", dir=parent)
        os.chmod(self.home, 0o700)

    def __call__(self, *args, check=True):
        return run(["gpg", "--homedir", self.home, "--batch", "--no-autostart", *args],
                   check=check)

    def colons(self, *args):
        return [l.split(":") for l in self("--with-colons", *args).stdout.splitlines()]


def skopeo_copy(host, ref, keyring, stage, work):
    """skopeo copy docker://ref under a signedBy policy for host with keyring, lookaside
    file://stage; the CompletedProcess."""
    d = tempfile.mkdtemp(prefix="skopeo-", dir=work)
    policy = os.path.join(d, "policy.json")
    with open(policy, "w") as f:
        json.dump({"default": [{"type": "reject"}], "transports": {"docker": {host: [
            {"type": "signedBy", "keyType": "GPGKeys", "keyPath": keyring}]}}}, f)
    regd = os.path.join(d, "registries.d")
    os.mkdir(regd)
    with open(os.path.join(regd, "test.yaml"), "w") as f:
        f.write("docker:\n  %s:\n    lookaside: file://%s\n" % (host, stage))
    out = os.path.join(d, "out")
    os.mkdir(out)
    return run(["skopeo", "copy", "--policy", policy, "--registries.d", regd,
                "--src-tls-verify=false", "--src-creds", ocireg.CREDS, "docker://" + ref,
                "dir:" + out], env={"HOME": d, "TMPDIR": d}, check=False, timeout=120)


def assert_skopeo_refused(r):
    assert r.returncode != 0, "skopeo copied an image it must refuse:\n%s" % r.stderr
    assert "signature" in r.stderr.lower(), r.stderr


def assert_claim(text, identity, digest, t0, t1):
    """One atomic container signature claim: exactly containers/image's fields."""
    c = json.loads(text)
    assert c["critical"] == {"identity": {"docker-reference": identity},
                             "image": {"docker-manifest-digest": digest},
                             "type": TYPE}, c
    assert sorted(c) == ["critical", "optional"], c
    assert sorted(c["optional"]) == ["creator", "timestamp"], c
    assert c["optional"]["creator"].startswith("ocisign (p11gate) "), c
    assert t0 - 1 <= c["optional"]["timestamp"] <= t1 + 1, (c, t0, t1)
    return c


class Images:
    """team/app:1.0 and team/app:2.0 in a registry shared by the module."""

    def __init__(self, reg):
        self.reg, self.host = reg, reg.host
        client = reg.client()
        self.d1 = client.push_image(REPO, tag="1.0", seed="one")
        self.d2 = client.push_image(REPO, tag="2.0", seed="two")
        assert self.d1 != self.d2

    def ref(self, tag):
        return "%s/%s:%s" % (self.host, REPO, tag)


@pytest.fixture(scope="module")
def images():
    need("docker-registry", "htpasswd")
    reg = ocireg.Registry(auth="htpasswd").start()
    try:
        yield Images(reg)
    finally:
        reg.stop()


@pytest.fixture(scope="module")
def token(accounts):
    """One token for the module, owned by the orderer (the gate tests sign as the orderer),
    with ocireg.SoftToken's keys and an ECDSA P-384 key (OpenPGP signs SHA-384 with it)."""
    t = ocireg.SoftToken()
    t._run(["pkcs11-tool", "--module", ocireg.SOFTHSM, "--token-label", t.label, "--login",
            "--pin", t.PIN, "--keypairgen", "--key-type", "EC:secp384r1", "--label", "ec384",
            "--id", "04"])
    pw = pwd.getpwnam(p11g.U("orderer"))
    for root, dirs, files in os.walk(t.dir):
        for n in dirs + files:
            os.chown(os.path.join(root, n), pw.pw_uid, pw.pw_gid)
    os.chown(t.dir, pw.pw_uid, pw.pw_gid)
    yield t
    t.cleanup()


@pytest.fixture(scope="module")
def workdir():
    """A directory every test user can read (keyrings, skopeo's files)."""
    d = tempfile.mkdtemp(prefix="p11gt-pgp-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def exported(token, workdir):
    """{key: (keyring file, fingerprint, stderr line)}: each key exported directly once."""
    need("gpg", "skopeo")
    out = {}
    for key in KEYS:
        path = os.path.join(workdir, "%s.asc" % key)
        r = pubkey_pgp(token, key, "-o", path)
        assert r.rc == 0 and r.out == "", r
        with open(path) as f:
            fpr = v4_fingerprint(key_packet(f.read()))
        out[key] = (path, fpr, r.err_lines)
    return out


@pytest.fixture
def staging():
    """A lookaside staging directory the orderer may write in (the gate tests)."""
    d = tempfile.mkdtemp(prefix="p11gt-stage-")
    pw = pwd.getpwnam(p11g.U("orderer"))
    os.chown(d, pw.pw_uid, pw.pw_gid)
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------- OpenPGP key --

@pytest.mark.parametrize("key", KEYS)
def test_exported_key_imports_with_a_valid_self_signature(exported, workdir, key):
    path, fpr, err = exported[key]
    assert err == [key_line(fpr, key)], err
    with open(path) as f:
        certification_data(f.read())  # key, user ID, certification: nothing else
    gpg = GPG(workdir)
    r = gpg("--import", path)
    assert "imported: 1" in r.stderr, r.stderr
    recs = gpg.colons("--check-sigs")
    pub = [r for r in recs if r[0] == "pub"]
    assert len(pub) == 1, recs
    algo, length = GPG_ALGO[key]
    assert (pub[0][3], pub[0][2], pub[0][5]) == (algo, length, str(CREATED_EPOCH)), pub
    assert "s" in pub[0][11], "the key cannot sign (capabilities %r)" % pub[0][11]
    assert [r[9] for r in recs if r[0] == "fpr"] == [fpr], recs
    assert [r[9] for r in recs if r[0] == "uid"] == [UID], recs
    # the one signature: a valid (!) positive certification of the uid by the key itself
    sigs = [r for r in recs if r[0] in ("sig", "rev")]
    assert [(s[1], s[10], s[12]) for s in sigs] == [("!", "13x", fpr)], sigs
    assert [r[0] for r in recs if r[0] in ("uid", "sig")] == ["uid", "sig"], recs


@pytest.mark.parametrize("key", KEYS)
def test_fingerprint_follows_the_creation_time(token, exported, workdir, key):
    path, fpr, _ = exported[key]
    with open(path) as f:
        body = key_packet(f.read())
    assert int.from_bytes(body[1:5], "big") == CREATED_EPOCH
    gpg_fpr = GPG(workdir)
    gpg_fpr("--import", path)
    first = [x for x in gpg_fpr.colons("--fingerprint") if x[0] in ("pub", "fpr")]

    # the same instant, written three ways: the same key packet, the same fingerprint
    for created in ("2024-05-01T00:00:00Z", str(CREATED_EPOCH), CREATED):
        r = pubkey_pgp(token, key, created=created)
        assert r.rc == 0, r
        assert key_packet(r.out) == body, "another key packet for --created %s" % created
        assert r.err_lines == [key_line(fpr, key)], r
        g = GPG(workdir)
        g("--import", input_file(workdir, r.out))
        assert [x for x in g.colons("--fingerprint") if x[0] in ("pub", "fpr")] == first

    # another time: another key
    r = pubkey_pgp(token, key, created="2024-05-02T00:00:01Z")
    assert r.rc == 0, r
    other = key_packet(r.out)
    assert v4_fingerprint(other) != fpr
    assert other[5:] == body[5:], "more than the creation time changed"
    assert r.err_lines == [key_line(v4_fingerprint(other), key, "2024-05-02T00:00:01Z")]


def test_without_a_creation_time_nothing_is_signed(token, images, tmp_path):
    """SoftHSM's keys have no CKA_START_DATE: without --created there is no fingerprint."""
    out = str(tmp_path / "key.asc")
    r = pubkey_pgp(token, "ec", "-o", out, created=None)
    assert_failed(r, "--created", "CKA_START_DATE")
    assert not os.path.exists(out)
    stage = str(tmp_path / "stage")
    r = sign_simple(token, images.ref("1.0"), stage, "ec", created=None)
    assert_failed(r, "--created")
    assert not os.path.isdir(stage) or files_under(stage) == []


# An EC P-256 key pair made through PKCS#11 with CKA_START_DATE on both halves.  The private
# half is not CKA_PRIVATE: SoftHSM 2.6 cannot read back the start date of a private object
# (CKR_GENERAL_ERROR, whether set at generation or with C_SetAttributeValue), which ocisign
# rightly takes for a failed read, not for a key without a date.
GEN_DATED = r"""
import ctypes as C, sys
sys.path.insert(0, sys.argv[1])
import pk11
module, label, pin, key, date = sys.argv[2:]
m = pk11.Module(module)
assert m.init() == 0
h = m.open(label, pin)
keep = []
def attr(t, v):
    v = bytes([v]) if isinstance(v, bool) else v
    b = C.create_string_buffer(v, len(v))
    keep.append(b)
    return pk11.Attr(t, C.cast(b, C.c_void_p), len(b.raw))
# CKA_TOKEN, CKA_LABEL, CKA_ID, CKA_START_DATE
both = [attr(0x1, True), attr(0x3, key.encode()), attr(0x102, b"\x09"), attr(0x110, date.encode())]
# CKA_EC_PARAMS (P-256), CKA_VERIFY; CKA_PRIVATE, CKA_SENSITIVE, CKA_SIGN
pub = both + [attr(0x180, bytes.fromhex("06082a8648ce3d030107")), attr(0x10A, True)]
prv = both + [attr(0x2, False), attr(0x103, True), attr(0x108, True)]
mech = pk11.Mech(0x1040, None, 0)  # CKM_EC_KEY_PAIR_GEN
hp, hv = pk11.CK_ULONG(0), pk11.CK_ULONG(0)
print(pk11.rvname(m.C_GenerateKeyPair(h, C.byref(mech), (pk11.Attr * len(pub))(*pub),
                                      pk11.CK_ULONG(len(pub)), (pk11.Attr * len(prv))(*prv),
                                      pk11.CK_ULONG(len(prv)), C.byref(hp), C.byref(hv))))
"""


def test_start_date_is_the_default_creation_time(images, tmp_path):
    """A key with CKA_START_DATE: pubkey and sign without --created use it; the key is the one
    --created of that day gives."""
    t = ocireg.SoftToken(label="dated")
    try:
        r = run(["/usr/bin/python3", "-c", GEN_DATED, os.path.dirname(p11g.__file__),
                 ocireg.SOFTHSM, t.label, t.PIN, "dated", "20240501"], env=t.env())
        assert r.stdout.split() == ["CKR_OK"], r
        r = pubkey_pgp(t, "dated", created=None)
        assert r.rc == 0, r
        dated = key_packet(r.out)
        r2 = pubkey_pgp(t, "dated", created=CREATED)
        assert r2.rc == 0, r2
        assert key_packet(r2.out) == dated
        fpr = v4_fingerprint(dated)
        assert r.err_lines == [key_line(fpr, "ec")], r
        r3 = pubkey_pgp(t, "dated", created="2024-05-01T00:00:01Z")
        assert r3.rc == 0 and v4_fingerprint(key_packet(r3.out)) != fpr, r3
        # and its simple signatures are by that key
        keyring = input_file(str(tmp_path), r.out)
        stage = str(tmp_path / "stage")
        s = sign_simple(t, images.ref("1.0"), stage, "dated", created=None)
        assert s.rc == 0, s
        v = verify_simple(keyring, stage, images.ref("1.0"))
        assert v.rc == 0, v
    finally:
        t.cleanup()


# ------------------------------------------------------------ simple signing --

@pytest.mark.parametrize("key", KEYS)
def test_signature_verifies_with_gpg_skopeo_and_ocisign(token, images, exported, workdir,
                                                        tmp_path, key):
    keyring, fpr, _ = exported[key]
    other = exported[KEYS[(KEYS.index(key) + 1) % len(KEYS)]][0]
    stage = str(tmp_path / "stage")
    one, two = images.ref("1.0"), images.ref("2.0")
    t0 = time.time()
    r = sign_simple(token, one, stage, key)
    t1 = time.time()
    assert r.rc == 0, r
    sig = sig_path(stage, images.d1)
    assert r.out == sig + "\n", r
    assert r.err_lines == ["ocisign: %s/%s@%s signed as %s (signature-1)"
                           % (images.host, REPO, images.d1, one)], r
    assert files_under(stage) == [os.path.relpath(sig, stage)]

    # GnuPG: a good signature by the key, over the claim
    gpg = GPG(workdir)
    gpg("--import", keyring)
    g = gpg("--status-fd", "1", "--verify", sig, check=False)
    assert g.returncode == 0 and "Good signature" in g.stderr, g.stderr
    assert "[GNUPG:] VALIDSIG %s " % fpr in g.stdout, g.stdout
    claim = gpg("--decrypt", sig).stdout
    assert_claim(claim, one, images.d1, t0, t1)
    # one-pass signature, literal data (the claim as it is), signature
    assert signed_message_data(sig).startswith(claim.encode())

    # ocisign verify prints the claim; skopeo copies the image
    v = verify_simple(keyring, stage, one)
    assert v.rc == 0 and v.out == claim + "\n", v
    assert v.err_lines == ["ocisign: 1 of 1 simple-signing signatures of %s/%s@%s verified "
                           "with %s" % (images.host, REPO, images.d1, keyring)], v
    c = skopeo_copy(images.host, one, keyring, stage, str(tmp_path))
    assert c.returncode == 0, c.stderr

    # (c) 2.0 has no signature: both refuse
    assert_failed(verify_simple(keyring, stage, two), "no simple-signing signature",
                  images.d2, "0 checked")
    assert_skopeo_refused(skopeo_copy(images.host, two, keyring, stage, str(tmp_path)))

    # (b) the keyring is another key's
    assert_failed(verify_simple(other, stage, one), "no simple-signing signature", "1 checked")
    assert_skopeo_refused(skopeo_copy(images.host, one, other, stage, str(tmp_path)))

    # (a) 2.0's lookaside holds only 1.0's signature
    sig2 = sig_path(stage, images.d2)
    os.makedirs(os.path.dirname(sig2))
    shutil.copy(sig, sig2)
    assert_failed(verify_simple(keyring, stage, two), "the claim signs %s, not this image"
                  % images.d1)
    assert_skopeo_refused(skopeo_copy(images.host, two, keyring, stage, str(tmp_path)))

    # and 1.0 still verifies (file:///DIR too)
    v = verify_simple(keyring, "file://" + stage, one)
    assert v.rc == 0 and v.out == claim + "\n", v


def test_image_named_by_digest(token, images, exported, tmp_path):
    """By digest, the claim names the repository and no tag; skopeo's default signedBy
    identity check (matchRepoDigestOrExact) accepts it for the digest, and neither accepts it
    for a tag of the same manifest.  containers/image never accepts a claim whose identity is
    a bare repository (reference.IsNameOnly): what it writes for an image pushed by digest is
    REGISTRY/REPOSITORY@sha256:HEX."""
    keyring = exported["ed"][0]
    stage = str(tmp_path / "stage")
    repo = "%s/%s" % (images.host, REPO)
    by_digest = "%s@%s" % (repo, images.d1)
    t0 = time.time()
    r = sign_simple(token, by_digest, "file://" + stage, "ed")
    assert r.rc == 0 and r.out == sig_path(stage, images.d1) + "\n", r
    v = verify_simple(keyring, stage, by_digest)
    assert v.rc == 0, v
    identity = json.loads(v.out)["critical"]["identity"]["docker-reference"]
    assert identity.split("@")[0] == repo, "not the repository, or with a tag: %r" % identity
    assert_claim(v.out, identity, images.d1, t0, time.time())
    c = skopeo_copy(images.host, by_digest, keyring, stage, str(tmp_path))
    assert c.returncode == 0, (
        "skopeo refuses the signature of %s that ocisign verify accepted (claim identity %r):"
        "\n%s" % (by_digest, identity, c.stderr))
    # the tag is not in the claim: 1.0 (the same manifest) is not what was signed
    assert_failed(verify_simple(keyring, stage, images.ref("1.0")),
                  "the claim is for %s, not %s" % (identity, images.ref("1.0")))
    assert_skopeo_refused(skopeo_copy(images.host, images.ref("1.0"), keyring, stage,
                                      str(tmp_path)))


def test_verify_agrees_with_skopeo_on_identities(images, tmp_path):
    """Claims signed by GnuPG (another signer than ocisign), for the identities a claim may
    name, checked for 1.0 by tag and by digest: ocisign verify accepts exactly what skopeo
    accepts (containers/image's matchRepoDigestOrExact: a tag must be the same; by digest the
    repository, named with a tag or a digest, never alone)."""
    home = str(tmp_path / "gnupg")
    os.mkdir(home, 0o700)
    gpg = ["gpg", "--homedir", home, "--batch", "--pinentry-mode", "loopback", "--passphrase",
           ""]
    try:
        run(gpg + ["--quick-gen-key", "Other Signer <other@acme.example>", "ed25519", "sign",
                   "never"])
        keyring = str(tmp_path / "other.asc")
        run(gpg + ["--armor", "--export", "-o", keyring])
        repo = "%s/%s" % (images.host, REPO)
        by_tag, by_digest = images.ref("1.0"), "%s@%s" % (repo, images.d1)
        cases = [(repo, by_tag, False), (repo, by_digest, False),
                 (repo + "@" + images.d1, by_tag, False), (repo + "@" + images.d1, by_digest, True),
                 (by_tag, by_tag, True), (by_tag, by_digest, True),
                 (images.ref("2.0"), by_tag, False), (images.ref("2.0"), by_digest, True),
                 # references containers/image does not parse
                 (repo + "@garbage", by_digest, False), (repo + ":-x", by_digest, False),
                 (repo + ":bad!tag", by_digest, False), (repo + "@sha256:" + "zz" * 32,
                                                         by_digest, False),
                 # containers/image reads localhost as a registry, not as Docker Hub's
                 ("localhost/" + REPO + ":1.0", by_digest, False)]
        wrong = []
        for i, (identity, image, accepted) in enumerate(cases):
            stage = str(tmp_path / ("stage%d" % i))
            sig = sig_path(stage, images.d1)
            os.makedirs(os.path.dirname(sig))
            claim = json.dumps({"critical": {"identity": {"docker-reference": identity},
                                             "image": {"docker-manifest-digest": images.d1},
                                             "type": TYPE},
                                "optional": {"timestamp": int(time.time())}})
            p = subprocess.run(gpg + ["--sign", "-o", sig], input=claim.encode(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
            assert p.returncode == 0, p.stderr
            sk = skopeo_copy(images.host, image, keyring, stage, str(tmp_path)).returncode == 0
            oc = verify_simple(keyring, stage, image)
            assert oc.rc in (0, 1), oc
            assert sk == accepted, "skopeo %s %s for %s" % (
                "accepts" if sk else "refuses", identity, image)
            if (oc.rc == 0) != sk:
                wrong.append("claim %s for %s: skopeo %s, ocisign verify %s" % (
                    identity, image, "accepts" if sk else "refuses",
                    "accepts" if oc.rc == 0 else "refuses"))
        assert not wrong, "ocisign verify and skopeo disagree:\n" + "\n".join(wrong)
    finally:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], timeout=30)


class Served:
    """A web server on 127.0.0.1 in a thread: the directory, or 500 for everything."""

    def __init__(self, directory=None):
        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=directory or "/nonexistent", **kw)

            def log_message(self, *a):
                pass

            def do_GET(self):
                if directory is None:
                    self.send_error(500, "broken store")
                    return
                if self.path.startswith("/moved/"):  # a store that redirects, as some do
                    self.send_response(302)
                    self.send_header("Location", self.path[len("/moved"):])
                    self.end_headers()
                    return
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_verify_over_http(token, images, exported, tmp_path):
    keyring = exported["rsa"][0]
    stage = str(tmp_path / "stage")
    one = images.ref("1.0")
    r = sign_simple(token, one, stage, "rsa")
    assert r.rc == 0, r
    with Served(stage) as web:
        v = verify_simple(keyring, web.url, one)
        assert v.rc == 0, v
        assert json.loads(v.out)["critical"]["identity"]["docker-reference"] == one
        assert "1 of 1 simple-signing signatures" in v.err, v
        # redirected, as containers/image follows them
        v = verify_simple(keyring, web.url + "/moved", one)
        assert v.rc == 0 and "1 of 1 simple-signing signatures" in v.err, v
        # 404 for signature-1: no signature
        assert_failed(verify_simple(keyring, web.url, images.ref("2.0")),
                      "no simple-signing signature", "0 checked")
    with Served() as broken:
        line = assert_failed(verify_simple(keyring, broken.url + "/", one), "500")
        assert "no simple-signing signature" not in line, line


def test_tampered_signature_refused_a_later_good_one_counts(token, images, exported, tmp_path):
    keyring = exported["ec"][0]
    stage = str(tmp_path / "stage")
    one = images.ref("1.0")
    assert sign_simple(token, one, stage, "ec").rc == 0
    sig = sig_path(stage, images.d1)
    with open(sig, "rb") as f:
        data = bytearray(f.read())
    # one digit of the claim's timestamp, in the literal data: the claim is still one for
    # this image, only the signature can tell
    at = data.index(b'"timestamp":') + len(b'"timestamp":')
    data[at + 3] = ord("0") + (data[at + 3] - ord("0") + 1) % 10
    with open(sig, "wb") as f:
        f.write(bytes(data))
    assert_failed(verify_simple(keyring, stage, one), "signature-1", "Bad signature")
    assert_skopeo_refused(skopeo_copy(images.host, one, keyring, stage, str(tmp_path)))

    r = sign_simple(token, one, stage, "ec")
    assert r.rc == 0 and r.out == sig_path(stage, images.d1, 2) + "\n", r
    v = verify_simple(keyring, stage, one)
    assert v.rc == 0, v
    assert len(v.out.splitlines()) == 1, v
    assert "ocisign: 1 of 2 simple-signing signatures" in v.err, v
    c = skopeo_copy(images.host, one, keyring, stage, str(tmp_path))
    assert c.returncode == 0, c.stderr


def test_usage_errors(token, exported, tmp_path):
    uri = token.uri("ec")
    keyring = exported["ec"][0]
    image = "127.0.0.1:1/%s:1.0" % REPO
    stage = str(tmp_path / "stage")
    future = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 3 * 86400))

    def usage(*args, needle):
        r = ocisign(*args, env=token.env())
        assert r.rc == 2, r
        assert len(r.err_lines) == 1 and r.err_lines[0].startswith("ocisign: "), r
        assert needle in r.err, r
        assert r.out == "", r

    pgp = ["pubkey", "--key", uri, "--format", "openpgp"]
    usage(*pgp, needle="--uid")
    usage(*pgp, "--uid", "Release\x1b[31m <r@acme.example>", needle="printable")
    usage(*pgp, "--uid", "Release <r@acme.example>\n", needle="printable")
    usage(*pgp, "--uid", UID, "--created", future, needle="not in the future")
    usage(*pgp, "--uid", UID, "--created", str(int(time.time()) + 86400),
          needle="not in the future")
    ss = ["sign", "--format", "simple-signing", "--key", uri]
    usage(*ss, image, needle="--sigstore-staging")
    usage(*ss, "--sigstore-staging", stage, "--recursive", image, needle="--recursive")
    usage(*ss, "--sigstore-staging", stage, "-a", "k=v", image, needle="--annotation")
    usage("verify", "--format", "simple-signing", "--key", keyring, "--keyring", keyring,
          "--sigstore", stage, image, needle="--keyring")
    usage("verify", "--format", "simple-signing", "--sigstore", stage, image,
          needle="--keyring")
    usage("verify", "--format", "simple-signing", "--keyring", keyring, "--sigstore", stage,
          "--certificate-identity", "nobody@example", image, needle="--certificate-identity")
    r = ocisign(*ss, "--sigstore-staging", "http://127.0.0.1:1/sigs", "--module",
                ocireg.SOFTHSM, "--created", CREATED, image, env=token.env())
    assert_failed(r, "http://127.0.0.1:1/sigs", "directory or file://")
    assert not os.path.exists(stage)


# ------------------------------------------------------- through the gate --

# test_ocisign_cert's rule (without registries unless asked) and its environment: ocisign
# through the build's p11gate.so, in front of SoftHSM, asking the test daemon
from test_ocisign_cert import gate_env, policy  # noqa: E402


def gate_pubkey(token, key, out, *extra):
    return ["pubkey", "--format", "openpgp", "--key", token.uri(key), "--uid", UID,
            "--created", CREATED, "-o", out, *extra]


def gate_sign(token, key, stage, image, *extra):
    return ["sign", "--format", "simple-signing", "--sigstore-staging", stage, "--key",
            token.uri(key), "--created", CREATED, *extra, *ocireg.PLAIN_HTTP, image]


def block(shown, pred):
    """The lines of an item of `approvald show`: its line (two spaces in) and the lines
    under it (four)."""
    lines = shown.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("  ") and not line.startswith("   ") and pred(line):
            j = i + 1
            while j < len(lines) and lines[j].startswith("    "):
                j += 1
            return lines[i:j]
    raise AssertionError("no such line in approvald show:\n%s" % shown)


def has_fpr(lines, fpr):
    return fpr in "".join(lines).replace(" ", "").upper()


def approved(token, d, args):
    """Runs ocisign ARGS --request as the orderer; alice approves.  (op id, the operation and
    `approvald show` before the approval, exit, stdout, stderr)."""
    p = ocireg.ocisign_popen(*args, "--request", user="orderer", env=gate_env(token, d))
    with ocireg.killed_after(p):
        op_id = int(ocireg.wait_for_line(p.stderr, r"approval request (\d+) filed").group(1))
        op = d.show(op_id)
        shown = p11g.expect_ok(d.cli("show", op_id, user="alice")).out
        assert op["state"] == "pending", op
        assert p.poll() is None, "ocisign did not wait for the decision"
        d.approve("alice", op_id)
        out, err = p.communicate(timeout=60)
    return op_id, op, shown, p.returncode, out, err


def assert_used_once(d, op_id):
    op = d.show(op_id)
    assert [(k["uses"], k["used"]) for k in op["keys"]] == [(1, 1)], op
    assert op["state"] == "exhausted", op


def test_gate_refuses_without_an_operation(start_daemon, token, images, staging):
    d = start_daemon(policy=policy())
    env = gate_env(token, d)
    out = os.path.join(staging, "key.asc")
    r = ocisign(*gate_pubkey(token, "ec", out), user="orderer", env=env)
    assert_rejected_by_the_gate(r)
    r = ocisign(*gate_sign(token, "ec", staging, images.ref("1.0")), user="orderer", env=env)
    assert_rejected_by_the_gate(r)
    assert files_under(staging) == [], "written without a signature"
    assert d.list("--all", user="orderer") == []


@pytest.mark.parametrize("key", KEYS)
def test_gate_request_certification_and_signature(start_daemon, token, images, exported,
                                                  staging, tmp_path, key):
    keyring, fpr, _ = exported[key]
    d = start_daemon(policy=policy())
    one = images.ref("1.0")

    # the certification: approvald shows the user ID and the key it read
    out = os.path.join(staging, "key.asc")
    op_id, op, shown, rc, o, e = approved(token, d, gate_pubkey(token, key, out))
    assert rc == 0, (o, e)
    assert op["name"] == "OpenPGP certification for " + UID, op
    assert [k["uses"] for k in op["keys"]] == [1], op
    lines = block(shown, lambda l: "OpenPGP certification" in l and UID in l
                  and not l.startswith(("  name:", "  description:")))
    assert has_fpr(lines, fpr), "approvald does not show the key's fingerprint %s:\n%s" % (
        fpr, shown)
    assert_used_once(d, op_id)
    with open(out) as f:
        armored = f.read()
    assert v4_fingerprint(key_packet(armored)) == fpr
    # the one use was pinned to this certification
    assert op["digests"] == [gate_digest(key, certification_data(armored))], op
    gpg = GPG(str(tmp_path))
    gpg("--import", out)
    sigs = [r for r in gpg.colons("--check-sigs") if r[0] == "sig"]
    assert [(s[1], s[10], s[12]) for s in sigs] == [("!", "13x", fpr)], sigs

    # the signature: approvald shows the image, its digest and the key
    sign_id, op, shown, rc, o, e = approved(token, d, gate_sign(token, key, staging, one))
    assert rc == 0, (o, e)
    sig = sig_path(staging, images.d1)
    assert o == sig + "\n", (o, e)
    assert [k["uses"] for k in op["keys"]] == [1], op
    assert op["digests"] == [gate_digest(key, signed_message_data(sig))], op
    lines = block(shown, lambda l: l.startswith("  image:") and
                  "%s@%s" % (one, images.d1) in l)
    assert has_fpr(lines, fpr), "approvald does not show the key's fingerprint %s:\n%s" % (
        fpr, shown)
    assert_used_once(d, sign_id)
    v = verify_simple(out, staging, one)
    assert v.rc == 0, v
    c = skopeo_copy(images.host, one, out, staging, str(tmp_path))
    assert c.returncode == 0, c.stderr


def test_gate_rule_with_registries(start_daemon, token, images, exported, staging, tmp_path):
    keyring, fpr, _ = exported["ec"]
    one = images.ref("1.0")

    # not this registry: refused when filed, before anything is signed
    d = start_daemon(policy=policy(["registry.example"]))
    r = ocisign(*gate_sign(token, "ec", staging, one, "--request"), user="orderer",
                env=gate_env(token, d))
    line = assert_failed(r, "approvald refused the request", images.host)
    assert "registr" in line, line
    assert d.list("--all", user="orderer") == []
    assert files_under(staging) == []

    # this registry: the signature; a certification is no image, and is allowed
    d = start_daemon(policy=policy([images.host]))
    sign_id, op, shown, rc, o, e = approved(token, d, gate_sign(token, "ec", staging, one))
    assert rc == 0 and o == sig_path(staging, images.d1) + "\n", (o, e)
    assert_used_once(d, sign_id)
    out = os.path.join(staging, "key.asc")
    op_id, op, shown, rc, o, e = approved(token, d, gate_pubkey(token, "ec", out))
    assert rc == 0, (o, e)
    assert_used_once(d, op_id)
    v = verify_simple(out, staging, one)
    assert v.rc == 0, v


def test_gate_long_user_id_in_any_script(start_daemon, token, staging, tmp_path):
    """A user ID in UTF-8 longer than a request's title: the title is cut between characters
    (a cut inside one would be refused as invalid text), the user ID is shown and certified
    whole."""
    d = start_daemon(policy=policy())
    # (its title's byte 125, where a title is cut, is inside a character)
    uid = "A" + "Ünïcødé Sïgnér " * 10 + "<signer@acme.example>"
    assert ("OpenPGP certification for " + uid).encode()[125] & 0xc0 == 0x80
    out = os.path.join(staging, "key.asc")
    args = ["pubkey", "--format", "openpgp", "--key", token.uri("ed"), "--uid", uid,
            "--created", CREATED, "-o", out]
    op_id, op, shown, rc, o, e = approved(token, d, args)
    assert rc == 0, (o, e)
    title = "OpenPGP certification for " + uid
    assert op["name"].endswith("...") and title.startswith(op["name"][:-3]), op["name"]
    assert len(op["name"].encode()) <= 128, op["name"]
    assert op["images"][0]["openpgp_certification"]["user_id"] == uid, op
    assert '  OpenPGP certification: user ID "%s"' % uid in shown, shown
    # (gpg's messages are in the locale's charset: its records are read as bytes)
    home = GPG(str(tmp_path)).home
    r = subprocess.run(["gpg", "--homedir", home, "--batch", "--no-autostart", "--import", out],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["gpg", "--homedir", home, "--batch", "--no-autostart", "--with-colons",
                        "--check-sigs"], stdout=subprocess.PIPE, timeout=60)
    recs = [line.split(b":") for line in r.stdout.splitlines()]
    assert [x[9] for x in recs if x[0] == b"uid"] == [uid.encode()], recs
    assert [x[1] for x in recs if x[0] == b"sig"] == [b"!"], recs


def test_creation_time_from_the_exported_key(token, images, exported, tmp_path):
    """sign --openpgp-key takes the creation time from the key as exported (checked by GnuPG
    to be this token key's OpenPGP form), so signatures name the fingerprint hosts trust;
    another key's export signs nothing."""
    one = images.ref("1.0")
    stage = str(tmp_path / "stage")
    args = ["sign", "--format", "simple-signing", "--sigstore-staging", stage, "--module",
            ocireg.SOFTHSM, *ocireg.PLAIN_HTTP]
    r = ocisign(*args, "--key", token.uri("ed"), "--openpgp-key", exported["ed"][0], one,
                env=token.env())
    assert r.rc == 0, r
    v = verify_simple(exported["ed"][0], stage, one)
    assert v.rc == 0 and "1 of 1" in v.err, v
    before = files_under(stage)
    r = ocisign(*args, "--key", token.uri("ed"), "--openpgp-key", exported["ec"][0], one,
                env=token.env())
    assert_failed(r, exported["ec"][0], "holds no OpenPGP key of this token key")
    assert files_under(stage) == before
    r = ocisign(*args, "--key", token.uri("ed"), "--openpgp-key", exported["ed"][0],
                "--created", CREATED, one, env=token.env())
    assert r.rc == 2 and "--openpgp-key FILE or --created DATE" in r.err, r


def test_a_failed_read_signs_nothing(token, tmp_path):
    """A module that fails the read of the key's CKA_ID (tests/mock/faulty.so in front of
    SoftHSM): its public half, and the start date it holds, are not known, so nothing is
    exported (a failed read is no absent value: the label could name another key's half)."""
    faulty = os.path.join(p11g.BUILD, "tests", "mock", "faulty.so")
    assert os.path.exists(faulty), "faulty.so not built at %s" % faulty
    env = dict(token.env(), P11G_FAULT_MODULE=ocireg.SOFTHSM, P11G_FAULT="CKA_ID")
    for extra in ([], ["--created", CREATED]):
        out = str(tmp_path / "key.asc")
        r = ocisign("pubkey", "--format", "openpgp", "--uid", UID, "--key", token.uri("ec"),
                    "--module", faulty, "-o", out, *extra, env=env)
        assert_failed(r, "cannot look for the public key object", "a read failed")
        assert not os.path.exists(out)
