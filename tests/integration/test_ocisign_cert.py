"""ocisign's certificate-based signing (issue #22): a PKCS#10 request signed by the token key
under approval, the CA's certificate stored on the token, cosign's certificate and chain
annotations attached with each signature, and signatures verified against a CA.

The test CA is made with the openssl command line (a root, and an intermediate with
pathlen:0 that issues the code-signing certificate from the CSR), beside a second,
unrelated root and intermediate.  The certificates a CA would not issue from the CSR
(expired, not yet valid, without the code-signing EKU, for another key) are made with
Python's cryptography from the intermediate's key and the token key's public key as
`ocisign pubkey` prints it.

Only the full flow and the CSR under a rule with registries go through p11gate.so and
approvald; the refusals sign with SoftHSM directly (--module), where the gate is not what is
tested."""

import base64
import datetime
import hashlib
import json
import os
import pwd
import re
import shutil
import subprocess
import tempfile

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import p11g
import ocireg
from ocireg import REPO, ocisign

SUBJECT = "/CN=Release Signing/O=Acme"
SAN = "email:release@acme.example"
IDENTITY = "release@acme.example"
SAN_URI = "URI:https://ci.acme.example/release"
ANN_SIG = "dev.cosignproject.cosign/signature"
ANN_CERT = "dev.sigstore.cosign/certificate"
ANN_CHAIN = "dev.sigstore.cosign/chain"
KEY_IDS = {k: kid for k, (_, kid) in ocireg.SoftToken.KEYS.items()}
KEY_SHOWN = {"ec": "EC P-256", "rsa": "RSA 2048", "ed": "Ed25519"}  # approvald's words


def policy(registries=None):
    """test_ocisign_sign's rule, without "registries" unless asked."""
    rule = {"name": "images", "keys": ["pkcs11:token=ocisign"],
            "orderers": ["user:p11gt-orderer"], "approvers": ["group:p11gt-approvers"],
            "approvals": 1, "max_uses": 10, "max_validity": "1h"}
    if registries is not None:
        rule["registries"] = registries
    return {"default": "deny", "rules": [rule]}


def gate_env(token, daemon):
    """ocisign through the build's p11gate.so, which forwards to SoftHSM and asks the test
    daemon (as test_ocisign_sign does)."""
    assert os.path.exists(ocireg.P11GATE_SO), "p11gate.so not built at %s" % ocireg.P11GATE_SO
    return dict(token.env(), OCISIGN_MODULE=ocireg.P11GATE_SO, P11GATE_MODULE=ocireg.SOFTHSM,
                P11GATE_SOCKET=daemon.sock, APPROVALD_SOCKET=daemon.sock)


def run(args, env=None, check=True):
    r = subprocess.run([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=60, env=dict(p11g.CLEAN_ENV, **(env or {})))
    if check:
        assert r.returncode == 0, "%s failed (%d):\n%s%s" % (" ".join(map(str, args)),
                                                            r.returncode, r.stdout, r.stderr)
    return r


def go_pem(der):
    """What Go's pem.Encode writes for a certificate (as cosign stores it): 64 columns, a
    trailing newline."""
    b64 = base64.b64encode(der).decode()
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


def pubkey_pem(token, key):
    r = ocisign("pubkey", "--key", token.uri(key), "--module", ocireg.SOFTHSM, env=token.env())
    assert r.rc == 0 and r.out.startswith("-----BEGIN PUBLIC KEY-----"), r
    return r.out


def last_err(r):
    lines = r.err_lines
    assert lines, r
    return lines[-1]


def assert_failed(r, *needles):
    """Exit 1 with one `ocisign: ...` line naming each needle."""
    assert r.rc == 1, r
    line = last_err(r)
    assert line.startswith("ocisign: "), r
    for n in needles:
        assert n in line, "expected %r in the reason: %r" % (n, r)
    return line


# ----------------------------------------------------------------- test CA --

class CA:
    """root -> intermediate (pathlen:0) -> leaves; files in a directory every test user can
    read (ocisign runs as the orderer through p11gate.so)."""

    def __init__(self, dir, name):
        self.dir, self.name = dir, name
        self.root_key, self.root = self.p("root.key"), self.p("root.pem")
        self.int_key, self.int = self.p("int.key"), self.p("int.pem")
        self.chain = self.p("chain.pem")
        self.serial = self.p("int.srl")
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", self.root_key, "-out", self.root, "-days", "3",
             "-subj", "/CN=%s Root CA/O=%s" % (name, name),
             "-addext", "basicConstraints=critical,CA:true",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        csr = self.p("int.csr")
        run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", self.int_key, "-out", csr,
             "-subj", "/CN=%s Code Signing CA/O=%s" % (name, name)])
        ext = self.p("int.ext")
        with open(ext, "w") as f:
            f.write("basicConstraints=critical,CA:true,pathlen:0\n"
                    "keyUsage=critical,keyCertSign,cRLSign\n")
        run(["openssl", "x509", "-req", "-in", csr, "-CA", self.root, "-CAkey", self.root_key,
             "-CAcreateserial", "-CAserial", self.p("root.srl"), "-days", "2",
             "-extfile", ext, "-out", self.int])
        with open(self.chain, "wb") as f:  # cosign's order: the issuer first, the root last
            f.write(self.read(self.int) + self.read(self.root))
        for n in os.listdir(dir):
            os.chmod(os.path.join(dir, n), 0o644)

    def p(self, n):
        return os.path.join(self.dir, "%s-%s" % (self.name.lower(), n))

    @staticmethod
    def read(path):
        with open(path, "rb") as f:
            return f.read()

    def issue_csr(self, csr, out, ext_lines):
        """openssl x509 -req: what the CA does with the request."""
        ext = out + ".ext"
        with open(ext, "w") as f:
            f.write("".join(l + "\n" for l in ext_lines))
        run(["openssl", "x509", "-req", "-in", csr, "-CA", self.int, "-CAkey", self.int_key,
             "-CAcreateserial", "-CAserial", self.serial, "-days", "1", "-extfile", ext,
             "-out", out])
        os.chmod(out, 0o644)
        return out

    def issue(self, pub_pem, out, **kw):
        """A certificate for pub_pem from the intermediate (issue())."""
        return issue(self.int, self.int_key, pub_pem, out, **kw)


