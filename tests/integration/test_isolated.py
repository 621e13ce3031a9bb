"""The isolated deployment: approvald holds SoftHSMv2, its token files and its PIN, and serves
the gate to PKCS#11 clients over p11-kit's RPC.  What the module suite cannot show: the
boundary between uids, per-client processes, hostile bytes on the socket, the configuration
checks.  (The module suite, test_module_gate.py, runs every client test in this mode too.)"""

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import p11g  # noqa: E402
from test_module_gate import (DIGEST, GATE, P11KIT_CLIENT, PIN, PK11, SOFTHSM, TOKEN,  # noqa: E402
                              Token, guarded, granted, sanitized, sh, uses_of)

EC = "pkcs11:token=%s;object=ec" % TOKEN


@pytest.fixture
def iso(accounts):
    t = Token("isolated")
    yield t
    t.cleanup()


def approved_op(d, count):
    op = d.request("root", (EC, count))
    d.approve("alice", op)
    d.approve("bob", op)
    return op


def pk11_as(user, scenario, env, **args):
    """pk11.py as a test user; (returncode, parsed stdout or None, stderr)."""
    args = dict(dict(module=P11KIT_CLIENT, token=TOKEN, pin=PIN), **args)
    r = p11g.run(["/usr/bin/python3", PK11, scenario, json.dumps(args)], user=user, env=env,
                 timeout=60)
    try:
        out = json.loads(r.out)
    except ValueError:
        out = None
    return r.rc, out, r.err


def server_children(d):
    """pids of approvald's per-client processes (not approvald-read, its listing process)."""
    kids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                stat = f.read()
        except OSError:
            continue
        if (int(stat.rsplit(")", 1)[1].split()[1]) == d.proc.pid and
                stat[stat.index("(") + 1:stat.rindex(")")] != "approvald-read"):
            kids.append(int(pid))
    return kids


def test_other_uid_cannot_reach_token_or_pin_and_signs_nothing_unapproved(iso, start_daemon):
    d = iso.start(start_daemon, guarded())
    env = iso.gate_env(d)
    # the files: root's alone
    probe = ("import os, sys\n"
             "def denied(f, p):\n"
             "    try:\n"
             "        f(p)\n"
             "        return 'read'\n"
             "    except PermissionError:\n"
             "        return 'denied'\n"
             "print(denied(os.listdir, sys.argv[1]), denied(lambda p: open(p).read(), sys.argv[2]))\n")
    r = p11g.run(["/usr/bin/python3", "-c", probe, os.path.join(iso.dir, "tokens"), iso.pin_file],
                 user="mallory")
    assert r.rc == 0 and r.out.split() == ["denied", "denied"], r
    # SoftHSMv2 loaded directly with the same configuration: no token, no key, no signature
    direct_env = dict(iso.env)
    rc, out, err = pk11_as("mallory", "sign", direct_env, module=SOFTHSM, label="ec",
                           mech="CKM_ECDSA", data=DIGEST.hex())
    assert rc != 0 and out is None, (rc, out, err)
    r = p11g.run(["pkcs11-tool", "--module", SOFTHSM, "--list-token-slots"], user="mallory",
                 env=direct_env)
    assert TOKEN not in r.out, r
    # through approvald's socket: refused without an approved operation, and an operation
    # root ordered for itself is root's, not mallory's (the identity is SO_PEERCRED's)
    rc, out, err = pk11_as("mallory", "sign", env, label="ec", mech="CKM_ECDSA", data=DIGEST.hex())
    assert rc == 0 and out["results"][0]["signature"] is None, (out, err)
    assert out["results"][0]["steps"][-1] == ["C_Sign", "CKR_FUNCTION_REJECTED"]
    op = approved_op(d, 2)
    rc, out, err = pk11_as("mallory", "sign", env, label="ec", mech="CKM_ECDSA", data=DIGEST.hex())
    assert out["results"][0]["signature"] is None, out
    assert uses_of(d, op) == 0
    uid = p11g.uid_of("mallory")
    assert any("PKCS#11 client uid %d " % uid in ln for ln in iso.refusals("")), d.stderr()
    refused = [r for r in d.audit() if r["event"] == "use_refused"]
    assert refused and all(p11g.actor_name(r) == p11g.U("mallory") for r in refused), refused
    # root, the orderer, signs with it; mallory still cannot
    rc, out, err = pk11_as(None, "sign", env, label="ec", mech="CKM_ECDSA", data=DIGEST.hex())
    assert out["results"][0]["signature"], (out, err)
    assert uses_of(d, op) == 1
    assert all(p11g.actor_name(g) == "root" for g in granted(d))


