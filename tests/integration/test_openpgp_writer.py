"""ocisign's OpenPGP writer (tools/ocisign/openpgp.c, issue #24) checked by GnuPG itself, with
software keys, so that every case is reached on every run: the writer is hand-written, GnuPG is
what reads its output (gpg, and skopeo through GPGME).

pgp_writer (tests/integration/pgp_writer.c) makes a key of each kind (RSA 2048, ECDSA P-256 and
P-384, Ed25519) with OpenSSL, writes it with its user ID and self-certification, and signed
messages: three plain ones and, for ECDSA and EdDSA, one whose signature's first half and one
whose second half starts with a zero byte (found by signing documents until they turn up; an
MPI drops leading zeros, so these are the encodings a reader could get wrong, and one
signature in about 128 has one).  GnuPG must import the key with a valid self-signature and
verify every message, and the messages must carry exactly the documents signed; a message with
one byte of its literal data changed must not verify."""

import os
import re
import shutil
import subprocess

import pytest

import p11g

WRITER = os.path.join(p11g.BUILD, "tests", "integration", "pgp_writer")
UID = "Writer Test <writer@test.example>"
KINDS = {"rsa": ("1", "2048"), "ec": ("19", "256"), "ec384": ("19", "384"), "ed": ("22", "255")}


def gpg(home, *args, check=True):
    exe = shutil.which("gpg")
    if not exe:
        pytest.fail("gpg is not installed (Debian package gnupg, in tools/debian-packages)")
    r = subprocess.run([exe, "--homedir", str(home), "--batch", "--no-autostart", "--status-fd",
                        "1"] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    if check:
        assert r.returncode == 0, (args, r.stdout.decode(), r.stderr.decode())
    return r


def packets(data):
    """[(tag, body)] of new-format packets (what the writer writes)."""
    out, i = [], 0
    while i < len(data):
        assert data[i] & 0xc0 == 0xc0, "not a new-format packet at %d" % i
        tag, o = data[i] & 0x3f, data[i + 1]
        if o < 192:
            n, i = o, i + 2
        elif o < 255:
            n, i = ((o - 192) << 8) + data[i + 2] + 192, i + 3
        else:
            n, i = int.from_bytes(data[i + 2:i + 6], "big"), i + 6
        out.append((tag, data[i:i + n]))
        i += n
    return out


def mpis(data, i):
    """The MPIs from offset i to the end: [(bit count as written, bytes)]."""
    out = []
    while i < len(data):
        bits = int.from_bytes(data[i:i + 2], "big")
        n = (bits + 7) // 8
        out.append((bits, data[i + 2:i + 2 + n]))
        i += 2 + n
    assert i == len(data)
    return out


def signature_mpis(body):
    hl = int.from_bytes(body[4:6], "big")
    ul = int.from_bytes(body[6 + hl:8 + hl], "big")
    return mpis(body, 8 + hl + ul + 2)


def key_mpis(body):
    if body[5] == 1:  # RSA: n, e
        return mpis(body, 6)
    return mpis(body, 7 + body[6])  # EC: the curve's OID, then the point


def minimal(bits, v):
    return len(v) > 0 and v[0] != 0 and v[0].bit_length() + 8 * (len(v) - 1) == bits


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "gnupg"
    h.mkdir(mode=0o700)
    return h


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_gnupg_reads_what_the_writer_writes(kind, tmp_path, home):
    assert os.access(WRITER, os.X_OK), "pgp_writer not built at %s" % WRITER
    out = tmp_path / "out"
    out.mkdir()
    r = subprocess.run([WRITER, kind, str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    fpr = re.search(r"^FPR ([0-9A-F]{40})$", r.stdout, re.M).group(1)
    docs = re.findall(r"^DOC (\S+) (document \d+)(.*)$", r.stdout, re.M)
    # three plain ones; for ECDSA and EdDSA up to two more (one message may have both)
    assert 3 <= len(docs) <= (3 if kind == "rsa" else 5), r.stdout
    notes = " ".join(note for _, _, note in docs)
    assert (kind == "rsa") != ("first half starts with 0" in notes
                               and "second half starts with 0" in notes), r.stdout

    # the key: imported, its user ID's self-signature valid ("sig:!"), able to sign
    gpg(home, "--import", str(out / "key.asc"))
    algo, bits = KINDS[kind]
    cols = gpg(home, "--with-colons", "--check-sigs", fpr).stdout.decode()
    pub = [line.split(":") for line in cols.splitlines() if line.startswith("pub:")]
    assert len(pub) == 1 and pub[0][3] == algo and pub[0][2] == bits, cols
    assert pub[0][5] == "1700000000", cols  # the creation time the fingerprint was made with
    assert "s" in pub[0][11] and "c" in pub[0][11], cols  # sign and certify
    assert re.search(r"^fpr:+%s:" % fpr, cols, re.M), cols
    assert re.search(r"^uid:[^:]*:(?:[^:]*:){7}%s:" % re.escape(UID), cols, re.M), cols
    assert re.search(r"^sig:!:(?:[^:]*:){7}%s:13x:" % re.escape(UID), cols, re.M), cols

    # every message verifies, by that key, and holds exactly its document
    for name, doc, _ in docs:
        r = gpg(home, "--output", "-", "--decrypt", str(out / name))
        status = r.stderr.decode() + r.stdout.decode()
        assert "[GNUPG:] GOODSIG" in status and "[GNUPG:] VALIDSIG %s" % fpr in status, status
        assert doc.encode() in r.stdout, (name, r.stdout)

    # every MPI is minimal (RFC 4880 3.2: no leading zero byte, the exact bit count), which
    # GnuPG does not insist on but approvald does for keys; the halves starting with a zero
    # byte are the ones that test it
    for name, _, note in docs:
        tag, body = packets((out / name).read_bytes())[-1]
        assert tag == 2, name
        halves = signature_mpis(body)
        assert len(halves) == (1 if kind == "rsa" else 2), name
        assert all(minimal(bits, v) for bits, v in halves), (name, halves)
        # a half that starts with a zero byte is an MPI of fewer bytes than the half
        half = {"ec": 32, "ed": 32, "ec384": 48}.get(kind)
        for which, i in (("first", 0), ("second", 1)):
            if "%s half starts with 0" % which in note:
                assert len(halves[i][1]) < half, (note, halves)
    key = gpg(home, "--dearmor", "--output", "-", str(out / "key.asc")).stdout
    tags = [t for t, _ in packets(key)]
    assert tags == [6, 13, 2], tags  # the key, its user ID, the certification
    for bits, v in key_mpis(packets(key)[0][1]):
        assert minimal(bits, v), (bits, v.hex())

    # one byte of the literal data changed: refused
    name = docs[0][0]
    data = bytearray((out / name).read_bytes())
    at = data.index(b"document")
    data[at] ^= 0x01
    (out / "tampered.gpg").write_bytes(bytes(data))
    r = gpg(home, "--verify", str(out / "tampered.gpg"), check=False)
    assert r.returncode != 0 and b"[GNUPG:] BADSIG" in r.stdout, r
