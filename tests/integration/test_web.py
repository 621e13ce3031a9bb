"""approvald's web page and JSON API (issue 20), over HTTP/1.1 on its `web_socket`.

The contract: the issue's text and README "Approving in a browser".  Every request here is
spoken by a process running as a test user (the kernel names the peer), or by the trusted
proxy's uid (p11gt-ci in these tests, so that no Apache is needed) naming a user in
X-Remote-User.  The browser test (Selenium, Apache) is elsewhere; this file checks the server's
side of the contract byte for byte: identity, the API, the forms' CSRF/Origin/Host checks,
escaping of what a requester typed, response headers, limits, and the web process's restart.
"""

import html.parser
import http.client
import json
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import urllib.parse

import pytest

import p11g
from p11g import U, assert_reply_ok, expect_ok

PROXY = "ci"                      # the uid trusted to name users (web_proxy_user)
USER_HEADER = "X-Remote-User"
PROD = "pkcs11:token=prod;object=%s"
PINNED = "pkcs11:token=pinned;object=%s"
HTTP_TIMEOUT = 8

# the statuses the contract gives approvald's codes
STATUS = {"already_decided": 409, "expired": 409, "already_approved": 409,
          "forbidden": 403, "self_approval": 403, "not_approver": 403, "csrf": 403,
          "origin": 403, "host": 403, "not_found": 404, "bad_request": 400}


# ------------------------------------------------------------------ HTTP --

class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a Unix socket (Host: localhost unless a Host header is given)."""

    def __init__(self, path, host="localhost", timeout=HTTP_TIMEOUT):
        super().__init__(host, timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class Resp:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def header(self, name):
        vals = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(vals) if vals else None

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise AssertionError("not JSON (%s): %r" % (e, self))

    def tree(self):
        return parse_html(self.text)

    def __repr__(self):
        return "<HTTP %s %r\n%s>" % (self.status, self.headers, self.text[:3000])


def _exchange(path, method, url, body, headers, timeout):
    c = UnixHTTPConnection(path, timeout=timeout)
    try:
        c.request(method, url, body=body, headers=headers)
        r = c.getresponse()
        return r.status, r.getheaders(), r.read()
    finally:
        c.close()


class Web:
    """One approvald with a web socket, and clients for it."""

    def __init__(self, d, path):
        self.d, self.path = d, path

    def req(self, user, method, url, body=None, headers=None, proxy_for=None,
            timeout=HTTP_TIMEOUT):
        """One request on a fresh connection, as user (None: root); proxy_for: as the proxy,
        naming that user in X-Remote-User."""
        hdrs = dict(headers or {})
        if proxy_for is not None:
            user = PROXY
            hdrs[USER_HEADER] = proxy_for
        if isinstance(body, str):
            body = body.encode()
        path = self.path

        def go():
            return _exchange(path, method, url, body, hdrs, timeout)
        st, hs, b = p11g.in_child(U(user) if user else None, go, timeout + 5)
        return Resp(st, hs, b)

    def get(self, user, url, **kw):
        return self.req(user, "GET", url, **kw)

    def api(self, user, method, url, obj=None, csrf=True, headers=None, **kw):
        hdrs = {"Accept": "application/json"}
        body = None
        if method == "POST":
            if csrf:
                hdrs["X-P11gate-Request"] = "1"
            if obj is not None:
                body = json.dumps(obj)
                hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        return self.req(user, method, "/api/v1" + url, body=body, headers=hdrs, **kw)

    def form(self, user, url, fields, headers=None, **kw):
        hdrs = {"Content-Type": "application/x-www-form-urlencoded"}
        hdrs.update(headers or {})
        return self.req(user, "POST", url, body=urllib.parse.urlencode(fields), headers=hdrs,
                        **kw)

    def answers(self):
        try:
            st, _, _ = _exchange(self.path, "GET", "/static/app.css", None, {}, 2)
            return st is not None
        except (OSError, http.client.HTTPException):
            return False


def api_error(r, code, status=None):
    """An API error reply: the status the contract gives the code, {"error":{code, message}}."""
    status = status if status is not None else STATUS.get(code)
    if status is None:
        assert 400 <= r.status < 500, "expected a 4xx (%s): %r" % (code, r)
    else:
        assert r.status == status, "expected HTTP %s (%s): %r" % (status, code, r)
    j = r.json()
    e = j.get("error") if isinstance(j, dict) else None
    assert isinstance(e, dict), "error reply without error object: %r" % r
    assert e.get("code") == code, "expected error code %s: %r" % (code, r)
    assert isinstance(e.get("message"), str) and e["message"], "error without message: %r" % r
    return e


def page_error(r, code, status=None):
    """An HTML error: the status, and <p id="flash" class="error" data-code="CODE">."""
    status = status if status is not None else STATUS[code]
    assert r.status == status, "expected HTTP %s (%s): %r" % (status, code, r)
    flash = r.tree().find(id="flash")
    assert flash is not None and "error" in flash.classes(), "no #flash.error: %r" % r
    assert flash.attrs.get("data-code") == code, "expected data-code=%s: %r" % (code, r)
    return flash


def ids_of(ops):
    return [int(o["id"]) for o in ops]


# ------------------------------------------------------------------ HTML --

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
        "source", "track", "wbr"}


class Node:
    def __init__(self, tag, attrs, parent):
        self.tag, self.parent = tag, parent
        self.attr_list = list(attrs)
        self.attrs = dict(attrs)
        self.children = []

    def classes(self):
        return (self.attrs.get("class") or "").split()

    def iter(self):
        yield self
        for c in self.children:
            if isinstance(c, Node):
                yield from c.iter()

    def text(self):
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def find_all(self, tag=None, id=None, cls=None, **attrs):
        out = []
        for n in self.iter():
            if n is self and n.tag == "#root":
                continue
            if tag is not None and n.tag != tag:
                continue
            if id is not None and n.attrs.get("id") != id:
                continue
            if cls is not None and cls not in n.classes():
                continue
            if any(n.attrs.get(k.replace("_", "-")) != v for k, v in attrs.items()):
                continue
            out.append(n)
        return out

    def find(self, *a, **kw):
        r = self.find_all(*a, **kw)
        return r[0] if r else None

    def __repr__(self):
        return "<%s %r>" % (self.tag, self.attrs)


class _Tree(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.cur = Node("#root", [], None)

    def handle_starttag(self, tag, attrs):
        n = Node(tag, attrs, self.cur)
        self.cur.children.append(n)
        if tag not in VOID:
            self.cur = n

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, attrs, self.cur))

    def handle_endtag(self, tag):
        n = self.cur
        while n is not None and n.tag != tag:
            n = n.parent
        if n is not None and n.parent is not None:
            self.cur = n.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def parse_html(text):
    t = _Tree()
    t.feed(text)
    t.close()
    return t.root


def assert_inert(r):
    """No inline script or style, no event handler attributes, no javascript: URL; nothing a
    requester typed can have made any of these."""
    raw = r.text
    assert "<script>alert" not in raw.lower(), "raw <script> in the page: %r" % r
    tree = r.tree()
    for n in tree.iter():
        if n.tag == "script":
            src = n.attrs.get("src")
            assert src and src.startswith("/static/"), "inline or foreign script %r: %r" % (n, r)
            assert not n.text().strip(), "script with a body: %r" % r
        assert n.tag != "style", "a <style> element: %r" % r
        for k, v in n.attr_list:
            assert not k.lower().startswith("on"), "event handler attribute %s on %r: %r" \
                % (k, n, r)
            assert k.lower() != "style", "style= attribute on %r: %r" % (n, r)
            if k.lower() in ("href", "src", "action", "formaction") and v:
                assert not v.strip().lower().startswith("javascript:"), \
                    "javascript: URL in %r: %r" % (n, r)
    return tree


def duplicate_ids(r):
    ids = [n.attrs["id"] for n in r.tree().iter() if n.attrs.get("id")]
    return sorted({i for i in ids if ids.count(i) > 1})


def assert_security_headers(r):
    csp = r.header("Content-Security-Policy") or ""
    assert "default-src 'self'" in csp, "CSP missing or different: %r" % r
    assert (r.header("X-Frame-Options") or "").upper() == "DENY", "X-Frame-Options: %r" % r
    assert (r.header("X-Content-Type-Options") or "").lower() == "nosniff", r
    assert "no-store" in (r.header("Cache-Control") or ""), r


def csrf_of(r):
    """The csrf token from a details page's approve form."""
    form = r.tree().find("form", id="approve")
    assert form is not None, "no form#approve: %r" % r
    inp = form.find("input", name="csrf")
    assert inp is not None and inp.attrs.get("value"), "no csrf input in form#approve: %r" % r
    return inp.attrs["value"]


