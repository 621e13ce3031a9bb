"""Helpers for the ocisign integration tests: a real registry and a small client.

- Registry: Debian's docker-registry on 127.0.0.1 with htpasswd basic auth
  (optionally over TLS from a throwaway CA) or token auth.
- TokenServer: the token service docker-registry's token auth trusts: RS256
  JWTs with iss/aud/exp/access claims and an x5c header whose certificate is
  the registry's rootcertbundle.
- Client: just enough of the distribution API (basic and bearer auth) to push
  test images and indexes and to read what ocisign attached.
- SoftToken: a SoftHSMv2 token in a temporary directory with RSA-2048, ECDSA
  P-256 and Ed25519 keys.

Nothing here knows how ocisign is implemented; it follows the OCI
distribution spec and cosign's signature layout.
"""

import base64
import contextlib
import datetime
import hashlib
import http.server
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

import p11g

OCISIGN = os.path.join(p11g.BUILD, "tools", "ocisign")
P11GATE_SO = os.path.join(p11g.BUILD, "module", "p11gate.so")
SOFTHSM = os.environ.get("SOFTHSM_MODULE") or "/usr/lib/softhsm/libsofthsm2.so"
DOCKER_REGISTRY = "/usr/bin/docker-registry"

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
ANN_SIGNATURE = "dev.cosignproject.cosign/signature"

USER, PASSWORD = "ci-bot", "s3cret-pass"
CREDS = "%s:%s" % (USER, PASSWORD)
# ocisign's options for a test registry: plain http, htpasswd credentials
PLAIN_HTTP = ("--insecure-registry", "--creds", CREDS)
REPO = "team/app"  # where the ocisign tests push their images


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sig_tag(digest):
    return "sha256-%s.sig" % digest.split(":", 1)[1]


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _self_signed(cn, key, ca=None, ca_key=None, san_ip=None, is_ca=False):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
         .issuer_name(ca.subject if ca else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=2)))
    if is_ca:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    if san_ip:
        import ipaddress
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(san_ip))]),
                            critical=False)
    return b.sign(ca_key or key, hashes.SHA256())


