"""Security of requests (issue 16): a request URI is a pattern judged under exactly one rule,
an operation's key entry only ever spends for keys of the rule it was approved under, a key is
named once per request, a URI's query (pin-value) is never kept or shown, and a rule with
registries signs only the payloads approvald read itself.

The attack of finding 2: with a rule for unlabelled keys (`object=`, no approvals) and a rule
for a named key needing two approvers, `request --key pkcs11:token=T` was approved at once (the
missing label read as an empty one) and then let the named key sign (the URI matched it).
"""

import base64
import hashlib
import json
import os
import struct
import sys
import time

import lmdb
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import p11g  # noqa: E402
import test_ocisign_sign as ocisign_test  # noqa: E402
from p11g import ORDERERS, APPROVERS, expect_fail, expect_ok, wait_for  # noqa: E402
from test_module_gate import (DIGEST, GATE, PIN, SOFTHSM, TOKEN, Token, granted,  # noqa: E402
                              sh, uses_of)


def rule(name, keys, approvals=0, **extra):
    r = {"name": name, "keys": keys, "orderers": ORDERERS + ["uid:0"]}
    if approvals:
        r.update(approvers=APPROVERS, approvals=approvals)
    else:
        r["approvals"] = 0
    r.update(extra)
    return r


def attack_policy(token):
    """Finding 2's policy: unlabelled keys under a rule without approvals, named keys under
    rules that need two approvers."""
    return {"default": "deny", "rules": [
        rule("unlabelled", ["pkcs11:token=%s;object=" % token]),
        rule("fw", ["pkcs11:token=%s;object=fw-rsa" % token], approvals=2, max_uses=10)]}


def policy_loads(d):
    return sum(1 for r in d.audit() if r.get("event") == "policy_loaded")


def reload(d, pol):
    n0 = policy_loads(d)
    d.write_policy("10-test.json", pol)
    d.hup()
    assert wait_for(lambda: policy_loads(d) == n0 + 1, 3, 0.05), d.stderr()


def error_message(r):
    line = r.err_lines[-1]
    m = p11g.ERROR_LINE.match(line.strip())
    assert m, r
    return m.group(1)


# ---- finding 2: a request URI is no wildcard -------------------------------------------------

def test_request_that_could_name_keys_of_two_rules_is_refused_naming_them(start_daemon):
    d = start_daemon(attack_policy("T"))
    for uri in ("pkcs11:token=T", "pkcs11:token=T;id=%01", "pkcs11:token=T;type=private"):
        r = expect_fail(d.cli("request", "--key", uri, user="orderer"), "bad_request")
        msg = error_message(r)
        assert "rules unlabelled and fw" in msg, r
    # nothing was created, nothing was approved
    assert not any(rec["event"] in ("created", "approved") for rec in d.audit())
    # and through the wire, the same
    rep = d.call({"verb": "request", "keys": [{"uri": "pkcs11:token=T", "uses": 1}]},
                 user="orderer")
    err = p11g.assert_refused(rep, "bad_request")
    assert "unlabelled" in err["message"] and "fw" in err["message"], err


def test_empty_label_names_unlabelled_keys_only(start_daemon):
    d = start_daemon(attack_policy("T"))
    # object= is "the label is empty": judged under the unlabelled rule alone, approved at once
    op = d.request("orderer", ("pkcs11:token=T;object=", 5))
    o = d.show(op)
    assert o["state"] == "approved"
    assert [(k["uri"], k["rule"]) for k in o["keys"]] == [("pkcs11:token=T;object=", "unlabelled")]
    # the named key cannot sign with it, by any route: choosing, or naming the operation
    r = d.use_refused("orderer", "T", "fw-rsa", "no_operation")
    assert "no approved operation" in r["message"], r
    d.use_refused("orderer", "T", "fw-rsa", "no_operation", operation=op)
    # an unlabelled key can
    assert d.use_ok("orderer", "T", "", id_hex="07")["operation"] == op
    assert d.show(op)["keys"][0]["used"] == 1
    assert not [g for g in d.audit() if g["event"] == "use_granted" and "fw-rsa" in g["key"]]
    # the named key signs only through an operation its own rule approved
    fw = d.request("orderer", ("pkcs11:token=T;object=fw-rsa", 1))
    d.approve("alice", fw)
    d.use_refused("orderer", "T", "fw-rsa", "pending")
    d.approve("bob", fw)
    assert d.use_ok("orderer", "T", "fw-rsa")["operation"] == fw


def test_operation_never_spends_for_a_key_of_another_rule_after_a_reload(start_daemon):
    """An entry is bound to the rule it was approved under: after a policy change moves some of
    the keys its URI names to another rule, those keys do not sign with it."""
    d = start_daemon({"default": "deny", "rules": [
        rule("all", ["pkcs11:token=R"], approvals=1)]})
    op = d.request("orderer", ("pkcs11:token=R", 5))
    d.approve("alice", op)
    assert d.use_ok("orderer", "R", "a")["operation"] == op
    assert d.use_ok("orderer", "R", "b")["operation"] == op
    reload(d, {"default": "deny", "rules": [
        rule("all", ["pkcs11:token=R;object=a"], approvals=1),
        rule("fw", ["pkcs11:token=R;object=b"], approvals=2)]})
    r = d.use_refused("orderer", "R", "b", "no_operation")
    assert "operation %d was approved under rule all, but rule fw governs" % op in \
        r["message"], r
    d.use_refused("orderer", "R", "b", "no_operation", operation=op)
    # a key the rule still governs does
    assert d.use_ok("orderer", "R", "a")["operation"] == op
    # a key no rule governs now is denied by default, not spent from the operation
    d.use_refused("orderer", "R", "c", "denied_by_default")
    assert d.show(op)["keys"][0]["used"] == 3