# --------------------------------------------------------------- daemons --

@pytest.fixture
def start_web(start_daemon):
    """Factory: start_web(policy=None, extra=None, web=True) -> Web (web.d the Daemon)."""
    dirs = []

    def start(policy=None, extra=None, web=True):
        sdir = tempfile.mkdtemp(prefix="p11gt-web-")
        os.chmod(sdir, 0o755)
        dirs.append(sdir)
        path = os.path.join(sdir, "web.sock")
        config = {}
        if web:
            config["web_socket"] = path
            config["web_proxy_user"] = U(PROXY)
        config.update(extra or {})
        d = start_daemon(policy=policy if policy is not None else p11g.default_policy(),
                         config=config)
        w = Web(d, path)
        if web:
            assert p11g.wait_for(w.answers, 10), \
                "the web socket does not answer HTTP; stderr:\n%s" % d.stderr()
        return w

    yield start
    for s in dirs:
        shutil.rmtree(s, ignore_errors=True)


@pytest.fixture
def web(start_web):
    return start_web()


def request_op(d, label, user="orderer", description="web test", **kw):
    return d.request(user, PROD % label, description=description, **kw)


def make_ops(d, n, prefix):
    """n prod operations requested by the orderer on one connection; their ids in order."""
    sock = d.sock

    def go():
        out = []
        with p11g.Conn(sock) as c:
            for i in range(n):
                rep = c.call({"verb": "request", "keys": [{"uri": PROD % ("%s%d" % (prefix, i))}],
                              "description": "bulk %s %d" % (prefix, i)})
                out.append(int(assert_reply_ok(rep)["id"]))
        return out
    return p11g.in_child(U("orderer"), go, 30)


def audit_of(d, event, op):
    return [r for r in d.audit() if r.get("event") == event and p11g.op_of(r) == op]