def test_client_needs_no_pin_and_cannot_administer_the_token(iso, start_daemon):
    d = iso.start(start_daemon, {"default": "allow", "rules": []})
    env = iso.gate_env(d)
    # any PIN, or none: approvald holds the login (C_Login answers CKR_OK)
    for args in (["--login", "--pin", "wrong"], []):
        r = sh(["pkcs11-tool", "--module", P11KIT_CLIENT, "--token-label", TOKEN,
                "--list-objects", "--type", "privkey"] + args, env)
        assert b"label:      ec" in r.stdout and b"label:      rsa" in r.stdout, r.stdout
    r = sh(["pkcs11-tool", "--module", P11KIT_CLIENT, "--list-token-slots"], env)
    assert b"login required" not in r.stdout and b"PIN pad present" in r.stdout, r.stdout
    # token administration is refused, and C_Logout keeps approvald's login
    for args in (["--change-pin", "--login", "--pin", PIN, "--new-pin", "9999"],
                 ["--init-pin", "--login", "--login-type", "so", "--so-pin", "12345678",
                  "--new-pin", "9999"],
                 ["--init-token", "--label", "x", "--so-pin", "12345678"]):
        r = sh(["pkcs11-tool", "--module", P11KIT_CLIENT, "--token-label", TOKEN] + args, env,
               check=False)
        assert r.returncode != 0, (args, r.stdout, r.stderr)
    assert "token administration is not served" in d.stderr() or \
        "security-officer login is not served" in d.stderr(), d.stderr()
    # the PIN still works for SoftHSMv2 directly (nothing was changed)
    sh(["pkcs11-tool", "--module", SOFTHSM, "--token-label", TOKEN, "--login", "--pin", PIN,
        "--list-objects"], iso.env)