def test_operation_never_spends_for_keys_its_rule_did_not_cover_when_approved(start_daemon):
    """A request judged under a rule for one key of a token (the only rule it could fall under)
    does not let other keys sign when that rule later grows to the whole token."""
    d = start_daemon({"default": "deny", "rules": [
        rule("r", ["pkcs11:token=G;object=a"], approvals=1)]})
    op = d.request("orderer", ("pkcs11:token=G", 3))
    d.approve("alice", op)
    d.use_refused("orderer", "G", "b", "denied_by_default")
    reload(d, {"default": "deny", "rules": [rule("r", ["pkcs11:token=G"], approvals=1)]})
    r = d.use_refused("orderer", "G", "b", "no_operation")
    assert "earlier version of rule r" in r["message"], r
    assert d.use_ok("orderer", "G", "a")["operation"] == op


# ---- finding 2 with real signatures --------------------------------------------------------

@pytest.fixture(params=["local", "isolated"])
def token(accounts, request):
    if not os.path.exists(GATE):
        pytest.fail("p11gate.so not built at %s" % GATE)
    t = Token(request.param)
    # a third key, without a label: what the `object=` rule is for
    sh(["pkcs11-tool", "--module", SOFTHSM, "--token-label", TOKEN, "--login", "--pin", PIN,
        "--keypairgen", "--key-type", "EC:prime256v1", "--id", "03"], t.env)
    yield t
    t.cleanup()


def test_attack_with_real_keys(token, start_daemon):
    d = token.start(start_daemon, {"default": "deny", "rules": [
        rule("unlabelled", ["pkcs11:token=%s;object=" % TOKEN]),
        rule("fw", ["pkcs11:token=%s;object=rsa" % TOKEN], approvals=2),
        rule("ec", ["pkcs11:token=%s;object=ec" % TOKEN], approvals=2)]})
    env = token.gate_env(d)
    r = expect_fail(d.cli("request", "--key", "pkcs11:token=%s" % TOKEN), "bad_request")
    assert "rules unlabelled, fw and ec" in error_message(r), r

    op = d.request("root", ("pkcs11:token=%s;object=" % TOKEN, 3))
    assert d.state_of(op) == "approved"
    # the RSA key, whose rule needs two approvers, does not sign
    out = token.pk11("sign", env, label="rsa", mech="CKM_SHA256_RSA_PKCS", data="00")
    assert out["results"][0]["steps"][-1] == ["C_Sign", "CKR_FUNCTION_REJECTED"], out
    assert out["results"][0]["signature"] is None
    assert "(no_operation)" in token.refusals(out["stderr"])[-1]
    # the unlabelled key signs, from the operation
    out = token.pk11("sign", env, label="", mech="CKM_ECDSA", data=DIGEST.hex())
    assert out["results"][0]["signature"], out
    assert uses_of(d, op) == 1
    g = granted(d)
    assert len(g) == 1 and g[0]["op"] == op and "object=;" in g[0]["key"], g
    assert not [x for x in g if "object=rsa" in x["key"]]


def test_on_demand_request_names_an_unlabelled_key_exactly(token, start_daemon):
    """The module files a request for the key being used with the URI that names that key
    (object= for no label): judged under the key's own rule, beside a rule for a named key on
    the same token."""
    if token.mode != "local":
        pytest.skip("on-demand requests are set in the local deployment's p11gate.conf")
    d = token.start(start_daemon, {"default": "deny", "rules": [
        rule("unlabelled", ["pkcs11:token=%s;object=" % TOKEN], approvals=1),
        rule("fw", ["pkcs11:token=%s;object=rsa" % TOKEN], approvals=2)]})
    env = token.gate_env(d)
    with open(env["P11GATE_CONF"], "a") as f:
        f.write("wait = 1\n")
    out = token.pk11("sign", env, label="", mech="CKM_ECDSA", data=DIGEST.hex())
    assert out["results"][0]["steps"][-1] == ["C_Sign", "CKR_FUNCTION_REJECTED"], out
    ops = d.list("--all")
    assert len(ops) == 1, (ops, out["stderr"])
    [k] = ops[0]["keys"]
    assert k["rule"] == "unlabelled" and k["uri"].endswith(";object=;id=%03"), k
    assert k["uri"].startswith("pkcs11:token=%s;manufacturer=" % TOKEN), k


# ---- finding 11: a key is named once per request ---------------------------------------------

PROD = "pkcs11:token=prod;object=%s"


@pytest.mark.parametrize("second", [
    "pkcs11:token=prod;object=dup",          # the same text
    "pkcs11:object=dup;token=prod",          # the same key, spelled otherwise
    "pkcs11:token=prod;object=dup;id=%01",   # a narrower name of a key it names
    "pkcs11:token=prod;id=%01",              # could be the same key
])
def test_key_named_twice_is_refused(daemon, second):
    r = expect_fail(daemon.cli("request", "--key", PROD % "dup", "--uses", "10",
                               "--key", second, "--uses", "10", user="orderer"), "bad_request")
    assert "could name the same key as pkcs11:token=prod;object=dup" in error_message(r), r
    assert not any(rec["event"] == "created" for rec in daemon.audit())