def descendants(pid):
    """Pids of every process below pid."""
    children = {}
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % e) as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st[st.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(e))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def web_pids(d):
    out = []
    for p in descendants(d.proc.pid):
        try:
            with open("/proc/%d/cmdline" % p, "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        if cmd and os.path.basename(cmd[0].decode(errors="replace")) == "approvald-web":
            out.append(p)
    return out


# ============================================================== identity ==

def test_socket_mode_and_headers_on_every_response(web):
    """The socket is 0666; every kind of response carries CSP, X-Frame-Options DENY, nosniff
    and no-store; the static files are there."""
    d = web.d
    st = os.stat(web.path)
    assert st.st_mode & 0o777 == 0o666, oct(st.st_mode)
    op = request_op(d, "hdr")
    tok = csrf_of(web.get("alice", "/op/%d" % op))
    responses = {
        "list": web.get("alice", "/"),
        "all": web.get("alice", "/?view=all"),
        "details": web.get("alice", "/op/%d" % op),
        "css": web.get("alice", "/static/app.css"),
        "js": web.get("alice", "/static/app.js"),
        "api list": web.api("alice", "GET", "/operations"),
        "api status": web.api("alice", "GET", "/status"),
        "api 404": web.api("alice", "GET", "/operations/987654"),
        "404": web.get("alice", "/no/such/page"),
        "405": web.req("alice", "DELETE", "/"),
        "csrf 403": web.form("alice", "/op/%d/approve" % op, {"confirm": "1"}),
        "api csrf 403": web.api("alice", "POST", "/operations/%d/approve" % op, csrf=False),
        "confirm page": web.form("alice", "/op/%d/approve" % op, {"csrf": tok}),
        "proxy 403": web.get(PROXY, "/"),
        "303": web.form("alice", "/op/%d/approve" % op, {"csrf": tok, "confirm": "1"}),
    }
    responses["409"] = web.form("alice", "/op/%d/approve" % op, {"csrf": tok, "confirm": "1"})
    responses["413"] = big_post(web, "alice", "/api/v1/operations/%d/reject" % op, 20 * 1024)
    assert responses["409"].status == 409 and responses["413"].status == 413, responses
    missing = []
    for what, r in responses.items():
        try:
            assert_security_headers(r)
        except AssertionError as e:
            missing.append("%s: %s" % (what, str(e)[:300]))
    assert missing == [], "\n".join(missing)
    assert responses["css"].status == 200 and "css" in responses["css"].header("Content-Type")
    assert responses["js"].status == 200 and "javascript" in responses["js"].header("Content-Type")
    assert responses["303"].status == 303, responses["303"]
    assert responses["404"].status == 404 and responses["405"].status == 405


def test_peer_uid_is_the_identity(web):
    d = web.d
    op = request_op(d, "peer", description="peer identity")
    # alice (approver) sees it, on the page and in the API
    r = web.get("alice", "/")
    assert r.status == 200, r
    t = assert_inert(r)
    rows = t.find_all("tr", cls="op")
    assert [int(x.attrs["data-id"]) for x in rows] == [op], r
    assert t.find("span", id="pending-count").text().strip() == "1", r
    a = rows[0].find("a", cls="open")
    assert a is not None and a.attrs.get("href") == "/op/%d" % op, r
    assert ids_of(web.api("alice", "GET", "/operations").json()["operations"]) == [op]
    # mallory sees none, may not open it, may not decide it
    r = web.get("mallory", "/")
    assert r.status == 200, r
    t = r.tree()
    assert t.find_all("tr", cls="op") == [] and t.find("p", id="empty") is not None, r
    assert t.find("span", id="pending-count").text().strip() == "0", r
    j = web.api("mallory", "GET", "/operations").json()
    assert j["operations"] == [] and j["more"] is False, j
    assert web.api("mallory", "GET", "/operations?all=1").json()["operations"] == []
    r = web.get("mallory", "/op/%d" % op)
    assert r.status in (403, 404), r
    assert "peer identity" not in r.text, r
    assert r.tree().find("form", id="approve") is None, r
    r = web.api("mallory", "GET", "/operations/%d" % op)
    assert r.status in (403, 404), r
    api_error(r, r.json()["error"]["code"], r.status)
    cli = d.cli("approve", op, "--yes", user=U("mallory"))
    assert cli.rc != 0 and cli.code, cli
    r = web.api("mallory", "POST", "/operations/%d/approve" % op)
    api_error(r, cli.code)
    # X-Remote-User from a peer that is not the proxy is ignored: mallory stays mallory
    r = web.api("mallory", "GET", "/operations", headers={USER_HEADER: U("alice")})
    assert r.status == 200 and r.json()["operations"] == [], r
    r = web.api("mallory", "POST", "/operations/%d/approve" % op,
                headers={USER_HEADER: U("alice")})
    api_error(r, cli.code)
    assert web.api("mallory", "GET", "/status",
                   headers={USER_HEADER: U("alice")}).json()["pending_for_you"] == 0
    o = d.show(op)
    assert o["state"] == "pending" and o["approvals"] == [], o
    # alice approves through the API: the audit names her and how she came
    r = web.api("alice", "POST", "/operations/%d/approve" % op)
    assert r.status == 200, r
    assert [a["user"] for a in r.json()["operation"]["approvals"]] == [U("alice")], r
    recs = audit_of(d, "approved", op)
    assert len(recs) == 1, recs
    actor = recs[0]["actor"]
    assert actor["user"] == U("alice") and actor["uid"] == p11g.uid_of("alice"), recs
    assert actor.get("via") == "web, peer uid %d" % p11g.uid_of("alice"), recs
    # bob with X-Remote-User: alice approves as bob
    r = web.api("bob", "POST", "/operations/%d/approve" % op, headers={USER_HEADER: U("alice")})
    assert r.status == 200, r
    o = d.show(op)
    assert o["state"] == "approved", o
    assert [a["user"] for a in o["approvals"]] == [U("alice"), U("bob")], o


def test_proxy_names_the_user(web):
    d = web.d
    ci_uid = p11g.uid_of(PROXY)
    op = request_op(d, "proxy", description="through the proxy")
    # the header names alice: she sees what alice sees
    st = web.api(None, "GET", "/status", proxy_for=U("alice"))
    assert st.status == 200 and st.json()["pending_for_you"] == 1, st
    r = web.api(None, "GET", "/operations", proxy_for=U("alice"))
    assert ids_of(r.json()["operations"]) == [op], r
    r = web.get(None, "/", proxy_for=U("alice"),
                headers={"Host": "approvals.example", "X-Forwarded-Host": "approvals.example"})
    assert r.status == 200, r
    assert [int(x.attrs["data-id"]) for x in r.tree().find_all("tr", cls="op")] == [op], r
    # ... and mallory named by the proxy sees nothing
    r = web.api(None, "GET", "/operations", proxy_for=U("mallory"))
    assert r.status == 200 and r.json()["operations"] == [], r
    # the proxy without the header, with an empty one, naming root or nobody: refused
    r = web.api(PROXY, "GET", "/operations")
    api_error(r, "forbidden", 403)
    r = web.get(PROXY, "/")
    assert r.status == 403 and "html" in (r.header("Content-Type") or ""), r
    assert "through the proxy" not in r.text, r
    for who in ("", "root", "0", "p11gt-nosuchuser", "p11gt-alice,p11gt-bob"):
        r = web.api(None, "GET", "/operations", proxy_for=who)
        assert r.status in (401, 403), "proxy naming %r: %r" % (who, r)
        assert "error" in r.json(), r
        r = web.api(None, "POST", "/operations/%d/approve" % op, proxy_for=who)
        assert r.status in (401, 403), "proxy naming %r: %r" % (who, r)
    # the proxy naming two users in two headers: which one it meant is not guessed
    raw = ("GET /api/v1/operations HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
           "%s: %s\r\n%s: %s\r\n\r\n" % (USER_HEADER, U("mallory"), USER_HEADER, U("alice")))
    path = web.path

    def twice():
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(HTTP_TIMEOUT)
        s.connect(path)
        s.sendall(raw.encode())
        got = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        s.close()
        return got.decode("utf-8", "replace")
    got = p11g.in_child(U(PROXY), twice, HTTP_TIMEOUT + 5)
    assert got.startswith("HTTP/1.1 403") and "names its user twice" in got, got
    assert d.show(op)["approvals"] == []
    # the proxy approves for alice; the audit says so
    r = web.api(None, "POST", "/operations/%d/approve" % op, proxy_for=U("alice"))
    assert r.status == 200, r
    o = d.show(op)
    assert [a["user"] for a in o["approvals"]] == [U("alice")], o
    recs = audit_of(d, "approved", op)
    assert len(recs) == 1, recs
    assert p11g.actor_name(recs[0]) == U("alice"), recs
    assert recs[0]["actor"].get("via") == "web, proxy uid %d" % ci_uid, recs
    show = expect_ok(d.cli("show", op, user=U("bob"))).out
    assert U("alice") in show, show
    # a form through the proxy: Origin checked against X-Forwarded-Host (else Host)
    tok = csrf_of(web.get(None, "/op/%d" % op, proxy_for=U("bob")))
    h = {"Host": "127.0.0.1:9", "X-Forwarded-Host": "approvals.example",
         "Origin": "https://evil.example"}
    page_error(web.form(None, "/op/%d/approve" % op, {"csrf": tok, "confirm": "1"},
                        headers=h, proxy_for=U("bob")), "origin")
    assert len(d.show(op)["approvals"]) == 1
    # without X-Forwarded-Host the Host is the request's host
    hh = {"Host": "approvals.example", "Origin": "https://approvals.example"}
    r = web.form(None, "/op/%d/approve" % op, {"csrf": tok}, headers=hh, proxy_for=U("bob"))
    assert r.status == 200 and r.tree().find("form", id="confirm-form") is not None, r
    hh["Origin"] = "https://approvals.example.evil.example"
    page_error(web.form(None, "/op/%d/approve" % op, {"csrf": tok}, headers=hh,
                        proxy_for=U("bob")), "origin")
    # another proxied user's token is not bob's
    carol_tok = csrf_of(web.get(None, "/op/%d" % op, proxy_for=U("carol")))
    assert carol_tok != tok
    hh["Origin"] = "https://approvals.example"
    page_error(web.form(None, "/op/%d/approve" % op, {"csrf": carol_tok, "confirm": "1"},
                        headers=hh, proxy_for=U("bob")), "csrf")
    assert len(d.show(op)["approvals"]) == 1
    h["Origin"] = "https://approvals.example"
    r = web.form(None, "/op/%d/approve" % op, {"csrf": tok, "confirm": "1"}, headers=h,
                 proxy_for=U("bob"))
    assert r.status == 303, r
    assert d.state_of(op) == "approved"
    recs = audit_of(d, "approved", op)
    assert [(p11g.actor_name(x), x["actor"].get("via")) for x in recs] == [
        (U("alice"), "web, proxy uid %d" % ci_uid), (U("bob"), "web, proxy uid %d" % ci_uid)]
    # the proxy naming the requester: self-approval holds as for the CLI
    op2 = request_op(d, "proxy-self", user="alice")
    api_error(web.api(None, "POST", "/operations/%d/approve" % op2, proxy_for=U("alice")),
              "self_approval")


def test_web_user_header_is_configurable(start_web):
    w = start_web(extra={"web_user_header": "X-Forwarded-User"})
    op = request_op(w.d, "hdrname")
    r = w.api(None, "GET", "/operations", proxy_for=U("alice"))   # X-Remote-User: ignored
    api_error(r, "forbidden", 403)
    r = w.api(PROXY, "GET", "/operations", headers={"X-Forwarded-User": U("alice")})
    assert r.status == 200 and ids_of(r.json()["operations"]) == [op], r
    # web_proxy_user may be a number
    w = start_web(extra={"web_proxy_user": str(p11g.uid_of(PROXY))})
    op = request_op(w.d, "hdrnum")
    r = w.api(None, "GET", "/operations", proxy_for=U("alice"))
    assert r.status == 200 and ids_of(r.json()["operations"]) == [op], r
    api_error(w.api(PROXY, "GET", "/operations"), "forbidden", 403)


# ============================================================== JSON API ==

def test_api_list_show_status_and_pagination(web):
    d = web.d
    ops = make_ops(d, 26, "pg")
    newest_first = sorted(ops, reverse=True)
    # default page: 25, newest first, more, next
    j = web.api("alice", "GET", "/operations").json()
    assert ids_of(j["operations"]) == newest_first[:25], j
    assert j["more"] is True and "next" in j, j
    j2 = web.api("alice", "GET", "/operations?before=%s" % j["next"]).json()
    assert ids_of(j2["operations"]) == newest_first[25:] and j2["more"] is False, j2
    # limit and the cursor walk every page, newest first, none twice
    seen, before = [], None
    for _ in range(10):
        url = "/operations?limit=10" + ("&before=%s" % before if before else "")
        j = web.api("alice", "GET", url).json()
        assert len(j["operations"]) <= 10, j
        seen += ids_of(j["operations"])
        if not j["more"]:
            break
        before = j["next"]
    assert seen == newest_first, seen
    for bad in ("limit=0", "limit=101", "limit=x", "before=x", "state=bogus"):
        api_error(web.api("alice", "GET", "/operations?" + bad), "bad_request")
    # the same rules as the CLI's list: approve one fully, reject one, approve one halfway
    full, rej, half = ops[0], ops[1], ops[2]
    for who in ("alice", "bob"):
        assert web.api(who, "POST", "/operations/%d/approve" % full).status == 200
    assert web.api("carol", "POST", "/operations/%d/reject" % rej,
                   {"reason": "not this one"}).status == 200
    assert web.api("bob", "POST", "/operations/%d/approve" % half, {}).status == 200
    for user in ("alice", "bob", "mallory", "dave"):
        for q, cli in [("", ()), ("?all=1", ("--all",)),
                       ("?all=1&state=approved", ("--all", "--state", "approved")),
                       ("?all=1&state=rejected", ("--all", "--state", "rejected")),
                       ("?state=pending", ("--state", "pending")),
                       ("?all=1&state=pending", ("--all", "--state", "pending"))]:
            got, before = [], None
            for _ in range(10):
                url = "/operations?limit=100" + q.replace("?", "&") + \
                    ("&before=%s" % before if before else "")
                r = web.api(user, "GET", url)
                assert r.status == 200, r
                j = r.json()
                got += ids_of(j["operations"])
                if not j["more"]:
                    break
                before = j["next"]
            want = sorted(d.list_ids(*cli, user=U(user)), reverse=True)
            assert got == want, (user, q, got, want)
    # bob approved `half`: it waits for alice, not for him
    assert half not in ids_of(web.api("bob", "GET", "/operations?limit=100").json()
                              ["operations"])
    assert half in ids_of(web.api("alice", "GET", "/operations?limit=100").json()["operations"])
    # show: approvald's own op object
    for user, op in (("alice", full), ("alice", half), ("bob", rej)):
        r = web.api(user, "GET", "/operations/%d" % op)
        assert r.status == 200, r
        assert r.json() == {"operation": d.show(op, user=U(user))}, r
    # status: the viewer's
    for user in ("alice", "bob", "mallory"):
        r = web.api(user, "GET", "/status")
        assert r.status == 200, r
        want = d.status(user=U(user))
        assert r.json()["pending_for_you"] == want["pending_for_you"], (user, r, want)
    assert web.api("alice", "GET", "/status").json()["pending_for_you"] == 24
    assert web.api("bob", "GET", "/status").json()["pending_for_you"] == 23
    # errors
    api_error(web.api("alice", "GET", "/operations/99999"), "not_found")
    r = web.api("alice", "GET", "/operations/abc")
    assert r.status in (400, 404), r
    r = web.api("alice", "GET", "/nothing")
    assert r.status == 404 and r.json()["error"]["code"], r


def test_api_decisions(web):
    d = web.d
    label = "api-two"
    op = request_op(d, label, description="two approvals")
    # without X-P11gate-Request: 403 csrf, nothing recorded
    for body in (None, {}):
        api_error(web.api("alice", "POST", "/operations/%d/approve" % op, body, csrf=False),
                  "csrf")
    api_error(web.api("alice", "POST", "/operations/%d/approve" % op,
                      headers={"X-P11gate-Request": "0"}), "csrf")
    # a foreign Origin on an API POST
    api_error(web.api("alice", "POST", "/operations/%d/approve" % op,
                      headers={"Origin": "http://evil.example"}), "origin")
    # GET never decides
    r = web.api("alice", "GET", "/operations/%d/approve" % op)
    assert r.status == 405, r
    r = web.get("alice", "/op/%d/approve?confirm=1" % op)
    assert r.status == 405, r
    assert web.req("alice", "PUT", "/api/v1/operations/%d/approve" % op,
                   headers={"X-P11gate-Request": "1"}).status == 405
    assert web.req("alice", "DELETE", "/api/v1/operations/%d" % op,
                   headers={"X-P11gate-Request": "1"}).status == 405
    assert d.show(op)["approvals"] == []
    assert audit_of(d, "approved", op) == []
    # the use is refused while pending
    p11g.assert_refused(d.use("orderer", "prod", label), "pending")
    # two approvals through the API
    r = web.api("alice", "POST", "/operations/%d/approve" % op)
    assert r.status == 200, r
    o = r.json()["operation"]
    assert o["id"] == op and o["state"] == "pending", o
    assert [a["user"] for a in o["approvals"]] == [U("alice")], o
    api_error(web.api("alice", "POST", "/operations/%d/approve" % op), "already_approved")
    r = web.api("bob", "POST", "/operations/%d/approve" % op, {})
    assert r.status == 200 and r.json()["operation"]["state"] == "approved", r
    assert d.state_of(op) == "approved"
    d.use_ok("orderer", "prod", label)
    # decided: a third approval, or a rejection, is refused as already decided
    api_error(web.api("carol", "POST", "/operations/%d/approve" % op), "already_decided")
    api_error(web.api("carol", "POST", "/operations/%d/reject" % op, {"reason": "late"}),
              "already_decided")
    # reject: a reason is required
    op2 = request_op(d, "api-rej", description="to reject")
    for body in (None, {}, {"reason": ""}, {"reason": 7}):
        api_error(web.api("carol", "POST", "/operations/%d/reject" % op2, body), "bad_request")
    r = web.req("carol", "POST", "/api/v1/operations/%d/reject" % op2, body="{not json",
                headers={"X-P11gate-Request": "1", "Content-Type": "application/json"})
    api_error(r, "bad_request")
    assert d.state_of(op2) == "pending"
    r = web.api("carol", "POST", "/operations/%d/reject" % op2, {"reason": "wrong build"})
    assert r.status == 200, r
    assert r.json()["operation"]["state"] == "rejected", r
    o = d.show(op2)
    assert o["state"] == "rejected" and o["rejection"]["reason"] == "wrong build", o
    assert o["rejection"]["user"] == U("carol"), o
    recs = audit_of(d, "rejected", op2)
    assert len(recs) == 1 and p11g.actor_name(recs[0]) == U("carol"), recs
    assert recs[0]["actor"].get("via") == "web, peer uid %d" % p11g.uid_of("carol"), recs
    assert "wrong build" in expect_ok(d.cli("show", op2, user=U("alice"))).out
    api_error(web.api("alice", "POST", "/operations/%d/approve" % op2), "already_decided")
    # a control character in the reason: approvald's bad_request
    op3 = request_op(d, "api-ctl")
    api_error(web.api("alice", "POST", "/operations/%d/reject" % op3, {"reason": "x\x1b[2J"}),
              "bad_request")
    assert d.state_of(op3) == "pending"
    # self-approval, outsider, unknown id
    op4 = request_op(d, "api-self", user="alice")
    api_error(web.api("alice", "POST", "/operations/%d/approve" % op4), "self_approval")
    api_error(web.api("alice", "POST", "/operations/999999/approve"), "not_found")
    # expired meanwhile
    rep = d.call({"verb": "request", "keys": [{"uri": PROD % "api-exp"}], "valid": 1,
                  "description": "short"}, user=U("orderer"))
    op5 = int(assert_reply_ok(rep)["id"])
    time.sleep(2.1)
    api_error(web.api("alice", "POST", "/operations/%d/approve" % op5), "expired")


# ================================================================= forms ==

def test_details_page_and_forms(web):
    d = web.d
    op = request_op(d, "form", description="form flow")
    other = request_op(d, "form-other", description="another")
    # the details page: summary, needs, both forms with a csrf field and the buttons
    r = web.get("bob", "/op/%d" % op)
    assert r.status == 200, r
    t = assert_inert(r)
    summary = t.find("section", id="summary")
    assert summary is not None and "form flow" in summary.text(), r
    keys = [li.text().strip() for li in summary.find_all("li", cls="key")]
    assert len(keys) == 1 and keys[0].startswith(PROD % "form"), r
    fa, fr = t.find("form", id="approve"), t.find("form", id="reject")
    assert fa is not None and fr is not None, r
    assert fa.attrs.get("method", "").lower() == "post" and \
        fa.attrs.get("action") == "/op/%d/approve" % op, fa
    assert fr.attrs.get("method", "").lower() == "post" and \
        fr.attrs.get("action") == "/op/%d/reject" % op, fr
    ta = fr.find("textarea", name="reason")
    assert ta is not None and "required" in ta.attrs, fr
    assert fr.find("input", name="csrf") is not None
    assert t.find("button", id="approve-button") is not None
    assert t.find("button", id="reject-button") is not None
    bob_tok = csrf_of(r)
    alice_tok = csrf_of(web.get("alice", "/op/%d" % other))
    assert alice_tok != bob_tok
    # the token is bound to the viewer, not to the page
    assert csrf_of(web.get("alice", "/op/%d" % op)) == alice_tok
    url = "/op/%d/approve" % op
    # refused: no token, another user's token, a wrong token, a foreign Origin, a foreign Host
    page_error(web.form("alice", url, {"confirm": "1"}), "csrf")
    page_error(web.form("alice", url, {"csrf": bob_tok, "confirm": "1"}), "csrf")
    page_error(web.form("alice", url, {"csrf": alice_tok[:-2] + ("00" if alice_tok[-2:] != "00"
                                                                 else "11"), "confirm": "1"}),
               "csrf")
    page_error(web.form("alice", url, {"csrf": alice_tok, "confirm": "1"},
                        headers={"Origin": "http://evil.example"}), "origin")
    page_error(web.form("alice", url, {"csrf": alice_tok, "confirm": "1"},
                        headers={"Origin": "http://localhost.evil.example"}), "origin")
    page_error(web.form("alice", url, {"csrf": alice_tok, "confirm": "1"},
                        headers={"Host": "evil.example"}), "host")
    page_error(web.form("alice", url, {"csrf": alice_tok, "confirm": "1"},
                        headers={"Host": "evil.example", "Origin": "http://evil.example"}),
               "host")
    # X-Forwarded-Host counts only from the proxy: from a direct peer it changes nothing
    page_error(web.form("alice", url, {"csrf": alice_tok, "confirm": "1"},
                        headers={"Host": "evil.example", "X-Forwarded-Host": "localhost"}),
               "host")
    page_error(web.form("alice", url, {"csrf": alice_tok, "confirm": "1"},
                        headers={"X-Forwarded-Host": "evil.example",
                                 "Origin": "http://evil.example"}), "origin")
    # reading too answers to loopback names only (no DNS rebinding)
    page_error(web.get("alice", "/", headers={"Host": "evil.example"}), "host")
    api_error(web.api("alice", "GET", "/operations", headers={"Host": "evil.example"}), "host")
    # the CSRF check is the web's: a token in the API's place does nothing either
    page_error(web.form("alice", url, {"confirm": "1"}, headers={"X-P11gate-Request": "1"}),
               "csrf")
    o = d.show(op)
    assert o["state"] == "pending" and o["approvals"] == [], o
    # without confirm=1: a confirmation page repeating the summary; nothing decided
    r = web.form("alice", url, {"csrf": alice_tok})
    assert r.status == 200, r
    t = assert_inert(r)
    cf = t.find("form", id="confirm-form")
    assert cf is not None and t.find("button", id="confirm-button") is not None, r
    assert cf.attrs.get("action") == url and cf.attrs.get("method", "").lower() == "post", cf
    fields = {i.attrs.get("name"): i.attrs.get("value") for i in cf.find_all("input")}
    assert fields.get("confirm") == "1" and fields.get("csrf") == alice_tok, fields
    assert "form flow" in t.text(), r
    assert d.show(op)["approvals"] == []
    # loopback Hosts with ports are direct peers' own
    for host in ("localhost:8080", "127.0.0.1:1", "[::1]:8080"):
        r = web.form("alice", url, {"csrf": alice_tok}, headers={"Host": host})
        assert r.status == 200, (host, r)
    # confirm=1: decided, 303 to the details page with the flash
    r = web.form("alice", url, {"csrf": alice_tok, "confirm": "1"},
                 headers={"Origin": "http://localhost"})
    assert r.status == 303, r
    loc = urllib.parse.urlsplit(r.header("Location") or "")
    assert (loc.path, loc.query) == ("/op/%d" % op, "done=approved"), r
    o = d.show(op)
    assert [a["user"] for a in o["approvals"]] == [U("alice")] and o["state"] == "pending", o
    recs = audit_of(d, "approved", op)
    assert [x["actor"].get("via") for x in recs] == ["web, peer uid %d" % p11g.uid_of("alice")]
    r = web.get("alice", "/op/%d?done=approved" % op)
    flash = r.tree().find(id="flash")
    assert flash is not None and "ok" in flash.classes(), r
    # needs 1 more, shown
    r = web.get("bob", "/op/%d" % op)
    needs = r.tree().find(id="needs")
    want = d.show(op, user=U("bob")).get("needs")
    assert needs is not None and want and want in needs.text(), (want, r)
    assert "group:p11gt-approvers" in needs.text(), r
    assert [li for li in r.tree().find_all("li", cls="approval")
            if U("alice") in li.text()], r
    # bob may still decide it: the forms are there for him (not for alice, who did)
    assert csrf_of(r) == bob_tok
    assert r.tree().find("form", id="reject") is not None, r
    # alice again: already approved
    page_error(web.form("alice", url, {"csrf": alice_tok, "confirm": "1"}), "already_approved")
    # bob's makes it approved; carol, later, is told it was decided by someone else
    assert web.form("bob", url, {"csrf": bob_tok, "confirm": "1"}).status == 303
    assert d.state_of(op) == "approved"
    carol_tok = csrf_of(web.get("carol", "/op/%d" % other))
    r = web.form("carol", url, {"csrf": carol_tok, "confirm": "1"})
    flash = page_error(r, "already_decided")
    assert "already decided by someone else" in flash.text().lower(), r
    r = web.get("carol", "/op/%d" % op)
    assert r.tree().find("form", id="approve") is None, r
    # reject through the form: reason required, then 303 ?done=rejected
    rurl = "/op/%d/reject" % other
    page_error(web.form("carol", rurl, {"csrf": carol_tok, "confirm": "1"}), "bad_request")
    page_error(web.form("carol", rurl, {"csrf": carol_tok, "confirm": "1", "reason": ""}),
               "bad_request")
    page_error(web.form("carol", rurl, {"reason": "no", "confirm": "1"}), "csrf")
    r = web.form("carol", rurl, {"csrf": carol_tok, "reason": "untested build"})
    assert r.status == 200 and r.tree().find("form", id="confirm-form") is not None, r
    assert "untested build" in r.tree().text(), r
    assert d.state_of(other) == "pending"
    r = web.form("carol", rurl, {"csrf": carol_tok, "reason": "untested build", "confirm": "1"})
    assert r.status == 303, r
    loc = urllib.parse.urlsplit(r.header("Location") or "")
    assert (loc.path, loc.query) == ("/op/%d" % other, "done=rejected"), r
    o = d.show(other)
    assert o["state"] == "rejected" and o["rejection"]["reason"] == "untested build", o


def test_list_page_columns_expand_and_pages(web):
    d = web.d
    ops = make_ops(d, 26, "lp")
    r = web.get("alice", "/")
    assert r.status == 200, r
    t = assert_inert(r)
    assert t.find("span", id="pending-count").text().strip() == "26", r
    rows = t.find("table", id="ops").find_all("tr", cls="op")
    assert [int(x.attrs["data-id"]) for x in rows] == sorted(ops, reverse=True)[:25], r
    row = rows[0]
    for c in ("id", "name", "description", "requester", "keys", "age", "expires", "state"):
        assert row.find("td", cls=c) is not None, "no td.%s in %r" % (c, r)
    assert "bulk lp 25" in row.find("td", cls="description").text(), r
    assert U("orderer") in row.find("td", cls="requester").text(), r
    assert (PROD % "lp25") in row.find("td", cls="keys").text(), r
    assert "pending" in row.find("td", cls="state").text(), r
    more = row.find("details", cls="more")
    assert more is not None and (PROD % "lp25") in more.text(), r
    scripts = [s.attrs.get("src") for s in t.find_all("script")]
    assert "/static/app.js" in scripts, r
    nxt = t.find("a", id="next")
    assert nxt is not None, r
    r2 = web.get("alice", nxt.attrs["href"])
    assert r2.status == 200, r2
    rows2 = r2.tree().find_all("tr", cls="op")
    assert [int(x.attrs["data-id"]) for x in rows2] == [min(ops)], r2
    # view=all with a state
    assert web.api("alice", "POST", "/operations/%d/reject" % ops[3],
                   {"reason": "no"}).status == 200
    r = web.get("alice", "/?view=all&state=rejected")
    assert r.status == 200, r
    assert [int(x.attrs["data-id"]) for x in r.tree().find_all("tr", cls="op")] == [ops[3]], r
    r = web.get("alice", "/")
    assert r.tree().find("span", id="pending-count").text().strip() == "25", r
    assert ops[3] not in [int(x.attrs["data-id"]) for x in r.tree().find_all("tr", cls="op")]


# ========================================================= hostile input ==

SCRIPT = "<script>alert(1)</script>"
QUOTE = '" onmouseover="x'
JSURL = "javascript:alert(1)"
HOSTILE = SCRIPT + " " + QUOTE + " ' onfocus='y " + JSURL + " </textarea></dd>&amp;<b>"


def test_hostile_text_is_shown_as_text(web):
    d = web.d
    dig1, dig2 = p11g.digest("hostile-1"), p11g.digest("hostile-2")
    long_ctx = ("<img src=x onerror=alert(2)>" + QUOTE + "&") * 200
    long_ctx = long_ctx[:4096]
    meta = {"ticket": HOSTILE, "build.url": JSURL, "long": ("<i>" + QUOTE) * 50}
    req = {"verb": "request", "keys": [{"uri": PINNED % "hostile"}],
           "description": HOSTILE, "context": long_ctx, "name": SCRIPT + QUOTE,
           "meta": meta, "digests": [dig1, dig2],
           "payload_names": [HOSTILE, JSURL]}
    op = int(assert_reply_ok(d.call(req, user=U("orderer")))["id"])
    # a second one like it: two rows with metadata on the list page
    op_b = int(assert_reply_ok(d.call(dict(req, keys=[{"uri": PINNED % "hostile-b"}]),
                                      user=U("orderer")))["id"])
    # an RTL override is approvald's to refuse: nothing reaches a page
    for field, val in (("description", "invoice\u202egnp.exe"), ("name", "a\u202eb")):
        p11g.assert_refused(d.call(dict(req, **{field: val}), user=U("orderer")),
                            "bad_request", "for %s" % field)
    p11g.assert_refused(d.call(dict(req, meta={"k": "\u202ex"}), user=U("orderer")),
                        "bad_request")
    assert d.list_ids("--all") == [op, op_b]
    # the list
    r = web.get("alice", "/")
    assert r.status == 200, r
    assert_security_headers(r)
    t = assert_inert(r)
    row = t.find("tr", cls="op", data_id=str(op))
    assert row is not None, r
    assert (SCRIPT + QUOTE) in row.find("td", cls="name").text(), r
    assert HOSTILE in row.find("td", cls="description").text(), r
    assert "\u202e" not in r.text
    # the details page: every field as text
    r = web.get("alice", "/op/%d" % op)
    assert r.status == 200, r
    assert_security_headers(r)
    t = assert_inert(r)
    summary = t.find("section", id="summary")
    assert summary is not None, r
    text = summary.text()
    for want in (HOSTILE, SCRIPT + QUOTE, long_ctx):
        assert want in text, "%r not shown as text: %r" % (want[:60], r)
    md = t.find("dl", id="meta")
    assert md is not None, r
    for k, v in meta.items():
        assert k in md.text() and v in md.text(), (k, r)
    names = [s.text() for s in t.find_all("span", cls="payload-name")]
    assert HOSTILE in names and JSURL in names, names
    digests = [li.text() for li in t.find_all("li", cls="digest")]
    assert any(dig1 in x and HOSTILE in x for x in digests), digests
    # the expand of the list row says the same
    more = web.get("alice", "/").tree().find("tr", cls="op", data_id=str(op)).find(
        "details", cls="more")
    assert more is not None and HOSTILE in more.text(), r
    # the confirmation page and the API too
    tok = csrf_of(r)
    r = web.form("alice", "/op/%d/approve" % op, {"csrf": tok})
    assert r.status == 200, r
    assert HOSTILE in assert_inert(r).text(), r
    r = web.form("alice", "/op/%d/reject" % op, {"csrf": tok, "reason": HOSTILE})
    assert r.status == 200, r
    assert HOSTILE in assert_inert(r).text(), r
    j = web.api("alice", "GET", "/operations/%d" % op)
    assert j.json()["operation"]["description"] == HOSTILE, j
    assert "html" not in (j.header("Content-Type") or ""), j
    # a hostile reason, rejected and shown
    r = web.form("alice", "/op/%d/reject" % op, {"csrf": tok, "reason": HOSTILE, "confirm": "1"})
    assert r.status == 303, r
    r = web.get("alice", "/op/%d" % op)
    assert HOSTILE in assert_inert(r).text(), r
    # a hostile path and query are not echoed raw either
    r = web.get("alice", "/op/%3Cscript%3Ealert(1)%3C%2Fscript%3E")
    assert r.status in (400, 404), r
    assert_inert(r)
    r = web.get("alice", "/?view=all&state=%3Cscript%3Ealert(1)%3C%2Fscript%3E")
    assert r.status in (200, 400), r
    assert_inert(r)
    # an id is the page's once: two rows with metadata inline must not repeat one
    for url in ("/", "/op/%d" % op_b, "/?view=all"):
        assert duplicate_ids(web.get("alice", url)) == [], url


# ================================================================ limits ==

def _abuse(path, data, timeout=5.0):
    """Sends data (as much as the server takes) while reading; returns (reply bytes, closed)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.setblocking(False)
    out = memoryview(data)
    buf, closed = b"", False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            rd, wr, _ = select.select([s], [s] if len(out) else [], [], 0.1)
            if rd:
                try:
                    chunk = s.recv(65536)
                except ConnectionResetError:
                    closed = True
                    break
                if not chunk:
                    closed = True
                    break
                buf += chunk
            if wr and len(out):
                try:
                    n = s.send(out[:65536])
                    out = out[n:]
                except (BrokenPipeError, ConnectionResetError):
                    out = out[:0]
                except BlockingIOError:
                    pass
    finally:
        s.close()
    return buf, closed


def big_post(web, user, url, n):
    """POSTs a JSON body of about n bytes as user, reading while it sends (the server may
    answer 413 and close before taking the whole body); the reply as a Resp."""
    body = json.dumps({"reason": "r" * n}).encode()
    data = (b"POST %s HTTP/1.1\r\nHost: localhost\r\nX-P11gate-Request: 1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (url.encode(), len(body)) + body)
    path = web.path
    reply, _ = p11g.in_child(U(user), lambda: _abuse(path, data), 15)
    head, _, rest = reply.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = [tuple(x.decode(errors="replace").split(": ", 1)) for x in lines[1:] if b": " in x]
    st = _status_of(reply)
    assert st is not None, "no HTTP reply to a %d-byte body: %r" % (n, reply[:300])
    return Resp(st, headers, rest)


def _status_of(reply):
    line = reply.split(b"\r\n", 1)[0].decode(errors="replace")
    parts = line.split()
    if len(parts) >= 2 and parts[0].startswith("HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return None


# Run as a test user: opens N connections to the web socket (every other one sending half a
# request line), prints how many the server turned away within 2 s, holds the rest until stdin
# closes.
HOLDER = r"""
import select, socket, sys, time
path, n = sys.argv[1], int(sys.argv[2])
socks, away = [], 0
for i in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(path)
        if i % 2:
            s.sendall(b"GET /api/v1/status HTTP/1.1\r\nHo")
    except OSError:
        away += 1
        s.close()
        continue
    socks.append(s)
gone = set()
deadline = time.monotonic() + 2
while time.monotonic() < deadline and len(gone) < len(socks):
    rd, _, _ = select.select([s for s in socks if s not in gone], [], [], 0.2)
    gone.update(rd)
print(away + len(gone), flush=True)
sys.stdin.read()
"""


def _measure_use(d, label, n=4):
    worst = 0.0
    for i in range(n):
        t0 = time.monotonic()
        d.use_ok("orderer", "dev", "%s%d" % (label, i))
        worst = max(worst, time.monotonic() - t0)
    t0 = time.monotonic()
    r = d.cli("status", "--json", user=U("alice"))
    assert r.rc == 0, r
    return max(worst, time.monotonic() - t0)


def test_oversized_and_slow_clients_close_only_their_connection(web):
    d = web.d
    op = request_op(d, "limits")
    big_header = (b"GET /api/v1/status HTTP/1.1\r\nHost: localhost\r\nX-Pad: " +
                  b"a" * (100 * 1024) + b"\r\n\r\n")
    big_body = (b"POST /api/v1/operations/%d/reject HTTP/1.1\r\nHost: localhost\r\n"
                b"X-P11gate-Request: 1\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % (op, 1024 * 1024 + 14) +
                b'{"reason": "' + b"r" * (1024 * 1024) + b'"}')
    # a keep-alive client that was there first
    keep = UnixHTTPConnection(web.path)
    keep.request("GET", "/static/app.css")
    first = keep.getresponse()
    first.read()
    assert first.status == 200, first.status
    assert not first.will_close, "an HTTP/1.1 connection closed after one response"

    def again():
        keep.request("GET", "/static/app.css")
        r = keep.getresponse()
        r.read()
        return r.status

    # each oversized request: a 4xx (413 for the body) and its connection closed
    reply, closed = _abuse(web.path, big_header)
    st = _status_of(reply)
    assert closed, "a 100 KiB header left the connection open (%r)" % reply[:200]
    assert reply == b"" or (st is not None and 400 <= st < 500), reply[:300]
    reply, closed = _abuse(web.path, big_body)
    assert closed, "a 1 MiB body left the connection open (%r)" % reply[:200]
    assert _status_of(reply) == 413, reply[:300]
    assert again() == 200
    assert d.state_of(op) == "pending"
    # a body over 16 KiB, under the header limit: 413 too
    r = big_post(web, "alice", "/api/v1/operations/%d/reject" % op, 17 * 1024)
    api_error(r, r.json()["error"]["code"], 413)
    assert d.state_of(op) == "pending"
    # seventy idle or slow connections held by mallory, oversized requests going on, and
    # meanwhile signing through the control socket answers, the client that was there and a
    # new one of another user are served
    stop = threading.Event()
    abuse_results = []

    def keep_abusing():
        for i in range(40):
            if stop.is_set():
                break
            rep, cl = _abuse(web.path, big_header if i % 2 == 0 else big_body, timeout=3)
            abuse_results.append((_status_of(rep), cl))

    uid, gid, groups = p11g.ids("mallory")
    holder = subprocess.Popen(["/usr/bin/python3", "-c", HOLDER, web.path, "70"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              user=uid, group=gid, extra_groups=groups, cwd="/",
                              env=dict(p11g.CLEAN_ENV))
    try:
        rd, _, _ = select.select([holder.stdout], [], [], 15)
        line = holder.stdout.readline() if rd else ""
        assert line.strip().isdigit(), "the holder of 70 connections said %r" % line
        # at most 64 connections: with the keep-alive client there, at least 7 of these 70
        # were turned away (refused, told so, or closed) at once
        assert int(line) >= 7, "%s of 70 connections over the limit of 64 turned away" % line
        th = threading.Thread(target=keep_abusing)
        th.start()
        try:
            time.sleep(0.3)
            worst = _measure_use(d, "abuse")
            assert worst < 2.0, "use/status took %.2fs while the web was abused" % worst
            assert again() == 200
            t0 = time.monotonic()
            r = web.get("alice", "/api/v1/status")
            assert r.status == 200 and time.monotonic() - t0 < 2.0, r
        finally:
            stop.set()
            th.join(60)
        # (past a connection limit a new connection may be told 503 and closed)
        assert abuse_results and all(cl for _, cl in abuse_results), abuse_results
        assert all(st is None or 400 <= st < 500 or st == 503 for st, _ in abuse_results), \
            abuse_results
    finally:
        holder.stdin.close()
        try:
            holder.wait(10)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()
        keep.close()
    assert d.alive()
    # once they are gone a new client is served
    assert p11g.wait_for(lambda: web.get("alice", "/api/v1/status").status == 200, 5), \
        web.get("alice", "/api/v1/status")
    # the web process survived all of it
    assert len(web_pids(d)) >= 1


def test_unknown_paths_and_methods(web):
    for url in ("/nope", "/op/", "/op/1/frobnicate", "/static/../approvald.conf",
                "/static/nope.js", "/api/v2/operations"):
        r = web.get("alice", url)
        assert r.status in (400, 404), (url, r)
        assert_security_headers(r)
    api_error(web.api("alice", "GET", "/operations/12345678"), "not_found")
    wrong = []
    for method, url in (("DELETE", "/"), ("PUT", "/op/1"), ("POST", "/"),
                        ("POST", "/api/v1/operations"), ("POST", "/api/v1/status"),
                        ("PATCH", "/api/v1/operations/1"), ("GET", "/api/v1/operations/1/reject"),
                        ("GET", "/op/1/approve"), ("POST", "/static/app.js")):
        r = web.req("alice", method, url, headers={"X-P11gate-Request": "1"})
        if r.status != 405:
            wrong.append((method, url, r.status))
    assert wrong == [], "expected 405 for a wrong method: %r" % wrong


# =============================================================== process ==

def test_web_process_is_restarted(web):
    d = web.d
    pids = web_pids(d)
    assert pids, "no approvald-web process under approvald"
    for p in pids:
        os.kill(p, signal.SIGKILL)
    assert p11g.wait_for(lambda: (lambda now: now and not set(now) & set(pids))(web_pids(d)),
                         10), \
        "approvald-web not restarted; stderr:\n%s" % d.stderr()
    assert p11g.wait_for(web.answers, 10), d.stderr()
    op = request_op(d, "restart")
    r = web.api("alice", "GET", "/operations")
    assert r.status == 200 and ids_of(r.json()["operations"]) == [op], r
    assert d.alive()
    d.use_ok("orderer", "dev", "after-restart")


def test_no_web_socket_no_web(start_web):
    w = start_web(web=False)
    d = w.d
    time.sleep(0.5)
    assert web_pids(d) == []
    assert not os.path.exists(w.path)
    socks = [f for f in os.listdir(d.dir) if os.path.join(d.dir, f) != d.sock and
             os.path.exists(os.path.join(d.dir, f)) and
             stat.S_ISSOCK(os.stat(os.path.join(d.dir, f)).st_mode)]
    assert socks == [], socks
    assert expect_ok(d.cli("status", user=U("alice"))).rc == 0


def test_idle_and_slow_connections_are_closed(web):
    """A connection that sends nothing, and one that sends its request a byte at a time, are
    closed within the contract's 30 s (plus slack); the others are served meanwhile."""
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.connect(web.path)
    slow.connect(web.path)
    slow.sendall(b"GET /api/v1/status HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
    t0 = time.monotonic()
    closed = {}
    next_byte = t0 + 2
    served = 0
    try:
        while len(closed) < 2 and time.monotonic() - t0 < 37:
            socks = [s for s in (idle, slow) if s not in closed]
            rd, _, _ = select.select(socks, [], [], 0.5)
            for s in rd:
                try:
                    chunk = s.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    closed[s] = time.monotonic() - t0
            if slow not in closed and time.monotonic() >= next_byte:
                try:
                    slow.send(b"a")
                except (BrokenPipeError, ConnectionResetError):
                    closed[slow] = time.monotonic() - t0
                next_byte = time.monotonic() + 2
            if time.monotonic() - t0 > 1 + 5 * served:   # others are served meanwhile
                assert web.get("alice", "/api/v1/status").status == 200
                served += 1
    finally:
        idle.close()
        slow.close()
    assert idle in closed and closed[idle] <= 32, \
        "an idle connection was not closed within 32 s (%r)" % closed.get(idle)
    assert slow in closed and closed[slow] <= 36, \
        "a connection sending a byte every 2 s was not closed within 36 s (%r)" % \
        closed.get(slow)
    assert web.get("alice", "/api/v1/status").status == 200


def test_the_longest_hostile_text_a_request_can_carry_is_inert(web):
    """Issue 20: 64 KiB strings.  approvald refuses a description over 1 KiB and a context over
    4 KiB (so a 64 KiB one never reaches a page); the longest it takes, all markup, is shown
    as text: the list shows the description's start (cut, with an ellipsis), the details page
    all of both."""
    d = web.d
    unit = "<script>alert(1)</script>" + QUOTE + "<img src=x onerror=alert(2)>&"
    huge = (unit * (65536 // len(unit) + 1))[:60000]  # what a 64 KiB frame carries
    req = {"verb": "request", "keys": [{"uri": PROD % "huge"}], "description": huge}
    p11g.assert_refused(d.call(req, user=U("orderer")), "bad_request")
    desc, ctx = (unit * 50)[:1024], (unit * 200)[:4096]
    req = dict(req, description=desc, context=ctx)
    op = int(assert_reply_ok(d.call(req, user=U("orderer")))["id"])
    r = web.get("alice", "/")
    assert r.status == 200, r
    t = assert_inert(r)
    cell = t.find("tr", cls="op", data_id=str(op)).find("td", cls="description").text()
    assert cell.endswith("\u2026") and desc.startswith(cell[:-1]), cell[:200]
    assert len(cell) < 200, len(cell)
    r = web.get("alice", "/op/%d" % op)
    assert r.status == 200, r
    t = assert_inert(r)
    summary = t.find("section", id="summary")
    assert summary.find("span", cls="description").text() == desc
    assert ctx in summary.text()
    assert "<script>alert" not in r.text and "<img src=x" not in r.text
