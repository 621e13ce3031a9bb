"""ocisign sign through p11gate.so with approvald: refused before approval,
attached after; one request covers an index and its children; the rule's
registries are enforced; the stored signatures verify with openssl."""

import hashlib
import os
import subprocess

import pytest

import p11g
import ocireg
from ocireg import REPO, ocisign  # REPO: test_sec_requests reads it here


def policy(registries):
    return {"default": "deny", "rules": [
        {"name": "images", "keys": ["pkcs11:token=ocisign"],
         "orderers": ["user:p11gt-orderer"], "approvers": ["group:p11gt-approvers"],
         "approvals": 1, "max_uses": 10, "max_validity": "1h", "registries": registries}]}


def gate_env(token, daemon):
    """ocisign loads p11gate.so (its default when --module is absent is the
    installed one; here the build's), which forwards to SoftHSM and asks the
    test daemon."""
    assert os.path.exists(ocireg.P11GATE_SO), "p11gate.so not built at %s" % ocireg.P11GATE_SO
    return dict(token.env(), OCISIGN_MODULE=ocireg.P11GATE_SO, P11GATE_MODULE=ocireg.SOFTHSM,
                P11GATE_SOCKET=daemon.sock, APPROVALD_SOCKET=daemon.sock)


def generate(registry, image, *extra):
    r = ocisign("generate", *ocireg.PLAIN_HTTP, *extra, image)
    assert r.rc == 0, r
    return r.out.encode()


def openssl_verify(pub, payload, sig, tmp_path, ed25519=False):
    p, s = tmp_path / "payload.json", tmp_path / "sig.bin"
    p.write_bytes(payload)
    s.write_bytes(sig)
    if ed25519:
        args = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", pub, "-rawin", "-in", str(p),
                "-sigfile", str(s)]
    else:
        args = ["openssl", "dgst", "-sha256", "-verify", pub, "-signature", str(s), str(p)]
    r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return r.returncode == 0 and "Verified" in r.stdout, r.stdout


def start_request(token, daemon, key, image, *extra):
    p = ocireg.ocisign_popen("sign", "--key", token.uri(key), "--request", *ocireg.PLAIN_HTTP,
                             *extra, image, user="orderer", env=gate_env(token, daemon))
    m = ocireg.wait_for_line(p.stderr, r"approval request (\d+) filed")
    return p, int(m.group(1))


def finish(p, timeout=60):
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


@pytest.mark.parametrize("key", ["ec", "rsa", "ed"])
def test_refused_before_approval_attached_after(start_daemon, oci_registry, oci_token, key,
                                                tmp_path):
    client = oci_registry.client()
    digest = client.push_image(REPO, tag="v1")
    image = "%s/%s:v1" % (oci_registry.host, REPO)
    d = start_daemon(policy=policy([oci_registry.host]))
    payload = generate(oci_registry, image)

    # No operation: p11gate.so refuses the signature, nothing is attached.
    r = ocisign("sign", "--key", oci_token.uri(key), *ocireg.PLAIN_HTTP, image, user="orderer",
                env=gate_env(oci_token, d))
    assert r.rc == 1, r
    assert "CKR_FUNCTION_REJECTED" in r.err and r.err_lines[-1].startswith("ocisign: "), r
    assert client.signatures(REPO, digest) == []

    # With --request: filed, pinned to sha256(payload), naming the image; waits.
    p, op_id = start_request(oci_token, d, key, image)
    with ocireg.killed_after(p):
        op = d.show(op_id)
        assert op["state"] == "pending"
        assert op["digests"] == ["sha256:" + hashlib.sha256(payload).hexdigest()]
        assert op["oci"] == {"registry": oci_registry.host, "repository": REPO,
                             "reference": "v1", "digest": digest}
        assert digest in op["description"] and REPO in op["description"]
        assert [k["uses"] for k in op["keys"]] == [1]
        assert p.poll() is None, "ocisign did not wait for the decision"
        assert client.signatures(REPO, digest) == []
        d.approve("alice", op_id)
        rc, out, err = finish(p)
    assert rc == 0, (out, err)
    assert out.strip() == "%s/%s:%s" % (oci_registry.host, REPO, ocireg.sig_tag(digest))
    assert d.state_of(op_id) == "exhausted"

    sigs = client.signatures(REPO, digest)
    assert len(sigs) == 1 and sigs[0][0] == payload
    pub = ocireg.write_pubkey(oci_token, key, str(tmp_path / "pub.pem"))
    ok, why = openssl_verify(pub, sigs[0][0], sigs[0][1], tmp_path, ed25519=key == "ed")
    assert ok, why
    r = ocisign("verify", "--key", pub, *ocireg.PLAIN_HTTP, image)
    assert r.rc == 0, r
    assert r.out == payload.decode() + "\n"