def test_one_count_per_key_up_to_max_uses(daemon):
    # prod allows 10 uses: 20 in one entry is over it, and there is no second entry to add
    expect_fail(daemon.cli("request", "--key", PROD % "many", "--uses", "20", user="orderer"),
                "limit_exceeded")
    op = daemon.request("orderer", (PROD % "k1", 2), (PROD % "k2", 1))
    o = daemon.show(op)
    assert [(k["uri"], k["uses"], k["used"]) for k in o["keys"]] == \
        [(PROD % "k1", 2, 0), (PROD % "k2", 1, 0)]
    daemon.approve("alice", op)
    daemon.approve("bob", op)
    # what was shown is what is enforced
    assert daemon.use_ok("orderer", "prod", "k1")["remaining"] == 1
    assert daemon.use_ok("orderer", "prod", "k1")["remaining"] == 0
    daemon.use_refused("orderer", "prod", "k1", "exhausted")
    assert daemon.use_ok("orderer", "prod", "k2")["remaining"] == 0
    daemon.use_refused("orderer", "prod", "k2", "exhausted")
    assert [(k["uses"], k["used"]) for k in daemon.show(op)["keys"]] == [(2, 2), (1, 1)]


def edit_op(d, op_id, fn):
    """With the daemon stopped, edits operation op_id as stored (an operation written by an
    approvald before the check), then starts it again.  As an older approvald wrote it: no
    record of its state (audit_seq, terms_seq), and among the operations the store held when
    this version first opened it (meta legacy_ops_through), so approvald records its state
    at start."""
    assert d.stop() == 0
    env = lmdb.open(d.state, max_dbs=16, map_size=1 << 30)
    try:
        ops = env.open_db(b"ops", create=False)
        meta = env.open_db(b"meta", create=False)
        with env.begin(write=True) as txn:
            key = struct.pack(">Q", op_id)
            op = json.loads(txn.get(key, db=ops))
            fn(op)
            op.pop("audit_seq", None)
            op.pop("terms_seq", None)
            txn.put(key, json.dumps(op).encode(), db=ops)
            txn.put(b"legacy_ops_through", str(op_id).encode(), db=meta)
    finally:
        env.close()
    d.start()


def test_an_older_operation_naming_a_key_twice_grants_what_it_shows(start_daemon):
    d = start_daemon()
    op = d.request("orderer", (PROD % "old", 2))
    edit_op(d, op, lambda o: o["keys"].append(dict(o["keys"][0],
                                                   uri="pkcs11:object=old;token=prod")))
    d.approve("alice", op)
    d.approve("bob", op)
    assert [(k["uses"], k["used"]) for k in d.show(op)["keys"]] == [(2, 0), (2, 0)]
    for left in (1, 0, 1, 0):
        assert d.use_ok("orderer", "prod", "old") == {"operation": op, "remaining": left}
    d.use_refused("orderer", "prod", "old", "exhausted")
    o = d.show(op)
    assert [(k["uses"], k["used"]) for k in o["keys"]] == [(2, 2), (2, 2)]
    assert o["state"] == "exhausted"


# ---- finding 6: a URI's query is never kept or shown ------------------------------------------

SECRET = "s3cretPIN-p11gt"

def test_query_is_dropped_before_storing_and_showing(daemon):
    op = daemon.request("orderer", (PROD % "pq" + "?pin-value=" + SECRET, 2),
                        ("pkcs11:token=dev;object=pq?module-path=/x-mod.so&pin-value=" + SECRET,
                         1))
    o = daemon.show(op)
    assert [k["uri"] for k in o["keys"]] == [PROD % "pq", "pkcs11:token=dev;object=pq"]
    daemon.approve("alice", op)
    daemon.approve("bob", op)
    daemon.use_ok("orderer", "prod", "pq")
    outputs = [
        expect_ok(daemon.cli("show", op, "--json")).out,
        expect_ok(daemon.cli("show", op)).out,
        expect_ok(daemon.cli("list", "--all", "--json")).out,
        expect_ok(daemon.cli("list", "--all")).out,
        expect_ok(daemon.cli("audit", "--json")).out,
        expect_ok(daemon.cli("audit")).out,
        json.dumps(p11g.assert_reply_ok(daemon.call({"verb": "show", "id": op}))),
    ]
    for text in outputs:
        assert "object=pq" in text, text
        for secret in ("pin-value", SECRET, "module-path", "x-mod.so"):
            assert secret not in text, (secret, text)


def test_query_is_not_quoted_in_refusals(daemon):
    for uri, code, user in (("pkcs11:token=nowhere;object=x", "no_rule", "orderer"),
                            ("pkcs11:token=prod;object=a%zz", "bad_request", "orderer"),
                            ("pkcs11:object=q", "bad_request", "orderer"),  # every rule
                            ("pkcs11:token=prod;object=q", "not_orderer", "mallory"),
                            ("pkcs11:token=prod;object=q", "limit_exceeded", "orderer")):
        extra = ["--uses", "11"] if code == "limit_exceeded" else []
        r = expect_fail(daemon.cli("request", "--key", uri + "?pin-value=" + SECRET, *extra,
                                   user=user), code)
        assert "pin-value" not in r.err and SECRET not in r.err, r
    assert SECRET not in json.dumps(daemon.audit())