def test_killed_client_loses_its_process_others_unaffected(iso, start_daemon):
    d = iso.start(start_daemon, guarded())
    env = iso.gate_env(d)
    op = approved_op(d, 3)
    # a client that begins a signature and hangs there
    hang = ("import sys, time, json, ctypes as C\n"
            "sys.path.insert(0, %r)\n"
            "import pk11\n"
            "m = pk11.Module(%r); m.init(); h = m.open(%r)\n"
            "k = m.find(h, pk11.CKO_PRIVATE_KEY, 'ec')\n"
            "mech = pk11.Mech(pk11.MECH['CKM_ECDSA'], None, 0)\n"
            "print(pk11.rvname(m.C_SignInit(h, C.byref(mech), k)), flush=True)\n"
            "time.sleep(120)\n" % (os.path.dirname(PK11), P11KIT_CLIENT, TOKEN))
    before = set(server_children(d))
    proc = subprocess.Popen(["/usr/bin/python3", "-c", hang], env=env, stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"CKR_OK"
    mine = set(server_children(d)) - before
    assert len(mine) == 1, (before, mine)
    # another client signs meanwhile
    rc, out, err = pk11_as(None, "sign", env, label="ec", mech="CKM_ECDSA", data=DIGEST.hex())
    assert out["results"][0]["signature"], (out, err)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # its process (its sessions, its half-done operation) is gone; nothing was used for it
    assert p11g.wait_for(lambda: not (set(server_children(d)) & mine), 10), server_children(d)
    assert uses_of(d, op) == 1
    rc, out, err = pk11_as(None, "sign", env, label="ec", mech="CKM_ECDSA", data=DIGEST.hex(),
                           count=2)
    assert all(r["signature"] for r in out["results"]), out
    assert uses_of(d, op) == 3 and d.alive()


def _raw(path, payload, slow=False, timeout=20):
    """Sends payload, returns (seconds until the server closed, bytes received)."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.settimeout(timeout)
    t0 = time.monotonic()
    got = b""
    try:
        if slow:
            for b in payload:
                s.send(bytes([b]))
                time.sleep(1)
        else:
            s.sendall(payload)
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        s.close()
    return time.monotonic() - t0, got


def test_garbage_on_the_socket_closes_only_that_connection(iso, start_daemon):
    d = iso.start(start_daemon, {"default": "allow", "rules": []}, frame_timeout="3s",
                  pkcs11_message_max=65536)
    env = iso.gate_env(d)
    # a long-lived well-behaved client, before and after each attack
    keep = ("import sys, json, ctypes as C\n"
            "sys.path.insert(0, %r)\n"
            "import pk11\n"
            "m = pk11.Module(%r); m.init(); h = m.open(%r)\n"
            "k = m.find(h, pk11.CKO_PRIVATE_KEY, 'ec')\n"
            "for line in sys.stdin:\n"
            "    steps, sig = m.sign(h, k, 'CKM_ECDSA', bytes(32))\n"
            "    print(json.dumps(bool(sig)), flush=True)\n" % (os.path.dirname(PK11),
                                                             P11KIT_CLIENT, TOKEN))
    good = subprocess.Popen(["/usr/bin/python3", "-c", keep], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)

    def good_signs():
        good.stdin.write(b"\n")
        good.stdin.flush()
        return json.loads(good.stdout.readline())

    try:
        assert good_signs()
        attacks = {
            "unknown call": b"\x00" + struct.pack(">III", 1, 0, 16) + b"\xff" * 16,
            "4 GiB length": b"\x00" + struct.pack(">III", 1, 0, 0xffffffff),
            "over pkcs11_message_max": b"\x00" + struct.pack(">III", 1, 0, 65537),
            "random bytes": bytes((i * 7919 + 13) % 251 for i in range(4096)),
        }
        for name, payload in attacks.items():
            secs, _ = _raw(iso.pkcs11_sock, payload)
            assert secs < 5, "%s: connection kept for %.1f s" % (name, secs)
            assert good_signs(), name
        # one byte a second: closed at the frame timeout (3 s here), not kept for ever
        secs, _ = _raw(iso.pkcs11_sock, b"\x00" + struct.pack(">III", 1, 0, 8) + b"\x00" * 8,
                       slow=True)
        assert 2.5 < secs < 8, secs
        assert good_signs()
        log = d.stderr()
        assert "over the limit" in log and "frame timeout" in log, log
    finally:
        good.stdin.close()
        good.wait(10)
    assert d.alive()


def test_a_message_that_arrives_in_pieces_within_frame_timeout_is_served(iso, start_daemon):
    """The frame check reads what a message has sent so far and waits for the rest only until
    the message's deadline (host_frames.c): a client whose messages arrive a few bytes at a time,
    each message whole within frame_timeout, signs as any other."""
    d = iso.start(start_daemon, {"default": "allow", "rules": []}, frame_timeout="3s")
    proxy_path = os.path.join(iso.dir, "pieces.sock")
    lsock = socket.socket(socket.AF_UNIX)
    lsock.bind(proxy_path)
    os.chmod(proxy_path, 0o777)
    lsock.listen(4)

    def pump(src, dst, piece, pause):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                for i in range(0, len(data), piece):
                    dst.sendall(data[i:i + piece])
                    time.sleep(pause)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def serve():
        try:
            while True:
                c, _ = lsock.accept()
                u = socket.socket(socket.AF_UNIX)
                u.connect(iso.pkcs11_sock)
                # the client's bytes 5 at a time, 2 ms apart; the replies as they come
                threading.Thread(target=pump, args=(c, u, 5, 0.002), daemon=True).start()
                threading.Thread(target=pump, args=(u, c, 65536, 0), daemon=True).start()
        except OSError:
            pass

    threading.Thread(target=serve, daemon=True).start()
    env = dict(iso.gate_env(d), P11_KIT_SERVER_ADDRESS="unix:path=" + proxy_path)
    script = ("import sys, json\n"
              "sys.path.insert(0, %r)\n"
              "import pk11\n"
              "m = pk11.Module(%r); m.init(); h = m.open(%r)\n"
              "k = m.find(h, pk11.CKO_PRIVATE_KEY, 'ec')\n"
              "steps, sig = m.sign(h, k, 'CKM_ECDSA', bytes(32))\n"
              "print(json.dumps([steps, sig]))\n" % (os.path.dirname(PK11), P11KIT_CLIENT, TOKEN))
    try:
        r = subprocess.run(["/usr/bin/python3", "-c", script], env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        steps, sig = json.loads(r.stdout)
        assert sig, steps
        log = d.stderr()
        assert "frame timeout" not in log and "incomplete" not in log, log
    finally:
        lsock.close()
    assert d.alive()


def test_startup_refuses_a_bad_configuration(iso, accounts, tmp_path):
    def start(**config):
        base = {"pkcs11_socket": iso.pkcs11_sock, "pkcs11_module": SOFTHSM,
                "pin_file": iso.pin_file, "pkcs11_env": "SOFTHSM2_CONF=" + iso.conf}
        base.update(config)
        base = {k: v for k, v in base.items() if v is not None}
        dm = p11g.Daemon({"default": "deny", "rules": []}, config=base)
        try:
            with pytest.raises(AssertionError) as e:
                dm.start(timeout=10)
            return str(e.value)
        finally:
            dm.kill()
            dm.cleanup()

    readable = tmp_path / "pin-readable"
    readable.write_text(PIN)
    readable.chmod(0o644)
    assert "readable by it alone (chmod 0600)" in start(pin_file=str(readable))
    wrong = tmp_path / "pin-wrong"
    wrong.write_text("0000\n")
    wrong.chmod(0o600)
    msg = start(pin_file=str(wrong))
    assert "cannot log in to the token \"%s\"" % TOKEN in msg and "wrong PIN" in msg, msg
    assert "no initialised token labelled \"nope\"" in start(pkcs11_token="nope")
    assert "pkcs11_socket needs pkcs11_module and pin_file" in start(pin_file=None)
    assert "cannot load" in start(pkcs11_module="/nonexistent/module.so")


def test_p11gate_so_remote_setting_reaches_the_same_gate(iso, start_daemon):
    if sanitized():
        pytest.skip("pkcs11-tool loads p11gate.so in the normal build only")
    d = iso.start(start_daemon, guarded())
    conf = os.path.join(iso.dir, "remote.conf")
    with open(conf, "w") as f:
        f.write("remote = unix:path=%s\n" % iso.pkcs11_sock)
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
    env["P11GATE_CONF"] = conf
    digest_file = os.path.join(iso.dir, "d.bin")
    with open(digest_file, "wb") as f:
        f.write(DIGEST)
    args = ["pkcs11-tool", "--module", GATE, "--token-label", TOKEN, "--sign", "--mechanism",
            "ECDSA", "--id", "02", "--input-file", digest_file, "--output-file",
            os.path.join(iso.dir, "sig")]
    r = sh(args, env, check=False)
    assert r.returncode != 0
    op = approved_op(d, 1)
    sh(args, env)
    assert uses_of(d, op) == 1
    sh(["ssh-keygen", "-D", GATE], env)
    # remote and module together: refused with the file's name
    with open(conf, "a") as f:
        f.write("module = %s\n" % SOFTHSM)
    r = sh(["pkcs11-tool", "--module", GATE, "--list-slots"], env, check=False)
    assert r.returncode != 0 and b"exclude each other" in r.stderr, r.stderr
