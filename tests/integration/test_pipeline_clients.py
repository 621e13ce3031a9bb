"""Pipeline identity (issue 19) through the clients that sign: `ocisign sign --request` passes
the pipeline's ID token on (--id-token, or $APPROVALD_ID_TOKEN_FILE) and names its request
after the image, and p11gate.so's on-demand requests (`wait`) carry the token of
id_token_file or of the variable id_token_env names."""

import json
import os
import subprocess

import pytest

import ocireg
import p11g
import test_ocisign_sign as ocisign_test
from ocireg import REPO, ocisign
from test_module_gate import DIGEST, PIN, TOKEN, Token, host_env
from test_pipeline_identity import AUD, ISS, Issuer
from test_sec_gate import CLIENT, HERE, ONE_SIGN


def issuer_policy(issuer, token_dir, rules):
    jwks = os.path.join(token_dir, "gh.jwks")
    with open(jwks, "w") as f:
        json.dump(issuer.jwks(), f)
    os.chmod(jwks, 0o644)
    return {"default": "deny", "rules": rules, "issuers": [
        {"name": "gh", "issuer": ISS, "audience": AUD, "jwks_file": jwks,
         "show": ["repository", "ref"]}]}


def write_token(token_dir, tok, name="id_token"):
    path = os.path.join(token_dir, name)
    with open(path, "w") as f:
        f.write(tok + "\n")
    os.chmod(path, 0o644)
    return path


@pytest.fixture
def issuer():
    return Issuer()


def test_ocisign_request_carries_the_token_and_names_the_image(start_daemon, oci_registry,
                                                               oci_token, issuer, tmp_path):
    client = oci_registry.client()
    digest = client.push_image(REPO, tag="v1")
    image = "%s/%s:v1" % (oci_registry.host, REPO)
    rule = ocisign_test.policy([oci_registry.host])["rules"][0]
    rule["claims"] = {"issuer": "gh", "match": {"repository": "acme/*"}}
    tdir = oci_token.dir if hasattr(oci_token, "dir") else str(tmp_path)
    os.makedirs(tdir, exist_ok=True)
    d = start_daemon(policy=issuer_policy(issuer, tdir, [rule]))
    env = ocisign_test.gate_env(oci_token, d)

    # no token: approvald refuses the request, nothing is signed or attached
    r = ocisign("sign", "--key", oci_token.uri("ec"), "--request", *ocireg.PLAIN_HTTP, image,
                user="orderer", env=env)
    assert r.rc == 1 and "(token_required)" in r.err, r
    # a token of another repository
    bad = write_token(tdir, issuer.token(issuer.claims(repository="evil/app")), "bad")
    r = ocisign("sign", "--key", oci_token.uri("ec"), "--request", "--id-token", bad,
                *ocireg.PLAIN_HTTP, image, user="orderer", env=env)
    assert r.rc == 1 and "(claims_mismatch)" in r.err and "repository" in r.err, r
    assert d.list("--all") == [] and client.signatures(REPO, digest) == []
    # --id-token goes with --request
    r = ocisign("sign", "--key", oci_token.uri("ec"), "--id-token", bad, *ocireg.PLAIN_HTTP,
                image, user="orderer", env=env)
    assert r.rc == 2 and "go with --request" in r.err, r

    # the token from $APPROVALD_ID_TOKEN_FILE
    good = write_token(tdir, issuer.token())
    p = ocireg.ocisign_popen("sign", "--key", oci_token.uri("ec"), "--request",
                             *ocireg.PLAIN_HTTP, image, user="orderer",
                             env=dict(env, APPROVALD_ID_TOKEN_FILE=good))
    m = ocireg.wait_for_line(p.stderr, r"approval request (\d+) filed")
    op_id = int(m.group(1))
    with ocireg.killed_after(p):
        op = d.show(op_id)
        assert op["identity"]["subject"] == "repo:acme/app:ref:refs/tags/v1.0", op
        assert op["identity"]["claims"]["repository"] == "acme/app", op
        assert op["name"] == "Sign %s/%s:v1" % (oci_registry.host, REPO), op
        assert op["payload_names"] == ["%s/%s@%s" % (oci_registry.host, REPO, digest)], op
        text = p11g.expect_ok(d.cli("show", str(op_id), user=p11g.U("alice"))).out
        assert "pipeline:    repo:acme/app:ref:refs/tags/v1.0" in text, text
        d.approve("alice", op_id)
        rc, out, err = ocisign_test.finish(p)
    assert rc == 0, (out, err)
    assert len(client.signatures(REPO, digest)) == 1
    # the token was good for one request
    r = ocisign("sign", "--key", oci_token.uri("ec"), "--request", "--id-token", good,
                *ocireg.PLAIN_HTTP, image, user="orderer", env=env)
    assert r.rc == 1 and "(token_invalid)" in r.err, r


