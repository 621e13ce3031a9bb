"""Notifications (issue 21): events of operations reach the notifiers of their rules through a
durable outbox, delivered by approvald-notify as signed HTTPS POSTs (or a command's standard
input), retried with backoff, never slowing a use.

Receivers here are local HTTPS servers on 127.0.0.1 with a test CA (python3-cryptography, as in
ocireg.py); the notifiers name that CA in "ca_file".  Each receiver records every request
(headers, body), checks its X-P11gate-Signature-256 with the notifier's key, and answers as the
test tells it: 200, 500, 429 with Retry-After, or never.

approvald runs as root here, so approvald-notify runs as nobody: the CA file, command scripts
and their output directories are made reachable by nobody; the secret files are root's, 0600.

Not tested here: the "use_refused" event (not implemented when these tests were written; it
is since, notify.c, and wants its own test), the issue's benchmark, signing through p11gate.so
during a stall (uses are asked for on approvald's socket instead), and death by
notify_retry_for (at its 1 m minimum it takes 30-40 s): the dead path is reached by a notifier
leaving the policy.
"""

import datetime
import hashlib
import hmac
import http.server
import ipaddress
import json
import os
import pwd
import re
import shutil
import socket
import ssl
import tempfile
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import p11g
from p11g import ORDERERS, APPROVERS, U, expect_fail, expect_ok, wait_for

WEB_URL = "https://approvals.example.test"
CONFIG = {"web_url": WEB_URL, "notify_retry_for": "1m"}
NOBODY = pwd.getpwnam("nobody").pw_uid

FAIL_LOG = re.compile(r"delivery (\d+) to (\S+) failed \(attempt (\d+)\): (.*)")


# --------------------------------------------------------------------------- test CA --

