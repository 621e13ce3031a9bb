"""ocisign against registries: basic auth over verified TLS, docker config.json,
the bearer token flow with a cached token, cosign's .sig layout (append, no
duplicates), skopeo finding the attachment, and clear errors (401, 404, 429,
5xx with retries, oversized manifests, plain http refused)."""

import base64
import http.server
import json
import subprocess
import threading

import pytest

import ocireg
from ocireg import CREDS, REPO, ocisign


@pytest.fixture(scope="module")
def token():
    t = ocireg.SoftToken()
    yield t
    t.cleanup()


@pytest.fixture(scope="module")
def pubkeys(token, tmp_path_factory):
    d = tmp_path_factory.mktemp("pub")
    return {k: ocireg.write_pubkey(token, k, str(d / ("%s.pem" % k))) for k in ("ec", "rsa", "ed")}


@pytest.fixture
def tls_registry():
    r = ocireg.Registry(auth="htpasswd", tls=True).start()
    yield r
    r.stop()


@pytest.fixture
def token_registry(tmp_path):
    ts = ocireg.TokenServer(str(tmp_path)).start()
    r = ocireg.Registry(auth="token", token_server=ts).start()
    yield r
    r.stop()
    ts.stop()


def sign(token, key, image, *extra, env=None):
    e = dict(token.env(), **(env or {}))
    return ocisign("sign", "--key", token.uri(key), "--module", ocireg.SOFTHSM, *extra, image, env=e)


def one_error_line(r, rc=1):
    assert r.rc == rc, r
    assert len(r.err_lines) == 1 and r.err_lines[0].startswith("ocisign: "), r
    return r.err_lines[0]


def test_basic_auth_over_verified_tls(tls_registry, token, pubkeys):
    reg = tls_registry
    digest = reg.client().push_image(REPO, tag="v1")
    image = "%s/%s:v1" % (reg.host, REPO)

    # TLS is verified: the test CA is not trusted by default.
    line = one_error_line(sign(token, "ec", image, "--creds", CREDS))
    assert reg.host in line and "certificate" in line.lower(), line

    r = sign(token, "ec", image, "--creds", CREDS, "--ca-file", reg.ca_file)
    assert r.rc == 0, r
    r = ocisign("verify", "--key", pubkeys["ec"], "--creds", CREDS, image,
                env={"SSL_CERT_FILE": reg.ca_file})
    assert r.rc == 0, r
    assert json.loads(r.out)["critical"]["image"]["docker-manifest-digest"] == digest

    # Wrong password: the registry's 401 and its own message.
    line = one_error_line(ocisign("verify", "--key", pubkeys["ec"], "--creds", "ci-bot:wrong",
                                  "--ca-file", reg.ca_file, image))
    assert "401" in line and "UNAUTHORIZED" in line and "refused" in line, line
    # No credentials at all: say how to give them.
    line = one_error_line(ocisign("verify", "--key", pubkeys["ec"], "--ca-file", reg.ca_file, image))
    assert "401" in line and "--creds" in line, line


def test_docker_config_auths(oci_registry, token, pubkeys, tmp_path):
    reg = oci_registry
    reg.client().push_image(REPO, tag="v1")
    image = "%s/%s:v1" % (reg.host, REPO)
    # An "auth" value is used as it is: an ECR authorization token has this form.
    cfg = tmp_path / "auth.json"
    cfg.write_text(json.dumps({"auths": {
        "https://other.example.com/v1/": {"auth": base64.b64encode(b"x:y").decode()},
        reg.host: {"auth": base64.b64encode(CREDS.encode()).decode()}}}))
    r = sign(token, "rsa", image, "--insecure-registry", env={"REGISTRY_AUTH_FILE": str(cfg)})
    assert r.rc == 0, r
    # ~/.docker/config.json with username/password members
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    (home / ".docker" / "config.json").write_text(json.dumps({"auths": {
        "http://%s" % reg.host: {"username": ocireg.USER, "password": ocireg.PASSWORD}}}))
    r = ocisign("verify", "--key", pubkeys["rsa"], "--insecure-registry", image,
                env={"HOME": str(home)})
    assert r.rc == 0, r
    # --creds with an ECR-style authorization token: base64 of USER:PASSWORD, sent as it is
    r = ocisign("verify", "--key", pubkeys["rsa"], "--insecure-registry", "--creds",
                base64.b64encode(CREDS.encode()).decode(), image)
    assert r.rc == 0, r
    cfg.write_text(json.dumps({"auths": {reg.host: {"auth": "not base64!"}}}))
    line = one_error_line(sign(token, "rsa", image, "--insecure-registry",
                               env={"REGISTRY_AUTH_FILE": str(cfg)}))
    assert "not base64 of USER:PASSWORD" in line, line