# ---- finding 7: a rule with registries signs only payloads approvald read ----------------------

OCI_KEY = "pkcs11:token=oci;object=img"
IMAGE_DIGEST = "sha256:" + "ab" * 32


def oci_policy(registries=("ghcr.io",)):
    return {"default": "deny", "rules": [
        rule("images", [OCI_KEY], approvals=1, registries=list(registries)),
        rule("auto-images", ["pkcs11:token=oci;object=auto"], registries=list(registries)),
        rule("plain", ["pkcs11:token=plain"])]}


def payload(ref="ghcr.io/org/app", digest=IMAGE_DIGEST, optional=None, **critical):
    crit = {"identity": {"docker-reference": ref}, "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature"}
    crit.update(critical)
    return json.dumps({"critical": crit, "optional": optional},
                      separators=(",", ":")).encode()


def b64(data):
    return base64.b64encode(data).decode()


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def oci_request(d, payloads=None, key=OCI_KEY, uses=1, **extra):
    req = {"verb": "request", "keys": [{"uri": key, "uses": uses}], "description": "image"}
    if payloads is not None:
        req["payloads"] = [p if isinstance(p, str) else b64(p) for p in payloads]
    req.update(extra)
    return d.call(req, user="orderer")


def test_registries_rule_refuses_a_request_without_payloads(start_daemon):
    d = start_daemon(oci_policy())
    p = payload()
    # what ocisign sent before: digests and a description of the image, no payload
    for extra in ({}, {"digests": [sha(p)]},
                  {"digests": [sha(p)], "oci": {"registry": "ghcr.io", "repository": "org/app",
                                                "reference": "v1", "digest": IMAGE_DIGEST}}):
        err = p11g.assert_refused(oci_request(d, **extra), "bad_request")
        assert ("rule images signs only image payloads and certificate requests approvald "
                "reads" in err["message"]), err
    # a key without registries needs none, and a description without its payloads is refused
    p11g.assert_reply_ok(oci_request(d, key="pkcs11:token=plain;object=x"))
    err = p11g.assert_refused(oci_request(d, key="pkcs11:token=plain;object=y", oci={
        "registry": "ghcr.io", "repository": "org/app", "digest": IMAGE_DIGEST}), "bad_request")
    assert "payloads" in err["message"]
    assert [r["event"] for r in d.audit() if r["event"] == "created"] == ["created"]


def csr_tbs(cn):
    """The DER CertificationRequestInfo of a request for a fresh P-256 key (what ocisign csr
    gives approvald)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    k = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
           .add_extension(x509.SubjectAlternativeName([x509.RFC822Name("ci@acme.example")]),
                          critical=False)
           .sign(k, hashes.SHA256()))
    return csr.tbs_certrequest_bytes


def test_certificate_request_payload_is_read_or_refused(start_daemon):
    """A certificate request is shown as approvald reads it, pinned to its sha256 even under a
    rule with registries; bytes that only look like one are refused, and so is a digest that
    is not the request's."""
    d = start_daemon(oci_policy())
    tbs = csr_tbs("<script>release</script>")
    r = p11g.assert_reply_ok(oci_request(d, payloads=[tbs], name="CSR for x"))
    op = d.show(r["id"])
    assert op["digests"] == [sha(tbs)]
    csr = {"subject": "/CN=<script>release<\\/script>", "key": "EC P-256",
           "names": ["email:ci@acme.example"]}
    assert op["images"] == [{"csr": csr, "payload_digest": sha(tbs)}], op
    # shown escaped: approvald show prints the subject it read, the terminal gets no raw byte
    out = p11g.expect_ok(d.cli("show", r["id"], user="alice")).out
    # (X509_NAME_oneline writes "\\/" for a slash in a value; the CLI escapes the backslash)
    assert "certificate request (PKCS#10): /CN=<script>release<\\\\/script>" in out, out
    for bad, why in ((b"0\x03\x02\x01\x00", "CertificationRequestInfo"),
                     (tbs + b"\x00", "CertificationRequestInfo"),
                     (tbs[:-1], "CertificationRequestInfo"),
                     (b"0\x81" + tbs[1:2] + tbs[2:], "DER")):
        err = p11g.assert_refused(oci_request(d, payloads=[bad]), "bad_request")
        assert "payloads[0]" in err["message"] and why in err["message"], (bad, err)
    err = p11g.assert_refused(oci_request(d, payloads=[tbs], digests=[sha(b"other")]),
                              "bad_request")
    assert "not the digest of a payload given" in err["message"], err


def test_auto_approve_does_not_approve_a_certificate_request(start_daemon):
    """auto_approve lets an orderer past the approvers for images; a certificate request waits
    for them.  A rule without approvers needs none, for either."""
    pol = oci_policy()
    pol["rules"].append(rule("auto-approved", ["pkcs11:token=oci;object=aa"], approvals=1,
                             registries=["ghcr.io"], auto_approve=["user:p11gt-orderer"]))
    d = start_daemon(pol)
    tbs = csr_tbs("release")
    aa = "pkcs11:token=oci;object=aa"
    img = p11g.assert_reply_ok(oci_request(d, payloads=[payload()], key=aa))
    assert img["state"] == "approved", img
    csr = p11g.assert_reply_ok(oci_request(d, payloads=[tbs], key=aa))
    assert csr["state"] == "pending", csr
    assert d.state_of(csr["id"]) == "pending"
    free = p11g.assert_reply_ok(oci_request(d, payloads=[tbs],
                                            key="pkcs11:token=oci;object=auto"))
    assert free["state"] == "approved", free