def on_demand(token, d, env, timeout=60):
    """One C_Sign through p11gate.so with `wait` set; returns (process, operation id)."""
    code = CLIENT % {"here": HERE, "body": ONE_SIGN}
    p = subprocess.Popen(["/usr/bin/python3", "-c", code,
                          json.dumps({"module": token.module, "token": TOKEN, "pin": PIN,
                                      "digest": DIGEST.hex()})],
                         env=host_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return p


def finished(p):
    """What a client that filed no request said (its exit code, stdout and stderr)."""
    if p.poll() is None:
        return "still running"
    so, se = p.communicate(timeout=10)
    return "exit %d, stdout %r, stderr %r" % (p.returncode, so, se)


@pytest.mark.parametrize("source", ["file", "env"])
def test_on_demand_requests_carry_the_token(start_daemon, accounts, issuer, source):
    token = Token("local")
    try:
        rules = [{"name": "guarded", "keys": ["pkcs11:token=%s" % TOKEN],
                  "orderers": ["uid:0"], "approvers": ["group:p11gt-approvers"],
                  "approvals": 1, "claims": {"issuer": "gh", "match": {"ref": "refs/tags/*"}}}]
        d = token.start(start_daemon, issuer_policy(issuer, token.dir, rules))
        env = token.gate_env(d)
        tok = issuer.token()
        with open(env["P11GATE_CONF"], "a") as f:
            f.write("wait = 60\n")
            if source == "file":
                f.write("id_token_file = %s\n" % write_token(token.dir, tok))
            else:
                f.write("id_token_env = CI_JOB_ID_TOKEN\n")
                env["CI_JOB_ID_TOKEN"] = tok
        p = on_demand(token, d, env)
        try:
            assert p11g.wait_for(lambda: d.list_ids("--all"), 20), finished(p)
            op = d.list_ids("--all")[0]
            o = d.show(op)
            assert o["identity"]["claims"]["ref"] == "refs/tags/v1.0", o
            d.approve("alice", op)
            so, se = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
        assert json.loads(so)["r"]["sign"] == "CKR_OK", (so, se)
        assert tok.encode() not in se
    finally:
        token.cleanup()


def test_on_demand_request_without_a_usable_token_says_why(start_daemon, accounts, issuer):
    token = Token("local")
    try:
        rules = [{"name": "guarded", "keys": ["pkcs11:token=%s" % TOKEN],
                  "orderers": ["uid:0"], "approvers": ["group:p11gt-approvers"],
                  "approvals": 1, "claims": {"issuer": "gh", "match": {"ref": "refs/tags/*"}}}]
        d = token.start(start_daemon, issuer_policy(issuer, token.dir, rules))
        env = token.gate_env(d)
        with open(env["P11GATE_CONF"], "a") as f:
            f.write("wait = 5\n")
        # no token configured: approvald says which is missing
        so, se = on_demand(token, d, env).communicate(timeout=60)
        assert json.loads(so)["r"]["sign"] == "CKR_FUNCTION_REJECTED", (so, se)
        assert b"on-demand request refused" in se and b"(token_required)" in se, se
        # a file that is not there
        with open(env["P11GATE_CONF"], "a") as f:
            f.write("id_token_file = %s/missing\n" % token.dir)
        so, se = on_demand(token, d, env).communicate(timeout=60)
        assert json.loads(so)["r"]["sign"] == "CKR_FUNCTION_REJECTED", (so, se)
        assert b"ID token file" in se and b"No such file" in se, se
        assert d.list_ids("--all") == []
    finally:
        token.cleanup()


# ---- a GitHub Actions job: the token asked of GitHub's token service ------------------------

class GitHubTokenService:
    """What a GitHub Actions job's $ACTIONS_ID_TOKEN_REQUEST_URL serves: the job's token for the
    audience asked, to the bearer of $ACTIONS_ID_TOKEN_REQUEST_TOKEN; over HTTPS on
    127.0.0.1 with a test CA."""

    BEARER = "ghs_runner-request-token"

    def __init__(self, dir, issuer):
        import http.server
        import ssl
        import threading
        import urllib.parse
        from ocireg import _self_signed, _pem_cert, _pem_key, free_port
        from cryptography.hazmat.primitives.asymmetric import ec
        self.asked = []
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _self_signed("github test CA", ca_key, is_ca=True)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _self_signed("127.0.0.1", key, ca=ca, ca_key=ca_key, san_ip="127.0.0.1")
        self.ca_file = os.path.join(dir, "gh-ca.pem")
        with open(self.ca_file, "wb") as f:
            f.write(_pem_cert(ca))
        os.chmod(self.ca_file, 0o644)
        srv_pem = os.path.join(dir, "gh-srv.pem")
        with open(srv_pem, "wb") as f:
            f.write(_pem_cert(cert) + _pem_key(key))
        svc = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                auth = self.headers.get("Authorization", "")
                svc.asked.append((q, auth))
                if auth != "bearer " + svc.BEARER:
                    code, body = 401, b'{"message": "Bad credentials"}'
                else:
                    aud = q.get("audience", [""])[0]
                    code, body = 200, json.dumps(
                        {"count": 1, "value": issuer.token(issuer.claims(aud=aud))}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.port = free_port()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), H)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(srv_pem)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def env(self, bearer=None):
        return {"ACTIONS_ID_TOKEN_REQUEST_URL":
                "https://127.0.0.1:%d/token?api-version=2.0" % self.port,
                "ACTIONS_ID_TOKEN_REQUEST_TOKEN": bearer or self.BEARER,
                "CURL_CA_BUNDLE": self.ca_file}

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def github(issuer):
    import tempfile
    d = tempfile.mkdtemp(prefix="p11gt-gh-")
    os.chmod(d, 0o755)
    s = GitHubTokenService(d, issuer)
    yield s
    s.close()
    import shutil
    shutil.rmtree(d, ignore_errors=True)


