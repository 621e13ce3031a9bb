"""approvald's web page in a real browser (issue 20): headless Chromium driven by Selenium.

Two ways in, as the README describes them:
  proxy   Apache of its own (basic auth from an htpasswd file, mod_proxy to web_socket, the
          user named in X-Remote-User), running as www-data, approvald's `web_proxy_user`;
  direct  the browser reaches web_socket through a TCP forwarder running as the approver's own
          account (what `ssh -L 8080:/run/approvald/web.sock host` gives), so approvald names
          the user by the connection's uid.

Two approvers and an outsider: an approver sees the pending request with every field, expands
it, approves through the confirmation dialog and the row leaves the list (by its polling); the
second approval makes the operation approved and a signature through p11gate.so (SoftHSMv2)
succeeds; the outsider sees nothing and a POST is refused; a rejection's reason is in `show` and
the audit; a decision someone else made meanwhile is said so.  The second approval is made with
the keyboard alone; with scripts off, the server's confirmation page stands in for the dialog;
the list fits a phone's width.  What a requester typed renders as text and runs no script.
Screenshots of the list, the details page and the phone-width list go to the build directory
(web-list.png, web-details.png, web-phone.png; the README shows one).

The contract is the web page's specification (issue 20), not approvald's code.
"""

import base64
import json
import os
import pwd
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import p11g  # noqa: E402
from p11g import U  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
APACHE = "/usr/sbin/apache2"
APACHE_MODULES = "/usr/lib/apache2/modules"
HTPASSWD = "/usr/bin/htpasswd"
APACHE_USER = "www-data"
APPROVALD_WEB = os.path.join(p11g.BUILD, "approvald", "approvald-web")

# who may log in to Apache (carol, an approver too, has no password there)
PASSWORDS = {"alice": "alice-Pw-1", "bob": "bob-Pw-2", "mallory": "mallory-Pw-3"}

WAIT = 10          # seconds for a page or an element
POLL_WAIT = 10     # the list re-fetches every 3 s: a decided row is gone within two rounds

PWNED = "window.__pwned=1"
HOSTILE_NAME = "<script>%s</script>" % PWNED
HOSTILE_DESC = '"><img src=x onerror="%s"> javascript:%s' % (PWNED, PWNED)
HOSTILE_CONTEXT = '" onmouseover="%s" x="' % PWNED
HOSTILE_PAYLOAD = '"><img src=x onerror="%s">' % PWNED
HOSTILE_META = {"link": "javascript:%s" % PWNED, "note": "<script>%s</script>" % PWNED}



def click_fresh(find, tries=5):
    """Clicks the element find() returns.  The list page swaps its rows in every 3 s: an
    element found just before a swap is gone from the document, so it is found again."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    for i in range(tries):
        try:
            find().click()
            return
        except (StaleElementReferenceException, WebDriverException) as e:
            gone = isinstance(e, StaleElementReferenceException) or \
                "does not belong to the document" in str(e)
            if not gone or i == tries - 1:
                raise
            time.sleep(0.2)

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return True
        except OSError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def unix_http(path, request, timeout=5):
    """One raw HTTP exchange on a Unix socket: the response bytes (b"" when none)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(request)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk
    except OSError:
        return b""
    finally:
        s.close()


def web_answers(path):
    r = unix_http(path, b"GET /static/app.css HTTP/1.1\r\nHost: localhost\r\n"
                        b"Connection: close\r\n\r\n", 2)
    return r.startswith(b"HTTP/1.")


# ---------------------------------------------------------------- Apache --

APACHE_CONF = """\
# approvald's web page behind Apache: basic auth, the user passed in X-Remote-User
ServerRoot "{dir}"
ServerName localhost
Listen 127.0.0.1:{port}
PidFile "{dir}/apache2.pid"
DefaultRuntimeDir "{dir}"
ErrorLog "{dir}/error.log"
LogLevel warn
User {user}
Group {user}

LoadModule mpm_event_module {mods}/mod_mpm_event.so
<IfModule !unixd_module>
    LoadModule unixd_module {mods}/mod_unixd.so
</IfModule>
LoadModule authn_core_module {mods}/mod_authn_core.so
LoadModule authn_file_module {mods}/mod_authn_file.so
LoadModule authz_core_module {mods}/mod_authz_core.so
LoadModule authz_user_module {mods}/mod_authz_user.so
LoadModule auth_basic_module {mods}/mod_auth_basic.so
LoadModule headers_module {mods}/mod_headers.so
LoadModule proxy_module {mods}/mod_proxy.so
LoadModule proxy_http_module {mods}/mod_proxy_http.so

# a client never names the user itself: its header is dropped before authentication
RequestHeader unset X-Remote-User early

<Location "/">
    AuthType Basic
    AuthName "p11gate approvals"
    AuthBasicProvider file
    AuthUserFile "{dir}/htpasswd"
    Require valid-user
    # after authentication: the user Apache vouches for
    RequestHeader set X-Remote-User "expr=%{{REMOTE_USER}}"
</Location>

ProxyPass "/" "unix:{sock}|http://localhost/"
ProxyPassReverse "/" "http://localhost/"
"""