def test_plain_http_only_when_asked(oci_registry, token):
    reg = oci_registry
    reg.client().push_image(REPO, tag="v1")
    line = one_error_line(sign(token, "ec", "%s/%s:v1" % (reg.host, REPO), "--creds", CREDS))
    assert reg.host in line, line


def test_bearer_token_flow_token_cached(token_registry, token, pubkeys):
    reg = token_registry
    ts = reg.token_server
    index, children = reg.client().push_index(REPO, "multi", n=2)
    image = "%s/%s:multi" % (reg.host, REPO)
    before = len(ts.requests)
    # three payload blobs, a config per signature, three manifests: one token for all
    r = sign(token, "ed", image, "--recursive", *ocireg.PLAIN_HTTP)
    assert r.rc == 0, r
    fetched = ts.requests[before:]
    assert len(fetched) == 1, fetched
    scopes, user = fetched[0]
    assert user == ocireg.USER and "repository:%s:pull,push" % REPO in scopes
    for dig in [index] + children:
        r = ocisign("verify", "--key", pubkeys["ed"], "--insecure-registry", "--creds", CREDS,
                    "%s/%s@%s" % (reg.host, REPO, dig))
        assert r.rc == 0, r
    # anonymous: the token service grants nothing, the registry says 401
    line = one_error_line(ocisign("verify", "--key", pubkeys["ed"], "--insecure-registry", image))
    assert "401" in line and "UNAUTHORIZED" in line, line
    # bad password: the token service's own refusal
    line = one_error_line(ocisign("verify", "--key", pubkeys["ed"], "--insecure-registry",
                                  "--creds", "ci-bot:nope", image))
    assert "token service" in line and "401" in line and "bad credentials" in line, line


def test_second_signature_appended_first_kept(oci_registry, token, pubkeys, tmp_path):
    reg = oci_registry
    client = reg.client()
    digest = client.push_image(REPO, tag="v1")
    image = "%s/%s:v1" % (reg.host, REPO)
    common = ocireg.PLAIN_HTTP
    assert sign(token, "ec", image, *common).rc == 0
    first = client.signatures(REPO, digest)
    assert len(first) == 1
    assert sign(token, "rsa", image, *common, "-a", "pipeline=42").rc == 0
    both = client.signatures(REPO, digest)
    assert len(both) == 2 and both[0] == first[0], both
    assert json.loads(both[1][0])["optional"] == {"pipeline": "42"}
    man = json.loads(client.get_manifest(REPO, ocireg.sig_tag(digest))[0])
    assert man["mediaType"] == ocireg.MT_OCI_MANIFEST
    assert man["config"]["mediaType"] == ocireg.MT_OCI_CONFIG
    cfg = json.loads(client.get_blob(REPO, man["config"]["digest"]))
    assert cfg["rootfs"]["diff_ids"] == [l["digest"] for l in man["layers"]]
    for k in ("ec", "rsa"):
        r = ocisign("verify", "--key", pubkeys[k], *common, image)
        assert r.rc == 0 and "1 of 2 signatures" in r.err, r

    # attach: the identical signature again is skipped, a new one appended
    payload, sig = both[0]
    (tmp_path / "p.json").write_bytes(payload)
    (tmp_path / "s.b64").write_text(base64.b64encode(sig).decode() + "\n")
    r = ocisign("attach", "--payload", tmp_path / "p.json", "--signature", tmp_path / "s.b64",
                *common, image)
    assert r.rc == 0 and "already carries this signature" in r.err, r
    assert len(client.signatures(REPO, digest)) == 2
    # a payload for another image is refused
    other = client.push_image(REPO, tag="v2")
    line = one_error_line(ocisign("attach", "--payload", tmp_path / "p.json", "--signature",
                                  tmp_path / "s.b64", *common, "%s/%s:v2" % (reg.host, REPO)))
    assert digest in line and other in line, line
    (tmp_path / "bad.b64").write_text("%%%")
    line = one_error_line(ocisign("attach", "--payload", tmp_path / "p.json", "--signature",
                                  tmp_path / "bad.b64", *common, image))
    assert "not a base64 signature" in line, line