def issue(ca_pem, ca_key_pem, pub_pem, out, start=-1, end=1,
          eku=(ExtendedKeyUsageOID.CODE_SIGNING,), cn="Release Signing", email=IDENTITY,
          subject=None):
    """A certificate for pub_pem from the CA in the files ca_pem and ca_key_pem, with explicit
    dates (days from now) and extended key usages (None: no EKU extension); the subject is
    /CN=cn/O=Acme unless given whole (an x509.Name)."""
    ca_cert = x509.load_pem_x509_certificate(CA.read(ca_pem))
    ca_key = serialization.load_pem_private_key(CA.read(ca_key_pem), None)
    now = datetime.datetime.now(datetime.timezone.utc)
    if subject is None:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme")])
    b = (x509.CertificateBuilder()
         .subject_name(subject)
         .issuer_name(ca_cert.subject)
         .public_key(serialization.load_pem_public_key(pub_pem.encode()))
         .serial_number(x509.random_serial_number())
         .not_valid_before(now + datetime.timedelta(days=start))
         .not_valid_after(now + datetime.timedelta(days=end))
         .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                      False), critical=True)
         .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]),
                        critical=False))
    if eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    cert = b.sign(ca_key, hashes.SHA256())
    with open(out, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(out, 0o644)
    return out


@pytest.fixture(scope="module")
def pki():
    """(acme, other): two unrelated CAs."""
    d = tempfile.mkdtemp(prefix="p11gt-ca-")
    os.chmod(d, 0o755)
    try:
        yield CA(d, "Acme"), CA(d, "Other")
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def outdir(accounts):
    """A directory the orderer writes in (ocisign csr -o as the orderer)."""
    d = tempfile.mkdtemp(prefix="p11gt-csr-")
    pw = pwd.getpwnam(p11g.U("orderer"))
    os.chown(d, pw.pw_uid, pw.pw_gid)
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def token_certs(token):
    """p11tool's view of the token's certificates: [{"URL":..,"Label":..,"ID":..}, ...]."""
    r = run(["p11tool", "--provider", ocireg.SOFTHSM, "--list-all-certs",
             "pkcs11:token=%s" % token.label], env=token.env(), check=False)
    assert r.returncode == 0 or "No matching objects" in r.stdout + r.stderr, r
    objs = []
    for line in r.stdout.splitlines():
        if re.match(r"^Object \d+:", line):
            objs.append({})
        m = re.match(r"^\s+(\w[\w ]*): (.*)$", line)
        if m and objs:
            objs[-1][m.group(1)] = m.group(2)
    return objs


def sig_manifest(client, digest):
    body, _ = client.get_manifest(REPO, ocireg.sig_tag(digest))
    return body, json.loads(body)


def push_sig_manifest(client, digest, man):
    client.push_manifest(REPO, ocireg.sig_tag(digest), man, ocireg.MT_OCI_MANIFEST)


def signed_image(registry, token, ca, key="ec", certificate=None, chain=True):
    """An image signed with SoftHSM directly, with a certificate issued from the key's CSR by
    ca's intermediate and (chain) ca's chain file; (image, digest, payload, leaf path)."""
    client = registry.client()
    digest = client.push_image(REPO, tag="v1")
    image = "%s/%s:v1" % (registry.host, REPO)
    if certificate is None:
        certificate = ca.issue(pubkey_pem(token, key), os.path.join(ca.dir, "leaf-%s-%s.pem"
                                                                    % (key, digest[7:19])))
    args = ["sign", "--key", token.uri(key), "--module", ocireg.SOFTHSM,
            "--certificate", certificate]
    if chain:
        args += ["--certificate-chain", ca.chain]
    r = ocisign(*args, *ocireg.PLAIN_HTTP, image, env=token.env())
    assert r.rc == 0, r
    sigs = client.signatures(REPO, digest)
    assert len(sigs) == 1, sigs
    return image, digest, sigs[0][0], certificate


# ------------------------------------------------------------- full flow --

@pytest.mark.parametrize("key", ["ec", "rsa", "ed"])
def test_csr_approved_certificate_stored_signed_verified(start_daemon, oci_registry, oci_token,
                                                         pki, outdir, key):
    acme, _ = pki
    d = start_daemon(policy=policy())
    env = gate_env(oci_token, d)
    csr = os.path.join(outdir, "%s.csr" % key)

    # No operation: p11gate.so refuses the request's signature; no file is written.
    r = ocisign("csr", "--key", oci_token.uri(key), "--subject", SUBJECT, "--san", SAN,
                "--san", SAN_URI, "-o", csr, user="orderer", env=env)
    assert_failed(r, "CKR_FUNCTION_REJECTED")
    assert not os.path.exists(csr)
    assert d.list("--all", user="orderer") == []

    # --request: one use pinned to the request's to-be-signed bytes, named for the subject.
    p = ocireg.ocisign_popen("csr", "--key", oci_token.uri(key), "--subject", SUBJECT,
                             "--san", SAN, "--san", SAN_URI, "--request", "-o", csr,
                             user="orderer", env=env)
    with ocireg.killed_after(p):
        op_id = int(ocireg.wait_for_line(p.stderr, r"approval request (\d+) filed").group(1))
        op = d.show(op_id)
        assert op["state"] == "pending"
        assert op["name"] == "CSR for " + SUBJECT
        assert op["meta"] == {"kind": "PKCS#10 certificate signing request",
                              "subject": SUBJECT,
                              "subject-alt-names": "%s, %s" % (SAN, SAN_URI)}, op
        assert "oci" not in op, op
        assert [k["uses"] for k in op["keys"]] == [1]
        assert op["payload_names"] == ["CSR for " + SUBJECT]
        # approvald read the request's bytes itself
        assert op["images"] == [{"csr": {"subject": SUBJECT, "key": KEY_SHOWN[key],
                                         "names": [SAN, SAN_URI],
                                         "extended_key_usage": ["codeSigning"],
                                         "other_extensions": [
                                             "X509v3 Key Usage (critical): Digital Signature"]},
                                 "payload_digest": op["digests"][0]}], op
        # what an approver reads
        shown = p11g.expect_ok(d.cli("show", op_id, user="alice")).out
        assert "  name:        CSR for %s\n" % SUBJECT in shown, shown
        assert "    kind = PKCS#10 certificate signing request\n" in shown, shown
        assert "    subject = %s\n" % SUBJECT in shown, shown
        assert "  certificate request (PKCS#10): %s\n" % SUBJECT in shown, shown
        assert "    key:       %s\n" % KEY_SHOWN[key] in shown, shown
        assert "    names:     %s, %s\n" % (SAN, SAN_URI) in shown, shown
        assert "    extended key usage: codeSigning\n" in shown, shown
        assert "    extension: X509v3 Key Usage (critical): Digital Signature\n" in shown, shown
        assert p.poll() is None, "ocisign did not wait for the decision"
        assert not os.path.exists(csr)
        d.approve("alice", op_id)
        out, err = p.communicate(timeout=60)
    assert p.returncode == 0, (out, err)
    assert ("ocisign: certificate request for %s written to %s" % (SUBJECT, csr)) in err
    assert d.state_of(op_id) == "exhausted"

    with open(csr, "rb") as f:
        req = x509.load_pem_x509_csr(f.read())
    assert op["digests"] == ["sha256:" + hashlib.sha256(req.tbs_certrequest_bytes).hexdigest()]
    v = run(["openssl", "req", "-verify", "-noout", "-in", csr])
    assert "verify OK" in v.stdout + v.stderr, v
    pub = pubkey_pem(oci_token, key)
    assert run(["openssl", "req", "-in", csr, "-noout", "-pubkey"]).stdout == pub
    assert req.subject.rfc4514_string() == "O=Acme,CN=Release Signing"
    ku = req.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    assert list(req.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CODE_SIGNING]
    sans = req.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.RFC822Name) == [IDENTITY]
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [SAN_URI[4:]]

    # The CA issues the certificate; import-cert stores it beside the key.
    leaf = acme.issue_csr(csr, os.path.join(acme.dir, "leaf-%s.pem" % key),
                          ["keyUsage=critical,digitalSignature", "extendedKeyUsage=codeSigning",
                           "subjectAltName=%s,%s" % (SAN, SAN_URI)])
    r = ocisign("import-cert", "--key", oci_token.uri(key), "--cert", leaf, "--chain",
                acme.chain, user="orderer", env=env)
    assert r.rc == 0, r
    assert r.out == ("stored %s on the token as the certificate of %s (its CKA_ID and "
                     "CKA_LABEL)\n" % (SUBJECT, oci_token.uri(key, pin=False)))
    certs = token_certs(oci_token)
    assert len(certs) == 1, certs
    assert certs[0]["ID"] == KEY_IDS[key] and certs[0]["Label"] == key, certs
    exported = run(["p11tool", "--provider", ocireg.SOFTHSM, "--export", certs[0]["URL"]],
                   env=oci_token.env()).stdout
    leaf_pem = run(["openssl", "x509", "-in", leaf]).stdout
    assert x509.load_pem_x509_certificate(exported.encode()) == \
        x509.load_pem_x509_certificate(leaf_pem.encode())

    # sign --certificate-from-token --certificate-chain, approved: cosign's annotations.
    client = oci_registry.client()
    digest = client.push_image(REPO, tag="v1")
    image = "%s/%s:v1" % (oci_registry.host, REPO)
    p = ocireg.ocisign_popen("sign", "--key", oci_token.uri(key), "--request",
                             "--certificate-from-token", "--certificate-chain", acme.chain,
                             *ocireg.PLAIN_HTTP, image, user="orderer", env=env)
    with ocireg.killed_after(p):
        sign_op = int(ocireg.wait_for_line(p.stderr, r"approval request (\d+) filed").group(1))
        assert client.signatures(REPO, digest) == []
        d.approve("alice", sign_op)
        out, err = p.communicate(timeout=60)
    assert p.returncode == 0, (out, err)
    assert out.strip() == "%s/%s:%s" % (oci_registry.host, REPO, ocireg.sig_tag(digest))
    assert d.state_of(sign_op) == "exhausted"

    _, man = sig_manifest(client, digest)
    assert len(man["layers"]) == 1
    ann = man["layers"][0]["annotations"]
    assert list(ann) == [ANN_SIG, ANN_CERT, ANN_CHAIN], ann
    assert ann[ANN_CERT] == leaf_pem
    assert ann[ANN_CERT] == go_pem(x509.load_pem_x509_certificate(leaf_pem.encode())
                                   .public_bytes(serialization.Encoding.DER))
    assert ann[ANN_CHAIN] == CA.read(acme.chain).decode()
    payload, sig = client.signatures(REPO, digest)[0]
    assert base64.b64decode(ann[ANN_SIG]) == sig
    assert ("sha256:" + hashlib.sha256(payload).hexdigest()) in d.show(sign_op)["digests"]

    # verify against the root: the payload, said to be checked at the current time.
    for identity in (None, IDENTITY, SAN_URI[4:], SUBJECT):
        extra = ["--certificate-identity", identity] if identity else []
        r = ocisign("verify", "--certificate-chain", acme.root, *extra, *ocireg.PLAIN_HTTP,
                    image)
        assert r.rc == 0, (identity, r)
        assert r.out == payload.decode() + "\n"
        assert "checked at the current time" in r.err, r