class Apache:
    """apache2 -DFOREGROUND with a configuration of its own (no system config) in a temporary
    directory, on 127.0.0.1:port, proxying to a Unix socket."""

    def __init__(self, dir, sock, users=PASSWORDS):
        self.dir = dir
        self.sock = sock
        self.port = free_port()
        self.conf = os.path.join(dir, "apache2.conf")
        self.log = os.path.join(dir, "apache2.stderr")
        with open(self.conf, "w") as f:
            f.write(APACHE_CONF.format(dir=dir, port=self.port, user=APACHE_USER,
                                       mods=APACHE_MODULES, sock=sock))
        htpasswd = os.path.join(dir, "htpasswd")
        for i, (u, pw) in enumerate(users.items()):
            r = subprocess.run([HTPASSWD, "-B", "-b"] + (["-c"] if i == 0 else []) +
                               [htpasswd, U(u), pw], capture_output=True, text=True)
            assert r.returncode == 0, "htpasswd failed: %s" % r.stderr
        os.chmod(htpasswd, 0o644)
        self.proc = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([APACHE, "-f", self.conf, "-DFOREGROUND"],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env=dict(p11g.CLEAN_ENV))
        if not wait_port(self.port, self.proc, 10, "apache2"):
            self.stop()
            raise AssertionError("apache2 did not start:\n%s" % self.logs())
        return self

    def logs(self):
        out = []
        for name in ("apache2.stderr", "error.log"):
            try:
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    out.append("--- %s:\n%s" % (name, f.read()[-4000:]))
            except OSError:
                pass
        return "\n".join(out)

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def auth_header(user):
    raw = ("%s:%s" % (U(user), PASSWORDS[user])).encode()
    return "Basic " + base64.b64encode(raw).decode()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **kw):
        return None


def http(url, method="GET", data=None, headers=None, user=None):
    """(status, headers, body text) of one request (redirects are not followed)."""
    h = dict(headers or {})
    if user is not None:
        h["Authorization"] = auth_header(user)
    if isinstance(data, dict):
        data = urllib.parse.urlencode(data).encode()
        h.setdefault("Content-Type", "application/x-www-form-urlencoded")
    elif isinstance(data, str):
        data = data.encode()
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=WAIT) as r:
            return r.status, r.headers, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode(errors="replace")


def error_code(body):
    try:
        return json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


# ----------------------------------------------------- the direct (uid) way --

FORWARDER = r"""
import socket, sys, threading
target = sys.argv[1]
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", 0))
ls.listen(64)
print(ls.getsockname()[1], flush=True)

def pump(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    try:
        b.shutdown(socket.SHUT_WR)
    except OSError:
        pass

def serve(c):
    u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        u.connect(target)
    except OSError:
        c.close()
        return
    t = threading.Thread(target=pump, args=(u, c), daemon=True)
    t.start()
    pump(c, u)
    t.join()
    c.close()
    u.close()

while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


class Forwarder:
    """127.0.0.1:port -> the web socket, in a process running as user: approvald sees the
    user's own uid, as through `ssh -L`."""

    def __init__(self, user, sock):
        self.user = user
        self.proc = subprocess.Popen(["/usr/bin/python3", "-c", FORWARDER, sock],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, preexec_fn=lambda: p11g.drop_to(user),
                                     cwd="/", env=dict(p11g.CLEAN_ENV))
        r, _, _ = select.select([self.proc.stdout], [], [], WAIT)
        line = self.proc.stdout.readline() if r else b""
        if not line.strip().isdigit():
            self.stop()
            raise AssertionError("forwarder as %s did not start: %r %r"
                                 % (user, line, self.proc.stderr.read()))
        self.port = int(line)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


# ---------------------------------------------------------------- browser --

