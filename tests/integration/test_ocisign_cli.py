"""ocisign's command line: generate against the reference vectors, help texts,
one-line usage errors (exit 2) and bad inputs (exit 1)."""

import json
import os

import pytest

import ocireg
from ocireg import ocisign

VECTORS = os.path.join(ocireg.p11g.SRC, "tests", "vectors")


def vectors():
    out = []
    with open(os.path.join(VECTORS, "generate.txt")) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            name, args = line.split(" | ", 1)
            out.append((name, json.loads(args)))
    return out


@pytest.mark.parametrize("name,args", vectors())
def test_generate_matches_reference_vectors(name, args):
    r = ocireg.p11g.run([ocireg.OCISIGN, "generate"] + args)
    with open(os.path.join(VECTORS, name), "rb") as f:
        want = f.read()
    assert r.rc == 0 and r.err == "", r
    assert r.out.encode() == want


def test_help_texts():
    r = ocisign("--help")
    assert r.rc == 0
    for verb in ("generate", "sign", "attach", "verify", "pubkey"):
        assert "\n  %s " % verb in r.out
        h = ocisign(verb, "--help")
        assert h.rc == 0 and h.out.startswith("Usage: ocisign %s" % verb), h
    sign = ocisign("sign", "--help").out
    for opt in ("--key", "--module", "--pin-file", "--request", "--recursive", "--annotation",
                "--socket", "--wait", "--creds", "--ca-file", "--insecure-registry"):
        assert opt in sign, opt
    assert ocisign("--version").out.startswith("ocisign ")


@pytest.mark.parametrize("args,msg", [
    ([], None),
    (["frobnicate"], "unknown verb 'frobnicate'"),
    (["sign", "img"], "--key is required"),
    (["sign", "--key"], "option '--key' needs a value"),
    (["sign", "--key", "pkcs11:object=x", "--payload", "f", "img"], "--payload does not apply to sign"),
    (["verify", "--key", "k.pem"], "IMAGE is missing"),
    (["verify", "--key", "k.pem", "a", "b"], "one IMAGE only"),
    (["attach", "--payload", "p", "img"], "--payload FILE and --signature FILE are required"),
    (["generate", "-a", "novalue", "img"], "expected KEY=VALUE with exactly one '='"),
    (["generate", "-a", "a=b=c", "img"], "expected KEY=VALUE with exactly one '='"),
    (["sign", "--key", "pkcs11:object=x", "--wait", "5", "img"], "--socket, --wait and --id-token go with --request"),
    (["sign", "--key", "pkcs11:object=x", "--request", "--wait", "0", "img"], "--wait takes seconds"),
    (["pubkey", "--key", "pkcs11:object=x", "extra"], "unexpected argument 'extra'"),
])
def test_usage_errors_exit_2_one_line(args, msg):
    r = ocisign(*args)
    assert r.rc == 2, r
    assert len(r.err_lines) == 1 or (msg is None and r.err.startswith("Usage:")), r
    if msg:
        assert r.err_lines[0].startswith("ocisign: ") and msg in r.err_lines[0], r


@pytest.mark.parametrize("image,msg", [
    ("Upper/Case@sha256:" + "a" * 64, 'bad repository "Upper/Case"'),
    ("a@sha256:" + "a" * 64, 'bad repository "a"'),
    ("team/app@sha256:abc", 'bad digest "sha256:abc"'),
    ("team/app@sha256:" + "A" * 64, "bad digest"),
    ("team/app@@sha256:" + "a" * 64, "more than one '@'"),
    ("team/app:bad!tag", 'bad tag "bad!tag"'),
    ("host:99999/team/app@sha256:" + "a" * 64, 'bad registry "host:99999"'),
    ("", "empty image reference"),
])
def test_bad_images_exit_1_one_line(image, msg):
    r = ocisign("generate", image)
    assert r.rc == 1, r
    assert len(r.err_lines) == 1 and r.err_lines[0].startswith("ocisign: ") and msg in r.err, r


def test_bad_keys(tmp_path):
    tok = ocireg.SoftToken(label="clitest")
    try:
        env = tok.env()
        cases = [
            (["--key", "notauri"], "bad key URI"),
            (["--key", "pkcs11:token=clitest"], "names no key"),
            (["--key", "pkcs11:token=other;object=ec"], "no token of"),
            (["--key", "pkcs11:token=clitest;object=missing"], "no public key matches"),
            (["--key", "pkcs11:token=clitest;object=ec", "--module", "/nonexistent.so"],
             "cannot load PKCS#11 module /nonexistent.so"),
        ]
        for args, msg in cases:
            if "--module" not in args:
                args = ["--module", ocireg.SOFTHSM] + args
            r = ocisign("pubkey", *args, env=env)
            assert r.rc == 1, r
            assert len(r.err_lines) == 1 and msg in r.err_lines[0], (msg, r)
        # module-name would need p11-kit's registry: refused with a pointer to module-path
        r = ocisign("pubkey", "--key", "pkcs11:token=clitest;object=ec?module-name=softhsm2", env=env)
        assert r.rc == 1 and len(r.err_lines) == 1 and "module-path" in r.err, r
        # signing needs the PIN, and the right one
        img = "127.0.0.1:9/team/app@sha256:" + "a" * 64
        r = ocisign("sign", "--key", "pkcs11:token=clitest;object=ec", "--module", ocireg.SOFTHSM,
                    "--insecure-registry", img, env=env)
        assert r.rc == 1 and "needs a PIN" in r.err, r
        pin = tmp_path / "pin"
        pin.write_text("0000\n")
        r = ocisign("sign", "--key", "pkcs11:token=clitest;object=ec", "--module", ocireg.SOFTHSM,
                    "--pin-file", pin, "--insecure-registry", img, env=env)
        assert r.rc == 1 and "CKR_PIN_INCORRECT" in r.err, r
        # PKCS11_PIN works; then the (absent) registry is the next problem
        r = ocisign("sign", "--key", "pkcs11:token=clitest;object=ec", "--module", ocireg.SOFTHSM,
                    "--insecure-registry", img, env=dict(env, PKCS11_PIN=tok.PIN))
        assert r.rc == 1 and "127.0.0.1:9" in r.err and "PIN" not in r.err, r
        # pubkey needs no PIN (public objects), and the default module is OCISIGN_MODULE
        r = ocisign("pubkey", "--key", "pkcs11:token=clitest;object=ed",
                    env=dict(env, OCISIGN_MODULE=ocireg.SOFTHSM))
        assert r.rc == 0 and "BEGIN PUBLIC KEY" in r.out, r
    finally:
        tok.cleanup()