def test_csr_request_under_a_rule_with_registries(start_daemon, oci_token, outdir):
    """A rule's registries limit images, not certificate requests (approvald reads the CSR
    payload, commit 92bb969): the request is filed, and once approved the CSR is signed."""
    d = start_daemon(policy=policy(["registry.example.com"]))
    csr = os.path.join(outdir, "ec.csr")
    p = ocireg.ocisign_popen("csr", "--key", oci_token.uri("ec"), "--subject", SUBJECT,
                             "--request", "-o", csr, user="orderer", env=gate_env(oci_token, d))
    with ocireg.killed_after(p):
        op_id = int(ocireg.wait_for_line(p.stderr, r"approval request (\d+) filed").group(1))
        op = d.show(op_id)
        assert op["state"] == "pending" and op["name"] == "CSR for " + SUBJECT, op
        assert [i["csr"]["subject"] for i in op["images"]] == [SUBJECT], op
        d.approve("alice", op_id)
        out, err = p.communicate(timeout=60)
    assert p.returncode == 0 and os.path.exists(csr), (
        "the approved CSR operation %d under a rule with registries is refused when "
        "ocisign signs:\n%s" % (op_id, err))
    assert d.state_of(op_id) == "exhausted"


# -------------------------------------------------------------- refusals --