def chrome():
    for path, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            pytest.fail("%s not found: the browser test needs Debian's %s "
                        "(tools/debian-packages)" % (path, pkg))
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        pytest.fail("selenium not importable (%s): the browser test needs Debian's "
                    "python3-selenium, run by /usr/bin/python3" % e)
    opts = Options()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,900", "--lang=en-US"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


class Browser:
    """One Chromium; who it is comes from the Authorization header it sends (set through the
    DevTools protocol: credentials in the URL are not used for a page's subresources and
    scripts' fetches) or, the direct way, from the forwarder it talks to."""

    def __init__(self, driver):
        self.d = driver
        self.headers = {}

    def set_headers(self, headers):
        self.headers = dict(headers)
        self.d.execute_cdp_cmd("Network.enable", {})
        self.d.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": self.headers})

    def as_user(self, user):
        self.set_headers({"Authorization": auth_header(user)})

    def anonymous(self, **headers):
        self.set_headers(headers)

    def get(self, url):
        self.d.get(url)

    def new_tab(self):
        """Opens a tab with the same identity and switches to it; returns the old handle."""
        old = self.d.current_window_handle
        self.d.switch_to.new_window("tab")
        self.set_headers(self.headers)
        return old

    def css(self, sel, root=None):
        from selenium.webdriver.common.by import By
        return (root or self.d).find_elements(By.CSS_SELECTOR, sel)

    def one(self, sel, root=None, timeout=WAIT):
        """The element sel, waiting for it."""
        found = p11g.wait_for(lambda: self.css(sel, root), timeout)
        assert found, "no %s on %s:\n%s" % (sel, self.d.current_url, self.text())
        return found[0]

    def gone(self, sel, timeout=WAIT):
        return p11g.wait_for(lambda: not self.css(sel), timeout, interval=0.2)

    def text(self):
        try:
            return self.d.find_element("tag name", "body").text[:3000]
        except Exception:   # noqa: BLE001 - a diagnostic only
            return self.d.page_source[:3000]

    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def screenshot(self, name):
        path = os.path.join(p11g.BUILD, name)
        assert self.d.save_screenshot(path), "screenshot %s not written" % path
        print("screenshot: %s" % path)
        return path

    def row(self, op):
        return '#ops tr.op[data-id="%d"]' % op

    def confirm(self, base, op, verb, reason=None, keyboard=False):
        """On /op/ID: the decision through the form and the confirmation dialog (clicked, or
        with the keyboard alone: Enter on the button, Enter on the dialog's focused confirm).
        Returns the dialog's text and the #flash the answer shows."""
        if urllib.parse.urlsplit(self.d.current_url).path != "/op/%d" % op:
            self.get("%s/op/%d" % (base, op))
        form = self.one("form#%s" % verb)
        assert form.get_attribute("method").lower() == "post"
        assert form.get_attribute("action").endswith("/op/%d/%s" % (op, verb))
        assert self.css('input[name="csrf"]', form), "form #%s has no csrf field" % verb
        if reason is not None:
            box = self.one('textarea[name="reason"]', form)
            box.clear()
            box.send_keys(reason)
        from selenium.webdriver.common.keys import Keys
        button = self.one("#%s-button" % verb)
        if keyboard:
            button.send_keys(Keys.ENTER)
        else:
            button.click()
        dialog = self.one("dialog#confirm")
        assert p11g.wait_for(lambda: dialog.get_attribute("open") is not None, WAIT), \
            "the confirmation dialog did not open"
        text = dialog.text
        page = self.one("html")
        if keyboard:
            focused = self.d.switch_to.active_element
            assert focused.get_attribute("id") == "dialog-confirm", \
                "the dialog's focus is on %r" % focused.get_attribute("outerHTML")[:200]
            focused.send_keys(Keys.ENTER)
        else:
            self.one("#dialog-confirm", dialog).click()
        # a new page: the old one's elements go stale
        assert p11g.wait_for(lambda: self.stale(page), WAIT), "confirming posted nothing"
        return text, self.one("#flash")

    def stale(self, el):
        from selenium.common.exceptions import StaleElementReferenceException
        try:
            el.tag_name
            return False
        except StaleElementReferenceException:
            return True

    def decide(self, base, op, verb, reason=None, keyboard=False):
        """confirm(), and the decision was made: on /op/ID?done=..., #flash.ok.  Returns the
        dialog's text."""
        text, flash = self.confirm(base, op, verb, reason, keyboard)
        kind = flash.get_attribute("class").split()
        assert "ok" in kind, "the %s of %d failed: %s (class %s, code %s) on %s" % (
            verb, op, flash.text, kind, flash.get_attribute("data-code"), self.d.current_url)
        done = "done=%s" % ("approved" if verb == "approve" else "rejected")
        url = urllib.parse.urlsplit(self.d.current_url)
        assert url.path == "/op/%d" % op and done in url.query, self.d.current_url
        return text