def _pem_cert(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


# ------------------------------------------------------------- token server --

class TokenServer:
    """GET /token?service=S&scope=repository:NAME:ACTIONS... -> {"token", "expires_in"}.

    Valid basic credentials get every action asked for; anyone else gets an
    empty access list (the registry then answers 401)."""

    def __init__(self, dir, service="ocisign-test", issuer="ocisign-test-issuer", expires_in=300):
        self.service, self.issuer, self.expires_in = service, issuer, expires_in
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.cert = _self_signed("ocisign test token signer", self.key)
        self.bundle = os.path.join(dir, "token-signer.crt")
        with open(self.bundle, "wb") as f:
            f.write(_pem_cert(self.cert))
        self.requests = []   # (scopes, user) of every token handed out
        self.lock = threading.Lock()
        self.port = None
        self.httpd = None

    @property
    def realm(self):
        return "http://127.0.0.1:%d/token" % self.port

    def token(self, user, access, ttl=None):
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256",
                  "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()]}
        claims = {"iss": self.issuer, "sub": user or "", "aud": self.service,
                  "exp": now + (ttl or self.expires_in), "nbf": now - 10, "iat": now,
                  "jti": base64.b16encode(os.urandom(8)).decode(), "access": access}
        signing_input = (b64url(json.dumps(header).encode()) + "." +
                         b64url(json.dumps(claims).encode())).encode()
        sig = self.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return signing_input.decode() + "." + b64url(sig)

    def start(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                u = urllib.parse.urlparse(self.path)
                if u.path != "/token":
                    self.send_error(404)
                    return
                q = urllib.parse.parse_qs(u.query)
                user = None
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Basic "):
                    try:
                        up = base64.b64decode(auth[6:]).decode()
                    except ValueError:
                        up = ""
                    if up != "%s:%s" % (USER, PASSWORD):
                        self.send_response(401)
                        self.send_header("Content-Type", "application/json")
                        self.end_headers()
                        self.wfile.write(b'{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}')
                        return
                    user = USER
                access = []
                for scope in q.get("scope", []):
                    for one in scope.split(" "):
                        parts = one.split(":")
                        if len(parts) >= 3 and parts[0] == "repository" and user:
                            access.append({"type": "repository", "name": ":".join(parts[1:-1]),
                                           "actions": parts[-1].split(",")})
                with server.lock:
                    server.requests.append((q.get("scope", []), user))
                body = json.dumps({"token": server.token(user, access),
                                   "expires_in": server.expires_in,
                                   "issued_at": datetime.datetime.now(datetime.timezone.utc).isoformat()})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body.encode())

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()


# ----------------------------------------------------------------- registry --

class Registry:
    """docker-registry serve in a temporary directory on 127.0.0.1."""

    def __init__(self, auth="htpasswd", tls=False, token_server=None):
        self.dir = tempfile.mkdtemp(prefix="p11gt-reg-")
        os.chmod(self.dir, 0o755)
        self.auth, self.tls, self.token_server = auth, tls, token_server
        self.port = free_port()
        self.host = "127.0.0.1:%d" % self.port
        self.log = os.path.join(self.dir, "registry.log")
        self.ca_file = None
        self.cert_dir = None
        self.proc = None

    @property
    def url(self):
        return "%s://%s" % ("https" if self.tls else "http", self.host)

    def _config(self):
        lines = [
            "version: 0.1",
            "log:",
            "  level: warn",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            "    rootdirectory: %s" % os.path.join(self.dir, "data"),
            "  delete:",
            "    enabled: true",
            "http:",
            "  addr: %s" % self.host,
            "  secret: ocisign-test-secret",
        ]
        if self.tls:
            ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            ca = _self_signed("ocisign test CA", ca_key, is_ca=True)
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            cert = _self_signed("127.0.0.1", key, ca=ca, ca_key=ca_key, san_ip="127.0.0.1")
            self.ca_file = os.path.join(self.dir, "ca.crt")
            self.cert_dir = os.path.join(self.dir, "certs.d")
            os.mkdir(self.cert_dir)
            for path in (self.ca_file, os.path.join(self.cert_dir, "ca.crt")):
                with open(path, "wb") as f:
                    f.write(_pem_cert(ca))
            with open(os.path.join(self.dir, "server.crt"), "wb") as f:
                f.write(_pem_cert(cert))
            with open(os.path.join(self.dir, "server.key"), "wb") as f:
                f.write(_pem_key(key))
            lines += ["  tls:",
                      "    certificate: %s" % os.path.join(self.dir, "server.crt"),
                      "    key: %s" % os.path.join(self.dir, "server.key")]
        if self.auth == "htpasswd":
            htp = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], check=True,
                                 stdout=subprocess.PIPE, text=True).stdout
            path = os.path.join(self.dir, "htpasswd")
            with open(path, "w") as f:
                f.write(htp)
            lines += ["auth:", "  htpasswd:", "    realm: ocisign-test", "    path: %s" % path]
        elif self.auth == "token":
            t = self.token_server
            lines += ["auth:", "  token:", "    realm: %s" % t.realm, "    service: %s" % t.service,
                      "    issuer: %s" % t.issuer, "    rootcertbundle: %s" % t.bundle]
        return "\n".join(lines) + "\n"

    def start(self, timeout=15):
        cfg = os.path.join(self.dir, "config.yml")
        with open(cfg, "w") as f:
            f.write(self._config())
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([DOCKER_REGISTRY, "serve", cfg], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("docker-registry exited %s:\n%s" % (self.proc.returncode,
                                                                        self.stderr()))
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.5):
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("docker-registry not listening after %ss:\n%s"
                                     % (timeout, self.stderr()))
            time.sleep(0.05)

    def stderr(self):
        try:
            with open(self.log, "rb") as f:
                return f.read().decode(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self, user=USER, password=PASSWORD):
        return Client(self, user, password)


class HTTPError(Exception):
    def __init__(self, status, body, headers):
        super().__init__("HTTP %d: %s" % (status, body[:300]))
        self.status, self.body, self.headers = status, body, headers