def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class PKI:
    """A CA and a server certificate for 127.0.0.1, in a directory nobody can read."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="p11gt-pki-")
        os.chmod(self.dir, 0o755)
        now = datetime.datetime.now(datetime.timezone.utc)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = (x509.CertificateBuilder()
              .subject_name(_name("p11gate notify test CA"))
              .issuer_name(_name("p11gate notify test CA"))
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5))
              .not_valid_after(now + datetime.timedelta(days=2))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                           key_encipherment=False, data_encipherment=False,
                                           key_agreement=False, key_cert_sign=True, crl_sign=True,
                                           encipher_only=False, decipher_only=False), critical=True)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(_name("127.0.0.1")).issuer_name(ca.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                    critical=False)
                .sign(ca_key, hashes.SHA256()))
        self.ca = os.path.join(self.dir, "ca.pem")
        with open(self.ca, "wb") as f:
            f.write(ca.public_bytes(serialization.Encoding.PEM))
        os.chmod(self.ca, 0o644)
        self.cert = os.path.join(self.dir, "server.pem")
        self.key = os.path.join(self.dir, "server.key")
        with open(self.cert, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(self.key, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        os.chmod(self.key, 0o600)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def pki():
    p = PKI()
    yield p
    p.cleanup()


@pytest.fixture
def workdir():
    """Secrets (root's, 0600), command scripts (0755) and their output (nobody may write)."""
    d = tempfile.mkdtemp(prefix="p11gt-notify-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------- receiver --

class Hit:
    """One request a receiver got."""

    def __init__(self, t, path, headers, body, sig_ok, answer):
        self.t, self.path, self.headers, self.body = t, path, headers, body
        self.sig_ok, self.answer = sig_ok, answer
        try:
            self.json = json.loads(body)
        except ValueError:
            self.json = None

    @property
    def delivery(self):
        return self.headers.get("x-p11gate-delivery")

    @property
    def event(self):
        return self.headers.get("x-p11gate-event")

    @property
    def ok(self):
        a = self.answer[2] if isinstance(self.answer, tuple) and self.answer[0] == "delay" \
            else self.answer
        return isinstance(a, int) and 200 <= a < 300

    def __repr__(self):
        return "<hit %s delivery=%s answer=%s sig_ok=%s %s>" % (
            self.event, self.delivery, self.answer, self.sig_ok, self.body[:300])


class Receiver:
    """An HTTPS server on 127.0.0.1 (the test CA) on a fixed port: up() listens, down() stops
    listening (connections are then refused).  script: answers for the next requests in turn
    (an int status, (status, {header: value}), ("delay", seconds, status) or "hang"), then
    default."""

    def __init__(self, pki, name, secret=None, default=200):
        self.pki, self.name = pki, name
        self.secret = secret        # bytes: the key as approvald must use it
        self.port = free_port()
        self.script = []
        self.default = default
        self.hits = []
        self.lock = threading.Lock()
        self.httpd = None
        self.thread = None
        self.release = threading.Event()

    @property
    def url(self):
        return "https://127.0.0.1:%d/hooks/%s" % (self.port, self.name)

    def up(self):
        rcv = self
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.pki.cert, self.pki.key)

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                self.request.settimeout(10)
                self.request.do_handshake()
                super().setup()

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                rcv._serve(self, body)

            def log_message(self, *a):
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False
            allow_reuse_address = True

            def get_request(self):
                s, addr = self.socket.accept()
                return ctx.wrap_socket(s, server_side=True, do_handshake_on_connect=False), addr

            def handle_error(self, request, client_address):
                pass

        self.release = threading.Event()
        self.httpd = Server(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def down(self):
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None
        self.release.set()

    def _serve(self, h, body):
        headers = {k.lower(): v for k, v in h.headers.items()}
        sig_ok = None
        if self.secret is not None:
            want = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
            sig_ok = hmac.compare_digest(headers.get("x-p11gate-signature-256", ""), want)
        with self.lock:
            answer = self.script.pop(0) if self.script else self.default
            self.hits.append(Hit(time.monotonic(), h.path, headers, body, sig_ok, answer))
        if answer == "hang":
            self.release.wait(60)   # never answer; curl gives up at its timeout
            h.close_connection = True
            return
        if isinstance(answer, tuple) and answer[0] == "delay":
            self.release.wait(answer[1])
            answer = answer[2]
        status, extra = (answer, {}) if isinstance(answer, int) else answer
        h.send_response(status)
        for k, v in extra.items():
            h.send_header(k, v)
        h.send_header("Content-Length", "2")
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(b"ok")
        h.close_connection = True

    def got(self, pred=lambda h: True):
        with self.lock:
            return [h for h in self.hits if pred(h)]

    def wait(self, pred, n=1, timeout=15):
        return wait_for(lambda: len(self.got(pred)) >= n, timeout, 0.05) and self.got(pred)


@pytest.fixture
def receivers(pki):
    made = []

    def make(name, secret=None, up=True, default=200):
        r = Receiver(pki, name, secret, default)
        made.append(r)
        return r.up() if up else r

    yield make
    for r in made:
        r.down()


def secret_file(workdir, name, key, mode=0o600):
    """A secret file holding key plus a newline (approvald drops it)."""
    path = os.path.join(workdir, name + ".key")
    with open(path, "wb") as f:
        f.write(key + b"\n")
    os.chmod(path, mode)
    return path


def hook(pki, rcv, name, events, secret=None, **kw):
    n = {"name": name, "url": rcv.url, "ca_file": pki.ca, "events": events}
    if secret:
        n["secret_file"] = secret
    n.update(kw)
    return n


def rule(name, token, notify=None, approvals=1, **kw):
    r = {"name": name, "keys": ["pkcs11:token=%s" % token], "orderers": ORDERERS}
    if approvals:
        r.update(approvers=APPROVERS, approvals=approvals)
    else:
        r["approvals"] = 0
    if notify is not None:
        r["notify"] = notify
    r.update(kw)
    return r


def policy(notifiers, *rules):
    return {"default": "deny", "notifiers": notifiers, "rules": list(rules)}


def key(token, obj):
    return "pkcs11:token=%s;object=%s" % (token, obj)


def failures(d, name=None):
    """(delivery, notifier, attempt, error) of the failures approvald logged."""
    out = []
    for m in FAIL_LOG.finditer(d.stderr()):
        if name is None or m.group(2) == name:
            out.append((m.group(1), m.group(2), int(m.group(3)), m.group(4)))
    return out


def notifications(d):
    st = d.status()
    assert isinstance(st.get("notifications"), dict), "status --json has no notifications: %r" % st
    return st["notifications"]


def assert_outbox_empties(d, timeout=3):
    """Everything was delivered: approvald must have heard so (nothing waiting, nothing
    in flight)."""
    ok = wait_for(lambda: (lambda n: n["outbox"] == 0 and n["in_flight"] == 0)(notifications(d)),
                  timeout, 0.1)
    assert ok, ("every delivery reached its receiver, but approvald still holds some (the "
                "sender reported them under another id, or not at all): %r\n%s"
                % (notifications(d), d.stderr()))


def walk(v, path=()):
    """(path, parent, key, value) of every value in a JSON tree."""
    if isinstance(v, dict):
        for k, x in v.items():
            yield path + (k,), v, k, x
            yield from walk(x, path + (k,))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            yield path + (i,), v, i, x
            yield from walk(x, path + (i,))


# ---------------------------------------------------------------------- 1: the events --

EVENTS_A = ["created", "approval", "approved", "expiring"]
EVENTS_B = ["approved", "rejected", "withdrawn", "revoked", "expired", "exhausted"]


def test_every_event_reaches_the_notifiers_of_its_rules_signed_with_its_fields(
        start_daemon, receivers, pki, workdir):
    ka = b"approvers-key-" + os.urandom(8).hex().encode()
    kb = b"requesters-key-" + os.urandom(8).hex().encode()
    A = receivers("approvers", secret=ka)
    B = receivers("requesters", secret=kb)
    d = start_daemon(policy(
        [hook(pki, A, "approvers", EVENTS_A, secret_file(workdir, "a", ka)),
         hook(pki, B, "requesters", EVENTS_B, secret_file(workdir, "b", kb))],
        rule("nprod", "nprod", ["approvers", "requesters"], approvals=2,
             admins=["group:p11gt-security"], max_uses=10, max_validity="1h"),
        rule("nother", "nother", ["requesters"]),
        rule("nquiet", "nquiet")), config=CONFIG)
    dig = p11g.digest("op1 payload")
    t0 = time.time()
    got = {"approvers": [], "requesters": []}

    def seen(r):
        return sorted((h.json["operation"]["id"], h.json["event"]) for h in r.got()
                      if h.json and isinstance(h.json.get("operation"), dict))

    def step(approvers=(), requesters=(), timeout=8):
        """Waits for what the last step must have told (one step at a time: at most two
        deliveries in flight together)."""
        got["approvers"] += approvers
        got["requesters"] += requesters
        wa, wb = sorted(got["approvers"]), sorted(got["requesters"])
        wait_for(lambda: seen(A) == wa and seen(B) == wb, timeout, 0.05)
        assert seen(A) == wa, "approvers: want %r, got %r\n%s" % (wa, A.got(), d.stderr())
        assert seen(B) == wb, "requesters: want %r, got %r\n%s" % (wb, B.got(), d.stderr())

    # op1: created, one approval, approved, its one use spent
    op1 = d.request("orderer", (key("nprod", "o1"), 1), description="op one", digests=[dig])
    step([(op1, "created")])
    d.approve("alice", op1)
    step([(op1, "approval")])
    d.approve("bob", op1)
    step([(op1, "approved")], [(op1, "approved")])
    d.use_ok("orderer", "nprod", "o1", dig=dig)
    assert d.state_of(op1) == "exhausted"
    step([], [(op1, "exhausted")])
    # op2: approved, an approval withdrawn, revoked by an admin
    op2 = d.request("orderer", key("nprod", "o2"), description="op two")
    step([(op2, "created")])
    d.approve("alice", op2)
    step([(op2, "approval")])
    d.approve("bob", op2)
    step([(op2, "approved")], [(op2, "approved")])
    expect_ok(d.cli("withdraw", op2, user="alice"))
    step([], [(op2, "withdrawn")])
    expect_ok(d.cli("revoke", op2, "--reason", "no longer needed", user="dave"))
    step([], [(op2, "revoked")])
    # op3: rejected with a reason
    op3 = d.request("orderer", key("nprod", "o3"), description="op three")
    step([(op3, "created")])
    expect_ok(d.cli("reject", op3, "--reason", "not this week", user="carol"))
    step([], [(op3, "rejected")])
    # op6: a rule without notifiers
    op6 = d.request("orderer", key("nquiet", "o6"), description="op six")
    d.approve("alice", op6)
    # op7: keys of both rules: each notifier hears each event once
    op7 = d.request("orderer", key("nprod", "o7"), key("nother", "o7"), description="op seven")
    step([(op7, "created")])
    expect_ok(d.cli("reject", op7, "--reason", "two keys, no", user="carol"))
    step([], [(op7, "rejected")])
    # op4: a rule whose only notifier does not want "created"; expires (a sweep about every
    # second)
    op4 = d.request("orderer", key("nother", "o4"), valid="2s", description="op four")
    step([], [(op4, "expired")], timeout=8)
    # op5: pending, ends within 15 minutes ("expiring" is checked about every 10 s)
    op5 = d.request("orderer", key("nprod", "o5"), valid="10m", description="op five")
    step([(op5, "created")])
    step([(op5, "expiring")], timeout=15)
    time.sleep(1.5)   # nothing more comes
    step()

    ops = {op1: "op one", op2: "op two", op3: "op three", op4: "op four", op5: "op five",
           op7: "op seven"}
    state_after = {"created": "pending", "approval": "pending", "approved": "approved",
                   "withdrawn": "pending", "revoked": "revoked", "rejected": "rejected",
                   "expired": "expired", "exhausted": "exhausted", "expiring": "pending"}
    actor_of = {(op1, "created"): "orderer", (op1, "approval"): "alice", (op1, "approved"): "bob",
                (op1, "exhausted"): "orderer", (op2, "approval"): "alice",
                (op2, "approved"): "bob", (op2, "withdrawn"): "alice", (op2, "revoked"): "dave",
                (op3, "rejected"): "carol", (op7, "rejected"): "carol"}
    orderer = pwd.getpwnam(U("orderer"))
    all_hits = A.got() + B.got()
    for name, r, k in (("approvers", A, ka), ("requesters", B, kb)):
        for h in r.got():
            b = h.json
            what = "%s: %r" % (name, h)
            assert b is not None, "body is not JSON: " + what
            assert h.ok and h.path == "/hooks/" + name, what
            assert h.sig_ok is True, "bad X-P11gate-Signature-256: " + what
            assert h.headers.get("content-type", "").startswith("application/json"), what
            assert h.event == b["event"], what
            assert re.fullmatch(r"[0-9]+", h.delivery or "") and b["delivery"] == h.delivery, what
            assert b["notifier"] == name, what
            assert isinstance(b["time"], int) and t0 - 2 <= b["time"] <= time.time() + 2, what
            o = b["operation"]
            opid, ev = o["id"], b["event"]
            assert o["state"] == state_after[ev], what
            assert o["description"] == ops[opid], what
            assert o["requester"] == {"uid": orderer.pw_uid, "user": orderer.pw_name}, what
            assert b["link"] == "%s/op/%d" % (WEB_URL, opid), what
            keys = o["keys"]
            assert keys and all(set(x) == {"uri", "rule", "uses", "used"} for x in keys), what
            if opid == op7:
                assert sorted(x["rule"] for x in keys) == ["nother", "nprod"], what
            else:
                assert [x["rule"] for x in keys] == ["nother" if opid == op4 else "nprod"], what
            if opid == op1:
                assert keys[0]["uri"] == key("nprod", "o1") and keys[0]["uses"] == 1, what
                assert keys[0]["used"] == (1 if ev == "exhausted" else 0), what
                assert o["digests"] == [dig], what
            if o["state"] == "pending":
                assert isinstance(o.get("needs"), str) and o["needs"], what
            if (opid, ev) in actor_of:
                assert b["actor"]["user"] == U(actor_of[(opid, ev)]), what
                assert b["actor"]["uid"] == p11g.uid_of(actor_of[(opid, ev)]), what
            if ev == "expiring":
                assert "actor" not in b, what
            if ev == "rejected":
                assert b["reason"] == ("not this week" if opid == op3 else "two keys, no"), what
            else:
                assert "reason" not in b or ev == "revoked", what
            if ev == "created":
                assert b["actor"]["user"] == U("orderer"), what
    # no secret in any body or header
    for h in all_hits:
        for s in (ka, kb):
            assert s not in h.body, "a notifier's key in a body: %r" % h
            assert all(s.decode() not in v for v in h.headers.values()), h
    ids = [h.delivery for h in all_hits]
    assert len(set(ids)) == len(ids), "a delivery id used twice: %r" % all_hits
    n = notifications(d)
    assert n["dead"] == {"approvers": 0, "requesters": 0} and n["dropped"] == 0, n
    assert "approvald-notify ended" not in d.stderr(), d.stderr()


def test_an_operation_approved_at_once_is_announced_once(start_daemon, receivers, pki):
    """A rule without approvals: its request is "approved" (not "created"), once; a bare use
    (an implicit one-use operation, made and spent by the use) is not told at all."""
    A = receivers("auto")
    d = start_daemon(policy([hook(pki, A, "auto", ["created", "approved", "exhausted"])],
                            rule("nauto", "nauto", ["auto"], approvals=0)), config=CONFIG)
    op = d.request("orderer", key("nauto", "a1"), description="approved at once")
    assert d.state_of(op) == "approved"
    d.use_ok("orderer", "nauto", "a1")
    implicit = d.use_ok("orderer", "nauto", "bare")["operation"]
    assert implicit != op

    def seen():
        return sorted((h.json["operation"]["id"], h.json["event"]) for h in A.got())

    want = sorted([(op, "approved"), (op, "exhausted")])
    wait_for(lambda: len(seen()) >= len(want), 5)
    time.sleep(1.5)
    assert seen() == want, "each event once per operation; got %r" % A.got()


# ------------------------------------------------------------- 2, 3: down, 500, 429 --

def test_a_receiver_down_then_up_gets_each_delivery_once_after_the_backoff(
        start_daemon, receivers, pki):
    R = receivers("late", up=False)
    d = start_daemon(policy([hook(pki, R, "late", ["created", "approval"])],
                            rule("nlate", "nlate", ["late"], approvals=2)), config=CONFIG)
    op = d.request("orderer", key("nlate", "k"))
    assert wait_for(lambda: failures(d, "late"), 5), \
        "no failed attempt logged while the receiver was down:\n" + d.stderr()
    t_fail = time.monotonic()
    first = failures(d, "late")[0]
    assert first[2] == 1, first
    d.approve("alice", op)   # a second event while it is down
    assert wait_for(lambda: (lambda n: n["outbox"] == 2 and n["in_flight"] == 0)(notifications(d)),
                    5), "both attempted and waiting: %r" % notifications(d)
    R.up()
    hits = R.wait(lambda h: True, n=2, timeout=15)
    assert hits, "nothing delivered within 15 s of the receiver coming up: %r\n%s" % (
        R.got(), d.stderr())
    # the first retry comes 5 s (+-20 %, whole seconds) after the failure
    assert min(h.t for h in hits) - t_fail >= 2.5, "retried before the backoff: %r" % hits
    time.sleep(2)
    hits = R.got()
    assert sorted(h.event for h in hits) == ["approval", "created"], hits
    assert len({h.delivery for h in hits}) == 2, "each delivery once: %r" % hits
    created = [h for h in hits if h.event == "created"][0]
    assert created.delivery == first[0], "the delivery id changed between attempts"
    assert all(h.json["operation"]["id"] == op for h in hits)
    assert_outbox_empties(d)


def test_500_is_retried_after_the_backoff(start_daemon, receivers, pki):
    E = receivers("e500")
    E.script = [500]
    d = start_daemon(policy([hook(pki, E, "e500", ["created"])],
                            rule("nretry", "nretry", ["e500"])), config=CONFIG)
    op = d.request("orderer", key("nretry", "k"))
    e = E.wait(lambda h: True, n=2, timeout=12)
    assert e, "the 500 was not retried within 12 s: %r\n%s" % (E.got(), d.stderr())
    assert [h.answer for h in e] == [500, 200], e
    assert e[0].delivery == e[1].delivery and e[0].body == e[1].body, e
    gap = e[1].t - e[0].t
    assert 2.9 <= gap <= 9, "retry after a 500 came %.1f s later (5 s +-20 %%)" % gap
    assert e[1].json["operation"]["id"] == op
    assert any("HTTP 500" in f[3] for f in failures(d, "e500")), d.stderr()
    time.sleep(1)
    assert len(E.got()) == 2
    assert_outbox_empties(d)


def test_retry_after_longer_than_the_backoff_is_honoured(start_daemon, receivers, pki):
    T = receivers("t429")
    T.script = [(429, {"Retry-After": "10"})]
    d = start_daemon(policy([hook(pki, T, "t429", ["created"])],
                            rule("nretry", "nretry", ["t429"])), config=CONFIG)
    d.request("orderer", key("nretry", "k"))
    t = T.wait(lambda h: True, n=2, timeout=16)
    assert t, "the 429 was not retried within 16 s: %r\n%s" % (T.got(), d.stderr())
    assert t[0].answer == (429, {"Retry-After": "10"}) and t[1].ok, t
    assert t[0].delivery == t[1].delivery, t
    gap = t[1].t - t[0].t
    # Retry-After: 10 is longer than the first backoff (4-6 s): it decides
    assert gap >= 8.9, "retried %.1f s after a 429 with Retry-After: 10" % gap
    time.sleep(1)
    assert len(T.got()) == 2


def test_no_redirect_is_followed_and_the_server_is_verified(start_daemon, receivers, pki):
    """A 302 is a failure, its Location never visited; a server whose certificate is not from
    the notifier's CA (no ca_file: the system's) is sent nothing."""
    target = receivers("target")
    redir = receivers("redir", default=(302, {"Location": target.url}))
    noca = receivers("noca")
    d = start_daemon(policy(
        [hook(pki, redir, "redir", ["created"]),
         {"name": "noca", "url": noca.url, "events": ["created"]}],
        rule("nsafe", "nsafe", ["redir", "noca"])), config=CONFIG)
    d.request("orderer", key("nsafe", "k"))
    assert redir.wait(lambda h: True, n=1, timeout=5), d.stderr()
    assert wait_for(lambda: (lambda n: n["outbox"] == 2 and n["in_flight"] == 0)(notifications(d)),
                    5), "both failed and wait for a retry: %r\n%s" % (notifications(d), d.stderr())
    time.sleep(0.5)
    assert target.got() == [], "a redirect was followed: %r" % target.got()
    assert noca.got() == [], "sent to a server the notifier's CA does not vouch for"
    f = failures(d)
    assert f and ("HTTP 302" in f[0][3] or "certificate" in f[0][3].lower()
                  or "ssl" in f[0][3].lower()), f


def test_retry_after_2_is_not_retried_sooner(start_daemon, receivers, pki):
    T = receivers("t429s")
    T.script = [(429, {"Retry-After": "2"})]
    d = start_daemon(policy([hook(pki, T, "t429s", ["created"])],
                            rule("nretry", "nretry", ["t429s"])), config=CONFIG)
    d.request("orderer", key("nretry", "k"))
    t = T.wait(lambda h: True, n=2, timeout=12)
    assert t, "the 429 was not retried within 12 s: %r" % T.got()
    assert t[1].t - t[0].t >= 1.9, t
    assert t[0].delivery == t[1].delivery and t[1].ok


def test_deliveries_finishing_out_of_order_are_each_reported_once(start_daemon, receivers, pki):
    """Several deliveries in flight at once, answered in another order than they were sent:
    each is delivered once and approvald hears of each (the outbox empties)."""
    R = receivers("many")
    R.script = [("delay", 2.0, 200), ("delay", 0.3, 200), ("delay", 1.2, 200), ("delay", 0.1, 200),
                ("delay", 0.6, 200)]
    d = start_daemon(policy([hook(pki, R, "many", ["created"])], rule("nmany", "nmany", ["many"])),
                     config=CONFIG)

    def five():
        with p11g.Conn(d.sock, 10) as c:
            return [p11g.assert_reply_ok(c.call({"verb": "request", "keys": [
                {"uri": key("nmany", "k%d" % i)}], "description": "many %d" % i}))["id"]
                for i in range(5)]

    ids = p11g.in_child(U("orderer"), five)
    ok = R.wait(lambda h: h.ok, n=5, timeout=10)
    assert ok, "not all 5 delivered: %r\n%s" % (R.got(), d.stderr())
    assert sorted(h.json["operation"]["id"] for h in ok) == sorted(ids)
    assert_outbox_empties(d, 5)
    time.sleep(1)
    assert len(R.got()) == 5, "delivered again: %r" % R.got()
    assert "approvald-notify ended" not in d.stderr(), d.stderr()


# ---------------------------------------------------------------- 4: never answers --

def test_a_receiver_that_never_answers_does_not_slow_uses(start_daemon, receivers, pki):
    H = receivers("hang", default="hang")
    d = start_daemon(policy(
        [hook(pki, H, "hang", ["created", "approved", "exhausted"], timeout="2s")],
        rule("nhang", "nhang", ["hang"], max_uses=1000)), config=CONFIG)
    op = d.request("orderer", (key("nhang", "k"), 500))
    d.approve("alice", op)
    assert H.wait(lambda h: True, n=1, timeout=5), "no delivery attempted"
    t_end = time.monotonic() + 8
    slow, n = [], 0
    while time.monotonic() < t_end:
        t = time.monotonic()
        res = d.use_ok("orderer", "nhang", "k", dig=p11g.digest(n))
        assert res["operation"] == op
        dt = time.monotonic() - t
        if dt >= 1.0:
            slow.append(("use", n, round(dt, 2)))
        if n < 40:   # more events for the stalled receiver (100 pending requests at most)
            t = time.monotonic()
            d.request("ci", key("nhang", "r%d" % n))
            dt = time.monotonic() - t
            if dt >= 1.0:
                slow.append(("request", n, round(dt, 2)))
        t = time.monotonic()
        d.status()
        dt = time.monotonic() - t
        if dt >= 1.0:
            slow.append(("status", n, round(dt, 2)))
        n += 1
    assert n >= 10, "only %d rounds in 8 s" % n
    assert not slow, "calls took a second or more while the receiver hung: %r" % slow
    # the first delivery was given up at its timeout and tried again
    first = H.got()[0]
    again = H.wait(lambda h: h.delivery == first.delivery, n=2, timeout=8)
    assert again, "delivery %s was not retried after its timeout: %r\n%s" % (
        first.delivery, H.got(), d.stderr())
    assert again[1].t - again[0].t >= 2.0 + 2.9, again
    assert any("Timeout was reached" in f[3] or "timed out" in f[3].lower()
               for f in failures(d, "hang")), d.stderr()
    st = notifications(d)
    assert st["outbox"] >= 1, st


# ------------------------------------------------------------------- 5: kill -9 --

def test_kill_9_before_delivery_delivers_after_restart_with_the_same_id(
        start_daemon, receivers, pki):
    R = receivers("crash")
    R.default = 500
    d = start_daemon(policy([hook(pki, R, "crash", ["created"])],
                            rule("ncrash", "ncrash", ["crash"])), config=CONFIG)
    op1 = d.request("orderer", key("ncrash", "k1"))
    h1 = R.wait(lambda h: True, n=1, timeout=5)
    assert h1, "no attempt for op1"
    d1 = h1[0].delivery
    R.down()
    # committed, never delivered: the receiver is down
    op2 = d.request("orderer", key("ncrash", "k2"))
    d.kill()   # SIGKILL
    assert not d.alive()
    R.default = 200
    R.up()
    time.sleep(0.5)
    assert all(h.json["operation"]["id"] == op1 for h in R.got()), \
        "a delivery after approvald's death: %r" % R.got()
    d.start()
    assert d.state_of(op2) == "pending"
    ok = R.wait(lambda h: h.ok, n=2, timeout=15)
    assert ok, "not both delivered within 15 s of the restart: %r\n%s" % (R.got(), d.stderr())
    time.sleep(1.5)
    ok = R.got(lambda h: h.ok)
    by_op = {h.json["operation"]["id"]: h for h in ok}
    assert sorted(by_op) == sorted([op1, op2]) and len(ok) == 2, "each once: %r" % R.got()
    assert by_op[op1].delivery == d1, "op1's delivery id changed across the restart: %r" % R.got()
    assert all(h.delivery == d1 for h in R.got() if h.json["operation"]["id"] == op1)
    assert by_op[op2].delivery != d1
    assert_outbox_empties(d)


# ------------------------------------------------------------- 6: dead, secret_file --

def test_deliveries_of_a_notifier_removed_from_the_policy_go_dead(start_daemon, receivers, pki):
    K = receivers("keep")
    G = receivers("gone", up=False)
    d = start_daemon(policy([hook(pki, K, "keep", ["created"]), hook(pki, G, "gone", ["created"])],
                            rule("ndead", "ndead", ["keep", "gone"])), config=CONFIG)
    op = d.request("orderer", key("ndead", "k"))
    assert K.wait(lambda h: True, n=1, timeout=5)
    assert wait_for(lambda: failures(d, "gone"), 5), d.stderr()
    gone_id = failures(d, "gone")[0][0]
    d.write_policy("10-test.json", policy([hook(pki, K, "keep", ["created"])],
                                          rule("ndead", "ndead", ["keep"])))
    n_loaded = sum(1 for r in d.audit() if r.get("event") == "policy_loaded")
    d.hup()
    assert wait_for(lambda: sum(1 for r in d.audit() if r.get("event") == "policy_loaded")
                    > n_loaded, 3), "the policy was not reloaded:\n" + d.stderr()

    def dead():
        return [r for r in d.audit() if r.get("event") == "notification_dead"]

    recs = wait_for(dead, 10, 0.2)
    assert recs, "no notification_dead in the audit within 10 s:\n" + d.stderr()
    assert len(recs) == 1, recs
    rec = recs[0]
    assert rec.get("notifier") == "gone" and str(rec.get("delivery")) == gone_id, rec
    assert p11g.op_of(rec) == op and rec.get("notify_event") == "created", rec
    assert "no longer in the policy" in rec.get("error", ""), rec
    assert_outbox_empties(d)
    # the audit log's chain still verifies with the new record in it
    expect_ok(d.cli("audit", "--verify"))
    # status counts dead deliveries per notifier
    dead_counts = notifications(d)["dead"]
    assert dead_counts.get("gone") == 1, \
        "status --json does not count the dead delivery of \"gone\": %r" % dead_counts
    assert dead_counts.get("keep") == 0, dead_counts


def test_a_secret_file_readable_by_others_is_refused(start_daemon, receivers, pki, workdir):
    S = receivers("loose", secret=b"k")
    loose = secret_file(workdir, "loose", b"loose-secret-key", mode=0o644)
    d = start_daemon(policy([hook(pki, S, "loose", ["created"], loose)],
                            rule("nsec", "nsec", ["loose"])), config=CONFIG)
    d.request("orderer", key("nsec", "k"))
    assert wait_for(lambda: failures(d, "loose"), 5), "no failure logged:\n" + d.stderr()
    f = failures(d, "loose")[0]
    assert "secret_file" in f[3] and loose in f[3], f
    assert "0600" in f[3], f
    time.sleep(0.5)
    assert S.got() == [], "sent without its signature: %r" % S.got()
    st = notifications(d)
    assert st["outbox"] == 1 and st["dead"] == {"loose": 0}, st
    assert b"loose-secret-key" not in d.stderr().encode()


# ----------------------------------------------------------------- 7: a command --

SCRIPT = """#!/bin/sh
# $1: the output directory; $2: how many first calls fail
n=$(ls "$1" | grep -c '^in-')
cat > "$1/in-$n"
id -u > "$1/uid-$n"
env > "$1/env-$n"
if [ "$n" -lt "$2" ]; then exit 1; fi
exit 0
"""


def test_a_command_notifier_gets_the_json_and_a_failure_is_retried(start_daemon, workdir):
    bindir = os.path.join(workdir, "bin")
    os.mkdir(bindir, 0o755)
    prog = os.path.join(bindir, "notify.sh")
    with open(prog, "w") as f:
        f.write(SCRIPT)
    os.chmod(prog, 0o755)
    out = os.path.join(workdir, "out")
    os.mkdir(out)
    os.chmod(out, 0o777)   # approvald-notify runs it as nobody
    d = start_daemon(policy([{"name": "cmd", "command": [prog, out, "1"], "events": ["created"],
                              "timeout": "5s"}],
                            rule("ncmd", "ncmd", ["cmd"])), config=CONFIG)
    op = d.request("orderer", key("ncmd", "k"), description="by command")

    def calls():
        return sorted(f for f in os.listdir(out) if f.startswith("in-"))

    assert wait_for(lambda: len(calls()) >= 1, 5), "the command was not run:\n" + d.stderr()
    t1 = time.monotonic()
    assert wait_for(lambda: len(calls()) >= 2, 12), \
        "a command exiting 1 was not run again within 12 s:\n" + d.stderr()
    assert time.monotonic() - t1 >= 2.5
    time.sleep(1.5)
    assert calls() == ["in-0", "in-1"], calls()
    bodies = []
    for c in calls():
        with open(os.path.join(out, c)) as f:
            bodies.append(json.loads(f.read()))
    assert bodies[0] == bodies[1], "the retry's input differs: %r" % bodies
    b = bodies[0]
    assert b["event"] == "created" and b["notifier"] == "cmd", b
    assert b["operation"]["id"] == op and b["operation"]["description"] == "by command", b
    assert re.fullmatch(r"[0-9]+", b["delivery"]), b
    assert b["link"] == "%s/op/%d" % (WEB_URL, op), b
    for i in (0, 1):
        with open(os.path.join(out, "uid-%d" % i)) as f:
            assert int(f.read()) == NOBODY, "the command did not run as nobody"
        with open(os.path.join(out, "env-%d" % i)) as f:
            env = dict(l.split("=", 1) for l in f.read().splitlines() if "=" in l)
        assert env.get("P11GATE_EVENT") == "created", env
        assert env.get("P11GATE_DELIVERY") == b["delivery"], env
        assert "P11GATE_SIGNATURE_256" not in env, env   # no secret_file
        assert not [k for k in env if k not in ("PATH", "PWD", "SHLVL", "_", "OLDPWD")
                    and not k.startswith("P11GATE_")], "more in its environment: %r" % env
    assert any("exited with status 1" in x[3] for x in failures(d, "cmd")), d.stderr()
    assert_outbox_empties(d)


def test_a_command_past_its_timeout_is_killed_and_retried(start_daemon):
    d = start_daemon(policy([{"name": "slow", "command": ["/bin/sleep", "30"],
                              "events": ["created"], "timeout": "1s"}],
                            rule("nslow", "nslow", ["slow"])), config=CONFIG)
    t0 = time.monotonic()
    d.request("orderer", key("nslow", "k"))
    assert wait_for(lambda: failures(d, "slow"), 5), "no failure logged:\n" + d.stderr()
    assert time.monotonic() - t0 < 4
    f = failures(d, "slow")[0]
    assert "timeout" in f[3] and f[2] == 1, f
    st = notifications(d)
    assert st["outbox"] == 1 and st["dead"] == {"slow": 0}, st


# ----------------------------------------------------------- 8: a bad notifier --

BAD_NOTIFIER = """{
  "notifiers": [
    {"name": "ok", "url": "https://127.0.0.1:1/x", "events": ["created"]},
    {"name": "plain", "url": "http://hooks.example.com/services/T0/B0/SeCrEtPaTh", "events": ["created"]}
  ],
  "rules": []
}
"""

UNKNOWN_NOTIFIER = """{
  "notifiers": [
    {"name": "ok", "url": "https://127.0.0.1:1/x", "events": ["created"]}
  ],
  "rules": [
    {"name": "r", "keys": ["pkcs11:token=r"], "orderers": ["group:p11gt-ci"], "approvals": 0,
     "notify": ["ok", "nosuch"]}
  ]
}
"""

BAD_EVENT = """{
  "notifiers": [
    {"name": "ok", "url": "https://127.0.0.1:1/x", "events": ["created", "exploded"]}
  ]
}
"""


@pytest.mark.parametrize("text,anchor", [
    (BAD_NOTIFIER, '"http://hooks.example.com'),
    (UNKNOWN_NOTIFIER, '"nosuch"'),
    (BAD_EVENT, '"exploded"'),
], ids=["plain-http", "unknown-name", "unknown-event"])
def test_a_bad_notifier_is_refused_at_file_line_column(accounts, workdir, text, anchor):
    path = os.path.join(workdir, "bad.json")
    with open(path, "w") as f:
        f.write(text)
    a = text.index(anchor)
    line = text.count("\n", 0, a) + 1
    col = a - (text.rfind("\n", 0, a) + 1) + 1
    r = p11g.approvald("policy", "check", path)
    assert r.rc == 1, r
    m = re.search(re.escape(path) + r":(\d+):(\d+): \S", r.err)
    assert m, "no file:line:column: %r" % r
    assert (int(m.group(1)), int(m.group(2))) in ((line, col), (line, col + 1)), \
        "error at %s:%s, expected %d:%d: %r" % (m.group(1), m.group(2), line, col, r)
    assert "SeCrEtPaTh" not in r.err, "the message repeats the whole URL: %r" % r
    # approvald refuses to start on it
    d = p11g.Daemon(files={"10-bad.json": text})
    try:
        with pytest.raises(AssertionError):
            d.start(timeout=10)
        assert not d.alive()
        assert re.search(r"10-bad\.json:%d:%d" % (line, col), d.stderr()) or \
            re.search(r"10-bad\.json:%d:%d" % (line, col + 1), d.stderr()), d.stderr()
        assert "SeCrEtPaTh" not in d.stderr()
    finally:
        d.kill()
        d.cleanup()


# --------------------------------------------------------- 9: approvald notify test --

def test_notify_test_is_root_s_and_delivers_a_test_event(start_daemon, receivers, pki, workdir):
    kt = b"test-key-" + os.urandom(8).hex().encode()
    T = receivers("tst", secret=kt)
    d = start_daemon(policy([hook(pki, T, "tst", ["rejected"], secret_file(workdir, "t", kt))],
                            rule("ntest", "ntest", ["tst"])), config=CONFIG)
    r = expect_ok(p11g.approvald("notify", "test", "tst", "--socket", d.sock))
    assert "tst" in r.out, r
    hits = T.wait(lambda h: True, n=1, timeout=5)
    assert hits, "the test event was not delivered: %r\n%s" % (T.got(), d.stderr())
    h = hits[0]
    assert h.event == "test" and h.sig_ok is True, h
    b = h.json
    assert b["event"] == "test" and b["notifier"] == "tst" and b["delivery"] == h.delivery, b
    assert "operation" not in b and isinstance(b.get("message"), str), b
    assert b["actor"]["uid"] == 0, b
    # refused to others, and for names the policy does not have
    for user in ("alice", "dave", "orderer"):
        expect_fail(p11g.approvald("notify", "test", "tst", "--socket", d.sock, user=user),
                    "forbidden")
    expect_fail(p11g.approvald("notify", "test", "nosuch", "--socket", d.sock), "not_found")
    time.sleep(1)
    assert len(T.got()) == 1, T.got()
    # the daemon's usual --socket placement (before the operands) works too
    r = d.cli("notify test", "tst")
    assert r.rc == 0, "approvald notify test --socket PATH NAME: %r" % r


# ---------------------------------------------------------- 10: slack and teams --

HOSTILE = "Deploy <http://evil|click> and [x](http://evil) <!channel> *bold*"
RAW = ["<http://evil|click>", "[x](http://evil)", "<!channel>"]
SLACK_RAW = ["<http://evil|click>", "<!channel>"]   # what Slack's mrkdwn acts on


def formatted(start_daemon, receivers, pki, workdir, fmt):
    """The body a notifier of format fmt gets for a request with a hostile description."""
    k = (fmt + "-key-").encode() + os.urandom(8).hex().encode()
    R = receivers(fmt, secret=k)
    d = start_daemon(policy(
        [hook(pki, R, fmt, ["created"], secret_file(workdir, fmt, k), format=fmt)],
        rule("nfmt", "nfmt", [fmt])), config=CONFIG)
    op = d.request("orderer", key("nfmt", "k"), description=HOSTILE)
    h = R.wait(lambda h: True, n=1, timeout=5)
    assert h, "nothing delivered: %r\n%s" % (R.got(), d.stderr())
    h = h[0]
    assert h.sig_ok is True and h.event == "created", h
    assert h.json is not None, h
    assert k not in h.body
    return h.json, op, "%s/op/%d" % (WEB_URL, op)


def test_slack_body_has_block_kit_shape_and_keeps_text_plain(start_daemon, receivers, pki,
                                                             workdir):
    m, op, link = formatted(start_daemon, receivers, pki, workdir, "slack")
    assert isinstance(m, dict) and isinstance(m.get("text"), str) and m["text"], m
    blocks = m["blocks"]
    assert isinstance(blocks, list) and blocks, m
    assert blocks[0]["type"] == "header" and blocks[0]["text"]["type"] == "plain_text", blocks[0]
    assert str(op) in blocks[0]["text"]["text"], blocks[0]
    assert len(blocks[0]["text"]["text"]) <= 150, blocks[0]
    sections = [b for b in blocks if b["type"] == "section" and "fields" in b]
    assert sections and sections[0]["fields"], blocks
    for f in sections[0]["fields"]:
        assert f["type"] == "plain_text" and isinstance(f["text"], str), f
    assert len(sections[0]["fields"]) <= 10
    assert any(f["text"] == "Requester: " + U("orderer") for f in sections[0]["fields"]), sections
    actions = [b for b in blocks if b["type"] == "actions"]
    assert len(actions) == 1, blocks
    buttons = [e for e in actions[0]["elements"] if e["type"] == "button"]
    assert buttons and buttons[0]["url"] == link, actions
    assert buttons[0]["text"]["type"] == "plain_text", buttons
    urls = [v for p, parent, k, v in walk(m) if k == "url"]
    assert urls == [link], "the only link is the operation's page: %r" % urls
    assert any(v == HOSTILE for p, parent, k, v in walk(m)
               if isinstance(parent, dict) and parent.get("type") == "plain_text"), m
    assert not any(isinstance(v, dict) and v.get("type") == "mrkdwn" for p, parent, k, v in walk(m))
    # the requester's text in blocks only in plain_text objects; the message's top-level "text"
    # (the notification's fallback, read as mrkdwn) with Slack's & < > escaped
    for p, parent, k, v in walk(m):
        if p == ("text",):
            assert not any(x in v for x in SLACK_RAW), \
                "the top-level text (mrkdwn) carries the description's raw <...>: %r" % v
            assert "&lt;http://evil|click&gt;" in v and "&lt;!channel&gt;" in v, v
        elif isinstance(v, str) and any(x in v for x in RAW):
            assert isinstance(parent, dict) and parent.get("type") == "plain_text" \
                and k == "text", "the description's raw text at %s of the Slack body, " \
                "outside a plain_text object: %r" % ("/".join(map(str, p)), v)


def test_teams_body_is_an_adaptive_card_with_escaped_text(start_daemon, receivers, pki, workdir):
    m, op, link = formatted(start_daemon, receivers, pki, workdir, "teams")
    assert m["type"] == "message" and isinstance(m["attachments"], list), m
    assert len(m["attachments"]) == 1, m
    att = m["attachments"][0]
    assert att["contentType"] == "application/vnd.microsoft.card.adaptive", att
    card = att["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4", card
    assert isinstance(card["body"], list) and card["body"], card
    assert all(isinstance(b, dict) and isinstance(b.get("type"), str) for b in card["body"]), card
    assert card["body"][0]["type"] == "TextBlock" and str(op) in card["body"][0]["text"], card
    assert card["actions"] == [{"type": "Action.OpenUrl", "title": card["actions"][0].get("title"),
                                "url": link}], card["actions"]
    urls = [v for p, parent, k, v in walk(m) if k == "url"]
    assert urls == [link], urls
    facts = [b for b in card["body"] if b["type"] == "FactSet"]
    assert facts and all(set(f) == {"title", "value"} for f in facts[0]["facts"]), card["body"]
    texts = [v for p, parent, k, v in walk(card) if isinstance(v, str)]
    for v in texts:
        for x in RAW:
            assert x not in v, "raw Markdown/link text in the card: %r" % v
    assert any("\\<http://evil\\|click\\>" in v and "\\[x\\]\\(http://evil\\)" in v
               for v in texts), "the description is not backslash-escaped: %r" % texts


# -------------------------------------------------------------- 11: internal verbs --

def test_the_sender_s_verbs_are_unknown_to_clients(start_daemon, receivers, pki):
    R = receivers("int")
    d = start_daemon(policy([hook(pki, R, "int", ["created"])], rule("nint", "nint", ["int"])),
                     config=CONFIG)
    d.request("orderer", key("nint", "k"))
    assert R.wait(lambda h: True, n=1, timeout=5)
    for user in (None, "orderer", "alice"):
        p11g.assert_refused(d.call({"verb": "notify_take", "max": 4}, user=user), "unknown_verb")
        p11g.assert_refused(d.call({"verb": "notify_take"}, user=user), "unknown_verb")
        p11g.assert_refused(d.call({"verb": "notify_done", "results": [
            {"id": 1, "ok": True}]}, user=user), "unknown_verb")
    with d.conn() as c:   # one connection, then an ordinary verb on it still works
        p11g.assert_refused(c.call({"verb": "notify_take", "max": 1}), "unknown_verb")
        p11g.assert_reply_ok(c.call({"verb": "status"}))
    # what was delivered stays delivered: nothing re-sent, nothing dropped
    time.sleep(1)
    assert len(R.got()) == 1


# ----------------------------------------------------------------- a full outbox --

def test_a_full_outbox_drops_notifications_and_nothing_else(start_daemon, receivers, pki):
    R = receivers("full", up=False)
    d = start_daemon(policy([hook(pki, R, "full", ["created"])], rule("nfull", "nfull", ["full"])),
                     config=dict(CONFIG, notify_outbox_max=100))

    def many(base):
        def go():
            ids = []
            with p11g.Conn(d.sock, 10) as c:
                for i in range(base, base + 55):
                    rep = c.call({"verb": "request", "keys": [{"uri": key("nfull", "k%d" % i)}],
                                  "description": "full %d" % i})
                    ids.append(p11g.assert_reply_ok(rep)["id"])
            return ids
        return go

    # at most 100 pending requests per user: two users
    ids = p11g.in_child(U("orderer"), many(0), timeout=60) + p11g.in_child(U("ci"), many(55),
                                                                          timeout=60)
    assert len(set(ids)) == 110
    st = wait_for(lambda: notifications(d)["dropped"] >= 10 and notifications(d), 3)
    assert st and st["dropped"] == 10 and st["outbox"] == 100, notifications(d)
    # every operation and its audit record are there, and decisions still work
    assert set(ids) <= set(d.list_ids("--all"))
    created = {p11g.op_of(r) for r in d.audit() if r.get("event") == "created"}
    assert set(ids) <= created
    d.approve("alice", ids[-1])
    assert d.state_of(ids[-1]) == "approved"
    d.use_ok("ci", "nfull", "k109")
    R.up()
    hits = R.wait(lambda h: h.ok, n=100, timeout=30)
    assert hits, "the kept deliveries did not arrive: %d of 100" % len(R.got(lambda h: h.ok))
    time.sleep(1)
    got = R.got()
    assert len({h.delivery for h in got}) == 100 and len(got) == 100, \
        "%d requests for %d deliveries (each once expected)\n%s" % (
            len(got), len({h.delivery for h in got}), d.stderr()[-3000:])
    assert_outbox_empties(d)


def test_refused_uses_are_told_once_a_minute_per_key(start_daemon, receivers, pki):
    """use_refused: the first refused use of a key is told (who, which key, why); more of the
    same key within the minute are counted, not sent; another key is told on its own; one uid's
    refusals are told 5 times a minute at most (made-up keys flood neither the outbox nor the
    share of other uids), 20 in all."""
    R = receivers("sec")
    d = start_daemon(policy([hook(pki, R, "sec", ["use_refused"])],
                            rule("nref", "nref", ["sec"])), config=CONFIG)
    for _ in range(5):
        d.use_refused("mallory", "nref", "k1", "no_operation")
    d.use_refused("mallory", "nref", "k2", "no_operation")
    assert wait_for(lambda: len(R.got()) >= 2, 5), R.got()
    time.sleep(1.5)
    got = [h.json for h in R.got()]
    assert [g["event"] for g in got] == ["use_refused", "use_refused"], got
    assert sorted(g["key"].split("object=")[1].split(";")[0] for g in got) == ["k1", "k2"], got
    assert all(g["refusal"] == "no_operation" and g["actor"]["user"] == U("mallory") and
               g["rule"] == "nref" and "operation" not in g for g in got), got
    # made-up keys: mallory's refusals are told 5 times a minute, the rest are not...
    for i in range(30):
        d.use_refused("mallory", "nref", "made-up-%d" % i, "no_operation")
    time.sleep(2)
    assert len(R.got()) == 5, len(R.got())
    # ... and another uid's refusal is still told
    d.use_refused("dave", "nref", "k3", "no_operation")
    assert wait_for(lambda: len(R.got()) == 6, 5), R.got()
    assert R.got()[-1].json["actor"]["user"] == U("dave")
    # and nothing of it reached the rule's other business: a request still works
    op = d.request("orderer", key("nref", "real"))
    assert d.state_of(op) == "pending"