# ----------------------------------------------------------------- setup --

RULE_KEY = "pkcs11:token=%s;object=ec"


@pytest.fixture(scope="module")
def web(accounts):
    """approvald with web_socket (trusting www-data as its proxy) and a SoftHSMv2 token behind
    p11gate.so; Apache in front of the web socket; one headless Chromium."""
    sanitize = os.environ.get("P11GATE_SANITIZE", "")
    if sanitize not in ("", "none"):
        # tests/integration/meson.build: the browser runs once, in the normal build
        pytest.skip("the browser runs in the normal build only; under %s, test_web.py drives "
                    "the same C paths" % sanitize)
    import test_module_gate as gate   # SoftHSMv2 token and the ctypes PKCS#11 client
    if not os.path.exists(gate.GATE):
        pytest.fail("p11gate.so not built at %s" % gate.GATE)
    if not os.access(APPROVALD_WEB, os.X_OK):
        pytest.fail("approvald-web not built at %s" % APPROVALD_WEB)
    for path, pkg in ((APACHE, "apache2"), (HTPASSWD, "apache2-utils")):
        if not os.access(path, os.X_OK):
            pytest.fail("%s not found: the browser test needs Debian's %s" % (path, pkg))
    t0 = time.monotonic()
    cleanups = []
    logs = []
    ctx = type("Web", (), {})()
    try:
        token = gate.Token("local")
        cleanups.append(token.cleanup)
        dir = tempfile.mkdtemp(prefix="p11gt-web-")
        cleanups.append(lambda: shutil.rmtree(dir, ignore_errors=True))
        os.chmod(dir, 0o755)   # www-data reaches the web socket and reads htpasswd
        sock = os.path.join(dir, "web.sock")
        policy = p11g.default_policy()
        prod = policy["rules"][0]
        assert prod["name"] == "prod"
        prod["keys"] = prod["keys"] + [RULE_KEY % gate.TOKEN]
        d = p11g.Daemon(policy, config={"web_socket": sock, "web_proxy_user": APACHE_USER})
        cleanups.append(lambda: (d.kill(), d.cleanup()))
        logs.append(lambda: "--- approvald stderr:\n" + d.stderr()[-6000:])
        d.start()
        assert p11g.wait_for(lambda: web_answers(sock), 10, 0.1), \
            "approvald's web socket %s does not answer HTTP; stderr:\n%s" % (sock, d.stderr())
        mode = os.stat(sock).st_mode & 0o777
        assert mode == 0o666, "web socket mode %o" % mode
        apache = Apache(dir, sock)
        cleanups.append(apache.stop)
        logs.append(apache.logs)
        apache.start()
        driver = chrome()
        cleanups.append(driver.quit)
        ctx.d, ctx.token, ctx.gate, ctx.apache, ctx.sock = d, token, gate, apache, sock
        ctx.b = Browser(driver)
        ctx.key = RULE_KEY % gate.TOKEN
        ctx.proxy_uid = pwd.getpwnam(APACHE_USER).pw_uid
        print("setup %.1f s" % (time.monotonic() - t0))
        yield ctx
        alive = d.alive()
        rc = d.stop(5.0)
        assert alive, "approvald died during the test"
        assert rc == 0, "approvald exited %s after SIGTERM" % rc
    finally:
        # shown by pytest when something failed
        for log in logs:
            print(log())
        for c in reversed(cleanups):
            try:
                c()
            except Exception as e:   # noqa: BLE001 - clean up the rest
                print("cleanup: %s" % e)


def request(w, name, description, digest=None, payload_name=None, meta=(), context=None,
            uses=2):
    args = ["--key", w.key, "--uses", str(uses), "--valid", "30m", "--name", name,
            "--description", description, "--for", "uid:0"]
    if context is not None:
        args += ["--context", context]
    for k, v in meta:
        args += ["--meta", "%s=%s" % (k, v)]
    if digest is not None:
        args += ["--digest", digest]
        if payload_name is not None:
            args += ["--payload-name", payload_name]
    r = p11g.expect_ok(w.d.cli("request", *args, user=U("orderer")))
    return int(r.out.strip())


