"""Pipeline identity (issue 19): a rule with "claims" takes requests only with a valid ID token
from its issuer whose claims match.  A test issuer: keys made here, the key set in a file
(jwks_file), tokens shaped like GitHub Actions' signed here with python3-cryptography."""

import base64
import json
import os
import pathlib
import re
import shutil
import tempfile
import time

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

import p11g
from p11g import U

ISS = "https://token.actions.githubusercontent.com"
AUD = "p11gate"
KEY = "pkcs11:token=ci;object=release"


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def b64int(n, size=None):
    return b64(n.to_bytes(size or (n.bit_length() + 7) // 8, "big"))


class Issuer:
    def __init__(self):
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.n = 0

    def jwks(self):
        rn = self.rsa.public_key().public_numbers()
        en = self.ec.public_key().public_numbers()
        return {"keys": [
            {"kty": "RSA", "kid": "r1", "use": "sig", "alg": "RS256", "n": b64int(rn.n),
             "e": b64int(rn.e)},
            {"kty": "EC", "kid": "e1", "crv": "P-256", "x": b64int(en.x, 32),
             "y": b64int(en.y, 32)}]}

    def claims(self, **over):
        self.n += 1
        now = int(time.time())
        c = {"iss": ISS, "aud": AUD, "sub": "repo:acme/app:ref:refs/tags/v1.0",
             "jti": "jti-%d-%d" % (os.getpid(), self.n), "iat": now - 5, "nbf": now - 5,
             "exp": now + 300, "repository": "acme/app", "ref": "refs/tags/v1.0",
             "actor": "octocat", "workflow_ref": "acme/app/.github/workflows/rel.yml@v1.0"}
        c.update(over)
        return {k: v for k, v in c.items() if v is not None}

    def token(self, claims=None, header=None, key="rsa", secret=None):
        h = header or {"alg": "RS256" if key == "rsa" else "ES256", "typ": "JWT",
                       "kid": "r1" if key == "rsa" else "e1"}
        signing = (b64(json.dumps(h).encode()) + "." +
                   b64(json.dumps(claims or self.claims()).encode())).encode()
        if secret is not None:
            import hmac
            sig = hmac.new(secret, signing, "sha256").digest()
        elif key == "rsa":
            sig = self.rsa.sign(signing, padding.PKCS1v15(), hashes.SHA256())
        elif key == "ec":
            r, s = decode_dss_signature(self.ec.sign(signing, ec.ECDSA(hashes.SHA256())))
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        else:
            sig = b""
        return signing.decode() + "." + b64(sig)


@pytest.fixture
def issuer():
    return Issuer()


@pytest.fixture
def token_dir():
    """Where the test users read their tokens (pytest's tmp_path is root's alone)."""
    d = tempfile.mkdtemp(prefix="p11gt-tok-")
    os.chmod(d, 0o755)
    yield pathlib.Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def ci(start_daemon, issuer, token_dir):
    tmp_path = token_dir
    jwks = tmp_path / "gh.jwks"
    jwks.write_text(json.dumps(issuer.jwks()))
    policy = p11g.default_policy()
    policy["issuers"] = [{"name": "gh", "issuer": ISS, "audience": AUD,
                          "jwks_file": str(jwks), "show": ["repository", "ref", "actor"]}]
    policy["rules"].append({"name": "release", "keys": ["pkcs11:token=ci"],
                            "orderers": p11g.ORDERERS, "approvers": p11g.APPROVERS,
                            "approvals": 1,
                            "claims": {"issuer": "gh", "match": {"repository": "acme/*",
                                                                  "ref": "refs/tags/v*"}}})
    d = start_daemon(policy)
    d.token_dir = tmp_path
    return d


def request(d, token, user="orderer"):
    path = d.token_dir / ("t-%d" % time.monotonic_ns())
    args = ["--key", KEY, "--description", "release"]
    if token is not None:
        path.write_text(token + "\n")
        os.chmod(path, 0o644)
        args += ["--id-token", str(path)]
    return d.cli("request", *args, user=U(user))


def count(d):
    return len([r for r in d.audit() if r["event"] == "created"])


def test_a_valid_token_whose_claims_match_files_the_request(ci, issuer):
    tok = issuer.token()
    r = p11g.expect_ok(request(ci, tok))
    op = int(r.out.strip())
    assert ci.state_of(op) == "pending"
    # an EC key of the same issuer too
    p11g.expect_ok(request(ci, issuer.token(key="ec")))
    # the token itself is kept nowhere
    for root, _, files in os.walk(ci.state):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                assert tok.encode() not in fh.read(), f
    assert tok not in ci.stderr()


@pytest.mark.parametrize("what", [
    "none", "expired", "not_yet", "aud", "iss", "repository", "branch", "alg_none", "hs256",
    "rs_on_ec", "unknown_kid", "bad_sig", "garbage", "truncated", "oversized"])
def test_bad_tokens_are_refused_and_nothing_is_recorded(ci, issuer, what):
    before = count(ci)
    now = int(time.time())
    pem = issuer.rsa.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    good = issuer.token()
    tok, code = {
        "none": (None, "token_required"),
        "expired": (issuer.token(issuer.claims(exp=now - 600)), "token_invalid"),
        "not_yet": (issuer.token(issuer.claims(nbf=now + 600)), "token_invalid"),
        "aud": (issuer.token(issuer.claims(aud="other")), "token_invalid"),
        "iss": (issuer.token(issuer.claims(iss="https://gitlab.com")), "token_invalid"),
        "repository": (issuer.token(issuer.claims(repository="evil/app")), "claims_mismatch"),
        "branch": (issuer.token(issuer.claims(ref="refs/heads/main")), "claims_mismatch"),
        "alg_none": (issuer.token(header={"alg": "none", "kid": "r1"}, key=None),
                     "token_invalid"),
        "hs256": (issuer.token(header={"alg": "HS256", "kid": "r1"}, secret=pem),
                  "token_invalid"),
        "rs_on_ec": (issuer.token(header={"alg": "RS256", "kid": "e1"}), "token_invalid"),
        "unknown_kid": (issuer.token(header={"alg": "RS256", "kid": "r9"}), "token_invalid"),
        "bad_sig": (good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
                    "token_invalid"),
        "garbage": ("not a token at all", "token_invalid"),
        "truncated": (good[:len(good) // 2], "token_invalid"),
        "oversized": (good + "A" * (16385 - len(good)), "token_invalid"),
    }[what]
    if what == "oversized":
        # the CLI reads no more than 16 KiB; approvald refuses more on the wire too
        r = request(ci, tok)
        assert r.rc == 2 and "longer than 16 KiB" in r.err, r
        rep = ci.call({"verb": "request", "keys": [{"uri": KEY}], "id_token": tok},
                      user=U("orderer"))
        p11g.assert_refused(rep, code)
    else:
        p11g.expect_fail(request(ci, tok), code)
    assert count(ci) == before


def test_a_token_is_good_for_one_request(ci, issuer):
    tok = issuer.token()
    p11g.expect_ok(request(ci, tok))
    p11g.expect_fail(request(ci, tok), "token_invalid")
    p11g.expect_fail(request(ci, tok, user="ci"), "token_invalid")


def test_keys_without_claims_need_no_token(ci):
    op = ci.request("orderer", "pkcs11:token=dev;object=x")
    assert ci.state_of(op) == "approved"


def test_a_policy_with_a_bad_key_file_does_not_load(issuer, tmp_path):
    bad = tmp_path / "bad.jwks"
    bad.write_text('{"keys": [{"kty": "EC", "crv": "P-256", "x": "f8=3", "y": "AAAA"}]}')
    policy = {"default": "deny", "rules": [], "issuers": [
        {"name": "gh", "issuer": ISS, "audience": AUD, "jwks_file": str(bad)}]}
    d = p11g.Daemon(policy)
    try:
        with pytest.raises(AssertionError) as e:
            d.start(timeout=10)
        assert "issuer \"gh\": jwks_file" in str(e.value) and "base64url" in str(e.value)
    finally:
        d.kill()
        d.cleanup()


# ---- the identity kept with the operation, shown to approvers, and judged ---------------------

ACTOR_KEY = "pkcs11:token=ci2;object=release"


@pytest.fixture
def ci2(start_daemon, issuer, token_dir):
    """Two rules: "release" (claims matched) and "guarded" (the actor may not approve)."""
    jwks = token_dir / "gh.jwks"
    jwks.write_text(json.dumps(issuer.jwks()))
    policy = p11g.default_policy()
    policy["issuers"] = [{"name": "gh", "issuer": ISS, "audience": AUD,
                          "jwks_file": str(jwks), "show": ["repository", "ref", "run_id"]}]
    match = {"repository": "acme/*", "ref": "refs/tags/v*"}
    policy["rules"] += [
        {"name": "release", "keys": ["pkcs11:token=ci"], "orderers": p11g.ORDERERS,
         "approvers": p11g.APPROVERS, "approvals": 1,
         "claims": {"issuer": "gh", "match": match}},
        {"name": "guarded", "keys": ["pkcs11:token=ci2"], "orderers": p11g.ORDERERS,
         "approvers": p11g.APPROVERS, "approvals": 1,
         "claims": {"issuer": "gh", "match": match}, "actor_claim": "actor"}]
    d = start_daemon(policy)
    d.token_dir = token_dir
    return d


def request_key(d, key, token, user="orderer"):
    path = d.token_dir / ("t-%d" % time.monotonic_ns())
    path.write_text(token + "\n")
    os.chmod(path, 0o644)
    return d.cli("request", "--key", key, "--description", "release v1.0", "--id-token",
                 str(path), user=U(user))


def test_the_identity_is_kept_shown_and_audited(ci2, issuer):
    d = ci2
    tok = issuer.token(issuer.claims(run_id=4242, secret_claim="not for approvers"))
    op = int(p11g.expect_ok(request_key(d, KEY, tok)).out)
    shown = d.show(op)
    ident = shown["identity"]
    assert ident["issuer"] == "gh" and ident["iss"] == ISS
    assert ident["subject"] == "repo:acme/app:ref:refs/tags/v1.0"
    assert ident["jti"].startswith("jti-") and set(ident) == {"issuer", "iss", "subject", "jti",
                                                               "claims"}, ident
    # the issuer's "show" and the rule's matched claims; nothing else of the token
    assert ident["claims"] == {"repository": "acme/app", "ref": "refs/tags/v1.0",
                               "run_id": 4242}, ident
    text = p11g.expect_ok(d.cli("show", str(op), user=U("alice"))).out
    assert "pipeline:    repo:acme/app:ref:refs/tags/v1.0 (issuer gh, verified ID token)" \
        in text, text
    assert re.search(r"^    repository +acme/app$", text, re.M), text
    assert re.search(r"^    run_id +4242$", text, re.M), text
    assert "secret_claim" not in text and "jti" not in text
    table = p11g.expect_ok(d.cli("list", user=U("alice"))).out
    assert "[pipeline repo:acme/app:ref:refs/tags/v1.0] release v1.0" in table, table
    created = [r for r in d.audit() if r["event"] == "created" and p11g.op_of(r) == op]
    assert created and created[0]["identity"] == ident, created
    p11g.expect_ok(d.cli("audit", "--verify", user="root"))


def test_hostile_claim_values_reach_no_terminal(ci2, issuer):
    d = ci2
    evil = "acme/app\x1b]0;owned\x07\x1b[2J\u202e"
    tok = issuer.token(issuer.claims(repository=evil, sub="repo:" + evil))
    op = int(p11g.expect_ok(request_key(d, KEY, tok)).out)
    for args in (("show", str(op)), ("list",)):
        out = p11g.expect_ok(d.cli(*args, user=U("alice"))).out
        assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out, out
        assert "\\x1b" in out or "\\e" in out or "\\u001b" in out.lower() or "\\033" in out, out


def test_an_edited_identity_in_the_store_is_named(ci2, issuer):
    from test_audit_state import edit_op
    d = ci2
    op = int(p11g.expect_ok(request_key(d, KEY, issuer.token())).out)
    edit_op(d.state, op, lambda o: o["identity"]["claims"].__setitem__("repository",
                                                                         "acme/other"))
    r = d.cli("audit", "--verify", user="root")
    assert r.rc == 1 and "operation %d: identity is" % op in r.err, r
    p11g.expect_fail(d.cli("approve", str(op), "--yes", user=U("alice")), "audit_broken")


def test_the_actor_may_not_approve_the_release(ci2, issuer):
    d = ci2
    # the token's actor is alice (as CI systems compare logins: without case)
    tok = issuer.token(issuer.claims(actor=U("alice").upper()))
    op = int(p11g.expect_ok(request_key(d, ACTOR_KEY, tok)).out)
    r = d.cli("approve", str(op), "--yes", user=U("alice"))
    p11g.expect_fail(r, "self_approval")
    assert 'claim "actor"' in r.err, r
    assert d.state_of(op) == "pending"
    p11g.expect_ok(d.cli("approve", str(op), "--yes", user=U("bob")))
    assert d.state_of(op) == "approved"
    # the actor may still reject (stopping one's own release is no risk); here: another one
    op2 = int(p11g.expect_ok(request_key(d, ACTOR_KEY, issuer.token(
        issuer.claims(actor=U("alice"))))).out)
    p11g.expect_ok(d.cli("reject", str(op2), "--reason", "not now", user=U("alice")))


def test_a_token_without_the_actor_claim_is_refused_for_an_actor_rule(ci2, issuer):
    d = ci2
    before = count(d)
    r = request_key(d, ACTOR_KEY, issuer.token(issuer.claims(actor=None)))
    p11g.expect_fail(r, "claims_mismatch")
    assert '"actor"' in r.err, r
    r = request_key(d, ACTOR_KEY, issuer.token(issuer.claims(actor=["a", "b"])))
    p11g.expect_fail(r, "claims_mismatch")
    assert count(d) == before
    # the other rule asks for no actor
    p11g.expect_ok(request_key(d, KEY, issuer.token(issuer.claims(actor=None))))


def test_a_used_token_stays_used_across_a_restart(ci2, issuer):
    d = ci2
    tok = issuer.token()
    p11g.expect_ok(request_key(d, KEY, tok))
    assert d.stop() == 0
    d.start()
    p11g.expect_fail(request_key(d, KEY, tok), "token_invalid")
    # a new token of the same pipeline is fine
    p11g.expect_ok(request_key(d, KEY, issuer.token()))


# ---- key sets fetched from a jwks_url over verified TLS -------------------------------------

class JwksServer:
    """An issuer's key set over HTTPS on 127.0.0.1, its certificate from a test CA.  mode:
    "ok", "500", "garbage", "oversized", "http_redirect"; hits counts the GETs."""

    def __init__(self, dir, issuer):
        import http.server
        import ssl
        import threading
        from ocireg import _self_signed, _pem_cert, _pem_key, free_port
        self.issuer, self.mode, self.hits, self.doc = issuer, "ok", 0, issuer.jwks()
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _self_signed("p11gate test CA", ca_key, is_ca=True)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _self_signed("127.0.0.1", key, ca=ca, ca_key=ca_key, san_ip="127.0.0.1")
        self.ca_file = str(dir / "jwks-ca.pem")
        (dir / "jwks-ca.pem").write_bytes(_pem_cert(ca))
        (dir / "jwks-srv.pem").write_bytes(_pem_cert(cert) + _pem_key(key))
        os.chmod(self.ca_file, 0o644)
        srv = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                srv.hits += 1
                body, code, extra = json.dumps(srv.doc).encode(), 200, {}
                if srv.mode == "500":
                    code, body = 500, b"oops"
                elif srv.mode == "garbage":
                    body = b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'
                elif srv.mode == "oversized":
                    body = b'{"keys": [], "pad": "' + b"A" * 70000 + b'"}'
                elif srv.mode == "http_redirect":
                    code, body = 302, b""
                    extra = {"Location": "http://127.0.0.1:%d/jwks" % srv.port}
                self.send_response(code)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.port = free_port()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), H)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(dir / "jwks-srv.pem"))
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "https://127.0.0.1:%d/jwks" % self.port

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def jwks_server(issuer, token_dir):
    s = JwksServer(token_dir, issuer)
    yield s
    s.close()


def url_policy(url, ca_file):
    policy = p11g.default_policy()
    iss = {"name": "gh", "issuer": ISS, "audience": AUD, "jwks_url": url,
           "show": ["repository"]}
    if ca_file:
        iss["jwks_ca_file"] = ca_file
    policy["issuers"] = [iss]
    policy["rules"].append({"name": "release", "keys": ["pkcs11:token=ci"],
                            "orderers": p11g.ORDERERS, "approvers": p11g.APPROVERS,
                            "approvals": 1,
                            "claims": {"issuer": "gh", "match": {"repository": "acme/*"}}})
    return policy


def key_set(d):
    sets = d.status().get("key_sets", [])
    assert len(sets) == 1, sets
    return sets[0]


def wait_fetched(d, pred=lambda ks: ks["keys"] > 0 and not ks["fetching"], timeout=15):
    p11g.wait_for(lambda: pred(key_set(d)), timeout)
    return key_set(d)


GAP = 2  # approvald.conf jwks_refetch in these tests (10 s by default)


@pytest.fixture
def url_daemon(start_daemon, jwks_server, token_dir):
    d = start_daemon(url_policy(jwks_server.url, jwks_server.ca_file),
                     config={"jwks_refetch": "%ds" % GAP})
    d.token_dir = token_dir
    return d


def test_keys_come_from_the_jwks_url_over_verified_tls(url_daemon, jwks_server, issuer):
    d = url_daemon
    ks = wait_fetched(d)
    assert ks["keys"] == 2 and ks["error"] == "" and ks["url"] == jwks_server.url, ks
    assert jwks_server.hits == 1
    p11g.expect_ok(request(d, issuer.token()))
    p11g.expect_ok(request(d, issuer.token(key="ec")))
    text = p11g.expect_ok(d.cli("status")).out
    assert re.search(r"key set: +%s: 2 keys, fetched " % re.escape(jwks_server.url), text), text
    # a reload keeps the keys (no fetch needed to verify)
    d.hup()
    assert p11g.wait_for(lambda: "policy unchanged" in d.stderr(), 5), d.stderr()
    p11g.expect_ok(request(d, issuer.token()))
    assert jwks_server.hits == 1


def test_rotated_keys_are_fetched_on_an_unknown_kid_at_most_once_a_gap(url_daemon, jwks_server,
                                                                      issuer):
    d = url_daemon
    wait_fetched(d)
    old_token = issuer.token()  # signed with r1, valid until approvald drops r1
    # the issuer rotates: a new RSA key under kid r2, the old one r1 dropped
    new = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    n = new.public_key().public_numbers()
    jwks_server.doc = {"keys": [k for k in jwks_server.doc["keys"] if k["kid"] != "r1"] + [
        {"kty": "RSA", "kid": "r2", "alg": "RS256", "n": b64int(n.n), "e": b64int(n.e)}]}
    old_rsa, issuer.rsa = issuer.rsa, new

    def tok():
        return issuer.token(header={"alg": "RS256", "typ": "JWT", "kid": "r2"})

    time.sleep(GAP + 0.2)  # the start's fetch was less than a gap ago
    hits = jwks_server.hits
    r = request(d, tok())
    p11g.expect_fail(r, "token_invalid")
    assert "ask again in a few seconds" in r.err, r
    wait_fetched(d, lambda ks: ks["keys"] == 2 and not ks["fetching"] and ks["error"] == "")
    assert jwks_server.hits == hits + 1
    p11g.expect_ok(request(d, tok()))
    # the dropped key verifies nothing any more
    r = request(d, old_token)
    p11g.expect_fail(r, "token_invalid")
    assert '"r1"' in r.err or "r1" in r.err, r
    # a flood of tokens naming unknown kids fetches at most once a gap
    hits, n, t0 = jwks_server.hits, 0, time.monotonic()
    while time.monotonic() - t0 < 3 * GAP:
        p11g.expect_fail(request(d, issuer.token(header={"alg": "RS256", "kid": "x%d" % n})),
                         "token_invalid")
        n += 1
    wait_fetched(d, lambda ks: not ks["fetching"])
    fetched = jwks_server.hits - hits
    assert n >= 8 and 1 <= fetched <= 4, (n, fetched)
    issuer.rsa = old_rsa


@pytest.mark.parametrize("mode,why", [
    ("500", "500"), ("garbage", "private member"), ("oversized", "longer than 65536"),
    ("http_redirect", "protocol")])
def test_a_failed_fetch_keeps_the_last_good_keys(url_daemon, jwks_server, issuer, mode, why):
    d = url_daemon
    wait_fetched(d)
    jwks_server.mode = mode
    time.sleep(GAP + 0.2)
    p11g.expect_fail(request(d, issuer.token(header={"alg": "RS256", "kid": "nope"})),
                     "token_invalid")
    ks = wait_fetched(d, lambda ks: ks["error"] != "" and not ks["fetching"])
    assert ks["keys"] == 2 and why.lower() in ks["error"].lower(), ks
    assert "keys fetched" in d.stderr() and "stay in use" in d.stderr()
    p11g.expect_ok(request(d, issuer.token()))


def test_an_unreachable_or_untrusted_issuer_still_loads_and_refuses_its_tokens(
        start_daemon, jwks_server, token_dir, issuer):
    from ocireg import free_port
    # nothing listens there
    d = start_daemon(url_policy("https://127.0.0.1:%d/jwks" % free_port(), None),
                     config={"jwks_refetch": "%ds" % GAP})
    d.token_dir = token_dir
    ks = wait_fetched(d, lambda ks: ks["error"] != "" and not ks["fetching"])
    assert ks["keys"] == 0 and ks["fetched"] == 0, ks
    r = request(d, issuer.token())
    p11g.expect_fail(r, "token_invalid")
    assert "no keys of issuer gh yet" in r.err, r
    # other keys are served as ever
    assert d.state_of(d.request("orderer", "pkcs11:token=dev;object=x")) == "approved"
    d.stop()
    # a server whose certificate the system's CAs do not vouch for
    d = start_daemon(url_policy(jwks_server.url, None), config={"jwks_refetch": "%ds" % GAP})
    d.token_dir = token_dir
    ks = wait_fetched(d, lambda ks: ks["error"] != "" and not ks["fetching"])
    assert ks["keys"] == 0 and ks["fetched"] == 0, ks
    assert jwks_server.hits == 0  # TLS failed before any request was sent
    # why, as logged (a retry may end otherwise when the server drops the refused connection)
    assert "certificate" in d.stderr().lower(), d.stderr()
    p11g.expect_fail(request(d, issuer.token()), "token_invalid")


# ---- a GitLab-shaped token -----------------------------------------------------------------

GL = "https://gitlab.example.com"


def gitlab_claims(issuer, **over):
    issuer.n += 1
    now = int(time.time())
    c = {"iss": GL, "aud": AUD, "sub": "project_path:acme/firmware:ref_type:tag:ref:v2.1",
         "jti": "gl-%d-%d" % (os.getpid(), issuer.n), "iat": now - 5, "nbf": now - 5,
         "exp": now + 300, "namespace_id": "12", "namespace_path": "acme",
         "project_id": "345", "project_path": "acme/firmware", "user_id": "7",
         "user_login": U("carol"), "user_email": "carol@example.com", "pipeline_id": "98765",
         "pipeline_source": "push", "job_id": "1212", "ref": "v2.1", "ref_type": "tag",
         "ref_protected": "true", "runner_id": 3, "runner_environment": "self-hosted"}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def test_a_gitlab_token_its_claims_and_its_user_login(start_daemon, issuer, token_dir):
    jwks = token_dir / "gl.jwks"
    jwks.write_text(json.dumps(issuer.jwks()))
    policy = p11g.default_policy()
    policy["issuers"] = [{"name": "gitlab", "issuer": GL, "audience": AUD,
                          "jwks_file": str(jwks),
                          "show": ["project_path", "ref", "pipeline_id", "user_login"]}]
    policy["rules"].append({
        "name": "firmware", "keys": ["pkcs11:token=fw"], "orderers": p11g.ORDERERS,
        "approvers": ["group:p11gt-approvers", "user:p11gt-carol"], "approvals": 1,
        "claims": {"issuer": "gitlab", "match": {"project_path": "acme/firmware",
                                                 "ref_protected": "true"}},
        "actor_claim": "user_login"})
    d = start_daemon(policy)
    d.token_dir = token_dir
    key = "pkcs11:token=fw;object=release"
    tok = issuer.token(gitlab_claims(issuer), key="ec",
                       header={"alg": "ES256", "typ": "JWT", "kid": "e1"})
    op = int(p11g.expect_ok(request_key(d, key, tok)).out)
    ident = d.show(op)["identity"]
    assert ident["issuer"] == "gitlab" and ident["subject"].startswith("project_path:"), ident
    assert ident["claims"] == {"project_path": "acme/firmware", "ref": "v2.1",
                               "pipeline_id": "98765", "user_login": U("carol"),
                               "ref_protected": "true"}, ident
    # who pushed may not approve; another approver may
    p11g.expect_fail(d.cli("approve", str(op), "--yes", user=U("carol")), "self_approval")
    p11g.expect_ok(d.cli("approve", str(op), "--yes", user=U("bob")))
    # an unprotected ref, another project
    for over in ({"ref_protected": "false"}, {"project_path": "acme/firmware-fork"}):
        r = request_key(d, key, issuer.token(gitlab_claims(issuer, **over), key="ec",
                                             header={"alg": "ES256", "kid": "e1"}))
        p11g.expect_fail(r, "claims_mismatch")
        assert list(over)[0] in r.err, r


# ---- no signature of a rule with claims without a pipeline's request ------------------------

def claims_rule(name, token, **extra):
    r = {"name": name, "keys": ["pkcs11:token=%s" % token], "orderers": p11g.ORDERERS,
         "claims": {"issuer": "gh", "match": {"repository": "acme/*"}}}
    r.update(extra)
    return r


def test_no_implicit_use_under_a_rule_with_claims(start_daemon, issuer, token_dir):
    """A rule needing no approvals (or auto-approving the signer) gives a signer without an
    operation an implicit one: not when the rule asks who orders."""
    jwks = token_dir / "gh.jwks"
    jwks.write_text(json.dumps(issuer.jwks()))
    policy = p11g.default_policy()
    policy["issuers"] = [{"name": "gh", "issuer": ISS, "audience": AUD,
                          "jwks_file": str(jwks)}]
    policy["rules"] += [claims_rule("noapprovals", "ci0", approvals=0),
                        claims_rule("autoci", "ci1", approvers=p11g.APPROVERS, approvals=1,
                                    auto_approve=["user:p11gt-orderer"])]
    d = start_daemon(policy)
    d.token_dir = token_dir
    for tokname in ("ci0", "ci1"):
        d.use_refused(U("orderer"), tokname, "k", "no_operation")
        # with the pipeline's request: approved at once, then the use
        op = int(p11g.expect_ok(request_key(d, "pkcs11:token=%s;object=k" % tokname,
                                            issuer.token())).out)
        assert d.state_of(op) == "approved"
        d.use_ok(U("orderer"), tokname, "k")
    assert not [r for r in d.audit() if r["event"] == "use_granted" and
                r.get("implicit")], "an implicit use was granted"


def test_an_operation_filed_before_the_rule_asked_who_orders_signs_no_more(
        start_daemon, issuer, token_dir):
    jwks = token_dir / "gh.jwks"
    jwks.write_text(json.dumps(issuer.jwks()))
    policy = p11g.default_policy()
    policy["issuers"] = [{"name": "gh", "issuer": ISS, "audience": AUD,
                          "jwks_file": str(jwks)}]
    plain = {"name": "late", "keys": ["pkcs11:token=late"], "orderers": p11g.ORDERERS,
             "approvers": p11g.APPROVERS, "approvals": 1}
    policy["rules"].append(plain)
    d = start_daemon(policy)
    d.token_dir = token_dir
    op = d.request("orderer", ("pkcs11:token=late;object=k", 5))
    d.approve("alice", op)
    d.use_ok(U("orderer"), "late", "k", dig=p11g.digest("late-1"))
    # the rule now asks for the pipeline: the old operation has none to show
    policy["rules"][-1] = dict(plain, claims={"issuer": "gh",
                                              "match": {"repository": "acme/*"}})
    d.write_policy("10-test.json", policy)
    d.hup()
    assert p11g.wait_for(lambda: "policy reloaded" in d.stderr(), 5), d.stderr()
    rep = d.use(U("orderer"), "late", "k", dig=p11g.digest("late-2"))
    p11g.assert_refused(rep, "claims_mismatch")
    assert "does not show the pipeline rule late now asks for" in json.dumps(rep), rep
    # one filed with the pipeline's token signs
    new = int(p11g.expect_ok(request_key(d, "pkcs11:token=late;object=k",
                                         issuer.token())).out)
    d.approve("alice", new)
    d.use_ok(U("orderer"), "late", "k", dig=p11g.digest("late-3"))
    # and a rule tightened further refuses it too (its kept claims no longer match)
    policy["rules"][-1]["claims"]["match"] = {"repository": "acme/other"}
    d.write_policy("10-test.json", policy)
    d.hup()
    assert p11g.wait_for(lambda: d.stderr().count("policy reloaded") >= 2, 5), d.stderr()
    p11g.assert_refused(d.use(U("orderer"), "late", "k", dig=p11g.digest("late-4")),
                        "claims_mismatch")