def test_import_cert_refusals_store_nothing(oci_token, pki, tmp_path):
    acme, other = pki
    env = oci_token.env()
    ec = pubkey_pem(oci_token, "ec")
    uri = oci_token.uri("ec")

    def import_cert(cert, *extra):
        return ocisign("import-cert", "--key", uri, "--module", ocireg.SOFTHSM, "--cert", cert,
                       *extra, env=env)

    rsa_cert = acme.issue(pubkey_pem(oci_token, "rsa"), str(tmp_path / "rsa.pem"))
    assert_failed(import_cert(rsa_cert), "the certificate %s" % rsa_cert, "certifies another key")
    expired = acme.issue(ec, str(tmp_path / "expired.pem"), start=-10, end=-1)
    assert_failed(import_cert(expired), "the certificate %s expired on " % expired)
    future = acme.issue(ec, str(tmp_path / "future.pem"), start=2, end=3)
    assert_failed(import_cert(future), "the certificate %s is not valid before " % future)
    no_eku = acme.issue(ec, str(tmp_path / "noeku.pem"), eku=(ExtendedKeyUsageOID.SERVER_AUTH,))
    assert_failed(import_cert(no_eku), "no code-signing extended key usage")
    good = acme.issue(ec, str(tmp_path / "good.pem"))
    assert_failed(import_cert(good, "--chain", other.chain), "does not chain to the trusted roots")
    assert token_certs(oci_token) == []

    # the right one is stored; a renewal replaces it
    r = import_cert(good, "--chain", acme.chain)
    assert r.rc == 0 and r.out.startswith("stored /CN=Release Signing/O=Acme on the token"), r
    renewed = acme.issue(ec, str(tmp_path / "renewed.pem"), end=2)
    r = import_cert(renewed, "--chain", acme.chain)
    assert r.rc == 0 and r.out.rstrip().endswith("(replacing 1 certificate)"), r
    certs = token_certs(oci_token)
    assert [(c["ID"], c["Label"]) for c in certs] == [("02", "ec")], certs