def sign(w):
    """A signature with the EC key through p11gate.so (as root, the operations' signer)."""
    out = w.token.pk11("sign", w.token.gate_env(w.d), label="ec", mech="CKM_ECDSA",
                       data=w.gate.DIGEST.hex())
    return out["results"][0]


def decisions(w, op, event):
    return [r for r in w.d.audit() if r.get("event") == event and p11g.op_of(r) == op]


def assert_via(rec, user, via):
    actor = rec.get("actor")
    assert isinstance(actor, dict), "actor is not an object: %r" % rec
    assert actor.get("user") == U(user), rec
    assert actor.get("via") == via, rec


# ----------------------------------------------------------------- tests --

def test_approve_in_browser_through_apache_then_sign(web):
    w, b = web, web.b
    base = w.apache.url
    digest = "sha256:" + w.gate.DIGEST.hex()
    other = request(w, "Nightly firmware 2.3.0-rc1", "nightly build of the main branch",
                    digest=p11g.digest("nightly"), payload_name="registry.example/fw:nightly")
    name, desc = "Release 1.4 images", "release candidate signed for production"
    op = request(w, name, desc, digest=digest, payload_name="registry.example/app:1.4",
                 meta=[("ticket", "REL-42"), ("build.url", "https://ci.example/job/7")],
                 context="pipeline 7, job 3")
    shown = w.d.show(op)
    assert shown["state"] == "pending" and shown.get("needs"), shown
    before = sign(w)
    assert before["signature"] is None, "signed before any approval: %r" % before

    # alice: the list, every field of the row, the dashboard figure
    b.as_user("alice")
    b.get(base + "/")
    row = b.one(b.row(op))
    cells = {c: b.one("." + c, row).text.strip() for c in
             ("id", "name", "description", "requester", "keys", "age", "expires", "state")}
    assert str(op) in cells["id"], cells
    link = b.one("a.open", b.one(".id", row))
    assert link.get_attribute("href") == "%s/op/%d" % (base, op), link.get_attribute("href")
    assert cells["name"] == name and cells["description"] == desc, cells
    assert U("orderer") in cells["requester"], cells
    assert w.key in cells["keys"], cells
    assert cells["age"] and cells["expires"], cells
    assert not cells["age"].startswith("in "), "the age is in the future: %r" % cells["age"]
    assert cells["expires"].startswith("in "), cells
    assert "pending" in cells["state"], cells
    count = b.one("#pending-count").text.strip()
    assert count == str(w.d.status(user=U("alice"))["pending_for_you"]), count
    assert int(count) >= 2
    assert not b.css("#empty")
    ids = [int(r.get_attribute("data-id")) for r in b.css("#ops tr.op")]
    assert ids.index(op) < ids.index(other), "not newest first: %r" % ids
    b.screenshot("web-list.png")
    # the row expands to the details inline
    more = b.one("details.more", row)
    assert more.get_attribute("open") is None
    b.one("summary", more).click()
    assert p11g.wait_for(lambda: more.get_attribute("open") is not None, WAIT)
    inline = more.text
    for s in (desc, digest[len("sha256:"):], "registry.example/app:1.4", "REL-42",
              "pipeline 7, job 3"):
        assert s in inline, "expanded row lacks %r:\n%s" % (s, inline)

    # the details page
    click_fresh(lambda: b.one(b.row(op)).find_element("css selector", "a.open"))
    assert p11g.wait_for(lambda: b.d.current_url == "%s/op/%d" % (base, op), WAIT), \
        b.d.current_url
    summary = b.one("section#summary")
    text = summary.text
    for s in (name, desc, "pipeline 7, job 3", U("orderer"), "uid:0", w.key.split(";")[1],
              digest[len("sha256:"):]):
        assert s in text, "details lack %r:\n%s" % (s, text)
    assert [e.text.strip() for e in b.css("span.payload-name", summary)] == \
        ["registry.example/app:1.4"]
    assert len(b.css("li.digest", summary)) == 1 and len(b.css("li.key", summary)) == 1
    meta = b.one("dl#meta", summary).text
    assert "REL-42" in meta and "https://ci.example/job/7" in meta, meta
    assert shown["needs"] in b.one("p#needs").text, (shown["needs"], b.one("p#needs").text)
    assert not b.css("li.approval", summary)
    b.screenshot("web-details.png")

    # the list in a second tab follows the decision without reloading
    details_tab = b.new_tab()
    b.get(base + "/")
    b.one(b.row(op))
    b.js("window.__kept = 42")
    list_tab = b.d.current_window_handle
    b.d.switch_to.window(details_tab)
    dialog = b.decide(base, op, "approve")
    assert str(op) in dialog and name in dialog, "the dialog does not say what: %r" % dialog
    o = w.d.show(op)
    assert o["state"] == "pending" and [a.get("user") for a in o["approvals"]] == [U("alice")], o
    assert b.css("li.approval"), "the result page does not show alice's approval"
    b.d.switch_to.window(list_tab)
    assert b.gone(b.row(op), POLL_WAIT), "the approved row is still in alice's list"
    assert b.js("return window.__kept") == 42, "the list reloaded instead of updating"
    assert b.one(b.row(other)), "the other request left the list too"
    assert b.one("#pending-count").text.strip() == \
        str(w.d.status(user=U("alice"))["pending_for_you"])
    b.d.close()
    b.d.switch_to.window(details_tab)
    still = sign(w)
    assert still["signature"] is None, "signed after one of two approvals"

    # mallory: nothing to see, and a POST is refused
    b.as_user("mallory")
    b.get(base + "/")
    b.one("#empty")
    assert not b.css("#ops tr.op"), b.text()
    assert b.one("#pending-count").text.strip() == "0"
    b.get("%s/op/%d" % (base, op))
    assert not b.css("form#approve") and desc not in b.d.page_source
    status, _, body = http("%s/op/%d/approve" % (base, op), "POST",
                           {"csrf": "x" * 64, "confirm": "1"}, user="mallory")
    assert status == 403 and 'data-code="csrf"' in body, (status, body[:1000])
    status, _, body = http("%s/api/v1/operations/%d/approve" % (base, op), "POST", "{}",
                           {"X-P11gate-Request": "1", "Content-Type": "application/json"},
                           user="mallory")
    assert status == 403, (status, body[:500])
    assert error_code(body) in ("not_approver", "forbidden"), body[:500]
    # alice's token does not carry over to another user
    b.as_user("alice")
    b.get(base + "/")
    b.one(b.row(other))
    b.get("%s/op/%d" % (base, other))
    alice_csrf = b.one('form#approve input[name="csrf"]').get_attribute("value")
    status, _, body = http("%s/op/%d/approve" % (base, other), "POST",
                           {"csrf": alice_csrf, "confirm": "1"}, user="mallory",
                           headers={"Origin": base})
    assert status == 403 and 'data-code="csrf"' in body, (status, body[:1000])
    # a user Apache does not know never reaches approvald
    status, _, _ = http(base + "/", headers={"Authorization": "Basic " + base64.b64encode(
        b"p11gt-carol:x").decode()})
    assert status == 401
    assert [a.get("user") for a in w.d.show(op)["approvals"]] == [U("alice")]
    assert w.d.show(other)["approvals"] == []

    # bob, with the keyboard: the second approval, then the key signs
    b.as_user("bob")
    b.get(base + "/")
    click_fresh(lambda: b.one(b.row(op)).find_element("css selector", "a.open"))
    b.decide(base, op, "approve", keyboard=True)
    o = w.d.show(op)
    assert o["state"] == "approved", o
    assert [a.get("user") for a in o["approvals"]] == [U("alice"), U("bob")], o
    signed = sign(w)
    assert signed["signature"], "no signature after two approvals: %r" % signed
    assert w.d.show(op)["keys"][0]["used"] == 1
    b.get(base + "/")
    assert b.gone(b.row(op), 1)

    recs = decisions(w, op, "approved")
    assert len(recs) == 2, recs
    for rec, user in zip(recs, ("alice", "bob")):
        assert_via(rec, user, "web, proxy uid %d" % w.proxy_uid)
    p11g.expect_ok(w.d.cli("audit", "--verify", user="root"))