def test_verify_failures(oci_registry, token, pubkeys, tmp_path):
    reg = oci_registry
    client = reg.client()
    client.push_image(REPO, tag="v1")
    common = ocireg.PLAIN_HTTP
    image = "%s/%s:v1" % (reg.host, REPO)
    line = one_error_line(ocisign("verify", "--key", pubkeys["ec"], *common, image))
    assert "no signatures found" in line, line
    assert sign(token, "ec", image, *common).rc == 0
    line = one_error_line(ocisign("verify", "--key", pubkeys["rsa"], *common, image))
    assert "does not verify with this key" in line, line
    line = one_error_line(ocisign("verify", "--key", pubkeys["ec"], *common,
                                  "%s/%s:missing" % (reg.host, REPO)))
    assert "404" in line and "MANIFEST_UNKNOWN" in line, line
    (tmp_path / "x.pem").write_text("nope")
    line = one_error_line(ocisign("verify", "--key", tmp_path / "x.pem", *common, image))
    assert "not a PEM public key" in line, line


def test_skopeo_finds_the_attachment(oci_registry, token, pubkeys, tmp_path):
    reg = oci_registry
    client = reg.client()
    digest = client.push_image(REPO, tag="v1")
    client.push_image("team/unsigned", tag="v1")
    assert sign(token, "ec", "%s/%s:v1" % (reg.host, REPO), *ocireg.PLAIN_HTTP).rc == 0
    rd = tmp_path / "registries.d"
    rd.mkdir()
    (rd / "ocisign.yaml").write_text("docker:\n  %s:\n    use-sigstore-attachments: true\n" % reg.host)
    pol = tmp_path / "policy.json"
    pol.write_text(json.dumps({"default": [{"type": "reject"}], "transports": {"docker": {
        reg.host: [{"type": "sigstoreSigned", "keyPath": pubkeys["ec"],
                    "signedIdentity": {"type": "matchRepository"}}]}}}))

    def copy(repo):
        return subprocess.run(["skopeo", "--debug", "copy", "--policy", str(pol), "--registries.d",
                               str(rd), "--src-tls-verify=false", "--src-creds", CREDS,
                               "docker://%s/%s:v1" % (reg.host, repo),
                               "dir:%s" % (tmp_path / ("out-" + repo.replace("/", "-")))],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=120)

    p = copy(REPO)
    assert "Found a sigstore attachment manifest with 1 layers" in p.stdout, p.stdout[-3000:]
    assert "Fetching sigstore attachment 1/1" in p.stdout, p.stdout[-3000:]
    assert "A signature was required, but no signature exists" not in p.stdout
    if p.returncode != 0:
        # Debian builds containers/image without sigstore verification.
        assert "sigstore disabled" in p.stdout, p.stdout[-3000:]
    # The control: an unsigned image is not found to have any signature.
    q = copy("team/unsigned")
    assert q.returncode != 0 and "A signature was required, but no signature exists" in q.stdout

    # What skopeo fetched verifies with openssl against `ocisign pubkey`.
    (payload, sig), = client.signatures(REPO, digest)
    (tmp_path / "payload.json").write_bytes(payload)
    (tmp_path / "sig.der").write_bytes(sig)
    v = subprocess.run(["openssl", "dgst", "-sha256", "-verify", pubkeys["ec"], "-signature",
                        str(tmp_path / "sig.der"), str(tmp_path / "payload.json")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert v.returncode == 0 and "Verified OK" in v.stdout, v.stdout


# ---------------------------------------------------------- a scripted registry --

class Scripted:
    """A fake registry answering each GET with the next scripted response."""

    def __init__(self, script):
        self.script = list(script)
        self.hits = []
        handler = self._handler()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.host = "127.0.0.1:%d" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def _handler(self):
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                outer.hits.append(self.path)
                status, headers, body = outer.script.pop(0) if len(outer.script) > 1 else outer.script[0]
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return H

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def oci_error(code, message):
    return json.dumps({"errors": [{"code": code, "message": message}]}).encode()


MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": ocireg.MT_OCI_MANIFEST,
                       "config": {"mediaType": ocireg.MT_OCI_CONFIG, "size": 2,
                                  "digest": ocireg.sha256(b"{}")}, "layers": []}).encode()