def test_rejected_request_signs_nothing(start_daemon, oci_registry, oci_token):
    client = oci_registry.client()
    digest = client.push_image(REPO, tag="v1")
    d = start_daemon(policy=policy([oci_registry.host]))
    p, op_id = start_request(oci_token, d, "ec", "%s/%s:v1" % (oci_registry.host, REPO))
    with ocireg.killed_after(p):
        p11g.expect_ok(d.cli("reject", op_id, "--reason", "not this build", user="alice"))
        rc, out, err = finish(p)
    assert rc == 1, (out, err)
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last.startswith("ocisign: operation %d was rejected" % op_id), err
    assert "not this build" in last
    assert client.signatures(REPO, digest) == []


def test_registry_outside_rule_is_refused(start_daemon, oci_registry, oci_token):
    client = oci_registry.client()
    digest = client.push_image(REPO, tag="v1")
    d = start_daemon(policy=policy(["registry.example.com"]))
    r = ocisign("sign", "--key", oci_token.uri("ec"), "--request", *ocireg.PLAIN_HTTP,
                "%s/%s:v1" % (oci_registry.host, REPO), user="orderer",
                env=gate_env(oci_token, d))
    assert r.rc == 1, r
    assert len(r.err_lines) == 1, r
    assert r.err_lines[0] == ("ocisign: approvald refused the request: rule images does not allow "
                              "signing images for registry %s (registry_not_allowed)"
                              % oci_registry.host), r
    assert d.list("--all", user="orderer") == []
    assert client.signatures(REPO, digest) == []


def test_recursive_index_one_request_every_child_signed(start_daemon, oci_registry, oci_token,
                                                        tmp_path):
    client = oci_registry.client()
    index, children = client.push_index(REPO, "multi", n=2)
    image = "%s/%s:multi" % (oci_registry.host, REPO)
    d = start_daemon(policy=policy([oci_registry.host]))
    p, op_id = start_request(oci_token, d, "ec", image, "--recursive")
    with ocireg.killed_after(p):
        op = d.show(op_id)
        assert [k["uses"] for k in op["keys"]] == [3]
        assert len(op["digests"]) == 3
        assert op["oci"]["digest"] == index
        d.approve("bob", op_id)
        rc, out, err = finish(p)
    assert rc == 0, (out, err)
    assert len(out.split()) == 3
    pub = ocireg.write_pubkey(oci_token, "ec", str(tmp_path / "pub.pem"))
    for dig in [index] + children:
        sigs = client.signatures(REPO, dig)
        assert len(sigs) == 1, dig
        assert ('"docker-manifest-digest":"%s"' % dig).encode() in sigs[0][0]
        assert ("sha256:" + hashlib.sha256(sigs[0][0]).hexdigest()) in op["digests"]
        r = ocisign("verify", "--key", pub, *ocireg.PLAIN_HTTP,
                    "%s/%s@%s" % (oci_registry.host, REPO, dig))
        assert r.rc == 0, r