def test_public_half_found_by_id_only(pki, tmp_path):
    """A private key whose public key object was deleted has no public key here, even when
    another key pair on the token carries the same label: ocisign used to fall back to the
    label, print the other pair's public key as this key's, and store a certificate of the
    other key beside this one (p11.c find_public_half)."""
    acme, _ = pki
    token = ocireg.SoftToken(label="pubhalf")
    try:
        env = token.env()

        def tool(*args):
            return run(["pkcs11-tool", "--module", ocireg.SOFTHSM, "--token-label", token.label,
                        "--login", "--pin", token.PIN, *args], env=env)

        for kid in ("0a", "0b"):  # A and B: two EC key pairs with the label "k"
            tool("--keypairgen", "--key-type", "EC:prime256v1", "--label", "k", "--id", kid)
        tool("--delete-object", "--type", "pubkey", "--id", "0a")
        listed = tool("--list-objects").stdout
        keys = re.findall(r"^(Public|Private) Key Object; EC\b.*\n(?:  .*\n)*?  ID: +(\w+)$",
                          listed, re.M)
        assert sorted(keys) == [("Private", "02"), ("Private", "0a"), ("Private", "0b"),
                                ("Public", "02"), ("Public", "0b")], listed

        def uri(kid):
            return "pkcs11:token=%s;id=%%%s;type=private?pin-value=%s" % (token.label, kid,
                                                                          token.PIN)

        # B's public key, as ocisign prints it and as its public key object holds it
        r = ocisign("pubkey", "--key", uri("0b"), "--module", ocireg.SOFTHSM, env=env)
        assert r.rc == 0 and r.out.startswith("-----BEGIN PUBLIC KEY-----"), r
        b_pub = r.out
        der = str(tmp_path / "b-pub.der")
        tool("--read-object", "--type", "pubkey", "--id", "0b", "--output-file", der)
        assert serialization.load_pem_public_key(b_pub.encode()).public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == \
            CA.read(der)

        # A: no public key (SoftHSM's private EC key has no CKA_EC_POINT), not B's
        r = ocisign("pubkey", "--key", uri("0a"), "--module", ocireg.SOFTHSM, env=env)
        assert_failed(r, "CKA_EC_POINT", "no public key object",
                      "pkcs11:token=pubhalf;id=%0a;type=private")
        assert r.out == "", "A's public key printed as B's: %r" % r

        # a good certificate of B's key is not stored as A's
        b_cert = acme.issue(b_pub, str(tmp_path / "b.pem"))
        r = ocisign("import-cert", "--key", uri("0a"), "--module", ocireg.SOFTHSM,
                    "--cert", b_cert, "--chain", acme.chain, env=env)
        assert_failed(r, "CKA_EC_POINT")
        assert r.out == "", r
        assert token_certs(token) == []
        # ... and is B's own
        r = ocisign("import-cert", "--key", uri("0b"), "--module", ocireg.SOFTHSM,
                    "--cert", b_cert, "--chain", acme.chain, env=env)
        assert r.rc == 0, r
        assert r.out.startswith("stored /CN=Release Signing/O=Acme on the token"), r
        assert [(c["ID"], c["Label"]) for c in token_certs(token)] == [("0b", "k")]
    finally:
        token.cleanup()


def test_sign_refusals_attach_nothing(oci_registry, oci_token, pki, tmp_path):
    acme, other = pki
    client = oci_registry.client()
    digest = client.push_image(REPO, tag="v1")
    image = "%s/%s:v1" % (oci_registry.host, REPO)
    ec = pubkey_pem(oci_token, "ec")

    def sign(*extra):
        return ocisign("sign", "--key", oci_token.uri("ec"), "--module", ocireg.SOFTHSM, *extra,
                       *ocireg.PLAIN_HTTP, image, env=oci_token.env())

    rsa_cert = acme.issue(pubkey_pem(oci_token, "rsa"), str(tmp_path / "rsa.pem"))
    assert_failed(sign("--certificate", rsa_cert), "certifies another key")
    expired = acme.issue(ec, str(tmp_path / "expired.pem"), start=-10, end=-1)
    assert_failed(sign("--certificate", expired, "--certificate-chain", acme.chain),
                  "the certificate %s expired on " % expired)
    no_eku = acme.issue(ec, str(tmp_path / "noeku.pem"), eku=None)
    assert_failed(sign("--certificate", no_eku), "the certificate %s has no code-signing "
                  "extended key usage" % no_eku)
    good = acme.issue(ec, str(tmp_path / "good.pem"))
    assert_failed(sign("--certificate", good, "--certificate-chain", other.chain),
                  "the certificate %s does not chain to the trusted roots" % good)
    # the other CA's certificate of the same key does not chain to acme's root either
    other_good = other.issue(ec, str(tmp_path / "other-good.pem"))
    assert_failed(sign("--certificate", other_good, "--certificate-chain", acme.chain),
                  "does not chain to the trusted roots")
    assert_failed(sign("--certificate-from-token"), "the token has no certificate for this key")
    assert client.signatures(REPO, digest) == []


def test_token_certificate_expired_refused_without_showing_the_pin(oci_registry, oci_token, pki,
                                                                  tmp_path):
    """An expired certificate on the token (stored by another tool: import-cert refuses it) is
    refused by sign --certificate-from-token, and the refusal names the key without the URI's
    pin-value (as every other ocisign message does)."""
    acme, _ = pki
    expired = acme.issue(pubkey_pem(oci_token, "ec"), str(tmp_path / "expired.pem"), start=-10,
                         end=-1)
    der = str(tmp_path / "expired.der")
    run(["openssl", "x509", "-in", expired, "-outform", "DER", "-out", der])
    run(["pkcs11-tool", "--module", ocireg.SOFTHSM, "--token-label", oci_token.label, "--login",
         "--pin", oci_token.PIN, "--write-object", der, "--type", "cert", "--id", "02",
         "--label", "ec"], env=oci_token.env())
    assert [(c["ID"], c["Label"]) for c in token_certs(oci_token)] == [("02", "ec")]
    client = oci_registry.client()
    digest = client.push_image(REPO, tag="v1")
    r = ocisign("sign", "--key", oci_token.uri("ec"), "--module", ocireg.SOFTHSM,
                "--certificate-from-token", *ocireg.PLAIN_HTTP,
                "%s/%s:v1" % (oci_registry.host, REPO), env=oci_token.env())
    line = assert_failed(r, "the token's certificate of pkcs11:token=ocisign;object=ec",
                         "expired on ")
    assert client.signatures(REPO, digest) == []
    assert "pin-value" not in line and oci_token.PIN not in line, \
        "the refusal shows the key URI's PIN on stderr: %r" % line


