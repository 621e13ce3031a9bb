"""Request metadata (issue 19): a request's name, KEY=VALUE metadata and the names of its pinned
digests, checked on entry, kept in the operation's terms, shown wherever a person decides and
kept in the audit's created record."""

import re

import p11g
from p11g import U

KEY = "pkcs11:token=pinned;object=md"


def dig(text):
    return p11g.digest(text)


def file_request(d, *extra, user="orderer"):
    return d.cli("request", "--key", KEY, "--description", "nightly build", *extra, user=U(user))


def test_name_metadata_and_payload_names_are_kept_and_shown(daemon):
    d = daemon
    a, b, c = dig("md-a"), dig("md-b"), dig("md-c")
    r = p11g.expect_ok(file_request(
        d, "--name", "Release 1.4 images", "--meta", "ticket=REL-42", "--meta",
        "build.url=https://ci.example/job/7", "--digest", a, "--payload-name",
        "registry.example/app:1.4", "--digest", b, "--digest", c, "--payload-name",
        "registry.example/db:1.4"))
    op = int(r.out)
    o = d.show(op)
    assert o["name"] == "Release 1.4 images"
    assert o["meta"] == {"ticket": "REL-42", "build.url": "https://ci.example/job/7"}
    assert o["payload_names"] == ["registry.example/app:1.4", "", "registry.example/db:1.4"]
    text = p11g.expect_ok(d.cli("show", str(op), user=U("alice"))).out
    assert "  name:        Release 1.4 images\n" in text, text
    # metadata sorted by key
    assert "  metadata:\n    build.url = https://ci.example/job/7\n    ticket = REL-42\n" \
        in text, text
    assert "    %s  (registry.example/app:1.4)\n" % a in text, text
    assert "    %s\n" % b in text, text
    assert "    %s  (registry.example/db:1.4)\n" % c in text, text
    table = p11g.expect_ok(d.cli("list", user=U("alice"))).out
    assert "NAME (or DESCRIPTION)" in table and "Release 1.4 images" in table, table
    created = [x for x in d.audit() if x["event"] == "created" and p11g.op_of(x) == op][0]
    assert created["name"] == o["name"] and created["meta"] == o["meta"], created
    assert created["payload_names"] == o["payload_names"], created
    p11g.expect_ok(d.cli("audit", "--verify", user="root"))


def test_bad_metadata_is_refused_and_nothing_recorded(daemon):
    d = daemon
    before = len(d.audit())
    x = dig("md-x")
    cases = [
        (("--meta", "bad key=v", "--digest", x), "bad_request", "a key is 1 to 64"),
        (("--meta", "k=" + "v" * 1025, "--digest", x), "bad_request", "at most 1024"),
        (("--name", "n" * 129, "--digest", x), "bad_request", "name: 1 to 128"),
        (("--name", "evil\x1b[2J", "--digest", x), "bad_request", "U+001B"),
        (("--meta", "k=\u202egnp.exe", "--digest", x), "bad_request", "U+202E"),
        (tuple(a for i in range(33) for a in ("--meta", "k%d=v" % i)) + ("--digest", x),
         "bad_request", "at most 32"),
    ]
    for extra, code, words in cases:
        r = file_request(d, *extra)
        p11g.expect_fail(r, code)
        assert words in r.err, (extra[:2], r)
    # the CLI's own checks: usage errors, nothing sent
    for extra, words in [(("--payload-name", "x"), "follows the --digest"),
                         (("--digest", x, "--payload-name", "a", "--payload-name", "b"),
                          "given twice"),
                         (("--meta", "novalue"), "KEY=VALUE"),
                         (("--meta", "k=1", "--meta", "k=2"), "given twice")]:
        r = file_request(d, *extra)
        assert r.rc == 2 and words in r.err, r
    # one digest, two names
    r = file_request(d, "--digest", x, "--payload-name", "a", "--digest", x, "--payload-name",
                     "b")
    p11g.expect_fail(r, "bad_request")
    assert "has another name" in r.err, r
    # more names than digests, on the wire
    rep = d.call({"verb": "request", "keys": [{"uri": KEY}], "digests": [x],
                  "payload_names": ["a", "b"]}, user=U("orderer"))
    p11g.assert_refused(rep, "bad_request")
    assert len(d.audit()) == before


def test_an_edited_name_in_the_store_is_named(daemon):
    from test_audit_state import edit_op
    d = daemon
    op = int(p11g.expect_ok(file_request(d, "--name", "Release", "--digest",
                                         dig("md-e"))).out)
    edit_op(d.state, op, lambda o: o.__setitem__("name", "Harmless"))
    r = d.cli("audit", "--verify", user="root")
    assert r.rc == 1 and re.search(r"operation %d: labels is" % op, r.err), r