class Client:
    """A small distribution-API client: basic auth or the bearer token flow."""

    def __init__(self, registry, user, password):
        self.reg = registry
        self.user, self.password = user, password
        self.tokens = {}
        import ssl
        self.ctx = ssl.create_default_context(cafile=registry.ca_file) if registry.tls else None

    def _auth_header(self, repo, push):
        if self.reg.auth == "htpasswd" and self.user:
            return "Basic " + base64.b64encode(("%s:%s" % (self.user, self.password)).encode()).decode()
        if self.reg.auth == "token":
            actions = ["pull", "push"] if push else ["pull"]
            key = (repo, push)
            if key not in self.tokens:
                t = self.reg.token_server
                self.tokens[key] = t.token(self.user, [{"type": "repository", "name": repo,
                                                        "actions": actions}])
            return "Bearer " + self.tokens[key]
        return None

    def request(self, method, path, repo, data=None, headers=None, push=False):
        url = path if path.startswith("http") else self.reg.url + path
        h = dict(headers or {})
        a = self._auth_header(repo, push)
        if a:
            h["Authorization"] = a
        req = urllib.request.Request(url, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=30) as r:
                return r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            raise HTTPError(e.code, e.read().decode(errors="replace"), e.headers)

    def push_blob(self, repo, data):
        digest = sha256(data)
        st, _, h = self.request("POST", "/v2/%s/blobs/uploads/" % repo, repo, data=b"", push=True)
        loc = h["Location"]
        if not loc.startswith("http"):
            loc = self.reg.url + loc
        loc += ("&" if "?" in loc else "?") + "digest=" + urllib.parse.quote(digest)
        self.request("PUT", loc, repo, data=data, push=True,
                     headers={"Content-Type": "application/octet-stream"})
        return digest

    def push_manifest(self, repo, ref, body, media_type):
        if not isinstance(body, bytes):
            body = json.dumps(body, separators=(",", ":")).encode()
        self.request("PUT", "/v2/%s/manifests/%s" % (repo, ref), repo, data=body, push=True,
                     headers={"Content-Type": media_type})
        return sha256(body)

    def get_manifest(self, repo, ref):
        st, body, h = self.request("GET", "/v2/%s/manifests/%s" % (repo, ref), repo,
                                   headers={"Accept": ", ".join([MT_OCI_MANIFEST, MT_OCI_INDEX])})
        return body, h

    def get_blob(self, repo, digest):
        return self.request("GET", "/v2/%s/blobs/%s" % (repo, digest), repo)[1]

    def push_image(self, repo, tag=None, seed="image"):
        """A one-layer OCI image; returns its manifest digest."""
        layer = ("layer of %s %s" % (seed, os.urandom(8).hex())).encode()
        cfg = json.dumps({"architecture": "amd64", "os": "linux",
                          "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]}}).encode()
        self.push_blob(repo, layer)
        self.push_blob(repo, cfg)
        man = {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
               "config": {"mediaType": MT_OCI_CONFIG, "size": len(cfg), "digest": sha256(cfg)},
               "layers": [{"mediaType": MT_LAYER, "size": len(layer), "digest": sha256(layer)}]}
        body = json.dumps(man, separators=(",", ":")).encode()
        digest = self.push_manifest(repo, sha256(body), body, MT_OCI_MANIFEST)
        if tag:
            self.push_manifest(repo, tag, body, MT_OCI_MANIFEST)
        return digest

    def push_index(self, repo, tag, n=2):
        """An OCI index of n images; returns (index digest, [child digests])."""
        children = [self.push_image(repo, seed="child %d" % i) for i in range(n)]
        idx = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": [
            {"mediaType": MT_OCI_MANIFEST, "size": 0, "digest": d,
             "platform": {"architecture": arch, "os": "linux"}}
            for d, arch in zip(children, ["amd64", "arm64", "riscv64", "s390x"])]}
        # sizes must be right for strict registries
        for m, d in zip(idx["manifests"], children):
            m["size"] = len(self.get_manifest(repo, d)[0])
        return self.push_manifest(repo, tag, idx, MT_OCI_INDEX), children

    def signatures(self, repo, digest):
        """[(payload bytes, signature bytes)] of the image's .sig manifest ([] when none)."""
        try:
            body, _ = self.get_manifest(repo, sig_tag(digest))
        except HTTPError as e:
            if e.status == 404:
                return []
            raise
        man = json.loads(body)
        assert man["mediaType"] == MT_OCI_MANIFEST, man
        out = []
        for layer in man["layers"]:
            assert layer["mediaType"] == MT_SIMPLESIGNING, layer
            payload = self.get_blob(repo, layer["digest"])
            out.append((payload, base64.b64decode(layer["annotations"][ANN_SIGNATURE])))
        return out


# ------------------------------------------------------------ SoftHSM token --