def test_ca_without_code_signing_refused(oci_registry, oci_token, pki, tmp_path):
    """An intermediate whose extended key usage is serverAuth only: the chain does not allow
    code signing (as Go's x509 checks it for cosign) at sign, import-cert and verify."""
    acme, _ = pki
    root = x509.load_pem_x509_certificate(CA.read(acme.root))
    root_key = serialization.load_pem_private_key(CA.read(acme.root_key), None)
    from cryptography.hazmat.primitives.asymmetric import ec as ecalg
    tls_key = ecalg.generate_private_key(ecalg.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    tls = (x509.CertificateBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Acme TLS CA")]))
           .issuer_name(root.subject).public_key(tls_key.public_key())
           .serial_number(x509.random_serial_number())
           .not_valid_before(now - datetime.timedelta(days=1))
           .not_valid_after(now + datetime.timedelta(days=1))
           .add_extension(x509.BasicConstraints(True, 0), critical=True)
           .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
           .sign(root_key, hashes.SHA256()))
    tls_pem = tls.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "tls.pem").write_bytes(tls_pem)
    (tmp_path / "tls.key").write_bytes(tls_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    chain = tmp_path / "tls-chain.pem"
    chain.write_bytes(tls_pem + CA.read(acme.root))
    leaf = issue(tmp_path / "tls.pem", tmp_path / "tls.key", pubkey_pem(oci_token, "ec"),
                 str(tmp_path / "leaf.pem"))

    r = ocisign("import-cert", "--key", oci_token.uri("ec"), "--module", ocireg.SOFTHSM,
                "--cert", leaf, "--chain", chain, env=oci_token.env())
    assert_failed(r, "the CA certificate /CN=Acme TLS CA does not allow code signing")
    assert token_certs(oci_token) == []
    client = oci_registry.client()
    digest = client.push_image(REPO, tag="v1")
    image = "%s/%s:v1" % (oci_registry.host, REPO)
    sign = ["sign", "--key", oci_token.uri("ec"), "--module", ocireg.SOFTHSM, "--certificate",
            leaf]
    r = ocisign(*sign, "--certificate-chain", chain, *ocireg.PLAIN_HTTP, image,
                env=oci_token.env())
    assert_failed(r, "the CA certificate /CN=Acme TLS CA does not allow code signing")
    assert client.signatures(REPO, digest) == []
    # without a chain sign does not look at the issuer; verify does
    r = ocisign(*sign, *ocireg.PLAIN_HTTP, image, env=oci_token.env())
    assert r.rc == 0, r
    r = ocisign("verify", "--certificate-chain", chain, *ocireg.PLAIN_HTTP, image)
    assert_failed(r, "the CA certificate /CN=Acme TLS CA does not allow code signing")
    assert r.out == ""


def test_certificate_without_chain_annotation(oci_registry, oci_token, pki):
    """sign --certificate without a chain: cosign's empty chain annotation; the roots' file
    must then hold the intermediate."""
    acme, _ = pki
    image, digest, payload, leaf = signed_image(oci_registry, oci_token, acme, key="rsa",
                                                chain=False)
    _, man = sig_manifest(oci_registry.client(), digest)
    ann = man["layers"][0]["annotations"]
    assert list(ann) == [ANN_SIG, ANN_CERT, ANN_CHAIN]
    assert ann[ANN_CHAIN] == ""
    assert ann[ANN_CERT] == run(["openssl", "x509", "-in", leaf]).stdout
    r = ocisign("verify", "--certificate-chain", acme.root, *ocireg.PLAIN_HTTP, image)
    assert_failed(r, "does not chain to the trusted roots")
    r = ocisign("verify", "--certificate-chain", acme.chain, *ocireg.PLAIN_HTTP, image)
    assert r.rc == 0, r
    assert r.out == payload.decode() + "\n"


@pytest.mark.parametrize("key", ["rsa", "ed"])
def test_renewed_certificate_replaces_the_layer_of_an_identical_signature(
        oci_registry, oci_token, pki, tmp_path, key):
    """RSA PKCS#1 v1.5 and Ed25519 sign the same payload alike: signing again with a renewed
    certificate (same key, new serial and validity) gives the same signature, and its layer
    now carries the new certificate (ocisign used to say "already carries this signature" and
    keep the old one); signing once more with it changes nothing (attach.c)."""
    acme, _ = pki
    client = oci_registry.client()
    image, digest, payload, cert1 = signed_image(oci_registry, oci_token, acme, key=key)
    body1, man1 = sig_manifest(client, digest)
    assert len(man1["layers"]) == 1
    ann1 = man1["layers"][0]["annotations"]
    c1 = x509.load_pem_x509_certificate(CA.read(cert1))
    assert ann1[ANN_CERT] == go_pem(c1.public_bytes(serialization.Encoding.DER))
    cert2 = acme.issue(pubkey_pem(oci_token, key), str(tmp_path / "renewed.pem"), end=2)
    c2 = x509.load_pem_x509_certificate(CA.read(cert2))
    assert c2.serial_number != c1.serial_number
    assert c2.not_valid_after > c1.not_valid_after
    assert c2.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo) == \
        c1.public_key().public_bytes(serialization.Encoding.DER,
                                     serialization.PublicFormat.SubjectPublicKeyInfo)
    carries = "ocisign: %s/%s@%s already carries this signature" % (oci_registry.host, REPO,
                                                                     digest)

    def sign(cert):
        r = ocisign("sign", "--key", oci_token.uri(key), "--module", ocireg.SOFTHSM,
                    "--certificate", cert, "--certificate-chain", acme.chain,
                    *ocireg.PLAIN_HTTP, image, env=oci_token.env())
        assert r.rc == 0, r
        assert r.out == "%s/%s:%s\n" % (oci_registry.host, REPO, ocireg.sig_tag(digest)), r
        return r

    # the renewal: the layer of the same payload and signature now carries cert2
    r = sign(cert2)
    assert carries not in r.err, "the renewed certificate was not attached: %r" % r
    body2, man2 = sig_manifest(client, digest)
    assert len(man2["layers"]) == 1, man2
    layer = man2["layers"][0]
    assert layer["digest"] == man1["layers"][0]["digest"]
    ann = layer["annotations"]
    assert list(ann) == [ANN_SIG, ANN_CERT, ANN_CHAIN], ann
    assert ann[ANN_SIG] == ann1[ANN_SIG], "not the same signature: the test proves nothing"
    assert ann[ANN_CERT] == go_pem(c2.public_bytes(serialization.Encoding.DER)), (
        "the signature's layer still carries the old certificate (serial %x, not %x)"
        % (x509.load_pem_x509_certificate(ann[ANN_CERT].encode()).serial_number,
           c2.serial_number))
    assert ann[ANN_CHAIN] == CA.read(acme.chain).decode()
    assert client.signatures(REPO, digest) == [(payload, base64.b64decode(ann1[ANN_SIG]))]
    # the config lists the one layer
    config = json.loads(client.get_blob(REPO, man2["config"]["digest"]))
    assert config["rootfs"]["diff_ids"] == [layer["digest"]], config
    r = ocisign("verify", "--certificate-chain", acme.root, *ocireg.PLAIN_HTTP, image)
    assert r.rc == 0 and r.out == payload.decode() + "\n", r

    # the same certificate again: nothing to do
    r = sign(cert2)
    assert carries in r.err, r
    body3, _ = sig_manifest(client, digest)
    assert ocireg.sha256(body3) == ocireg.sha256(body2)