def test_reject_with_reason_in_browser_through_apache(web):
    w, b = web, web.b
    base = w.apache.url
    op = request(w, "Hotfix 1.4.1", "hotfix for the login crash",
                 digest=p11g.digest("hotfix"), payload_name="registry.example/app:1.4.1")
    b.as_user("alice")
    b.get("%s/op/%d" % (base, op))
    # cancel in the dialog: nothing decided
    b.one("#approve-button").click()
    dialog = b.one("dialog#confirm")
    assert p11g.wait_for(lambda: dialog.get_attribute("open") is not None, WAIT)
    b.one("#dialog-cancel", dialog).click()
    assert p11g.wait_for(lambda: dialog.get_attribute("open") is None, WAIT)
    # a rejection needs a reason: the browser does not submit an empty one
    b.one("#reject-button").click()
    time.sleep(0.3)
    assert b.one("dialog#confirm").get_attribute("open") is None, "dialog without a reason"
    o = w.d.show(op)
    assert o["state"] == "pending" and o["approvals"] == [], o

    reason = "wrong base image (CVE-2024-1234)"
    text = b.decide(base, op, "reject", reason=reason)
    assert reason in text and str(op) in text, "the dialog does not repeat it: %r" % text
    assert reason in b.one("section#summary").text
    o = w.d.show(op)
    assert o["state"] == "rejected", o
    assert o["rejection"]["user"] == U("alice") and o["rejection"]["reason"] == reason, o
    out = p11g.expect_ok(w.d.cli("show", op, user=U("bob"))).out
    assert reason in out, out
    recs = decisions(w, op, "rejected")
    assert len(recs) == 1 and recs[0].get("reason") == reason, recs
    assert_via(recs[0], "alice", "web, proxy uid %d" % w.proxy_uid)
    # bob's list no longer offers it
    b.as_user("bob")
    b.get(base + "/")
    b.one("#pending-count")
    assert not b.css(b.row(op))

    # decided by someone else while bob looked at it: said so, nothing changed
    late = request(w, "Hotfix 1.4.2", "second hotfix", digest=p11g.digest("hotfix2"))
    b.get("%s/op/%d" % (base, late))
    b.one("form#approve")
    p11g.expect_ok(w.d.cli("reject", late, "--reason", "superseded", user=U("carol")))
    _, flash = b.confirm(base, late, "approve")
    assert "error" in flash.get_attribute("class").split(), flash.get_attribute("class")
    assert flash.get_attribute("data-code") == "already_decided", flash.get_attribute("data-code")
    assert "already decided by someone else" in flash.text.lower(), flash.text
    o = w.d.show(late)
    assert o["state"] == "rejected" and o["approvals"] == [], o