@pytest.mark.parametrize("ref", ["evil.io/x", "ghcr.io.evil.io/org/app", "ghcr.io:443/org/app",
                                 "GHCR.io/org/app"])
def test_payload_for_another_registry_is_refused(start_daemon, ref):
    d = start_daemon(oci_policy())
    p = payload(ref=ref)
    host = ref.split("/")[0]
    for extra in ({}, {"oci": {"registry": "ghcr.io", "repository": "org/app",
                               "digest": IMAGE_DIGEST}}):
        err = p11g.assert_refused(oci_request(d, [p], digests=[sha(p)], **extra),
                                  "registry_not_allowed")
        assert err["message"] == ("rule images does not allow signing images for registry %s"
                                  % host), err
    # one good payload does not carry a bad one
    err = p11g.assert_refused(oci_request(d, [payload(), p], uses=2), "registry_not_allowed")
    assert not any(r["event"] == "created" for r in d.audit())


def test_payload_digest_is_pinned_and_nothing_else_signs(start_daemon):
    d = start_daemon(oci_policy())
    p, other = payload(), payload(digest="sha256:" + "cd" * 32)
    # the digests come from the payloads: one the request names besides them is refused
    err = p11g.assert_refused(oci_request(d, [p], digests=[sha(p), sha(other)]), "bad_request")
    assert "is not the digest of a payload given" in err["message"], err
    # so is a description of another image
    for oci in ({"registry": "ghcr.io", "repository": "org/app", "digest": "sha256:" + "cd" * 32},
                {"registry": "ghcr.io", "repository": "org/other", "digest": IMAGE_DIGEST},
                {"registry": "docker.io", "repository": "org/app", "digest": IMAGE_DIGEST},
                {"registry": "ghcr.io", "repository": "org/app", "digest": IMAGE_DIGEST,
                 "reference": "v1\u001b[2K"},
                {"registry": "ghcr.io", "repository": "org/app", "digest": IMAGE_DIGEST,
                 "extra": 1}):
        p11g.assert_refused(oci_request(d, [p], oci=oci), "bad_request")

    res = p11g.assert_reply_ok(oci_request(d, [p, p], uses=2, oci={
        "registry": "ghcr.io", "repository": "org/app", "reference": "v1",
        "digest": IMAGE_DIGEST}))
    op = res["id"]
    o = d.show(op)
    assert o["digests"] == [sha(p)]
    assert o["images"] == [{"reference": "ghcr.io/org/app", "digest": IMAGE_DIGEST,
                            "payload_digest": sha(p)}] * 2
    created = [r for r in d.audit() if r["event"] == "created"]
    assert created[-1]["images"] == o["images"] and created[-1]["digests"] == [sha(p)]
    # a person sees the image approvald read from the payload, not the requester's words
    shown = d.cli("show", str(op))
    assert shown.rc == 0, shown
    assert "  image:       ghcr.io/org/app@%s\n    payload:   %s\n" % (IMAGE_DIGEST, sha(p)) \
        in shown.out, shown.out
    assert "as the requester says" not in shown.out
    d.approve("alice", op)
    # the digest of another payload, or any other, does not sign
    d.use_refused("orderer", "oci", "img", "digest_mismatch", dig=sha(other))
    d.use_refused("orderer", "oci", "img", "digest_mismatch", dig=p11g.digest("x"))
    assert d.use_ok("orderer", "oci", "img", dig=sha(p)) == {"operation": op, "remaining": 1}


BAD_PAYLOADS = {
    "not base64": "!!!!",
    "base64 with a newline": b64(payload())[:8] + "\n" + b64(payload())[8:],
    "unpadded base64": next(b64(p).rstrip("=") for p in (
        payload(ref="ghcr.io/org/" + "a" * n) for n in (1, 2, 3)) if len(p) % 3),
    "not JSON": b64(b"{\"critical\":"),
    "duplicate member": b64(payload()[:-1] + b",\"optional\":null}"),
    "another type": payload(type="cosign container image signature v2"),
    "more in critical": payload(extra="x"),
    "no optional": b64(json.dumps({"critical": json.loads(payload())["critical"]}).encode()),
    "a reference without a registry": payload(ref="app"),
    "a reference with a tag": payload(ref="ghcr.io/org/app@sha256:" + "ab" * 32),
    "an upper-case digest": payload(digest="sha256:" + "AB" * 32),
    "a short digest": payload(digest="sha256:abcd"),
    "an escape in an annotation": payload(optional={"note": "ok\u001b[2K"}),
    "an annotation that is no string": payload(optional={"n": 1}),
    "too big": b64(payload(optional={"pad": "x" * 20000})),
}


@pytest.mark.parametrize("name", sorted(BAD_PAYLOADS))
def test_malformed_payload_is_refused(start_daemon, name):
    d = start_daemon(oci_policy())
    err = p11g.assert_refused(oci_request(d, [BAD_PAYLOADS[name]]), "bad_request")
    # (a newline is refused before, as text no request may hold)
    assert err["message"].startswith(("payloads[0]: ", '"payloads[0]" holds')), err
    assert not any(r["event"] == "created" for r in d.audit())