def test_verify_refusals(oci_registry, oci_token, pki):
    acme, other = pki
    image, digest, payload, leaf = signed_image(oci_registry, oci_token, acme, key="ed")

    def verify(*extra):
        return ocisign("verify", *extra, *ocireg.PLAIN_HTTP, image)

    # another root
    r = verify("--certificate-chain", other.root)
    assert_failed(r, "no signature of", "verifies with %s" % other.root, "does not chain")
    assert r.out == ""
    # a roots file with several roots: the one the chain ends in counts
    roots = os.path.join(acme.dir, "both-roots.pem")
    with open(roots, "wb") as f:
        f.write(CA.read(other.root) + CA.read(acme.root))
    r = verify("--certificate-chain", roots)
    assert r.rc == 0 and r.out == payload.decode() + "\n", r
    # identities: the SAN or the subject; anything else is refused, naming it
    for ok in (IDENTITY, SUBJECT):
        r = verify("--certificate-chain", acme.root, "--certificate-identity", ok)
        assert r.rc == 0 and r.out == payload.decode() + "\n", (ok, r)
    for wrong in ("someone@acme.example", "/CN=Release Signing", "release@acme.example.org",
                  "Release Signing"):
        r = verify("--certificate-chain", acme.root, "--certificate-identity", wrong)
        assert_failed(r, "is not for %s" % wrong)
        assert r.out == ""
    # a public key still verifies as before
    pub = ocireg.write_pubkey(oci_token, "ed", os.path.join(acme.dir, "ed.pub"))
    r = verify("--key", pub)
    assert r.rc == 0 and r.out == payload.decode() + "\n", r


def test_identity_as_the_subject_in_the_documented_comma_form(oci_registry, oci_token, pki):
    """`ocisign verify --help` and the README (subject /CN=Acme image signing/O=Acme) document
    the identity as the subject "/CN=../O=.. or CN=..,O=..": for the subject /CN=x/O=y that is
    "CN=x,O=y" (also what Go's pkix.Name.String(), so cosign, prints for it)."""
    acme, _ = pki
    image, digest, payload, leaf = signed_image(oci_registry, oci_token, acme, key="ec")
    r = ocisign("verify", "--certificate-chain", acme.root, "--certificate-identity",
                "CN=Release Signing,O=Acme", *ocireg.PLAIN_HTTP, image)
    assert r.rc == 0 and r.out == payload.decode() + "\n", (
        "the subject /CN=Release Signing/O=Acme is not accepted as the documented "
        "'CN=..,O=..' identity: %r" % r)
    # RFC 2253's own order (last attribute first) is taken too
    r = ocisign("verify", "--certificate-chain", acme.root, "--certificate-identity",
                "O=Acme,CN=Release Signing", *ocireg.PLAIN_HTTP, image)
    assert r.rc == 0, r


def test_empty_identity_refused(oci_registry, oci_token, pki):
    """--certificate-identity "" (an unset variable in a script) is a usage error, not an
    identity that some check could let through."""
    acme, _ = pki
    image, digest, payload, leaf = signed_image(oci_registry, oci_token, acme, key="ec")
    r = ocisign("verify", "--certificate-chain", acme.root, *ocireg.PLAIN_HTTP, image)
    assert r.rc == 0 and r.out == payload.decode() + "\n", r
    r = ocisign("verify", "--certificate-chain", acme.root, "--certificate-identity", "",
                *ocireg.PLAIN_HTTP, image)
    assert r.rc == 2, r
    assert "--certificate-identity is empty" in r.err, r
    assert r.out == "", r