JSONH = {"Content-Type": "application/json"}


def test_retries_429_then_succeeds():
    s = Scripted([(429, dict(JSONH, **{"Retry-After": "1"}), oci_error("TOOMANYREQUESTS", "slow down")),
                  (503, JSONH, oci_error("UNAVAILABLE", "try later")),
                  (200, {"Content-Type": ocireg.MT_OCI_MANIFEST}, MANIFEST)])
    try:
        r = ocisign("generate", "--insecure-registry", "%s/team/app:v1" % s.host, timeout=60)
    finally:
        s.stop()
    assert r.rc == 0, r
    assert json.loads(r.out)["critical"]["image"]["docker-manifest-digest"] == ocireg.sha256(MANIFEST)
    assert len(s.hits) == 3


def test_5xx_gives_up_with_the_registrys_message():
    s = Scripted([(503, dict(JSONH, **{"Retry-After": "0"}), oci_error("UNAVAILABLE", "backend on fire"))])
    try:
        r = ocisign("generate", "--insecure-registry", "%s/team/app:v1" % s.host, timeout=60)
    finally:
        s.stop()
    line = one_error_line(r)
    assert "503 server error after 4 tries: UNAVAILABLE: backend on fire" in line, line
    assert len(s.hits) == 4


def test_403_and_wrong_digest_and_oversize():
    cases = [
        ([(403, JSONH, oci_error("DENIED", "requested access to the resource is denied"))],
         "403 access denied: DENIED: requested access to the resource is denied"),
        ([(200, {"Content-Type": ocireg.MT_OCI_MANIFEST,
                 "Docker-Content-Digest": ocireg.sha256(b"something else")}, MANIFEST)],
         "the registry says its digest is"),
        ([(200, {"Content-Type": ocireg.MT_OCI_MANIFEST}, b" " * (4 * 1024 * 1024 + 1))],
         "larger than 4194304 bytes"),
    ]
    for script, want in cases:
        s = Scripted(script)
        try:
            r = ocisign("generate", "--insecure-registry", "%s/team/app:v1" % s.host)
        finally:
            s.stop()
        line = one_error_line(r)
        assert want in line, (want, line)


def test_a_registrys_words_reach_the_terminal_escaped():
    """An error body is the registry's text: its control characters are shown as escapes."""
    s = Scripted([(403, JSONH, oci_error("DENIED", "no\x1b[2J\x1b[1;1Hocisign: signed \u202eok"))])
    try:
        r = ocisign("generate", "--insecure-registry", "%s/team/app:v1" % s.host, timeout=60)
    finally:
        s.stop()
    line = one_error_line(r)
    assert "\x1b" not in r.err and "\u202e" not in r.err, repr(r.err)
    # C0 controls were already blanked where registry text is read; the rest is escaped
    assert "DENIED: no" in line and "signed \\u202eok" in line, line