def test_annotations_are_shown(start_daemon):
    d = start_daemon(oci_policy())
    p = payload(optional={"build": "1234", "git": "abc"})
    op = p11g.assert_reply_ok(oci_request(d, [p]))["id"]
    assert d.show(op)["images"][0]["annotations"] == {"build": "1234", "git": "abc"}
    # and on the approver's screen, every one, sorted, under the image they are signed with
    out = d.cli("show", str(op))
    assert out.rc == 0, out
    assert "    signed annotations:\n      build = 1234\n      git = abc\n" in out.out, out.out


def test_no_implicit_use_for_a_registries_rule(start_daemon):
    d = start_daemon(oci_policy())
    p = payload()
    # no approvals needed, but still no signature without the payload it is for
    d.use_refused("orderer", "oci", "auto", "no_operation", dig=sha(p))
    op = p11g.assert_reply_ok(oci_request(d, [p], key="pkcs11:token=oci;object=auto"))["id"]
    assert d.state_of(op) == "approved"
    d.use_refused("orderer", "oci", "auto", "digest_mismatch", dig=p11g.digest("y"))
    assert d.use_ok("orderer", "oci", "auto", dig=sha(p))["operation"] == op


def test_operation_without_payloads_does_not_sign_for_a_registries_rule(start_daemon):
    """An operation approved before its rule named registries, or stored by an approvald before
    the check with requester-chosen digests, signs nothing for such a rule."""
    d = start_daemon({"default": "deny", "rules": [rule("images", [OCI_KEY], approvals=1)]})
    dig = p11g.digest("claimed")
    op = d.request("orderer", (OCI_KEY, 2), digests=[dig])
    d.approve("alice", op)
    assert d.use_ok("orderer", "oci", "img", dig=dig)["operation"] == op
    reload(d, oci_policy())
    r = d.use_refused("orderer", "oci", "img", "registry_not_allowed", dig=dig)
    assert "holds no payload with digest %s" % dig in r["message"], r

    # stored as before: the snapshot names registries, the operation has no images
    p = payload()
    op2 = p11g.assert_reply_ok(oci_request(d, [p], uses=2))["id"]
    d.approve("alice", op2)
    edit_op(d, op2, lambda o: o.pop("images"))
    d.use_refused("orderer", "oci", "img", "registry_not_allowed", dig=sha(p))
    # or images of a registry the rule names no longer
    op3 = p11g.assert_reply_ok(oci_request(d, [p], uses=2))["id"]
    d.approve("alice", op3)
    reload(d, oci_policy(registries=["quay.io"]))
    d.use_refused("orderer", "oci", "img", "registry_not_allowed", dig=sha(p))


def test_ocisign_request_sends_the_payload_it_signs(start_daemon, oci_registry, oci_token):
    """ocisign sign --request: approvald reads the very payload ocisign then signs; approvers see
    the image from it."""
    client = oci_registry.client()
    digest = client.push_image(ocisign_test.REPO, tag="v1")
    image = "%s/%s:v1" % (oci_registry.host, ocisign_test.REPO)
    d = start_daemon(ocisign_test.policy([oci_registry.host]))
    p, op = ocisign_test.start_request(oci_token, d, "ec", image)
    try:
        o = d.show(op)
        payload = ocisign_test.generate(oci_registry, image)
        assert o["images"] == [{"reference": "%s/%s" % (oci_registry.host, ocisign_test.REPO),
                                "digest": digest, "payload_digest": sha(payload)}]
        assert o["digests"] == [sha(payload)]
        d.approve("alice", op)
        rc, out, err = ocisign_test.finish(p)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert rc == 0, (out, err)
    sigs = client.signatures(ocisign_test.REPO, digest)
    assert len(sigs) == 1 and sigs[0][0] == payload
    assert d.state_of(op) == "exhausted"


# ---- issue 24: OpenPGP signatures' hashed data, read by approvald ------------------------------

FPR = bytes(range(1, 21))
ATOMIC = "atomic container signature"


def atomic_claim(ref="ghcr.io/org/app:v1", digest=IMAGE_DIGEST, optional=None, **critical):
    """containers/image's claim, as ocisign sign --format simple-signing writes it."""
    crit = {"identity": {"docker-reference": ref}, "image": {"docker-manifest-digest": digest},
            "type": ATOMIC}
    crit.update(critical)
    opt = {"creator": "ocisign (p11gate) test", "timestamp": 1700000000} \
        if optional is None else optional
    return json.dumps({"critical": crit, "optional": opt}, separators=(",", ":")).encode()


def subpacket(kind, data):
    return bytes([len(data) + 1, kind]) + data


def pgp_hashed(signed, sigtype=0x00, algo=19, hash_algo=8, subpackets=None, when=None,
               fpr=FPR):
    """What a v4 signature hashes: the signed bytes, its hashed fields, the trailer."""
    if subpackets is None:
        subpackets = (subpacket(2, struct.pack(">I", int(time.time()) if when is None else when))
                      + subpacket(33, b"\x04" + fpr))
    fields = bytes([4, sigtype, algo, hash_algo]) + struct.pack(">H", len(subpackets)) \
        + subpackets
    return signed + fields + b"\x04\xff" + struct.pack(">I", len(fields))