class SoftToken:
    """A SoftHSMv2 token in a temporary directory (owned by `owner` when given,
    so a test user can sign with it)."""

    PIN = "2468"
    KEYS = {"rsa": ("rsa:2048", "01"), "ec": ("EC:prime256v1", "02"), "ed": ("EC:edwards25519", "03")}

    def __init__(self, label="ocisign", owner=None):
        self.dir = tempfile.mkdtemp(prefix="p11gt-hsm-")
        os.chmod(self.dir, 0o755)
        self.label = label
        self.tokens = os.path.join(self.dir, "tokens")
        os.mkdir(self.tokens)
        self.conf = os.path.join(self.dir, "softhsm2.conf")
        with open(self.conf, "w") as f:
            f.write("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n"
                    % self.tokens)
        self._run(["softhsm2-util", "--init-token", "--free", "--label", label,
                   "--so-pin", "13579", "--pin", self.PIN])
        for name, (kind, kid) in self.KEYS.items():
            self._run(["pkcs11-tool", "--module", SOFTHSM, "--token-label", label, "--login",
                       "--pin", self.PIN, "--keypairgen", "--key-type", kind, "--label", name,
                       "--id", kid])
        if owner:
            pw = pwd.getpwnam(p11g.U(owner))
            for root, dirs, files in os.walk(self.dir):
                for n in dirs + files:
                    os.chown(os.path.join(root, n), pw.pw_uid, pw.pw_gid)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)

    def env(self):
        return {"SOFTHSM2_CONF": self.conf}

    def _run(self, args):
        r = subprocess.run(args, env=dict(p11g.CLEAN_ENV, **self.env()), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        assert r.returncode == 0, "%s failed:\n%s" % (" ".join(args), r.stdout)

    def uri(self, key, pin=True):
        u = "pkcs11:token=%s;object=%s" % (self.label, key)
        return u + ("?pin-value=%s" % self.PIN if pin else "")

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


# ------------------------------------------------------------------ ocisign --

# SoftHSM 2.6.1 leaks the decoded CKA_EC_PARAMS of an Ed25519 key at every
# C_SignInit (an ASN.1 string from d2i).  In a sanitizer build that would fail
# every Ed25519 run, so leaks whose stack passes through SoftHSM (or, when
# p11gate.so has unloaded it and its frames have no name, through OpenSSL's
# ASN.1 decoder) are suppressed.  Our own code's other leaks still fail the
# run (the slow unwinder gives LSan whole stacks).
_LSAN_SUPP = os.path.join(tempfile.gettempdir(), "p11gt-ocisign-lsan.supp")
with open(_LSAN_SUPP, "w") as _f:
    _f.write("leak:libsofthsm2.so\nleak:ASN1_item_d2i_ex\n")
os.chmod(_LSAN_SUPP, 0o644)
SANITIZER_ENV = {"ASAN_OPTIONS": "fast_unwind_on_malloc=0:detect_leaks=1",
                 "LSAN_OPTIONS": "suppressions=%s:print_suppressions=0" % _LSAN_SUPP}


def _env(env):
    e = dict(SANITIZER_ENV)
    e.update(env or {})
    return e


def ocisign(*args, user=None, env=None, timeout=60, input=None):
    """Runs ocisign as root (user None) or a test user; a p11g.Result."""
    return p11g.run([OCISIGN] + [str(a) for a in args], user=user, env=_env(env), timeout=timeout,
                    input=input)


def ocisign_popen(*args, user=None, env=None):
    """Starts ocisign in the background (stderr piped, line by line)."""
    kw = {}
    if user is not None:
        uid, gid, groups = p11g.ids(user)
        kw = dict(user=uid, group=gid, extra_groups=groups)
    e = dict(p11g.CLEAN_ENV)
    e.update(_env(env))
    return subprocess.Popen([OCISIGN] + [str(a) for a in args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=e, cwd="/", **kw)


def write_pubkey(token, key, path):
    """`ocisign pubkey` of a SoftToken key (read through SoftHSMv2 itself) into path."""
    r = ocisign("pubkey", "--key", token.uri(key), "--module", SOFTHSM, env=token.env())
    assert r.rc == 0 and r.out.startswith("-----BEGIN PUBLIC KEY-----"), r
    with open(path, "w") as f:
        f.write(r.out)
    return path


@contextlib.contextmanager
def killed_after(p):
    """A background ocisign (ocisign_popen) that does not outlive the block: a failed assertion
    must not leave it waiting for a decision."""
    try:
        yield p
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def wait_for_line(stream, pattern, timeout=30):
    """Reads lines from a pipe until one matches the regex; returns the match."""
    import re
    import select
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        r, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            break
        line = stream.readline()
        if not line:
            break
        seen.append(line)
        m = re.search(pattern, line)
        if m:
            return m
    raise AssertionError("no line matching %r within %ss; got %r" % (pattern, timeout, seen))