def test_approve_in_browser_through_the_users_own_connection(web):
    """The Unix-socket identity path: the browser's connections arrive from the approver's own
    uid; an X-Remote-User header the browser sends is ignored (not from the proxy)."""
    w, b = web, web.b
    op = request(w, "Release 1.5 images", "direct path", digest=p11g.digest("direct"),
                 payload_name="registry.example/app:1.5")
    fwd = {u: Forwarder(U(u), w.sock) for u in ("alice", "bob")}
    try:
        for user in ("alice", "bob"):
            base = fwd[user].url
            b.anonymous(**{"X-Remote-User": U("mallory")})
            b.get(base + "/")
            row = b.one(b.row(op))
            assert b.one(".name", row).text.strip() == "Release 1.5 images"
            assert b.one("#pending-count").text.strip() == \
                str(w.d.status(user=U(user))["pending_for_you"])
            click_fresh(lambda: b.one("a.open", b.one(b.row(op))))
            b.decide(base, op, "approve")
        o = w.d.show(op)
        assert o["state"] == "approved", o
        assert [a.get("user") for a in o["approvals"]] == [U("alice"), U("bob")], o
        recs = decisions(w, op, "approved")
        assert len(recs) == 2, recs
        for rec, user in zip(recs, ("alice", "bob")):
            assert_via(rec, user, "web, peer uid %d" % p11g.uid_of(user))
        # mallory's own connection: nothing, and no decision
        m = Forwarder(U("mallory"), w.sock)
        try:
            b.anonymous()
            b.get(m.url + "/")
            b.one("#empty")
            assert not b.css("#ops tr.op")
        finally:
            m.stop()
    finally:
        for f in fwd.values():
            f.stop()