def pgp_digest(hashed, algo=19, hash_algo=8):
    """The digest p11gate.so binds the token's signature to (EdDSA: SHA-256 of the hash)."""
    h = (hashlib.sha384 if hash_algo == 9 else hashlib.sha256)(hashed).digest()
    if algo == 22:
        return "sha256:" + hashlib.sha256(h).hexdigest()
    return ("sha384:" if hash_algo == 9 else "sha256:") + h.hex()


def ec_key_packet(created=1700000000, spki=None):
    """A v4 ECDSA P-256 public key packet's body, and its fingerprint (with spki a list: the
    SHA-256 of the key's SubjectPublicKeyInfo is appended to it, as p11gate.so names a key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    pub = ec.generate_private_key(ec.SECP256R1()).public_key()
    point = pub.public_bytes(serialization.Encoding.X962,
                             serialization.PublicFormat.UncompressedPoint)
    if spki is not None:
        spki.append(hashlib.sha256(pub.public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest())
    oid = bytes.fromhex("2a8648ce3d030107")
    body = (b"\x04" + struct.pack(">I", created) + b"\x13" + bytes([len(oid)]) + oid
            + struct.pack(">H", 515) + point)
    return body, hashlib.sha1(b"\x99" + struct.pack(">H", len(body)) + body).digest()


def certification(uid, key=None, signer_fpr=None, when=None):
    body, fpr = key or ec_key_packet()
    signed = b"\x99" + struct.pack(">H", len(body)) + body + b"\xb4" \
        + struct.pack(">I", len(uid)) + uid
    subs = (subpacket(2, struct.pack(">I", int(time.time()) if when is None else when))
            + subpacket(33, b"\x04" + (signer_fpr or fpr)) + subpacket(27, b"\x03"))
    return pgp_hashed(signed, sigtype=0x13, subpackets=subs), fpr


def test_openpgp_claim_is_read_pinned_and_shown(start_daemon):
    """A simple-signing signature's hashed data: approvald reads the claim in it (the image as
    pulled, its digest, the signer's fingerprint), pins the digest the gate will bind, and
    shows that; for EdDSA the digest is the SHA-256 of the hash, for SHA-384 a sha384."""
    d = start_daemon(oci_policy())
    claim = atomic_claim()
    h = pgp_hashed(claim)
    r = p11g.assert_reply_ok(oci_request(d, payloads=[h], oci={
        "registry": "ghcr.io", "repository": "org/app", "reference": "v1",
        "digest": IMAGE_DIGEST}))
    op = d.show(r["id"])
    assert op["digests"] == [pgp_digest(h)], op
    assert op["images"] == [{"reference": "ghcr.io/org/app", "identity": "ghcr.io/org/app:v1",
                             "digest": IMAGE_DIGEST, "payload_digest": pgp_digest(h),
                             "format": "simple-signing", "openpgp_key": FPR.hex().upper(),
                             "annotations": {"creator": "ocisign (p11gate) test",
                                             "timestamp": "1700000000"}}], op
    out = p11g.expect_ok(d.cli("show", r["id"], user="alice")).out
    assert ("  image:       ghcr.io/org/app:v1@%s  (simple signing, OpenPGP key %s)\n"
            % (IMAGE_DIGEST, FPR.hex().upper())) in out, out
    # the signature's digest signs, no other (the claim's sha256 is not it)
    d.approve("alice", r["id"])
    d.use_refused("orderer", "oci", "img", "digest_mismatch", dig=sha(claim))
    assert d.use_ok("orderer", "oci", "img", dig=pgp_digest(h))["operation"] == r["id"]

    # an image named by digest: the claim names it so, as containers/image writes it
    h = pgp_hashed(atomic_claim("ghcr.io/org/app@" + IMAGE_DIGEST))
    op = d.show(p11g.assert_reply_ok(oci_request(d, payloads=[h]))["id"])
    assert [(i["reference"], i["identity"]) for i in op["images"]] == [
        ("ghcr.io/org/app", "ghcr.io/org/app@" + IMAGE_DIGEST)], op
    # or by both, which containers/image matches exactly
    h = pgp_hashed(atomic_claim("ghcr.io/org/app:v1@" + IMAGE_DIGEST))
    op = d.show(p11g.assert_reply_ok(oci_request(d, payloads=[h]))["id"])
    assert op["images"][0]["identity"] == "ghcr.io/org/app:v1@" + IMAGE_DIGEST, op

    for algo, hash_algo in ((22, 8), (19, 9), (1, 9)):
        h = pgp_hashed(atomic_claim(), algo=algo, hash_algo=hash_algo)
        op = d.show(p11g.assert_reply_ok(oci_request(d, payloads=[h]))["id"])
        assert op["digests"] == [pgp_digest(h, algo, hash_algo)], (algo, hash_algo, op)


def test_openpgp_claim_for_another_registry_is_refused(start_daemon):
    d = start_daemon(oci_policy())
    for ref in ("evil.io/org/app:v1", "ghcr.io.evil.io/org/app:v1",
                "docker.io/org/app@" + IMAGE_DIGEST):
        err = p11g.assert_refused(oci_request(d, payloads=[pgp_hashed(atomic_claim(ref))]),
                                  "registry_not_allowed")
        assert "for registry %s" % ref.split("/")[0] in err["message"], err
    assert not any(r["event"] == "created" for r in d.audit())


BAD_PGP = {
    "a cosign claim": pgp_hashed(atomic_claim(type="cosign container image signature")),
    "more in critical": pgp_hashed(atomic_claim(extra="x")),
    "another digest in the reference": pgp_hashed(atomic_claim(
        "ghcr.io/org/app@sha256:" + "cd" * 32)),
    "a name alone": pgp_hashed(atomic_claim("ghcr.io/org/app")),
    "an escape in the tag": pgp_hashed(atomic_claim("ghcr.io/org/app:v1\u001b[2K")),
    "no registry": pgp_hashed(atomic_claim("app:v1")),
    "a first component that is no registry": pgp_hashed(atomic_claim("ghcr/org/app:v1")),
    "a path component ..": pgp_hashed(atomic_claim("ghcr.io/org/../app:v1")),
    "an upper-case repository": pgp_hashed(atomic_claim("ghcr.io/Org/app:v1")),
    "a tag starting with -": pgp_hashed(atomic_claim("ghcr.io/org/app:-x")),
    "an empty tag": pgp_hashed(atomic_claim("ghcr.io/org/app:")),
    "another optional member": pgp_hashed(atomic_claim(optional={"note": "x"})),
    "an escape in the creator": pgp_hashed(atomic_claim(optional={"creator": "a\u001b[2K"})),
    "a timestamp that is text": pgp_hashed(atomic_claim(optional={"timestamp": "1"})),
    "not JSON": pgp_hashed(b"{\"critical\":"),
    "a notation subpacket": pgp_hashed(atomic_claim(), subpackets=(
        subpacket(2, struct.pack(">I", 1700000000)) + subpacket(33, b"\x04" + FPR)
        + subpacket(20, b"\x80\x00\x00\x00\x00\x01\x00\x01ab"))),
    "key flags on a document": pgp_hashed(atomic_claim(), subpackets=(
        subpacket(2, struct.pack(">I", 1700000000)) + subpacket(33, b"\x04" + FPR)
        + subpacket(27, b"\x03"))),
    "a text signature": pgp_hashed(atomic_claim(), sigtype=0x01),
    "SHA-1": pgp_hashed(atomic_claim(), hash_algo=2),
    "DSA": pgp_hashed(atomic_claim(), algo=17),
    "made in the future": pgp_hashed(atomic_claim(), when=int(time.time()) + 3600),
    "a certification by another key": certification(b"a <a@b.example>", signer_fpr=FPR)[0],
    "a certification older than its key": certification(b"a <a@b.example>", when=1600000000)[0],
    "an escape in a user ID": certification(b"a\x1b[2K <a@b.example>")[0],
}


@pytest.mark.parametrize("name", sorted(BAD_PGP))
def test_malformed_openpgp_payload_is_refused(start_daemon, name):
    d = start_daemon(oci_policy())
    err = p11g.assert_refused(oci_request(d, [BAD_PGP[name]]), "bad_request")
    assert err["message"].startswith("payloads[0]: "), err
    assert not any(r["event"] == "created" for r in d.audit())


def test_openpgp_certification_is_read_and_never_auto_approved(start_daemon):
    """A user ID certification binds a name to the key: shown as approvald read it, signed
    under a rule with registries (they limit images), never auto-approved."""
    pol = oci_policy()
    pol["rules"].append(rule("auto-approved", ["pkcs11:token=oci;object=aa"], approvals=1,
                             registries=["ghcr.io"], auto_approve=["user:p11gt-orderer"]))
    d = start_daemon(pol)
    uid = "<script>Release</script> <release@acme.example>"
    spki = []
    h, fpr = certification(uid.encode(), key=ec_key_packet(spki=spki))
    r = p11g.assert_reply_ok(oci_request(d, payloads=[h]))
    op = d.show(r["id"])
    assert op["digests"] == [pgp_digest(h)]
    assert op["images"] == [{"openpgp_certification": {
        "user_id": uid, "fingerprint": fpr.hex().upper(), "key": "ECDSA P-256",
        "created": "2023-11-14T22:13:20Z"}, "payload_digest": pgp_digest(h),
        "key_fingerprint": spki[0]}], op
    out = p11g.expect_ok(d.cli("show", r["id"], user="alice")).out
    assert '  OpenPGP certification: user ID "%s"\n' % uid in out, out
    assert "    key:       ECDSA P-256 %s, created 2023-11-14T22:13:20Z\n" % fpr.hex().upper() \
        in out, out
    aa = p11g.assert_reply_ok(oci_request(d, payloads=[h], key="pkcs11:token=oci;object=aa"))
    assert aa["state"] == "pending", aa
    img = p11g.assert_reply_ok(oci_request(d, payloads=[pgp_hashed(atomic_claim())],
                                           key="pkcs11:token=oci;object=aa"))
    assert img["state"] == "approved", img

    # only the key certified signs its certification: another key of the rule, or one the
    # gate could not name, is refused with the operation's digest
    d.approve("alice", r["id"])
    use = {"verb": "use", "mechanism": "CKM_ECDSA", "digest": pgp_digest(h),
           "key": dict(p11g.keyid("oci", "img"), fingerprint="ab" * 32)}
    err = p11g.assert_refused(d.call(use, user="orderer"), "digest_mismatch")
    assert "certification of another key" in err["message"], err
    del use["key"]["fingerprint"]
    p11g.assert_refused(d.call(use, user="orderer"), "digest_mismatch")
    use["key"]["fingerprint"] = spki[0]
    assert p11g.assert_reply_ok(d.call(use, user="orderer"))["operation"] == r["id"]
