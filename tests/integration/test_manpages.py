"""The man pages (issue 23): approvald(8), approvald.conf(5), approvald-policy(5), p11gate(8)
and ocisign(1), kept in the tree as mdoc.

Each is lint-clean (mandoc -T lint -W warning prints nothing); each documents, as an Fl macro,
every option the built program's --help and its verbs' --help print; every key the two
configuration parsers accept and every member the policy parser accepts is an entry (.It Cm)
of its page, the lists taken from the C sources themselves; every environment variable the
programs read is an entry (.It Ev); and meson install puts the five pages in place."""

import os
import re
import shutil
import subprocess
import tempfile

import pytest

import p11g

SRC, BUILD = p11g.SRC, p11g.BUILD

# page -> (its source in the tree, where meson install puts it under the prefix)
PAGES = {
    "approvald.8": ("approvald/approvald.8", "share/man/man8/approvald.8"),
    "approvald.conf.5": ("approvald/approvald.conf.5", "share/man/man5/approvald.conf.5"),
    "approvald-policy.5": ("policy/approvald-policy.5", "share/man/man5/approvald-policy.5"),
    "p11gate.8": ("module/p11gate.8", "share/man/man8/p11gate.8"),
    "ocisign.1": ("tools/ocisign/ocisign.1", "share/man/man1/ocisign.1"),
}


def page_text(name):
    with open(os.path.join(SRC, PAGES[name][0]), encoding="utf-8") as f:
        return f.read()


def source(rel):
    with open(os.path.join(SRC, rel), encoding="utf-8") as f:
        return f.read()


def c_function(text, name):
    """The body of the C function NAME defined in text (from its name to the first '}' at
    the start of a line)."""
    m = re.search(r"^[a-z][^\n]*\b%s\(.*?^\}" % re.escape(name), text, re.M | re.S)
    assert m, "function %s not found: the test must follow the source" % name
    return m.group(0)


def mandoc():
    path = shutil.which("mandoc")
    if not path:
        pytest.fail("mandoc is not installed (Debian package mandoc, in tools/debian-packages)")
    return path