def test_identity_is_the_whole_subject(oci_registry, oci_token, pki, tmp_path):
    """A subject longer than ocisign's 1024-byte one-line buffer once it is escaped (64 emoji
    of 4 bytes, each byte written \\xHH): the identity is matched against the whole subject,
    not the first attributes that fit ("/CN=release/O=Acme")."""
    acme, _ = pki
    ou = "\U0001F600" * 64
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "release"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme"),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou)])
    leaf = acme.issue(pubkey_pem(oci_token, "ec"), str(tmp_path / "long.pem"), subject=subject)
    assert x509.load_pem_x509_certificate(CA.read(leaf)).subject.rfc4514_string() == \
        "OU=%s,O=Acme,CN=release" % ou
    image, digest, payload, _ = signed_image(oci_registry, oci_token, acme, key="ec",
                                             certificate=leaf)

    def verify(identity):
        return ocisign("verify", "--certificate-chain", acme.root, "--certificate-identity",
                       identity, *ocireg.PLAIN_HTTP, image)

    r = verify("/CN=release/O=Acme")
    assert_failed(r, "is not for /CN=release/O=Acme")
    assert r.out == "", "a prefix of the subject taken as its identity: %r" % r
    r = verify("CN=release,O=Acme")
    assert_failed(r, "is not for CN=release,O=Acme")
    # the certificate's names are still its identities
    r = verify(IDENTITY)
    assert r.rc == 0 and r.out == payload.decode() + "\n", r
    r = verify("/CN=release/O=Acme/OU=" + "\\xF0\\x9F\\x98\\x80" * 64)
    assert r.rc == 0 and r.out == payload.decode() + "\n", r
    r = verify("CN=release,O=Acme,OU=" + ou)
    assert r.rc == 0 and r.out == payload.decode() + "\n", r


def test_tampered_annotations_do_not_verify(oci_registry, oci_token, pki, tmp_path):
    acme, other = pki
    image, digest, payload, leaf = signed_image(oci_registry, oci_token, acme, key="ec")
    client = oci_registry.client()
    _, man = sig_manifest(client, digest)
    r = ocisign("verify", "--certificate-chain", acme.root, *ocireg.PLAIN_HTTP, image)
    assert r.rc == 0, r

    def tampered(**ann):
        m = json.loads(json.dumps(man))
        m["layers"][0]["annotations"].update(ann)
        push_sig_manifest(client, digest, m)
        return ocisign("verify", "--certificate-chain", acme.root, *ocireg.PLAIN_HTTP, image)

    # another valid certificate of the same CA, for another token key, with the same identity
    rsa_cert = acme.issue(pubkey_pem(oci_token, "rsa"), str(tmp_path / "rsa.pem"))
    r = tampered(**{ANN_CERT: CA.read(rsa_cert).decode()})
    assert_failed(r, "does not verify with the certificate's key")
    assert r.out == ""
    # the signature altered (one bit of it)
    sig = bytearray(base64.b64decode(man["layers"][0]["annotations"][ANN_SIG]))
    sig[-3] ^= 0x40
    r = tampered(**{ANN_SIG: base64.b64encode(bytes(sig)).decode()})
    assert_failed(r, "does not verify with the certificate's key")
    # the chain swapped for another CA's: the certificate no longer chains to the root
    r = tampered(**{ANN_CHAIN: CA.read(other.chain).decode()})
    assert_failed(r, "does not chain to the trusted roots")
    # a certificate of another CA (with its chain) for the same key: not the trusted root
    other_leaf = other.issue(pubkey_pem(oci_token, "ec"), str(tmp_path / "other.pem"))
    r = tampered(**{ANN_CERT: CA.read(other_leaf).decode(),
                    ANN_CHAIN: CA.read(other.chain).decode()})
    assert_failed(r, "does not chain to the trusted roots")
    # an expired certificate of the same key and CA: chains are checked at the current time
    expired = acme.issue(pubkey_pem(oci_token, "ec"), str(tmp_path / "expired.pem"), start=-10,
                         end=-1)
    r = tampered(**{ANN_CERT: CA.read(expired).decode()})
    assert_failed(r, "certificate has expired")
    # no certificate at all
    m = json.loads(json.dumps(man))
    del m["layers"][0]["annotations"][ANN_CERT]
    push_sig_manifest(client, digest, m)
    r = ocisign("verify", "--certificate-chain", acme.root, *ocireg.PLAIN_HTTP, image)
    assert_failed(r, "no certificate is attached")
    # the original again: verifies
    push_sig_manifest(client, digest, man)
    r = ocisign("verify", "--certificate-chain", acme.root, *ocireg.PLAIN_HTTP, image)
    assert r.rc == 0 and r.out == payload.decode() + "\n", r


# ----------------------------------------------------------------- usage --

def test_usage_errors(oci_token, pki):
    acme, _ = pki
    uri = oci_token.uri("ec")
    image = "127.0.0.1:1/%s:v1" % REPO

    def usage(*args, needle):
        r = ocisign(*args, env=oci_token.env())
        assert r.rc == 2, r
        assert needle in r.err, r
        return r

    usage("verify", "--key", acme.root, "--certificate-chain", acme.root, image,
          needle="--certificate-chain")
    usage("verify", "--certificate-identity", IDENTITY, "--key", acme.root, image,
          needle="--certificate-identity goes with --certificate-chain")
    usage("sign", "--key", uri, "--certificate", acme.int, "--certificate-from-token", image,
          needle="not both")
    usage("sign", "--key", uri, "--certificate-chain", acme.chain, image,
          needle="--certificate-chain goes with")
    usage("csr", "--key", uri, needle="--subject")
    usage("import-cert", "--key", uri, needle="--cert FILE is required")
    r = ocisign("csr", "--key", uri, "--module", ocireg.SOFTHSM, "--subject", "CN=x",
                env=oci_token.env())
    assert r.rc in (1, 2), r
    assert "--subject" in r.err and "/TYPE=VALUE" in r.err, r
    assert r.out == ""
    r = ocisign("csr", "--key", uri, "--module", ocireg.SOFTHSM, "--subject", SUBJECT,
                "--san", "IP:127.0.0.1", env=oci_token.env())
    assert r.rc in (1, 2) and "DNS:NAME, email:ADDRESS or URI:URI" in r.err, r
    assert r.out == ""