def test_hostile_request_text_renders_inert(web):
    w, b = web, web.b
    base = w.apache.url
    op = request(w, HOSTILE_NAME, HOSTILE_DESC, digest=p11g.digest("hostile"),
                 payload_name=HOSTILE_PAYLOAD, meta=sorted(HOSTILE_META.items()),
                 context=HOSTILE_CONTEXT)

    def inert(where):
        assert b.js("return window.__pwned") is None, "script ran on the %s" % where
        made = b.js("return document.querySelectorAll('img, iframe, object, embed, "
                    "[onerror], [onmouseover], [onload]').length")
        assert made == 0, "markup from the request became elements on the %s" % where
        srcs = b.js("return Array.from(document.scripts).map(s => s.getAttribute('src'))")
        assert all(s and s.startswith("/static/") for s in srcs), \
            "a script other than the page's own on the %s: %r" % (where, srcs)
        hrefs = b.js("return Array.from(document.querySelectorAll('[href],[action],[src]'))"
                     ".map(e => e.getAttribute('href') || e.getAttribute('action') || "
                     "e.getAttribute('src'))")
        assert not [h for h in hrefs if "javascript" in h.lower()], hrefs

    b.as_user("alice")
    b.get(base + "/")
    row = b.one(b.row(op))
    assert b.one(".name", row).text == HOSTILE_NAME
    assert b.one(".description", row).text == HOSTILE_DESC
    inert("list")
    more = b.one("details.more", row)
    b.one("summary", more).click()
    assert p11g.wait_for(lambda: more.get_attribute("open") is not None, WAIT)
    for s in (HOSTILE_NAME, HOSTILE_DESC, HOSTILE_CONTEXT, HOSTILE_PAYLOAD) + \
            tuple(HOSTILE_META.values()):
        assert s in more.text, "expanded row lacks %r:\n%s" % (s, more.text)
    inert("expanded list")
    time.sleep(3.5)   # one round of the list's polling swaps the rows in again
    inert("polled list")
    b.get("%s/op/%d" % (base, op))
    summary = b.one("section#summary")
    for s in (HOSTILE_NAME, HOSTILE_DESC, HOSTILE_CONTEXT) + tuple(HOSTILE_META.values()):
        assert s in summary.text, "details lack %r:\n%s" % (s, summary.text)
    assert [e.text for e in b.css("span.payload-name", summary)] == [HOSTILE_PAYLOAD]
    inert("details page")
    b.one("#approve-button").click()
    dialog = b.one("dialog#confirm")
    assert p11g.wait_for(lambda: dialog.get_attribute("open") is not None, WAIT)
    assert HOSTILE_NAME in dialog.text or HOSTILE_DESC in dialog.text, dialog.text
    inert("confirmation dialog")
    b.one("#dialog-cancel", dialog).click()
    assert w.d.show(op)["approvals"] == []


def test_approve_without_javascript(web):
    """Plain forms: with scripts off, the server's confirmation page (repeating the summary)
    stands in for the dialog (carol, through her own connection)."""
    w, b = web, web.b
    name = "Release 1.6 images"
    op = request(w, name, "approved without scripts", digest=p11g.digest("nojs"))
    w.d.approve(U("alice"), op)
    f = Forwarder(U("carol"), w.sock)
    try:
        b.anonymous()
        b.d.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
        b.get("%s/op/%d" % (f.url, op))
        b.one("#approve-button").click()
        form = b.one("form#confirm-form")
        assert urllib.parse.urlsplit(b.d.current_url).path == "/op/%d/approve" % op, \
            b.d.current_url
        assert name in b.text() and str(op) in b.text(), b.text()
        o = w.d.show(op)
        assert o["state"] == "pending" and len(o["approvals"]) == 1, \
            "decided before the confirmation: %r" % o
        b.one("#confirm-button", form).click()
        assert p11g.wait_for(lambda: "done=approved" in b.d.current_url, WAIT), \
            "%s\n%s" % (b.d.current_url, b.text())
        flash = b.one("#flash")
        assert "ok" in flash.get_attribute("class").split(), flash.text
    finally:
        b.d.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})
        f.stop()
    o = w.d.show(op)
    assert o["state"] == "approved", o
    assert [a.get("user") for a in o["approvals"]] == [U("alice"), U("carol")], o
    rec = [r for r in decisions(w, op, "approved") if p11g.actor_name(r) == U("carol")]
    assert len(rec) == 1, decisions(w, op, "approved")
    assert_via(rec[0], "carol", "web, peer uid %d" % p11g.uid_of("carol"))


def test_list_fits_a_phone(web):
    """The list at a phone's width: no sideways scrolling, every row's fields shown."""
    w, b = web, web.b
    op = request(w, "Release 1.7 images", "seen on a phone", digest=p11g.digest("phone"))
    b.as_user("alice")
    b.d.set_window_size(390, 844)
    try:
        b.get(w.apache.url + "/")
        row = b.one(b.row(op))
        for c in ("name", "description", "requester", "keys", "age", "expires"):
            assert b.one("." + c, row).is_displayed(), c
        wide = b.js("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert wide[0] <= wide[1], "the list is %d px wide in a %d px window" % tuple(wide)
        b.screenshot("web-phone.png")
    finally:
        b.d.set_window_size(1280, 900)