# ---- lint ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PAGES))
def test_page_is_lint_clean(name):
    r = subprocess.run([mandoc(), "-T", "lint", "-W", "warning", os.path.join(SRC, PAGES[name][0])],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr


# ---- every --help option is documented -------------------------------------------------------

LONG_OPT = re.compile(r"(?<![\w-])--[a-z0-9][a-z0-9-]*")
SHORT_OPT = re.compile(r"(?<![\w-])-[A-Za-z](?![\w-])")


def run_help(binary, args):
    r = subprocess.run([binary] + args, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout, "%s %s: exit %s\n%s" % (
        binary, " ".join(args), r.returncode, r.stderr)
    return r.stdout


def help_verbs(text):
    """The verbs a program's --help lists: lines of two blanks, then the verb."""
    return re.findall(r"^  ([a-z][a-z-]*)\s", text, re.M)


def documented_flags(page):
    """What the page marks as flags: Fl -name is --name, Fl a is -a."""
    return {"-" + m for m in re.findall(r"\bFl\s+(-?[A-Za-z0-9][\w-]*)", page)}


def options_in(texts):
    found = set()
    for t in texts:
        found.update(LONG_OPT.findall(t))
        found.update(SHORT_OPT.findall(t))
    return found


@pytest.mark.parametrize("program,binary,page,verbs,extra", [
    ("approvald", "approvald/approvald", "approvald.8",
     {"serve", "request", "list", "show", "approve", "reject", "withdraw", "revoke", "status",
      "audit", "policy", "notify"},
     [["policy", "check", "--help"]]),
    ("ocisign", "tools/ocisign", "ocisign.1",
     {"generate", "sign", "attach", "verify", "pubkey", "csr", "import-cert"}, []),
])
def test_every_help_option_is_documented(program, binary, page, verbs, extra):
    exe = os.path.join(BUILD, binary)
    assert os.access(exe, os.X_OK), "%s not built at %s (set P11GATE_BUILD)" % (program, exe)
    main = run_help(exe, ["--help"])
    listed = help_verbs(main)
    missing_verbs = verbs - set(listed)
    assert not missing_verbs, "%s --help no longer lists %s" % (program, sorted(missing_verbs))
    texts = {"--help": main}
    for v in listed:
        texts[v + " --help"] = run_help(exe, [v, "--help"])
    for args in extra:
        texts[" ".join(args)] = run_help(exe, args)
    opts = options_in(texts.values())
    # --help and the verbs' common options at least: the extraction cannot come back empty
    assert {"--help", "--socket" if program == "approvald" else "--key"} <= opts, opts
    assert len(opts) >= 25, opts
    text = page_text(page)
    flags = documented_flags(text)
    missing = sorted(o for o in opts if o not in flags)
    where = {o: [k for k, t in texts.items() if o in options_in([t])] for o in missing}
    assert not missing, "%s: options printed by --help but not documented (as Fl) in %s: %s" % (
        program, page, "; ".join("%s (in %s)" % (o, ", ".join(where[o])) for o in missing))
    # and every verb has an entry of its own
    undocumented = [v for v in listed if not re.search(r"^\.It Cm %s\b" % re.escape(v), text, re.M)]
    assert not undocumented, "%s: verbs with no entry (.It Cm VERB): %s" % (page, undocumented)


# ---- every configuration key and policy member is documented ---------------------------------

def entries(page_src, section=None):
    """The names of the page's .It Cm NAME entries, in one .Ss section or in all of it."""
    text = page_src
    if section is not None:
        m = re.search(r"^\.Ss %s\n(.*?)(?=^\.S[hs] |\Z)" % re.escape(section), text, re.M | re.S)
        assert m, "no section .Ss %s in the page" % section
        text = m.group(1)
    return set(re.findall(r"^\.It Cm ([a-z_][a-z0-9_]*)\b", text, re.M))


def approvald_config_keys():
    """The keys approvald's configuration parser (config_set in approvald/daemon.c) accepts."""
    body = c_function(source("approvald/daemon.c"), "config_set")
    keys = set(re.findall(r'strcmp\(key, "([a-z0-9_]+)"\)', body))
    keys |= set(re.findall(r'\{"([a-z0-9_]+)", \d', body))  # the table of plain numbers
    return keys


def module_config_keys():
    """The keys p11gate.conf's parser (set_value in module/config.c) accepts."""
    body = c_function(source("module/config.c"), "set_value")
    return set(re.findall(r'memcmp\(key, "([a-z0-9_]+)", \d+\)', body))


def test_every_approvald_config_key_is_documented():
    keys = approvald_config_keys()
    assert len(keys) >= 30, "only %d keys found in config_set: %s" % (len(keys), sorted(keys))
    missing = sorted(keys - entries(page_text("approvald.conf.5")))
    assert not missing, "approvald.conf.5 has no entry (.It Cm KEY) for: %s" % missing


def test_every_p11gate_conf_key_is_documented():
    keys = module_config_keys()
    assert len(keys) >= 8 and {"module", "socket", "wait", "remote"} <= keys, sorted(keys)
    missing = sorted(keys - entries(page_text("p11gate.8"), "The configuration file"))
    assert not missing, "p11gate.8 has no entry (.It Cm KEY) for: %s" % missing


def policy_members():
    """What the policy parser accepts, by kind of object: {(page section, minimum): names}."""
    pol, iss, nfy = (source("policy/policy.c"), source("policy/policy_issuers.c"),
                     source("policy/policy_notifiers.c"))
    rule_body = c_function(pol, "parse_rule_member")
    # a snapshot's "defined_at" is not a policy file's member (c->snapshot &&)
    rule_body = re.sub(r"c->snapshot && strcmp\(n, \"\w+\"\)", "", rule_body)
    events = re.search(r"event_names\[[^]]*\] = \{(.*?)\};", nfy, re.S)
    assert events, "event_names not found in policy_notifiers.c"
    return {
        ("The policy file", 4): set(re.findall(r'strcmp\(m->name, "(\w+)"\)',
                                               c_function(pol, "load_text"))),
        ("Rules", 17): set(re.findall(r'strcmp\(n, "(\w+)"\)', rule_body)),
        ("Quorum clauses", 2): set(re.findall(r'strcmp\(m->name, "(\w+)"\)',
                                              c_function(pol, "parse_clause"))),
        ("Claims", 2): set(re.findall(r'strcmp\(e->name, "(\w+)"\)',
                                      c_function(iss, "pol_parse_claims"))),
        ("Trusted issuers", 8): set(re.findall(r'strcmp\(m->name, "(\w+)"\)',
                                               c_function(iss, "parse_issuer"))),
        ("Notifiers", 8): set(re.findall(r'strcmp\(m->name, "(\w+)"\)',
                                         c_function(nfy, "parse_notifier"))),
        # "test" is no event a policy lists
        ("Events", 10): set(re.findall(r'"(\w+)"', events.group(1))) - {"test"},
    }


def test_every_policy_member_is_documented():
    page = page_text("approvald-policy.5")
    problems = []
    for (section, least), names in policy_members().items():
        if len(names) < least:
            problems.append("%s: only %d members found in the source: %s"
                            % (section, len(names), sorted(names)))
            continue
        missing = sorted(names - entries(page, section))
        if missing:
            problems.append("section %s has no entry (.It Cm NAME) for: %s" % (section, missing))
    assert not problems, "approvald-policy.5:\n" + "\n".join(problems)


# ---- every environment variable the programs read is documented --------------------------------

ENV_READ = re.compile(r'(?:getenv|apply_env\(&cfg,)\s*\(?"([A-Z][A-Z0-9_]*)"')


@pytest.mark.parametrize("page,sources", [
    ("approvald.8", ["approvald/cli.c", "approvald/cli_show.c", "approvald/cli_audit.c",
                     "approvald/wire.c", "approvald/idtoken_src.c"]),
    ("p11gate.8", ["module/*.c", "approvald/idtoken_src.c"]),
    ("ocisign.1", ["tools/ocisign/*.c", "approvald/wire.c", "approvald/idtoken_src.c"]),
])
def test_every_environment_variable_is_documented(page, sources):
    import glob
    names = set()
    for pattern in sources:
        files = glob.glob(os.path.join(SRC, pattern))
        assert files, pattern
        for path in files:
            with open(path, encoding="utf-8") as f:
                names.update(ENV_READ.findall(f.read()))
    assert names, "no getenv found in %s" % sources
    text = page_text(page)
    documented = set()
    for line in re.findall(r"^\.It Ev (.*)$", text, re.M):
        documented.update(re.findall(r"[A-Z][A-Z0-9_]+", line))
    missing = sorted(names - documented)
    assert not missing, "%s: ENVIRONMENT has no entry (.It Ev NAME) for: %s" % (page, missing)


# ---- meson install ----------------------------------------------------------------------------

def test_meson_install_puts_the_pages_in_place():
    meson = shutil.which("meson")
    assert meson, "meson is not installed"
    with tempfile.TemporaryDirectory(prefix="p11g-man-") as dest:
        r = subprocess.run([meson, "install", "-C", BUILD, "--destdir", dest, "--no-rebuild"],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        installed = {}
        for root, _, files in os.walk(dest):
            for f in files:
                path = os.path.join(root, f)
                installed.setdefault(f, []).append(os.path.relpath(path, dest))
        problems = []
        for name, (src, rel) in sorted(PAGES.items()):
            where = [p for p in installed.get(name, []) if p.endswith(rel)]
            if len(where) != 1:
                problems.append("%s: expected one .../%s, found %s"
                                % (name, rel, installed.get(name)))
                continue
            with open(os.path.join(dest, where[0]), "rb") as a, \
                    open(os.path.join(SRC, src), "rb") as b:
                if a.read() != b.read():
                    problems.append("%s: installed file differs from %s" % (where[0], src))
        assert not problems, "\n".join(problems)