def gh_daemon(start_daemon, issuer, dir):
    rules = [{"name": "release", "keys": ["pkcs11:token=ci"], "orderers": p11g.ORDERERS,
              "approvers": p11g.APPROVERS, "approvals": 1,
              "claims": {"issuer": "gh", "match": {"repository": "acme/*"}}}]
    return start_daemon(issuer_policy(issuer, dir, rules))


def test_the_cli_asks_github_for_the_job_token(start_daemon, issuer, github):
    d = gh_daemon(start_daemon, issuer, os.path.dirname(github.ca_file))
    env = dict(os.environ, APPROVALD_SOCKET=d.sock, **github.env())
    args = [p11g.APPROVALD, "request", "--key", "pkcs11:token=ci;object=k", "--description",
            "release", "--id-token-github", AUD]
    r = p11g.run(args, user=p11g.U("orderer"), env=env)
    assert r.rc == 0, r
    op = int(r.out)
    assert d.show(op)["identity"]["claims"]["repository"] == "acme/app"
    q, auth = github.asked[-1]
    assert q["audience"] == [AUD] and q["api-version"] == ["2.0"], q
    assert auth == "bearer " + github.BEARER
    # the runner's request token is refused: said, nothing filed
    r = p11g.run(args, user=p11g.U("orderer"), env=dict(env, **github.env("wrong")))
    assert r.rc == 2 and "--id-token-github" in r.err and "401" in r.err, r
    # not in a GitHub Actions job
    plain = {k: v for k, v in env.items() if not k.startswith("ACTIONS_")}
    r = p11g.run(args, user=p11g.U("orderer"), env=plain)
    assert r.rc == 2 and "ACTIONS_ID_TOKEN_REQUEST_URL" in r.err and "id-token: write" in r.err, r
    assert github.BEARER not in r.err
    assert d.list_ids("--all") == [op]


def test_p11gate_so_asks_github_for_the_job_token(start_daemon, accounts, issuer, github):
    token = Token("local")
    try:
        rules = [{"name": "guarded", "keys": ["pkcs11:token=%s" % TOKEN],
                  "orderers": ["uid:0"], "approvers": ["group:p11gt-approvers"],
                  "approvals": 1, "claims": {"issuer": "gh", "match": {"ref": "refs/tags/*"}}}]
        d = token.start(start_daemon, issuer_policy(issuer, token.dir, rules))
        # P11GATE_DEBUG: a failure shows the module's whole account of it
        env = dict(token.gate_env(d), **github.env(), P11GATE_DEBUG="1",
                   P11GATE_FETCH=os.path.join(p11g.BUILD, "approvald", "approvald-fetch"))
        with open(env["P11GATE_CONF"], "a") as f:
            f.write("wait = 60\nid_token_github = %s\n" % AUD)
        p = on_demand(token, d, env)
        try:
            assert p11g.wait_for(lambda: d.list_ids("--all"), 20), \
                "%s; token service asked %d times; audit %s" % (finished(p), len(github.asked),
                                                                d.audit())
            op = d.list_ids("--all")[0]
            assert d.show(op)["identity"]["claims"]["ref"] == "refs/tags/v1.0"
            d.approve("alice", op)
            so, se = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
        assert json.loads(so)["r"]["sign"] == "CKR_OK", (so, se)
        assert github.asked and github.asked[-1][0]["audience"] == [AUD]
        # the debug log names neither the runner's bearer nor the token it got
        assert github.BEARER.encode() not in se and b"eyJ" not in se, se
    finally:
        token.cleanup()
