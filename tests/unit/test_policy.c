/* Unit tests for policy files: exact error messages, examples, matching, snapshots, principals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "policy/policy.h"
#include "policy/pjson.h"
#include "p11gate/wire.h"

#define BAD_DIR      SRCDIR "/policy-bad"
#define EXAMPLES_DIR SRCDIR "/../../policy/examples"

/*
 * One bad policy per entry of policy-bad/ (a file, or a directory loaded as
 * a whole for the cases that need two files) and the exact message.  Paths
 * are relative to policy-bad/, which the test makes its working directory.
 */
static const struct {
	const char *path, *msg;
} bad_cases[] = {
    /* JSON syntax */
    {"malformed.json", "malformed.json:3:18: expected ',' or '}'"},
    {"trailing-comma.json", "trailing-comma.json:3:14: trailing comma"},
    {"duplicate-key.json", "duplicate-key.json:4:3: duplicate member \"rules\" (first at 2:3)"},
    {"trailing-garbage.json", "trailing-garbage.json:2:1: unexpected data after the JSON value"},
    {"empty.json", "empty.json:1:1: unexpected end of input"},
    {"unterminated.json", "unterminated.json:2:14: unterminated string (a line ends inside it)"},
    {"control-char.json", "control-char.json:2:17: control character 0x09 in string"},
    {"bad-escape.json", "bad-escape.json:2:16: bad escape '\\e'"},
    {"lone-surrogate.json", "lone-surrogate.json:2:15: unpaired surrogate \\ud800"},
    {"bad-utf8.json", "bad-utf8.json:3:20: invalid UTF-8 in string"},
    {"utf8-overlong.json", "utf8-overlong.json:2:15: invalid UTF-8 in string"},
    {"too-deep.json", "too-deep.json:1:74: nesting deeper than 64"},
    {"big-integer.json", "big-integer.json:7:20: integer out of range"},
    /* top level */
    {"not-object.json", "not-object.json:1:1: a policy file must hold an object, not an array"},
    {"unknown-top.json", "unknown-top.json:3:3: unknown member \"rulez\" in the policy "
                         "(expected \"default\" or \"rules\")"},
    {"rules-not-array.json",
     "rules-not-array.json:2:12: \"rules\" must be an array, not an object"},
    {"bad-default.json",
     "bad-default.json:2:14: \"default\" must be \"deny\" or \"allow\", not \"permit\""},
    {"default-conflict", "default-conflict/c.json:3:14: \"default\" is \"allow\" here but "
                         "\"deny\" in default-conflict/a.json"},
    /* rule members */
    {"unknown-rule-member.json",
     "unknown-rule-member.json:7:7: unknown member \"approver\" in rule"},
    {"wrong-type.json", "wrong-type.json:7:20: \"approvals\" must be an integer, not a string"},
    {"fraction.json", "fraction.json:7:20: \"approvals\" must be an integer, not a number"},
    {"missing-name.json", "missing-name.json:3:5: rule is missing \"name\""},
    {"missing-keys.json", "missing-keys.json:3:5: rule \"r\" is missing \"keys\""},
    {"empty-keys.json", "empty-keys.json:3:27: \"keys\" must not be empty"},
    {"bad-rule-name.json",
     "bad-rule-name.json:3:14: bad rule name \"prod firmware\": 1 to 64 of A-Z a-z 0-9 . _ -"},
    {"duplicate-name.json",
     "duplicate-name.json:4:14: duplicate rule name \"r\" (first at duplicate-name.json:3:5)"},
    {"duplicate-name-files",
     "duplicate-name-files/20-b.json:4:14: duplicate rule name \"prod\" (first at "
     "duplicate-name-files/10-a.json:3:5)"},
    {"bad-principal.json", "bad-principal.json:7:32: bad principal \"grp:release\": expected "
                           "user:NAME, group:NAME or uid:N"},
    {"bad-uid.json", "bad-uid.json:7:18: bad principal \"uid:-1\": uid must be a decimal "
                     "number below 4294967295"},
    {"bad-uri.json", "bad-uri.json:3:46: bad key URI \"token=b\": not a pkcs11: URI"},
    {"uri-unrecognised.json",
     "uri-unrecognised.json:3:28: bad key URI \"pkcs11:slot-id=1;object=a\": an attribute is "
     "unknown, too long, or does not name a key on a token"},
    {"uri-type.json", "uri-type.json:3:28: bad key URI \"pkcs11:object=a;type=cert\": type "
                      "must be \"private\" (a private key)"},
    {"uri-query.json",
     "uri-query.json:3:28: bad key URI \"pkcs11:object=a?pin-value=1234\": query attributes "
     "(after '?') have no meaning in a policy"},
    {"uri-repeated.json", "uri-repeated.json:3:28: bad key URI "
                          "\"pkcs11:object=a;token=t;object=b\": \"object\" given twice"},
    {"uri-space.json",
     "uri-space.json:3:28: bad key URI \"pkcs11:object=fw signing\": write spaces as %20"},
    {"unknown-mechanism.json",
     "unknown-mechanism.json:8:35: unknown mechanism \"CKM_ECDSA_SHA257\""},
    {"raw-without-allow.json", "raw-without-allow.json:8:38: CKM_RSA_X_509 is a raw mechanism "
                               "and needs \"allow_raw\": true"},
    {"bad-duration.json", "bad-duration.json:8:23: bad duration \"1y\": expected a positive "
                          "number and one of s, m, h, d (at most 10 years)"},
    {"long-duration.json", "long-duration.json:8:23: bad duration \"3651d\": expected a "
                           "positive number and one of s, m, h, d (at most 10 years)"},
    {"max-uses-zero.json", "max-uses-zero.json:8:19: \"max_uses\" must be between 1 and 1000000"},
    {"bad-registry.json", "bad-registry.json:8:33: bad registry "
                          "\"https://registry.example.com\": expected host or host:port"},
    /* approvals and quorum */
    {"approvers-without-approvals.json",
     "approvers-without-approvals.json:7:7: \"approvers\" needs \"approvals\" (how many of "
     "them must approve)"},
    {"approvals-without-approvers.json",
     "approvals-without-approvers.json:7:7: \"approvals\" above 0 needs \"approvers\""},
    {"no-approvals.json", "no-approvals.json:3:5: rule \"r\" needs \"approvals\" or \"quorum\""},
    {"quorum-plus-approvals.json",
     "quorum-plus-approvals.json:8:7: \"quorum\" cannot be combined with \"approvals\""},
    {"quorum-count-zero.json", "quorum-count-zero.json:9:40: \"count\" must be between 1 and 1000"},
    {"quorum-unknown.json", "quorum-unknown.json:7:52: unknown member \"min\" in quorum clause"},
    /* keys two rules could both match */
    {"overlap", "overlap/b.json:7:9: key \"pkcs11:object=fw-signing\" could match the same key "
                "as \"pkcs11:token=prod;object=fw-signing\" of rule \"prod\" "
                "(overlap/a.json:4:5)"},
    {"overlap-same-file.json",
     "overlap-same-file.json:4:48: key \"pkcs11:object=fw;id=%01\" could match the same key "
     "as \"pkcs11:token=prod;object=fw\" of rule \"a\" (overlap-same-file.json:3:5)"},
    /* no object= is any label, the empty one included */
    {"overlap-absent-empty.json",
     "overlap-absent-empty.json:4:31: key \"pkcs11:token=prod\" could match the same key as "
     "\"pkcs11:token=prod;object=\" of rule \"unlabelled\" (overlap-absent-empty.json:3:5)"},
};

static int enter_dir(const char *dir)
{
	int fd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(chdir(dir), 0);
	return fd;
}

static void leave_dir(int fd)
{
	assert_int_equal(fchdir(fd), 0);
	close(fd);
}

static void test_bad_policies(void **state)
{
	int cwd = enter_dir(BAD_DIR);
	for (size_t i = 0; i < P11G_ARRAY_SIZE(bad_cases); i++) {
		struct p11g_policy *sentinel = (struct p11g_policy *)&sentinel, *p = sentinel;
		char *err = NULL;
		int r = p11g_policy_load(bad_cases[i].path, &p, &err);
		if (r != -1)
			fail_msg("%s: loaded", bad_cases[i].path);
		assert_true(p == sentinel);
		assert_non_null(err);
		if (strcmp(err, bad_cases[i].msg) != 0)
			fail_msg("%s:\n   got: %s\nwanted: %s", bad_cases[i].path, err,
			         bad_cases[i].msg);
		free(err);
	}
	leave_dir(cwd);
}

/* Every file in policy-bad/ is a case above: none sits there untested. */
static void test_bad_policy_table_covers_dir(void **state)
{
	DIR *d = opendir(BAD_DIR);
	struct dirent *de;
	size_t n = 0;

	assert_non_null(d);
	while ((de = readdir(d))) {
		size_t i;
		if (de->d_name[0] == '.')
			continue;
		for (i = 0; i < P11G_ARRAY_SIZE(bad_cases); i++)
			if (strcmp(de->d_name, bad_cases[i].path) == 0)
				break;
		if (i == P11G_ARRAY_SIZE(bad_cases))
			fail_msg("policy-bad/%s has no expected message", de->d_name);
		n++;
	}
	closedir(d);
	assert_int_equal(n, P11G_ARRAY_SIZE(bad_cases));
}

static void test_parse_buffer_errors(void **state)
{
	struct p11g_policy *p = NULL;
	char *err = NULL;
	const char text[] = "{\"rules\": [{\"name\": \"x\", \"keys\": [\"pkcs11:token=a\"], "
	                    "\"orderers\": [], \"approvals\": 0, \"bind_digest\": 1}]}";

	assert_int_equal(p11g_policy_parse("inline", text, strlen(text), &p, &err), -1);
	assert_string_equal(err, "inline:1:101: \"bind_digest\" must be a boolean, not an integer");
	free(err);

	/* A NUL byte is not JSON whitespace: the length, not the NUL, ends the text. */
	assert_int_equal(p11g_policy_parse("nul", "{}\0{}", 5, &p, &err), -1);
	assert_string_equal(err, "nul:1:3: unexpected data after the JSON value");
	free(err);
}

static void test_load_path_errors(void **state)
{
	struct p11g_policy *p = NULL;
	char *err = NULL;

	assert_int_equal(p11g_policy_load("/nonexistent/policy.d", &p, &err), -1);
	assert_string_equal(err, "/nonexistent/policy.d: No such file or directory");
	free(err);
	assert_int_equal(p11g_policy_load("/dev/null", &p, &err), -1);
	assert_string_equal(err, "/dev/null: not a regular file or directory");
	free(err);
	assert_null(p);
}

static void test_empty_dir(void **state)
{
	char dir[] = "/tmp/p11g-policy-XXXXXX";
	struct p11g_policy *p = NULL;
	char *err = NULL;
	char path[64];

	assert_non_null(mkdtemp(dir));
	/* Neither a non-.json file nor a dotfile counts. */
	snprintf(path, sizeof(path), "%s/README", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("not json", f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/.#x.json", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("not json", f);
	fclose(f);

	assert_int_equal(p11g_policy_load(dir, &p, &err), 0);
	assert_int_equal(p->n_rules, 0);
	assert_int_equal(p->n_files, 0);
	assert_false(p->default_allow);
	assert_int_equal(strlen(p->digest), 64);
	p11g_policy_free(p);

	unlink(path);
	snprintf(path, sizeof(path), "%s/README", dir);
	unlink(path);
	rmdir(dir);
}

static struct p11g_policy *load_ok(const char *path)
{
	struct p11g_policy *p = NULL;
	char *err = NULL;
	if (p11g_policy_load(path, &p, &err) != 0)
		fail_msg("%s: %s", path, err);
	return p;
}

static void test_examples_load(void **state)
{
	static const char *const files[] = {"dev.json", "prod.json", "quorum.json"};
	char path[512];

	for (size_t i = 0; i < P11G_ARRAY_SIZE(files); i++) {
		snprintf(path, sizeof(path), "%s/%s", EXAMPLES_DIR, files[i]);
		struct p11g_policy *p = load_ok(path);
		assert_int_equal(p->n_rules, 1);
		assert_int_equal(p->n_files, 1);
		p11g_policy_free(p);
	}

	struct p11g_policy *p = load_ok(EXAMPLES_DIR);
	assert_int_equal(p->n_files, 3);
	assert_int_equal(p->n_rules, 3);
	assert_false(p->default_allow);
	/* Name order: dev, prod, quorum. */
	assert_string_equal(p->rules[0].name, "dev-signing");
	assert_string_equal(p->rules[1].name, "prod-firmware");
	assert_string_equal(p->rules[2].name, "prod-images");

	const struct p11g_rule *r = p11g_policy_rule(p, "prod-firmware");
	assert_non_null(r);
	assert_string_equal(r->file, EXAMPLES_DIR "/prod.json");
	assert_int_equal(r->line, 4);
	assert_int_equal(r->column, 5);
	assert_int_equal(r->n_quorum, 1);
	assert_int_equal(r->quorum[0].count, 2);
	assert_int_equal(r->quorum[0].from.n, 1);
	assert_int_equal(r->quorum[0].from.v[0].kind, P11G_PRINCIPAL_GROUP);
	assert_string_equal(r->quorum[0].from.v[0].name, "release-approvers");
	assert_int_equal(r->max_uses, 10);
	assert_int_equal(r->max_validity, 86400);
	assert_int_equal(r->n_mechanisms, 3);
	assert_false(r->bind_digest);
	assert_false(r->allow_raw);
	assert_int_equal(r->orderers.n, 2);

	r = p11g_policy_rule(p, "prod-images");
	assert_non_null(r);
	assert_int_equal(r->n_quorum, 2);
	assert_int_equal(r->n_registries, 3);
	assert_string_equal(r->registries[2], "localhost:5000");
	assert_true(r->bind_digest);
	assert_int_equal(r->max_validity, 7200);

	r = p11g_policy_rule(p, "dev-signing");
	assert_non_null(r);
	assert_int_equal(r->n_quorum, 0);
	assert_int_equal(r->max_uses, 0);
	assert_int_equal(r->max_validity, 7 * 86400);

	assert_null(p11g_policy_rule(p, "nope"));
	p11g_policy_free(p);
}

static struct p11g_keyid mkkey(const char *token, const char *label, const char *id, size_t id_len)
{
	struct p11g_keyid k = {.key_type = CK_UNAVAILABLE_INFORMATION};
	snprintf(k.token_label, sizeof(k.token_label), "%s", token);
	snprintf(k.label, sizeof(k.label), "%s", label);
	memcpy(k.id, id, id_len);
	k.id_len = id_len;
	return k;
}

static void test_match(void **state)
{
	struct p11g_policy *p = load_ok(EXAMPLES_DIR);
	static const struct {
		const char *token, *label, *rule;
	} cases[] = {
	    {"prod", "fw-signing", "prod-firmware"},
	    {"prod", "image-signing", "prod-images"},
	    {"prod", "other", NULL},
	    {"prod", "", NULL}, /* object=fw-signing does not match an unlabelled key */
	    {"dev", "anything", "dev-signing"},
	    {"dev", "", "dev-signing"},
	    {"Prod", "fw-signing", NULL},
	    {"", "fw-signing", NULL},
	};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(cases); i++) {
		struct p11g_keyid k = mkkey(cases[i].token, cases[i].label, "\x01", 1);
		const struct p11g_rule *r = p11g_policy_match(p, &k);
		if (!cases[i].rule && r)
			fail_msg("%s/%s matched %s", cases[i].token, cases[i].label, r->name);
		if (cases[i].rule && (!r || strcmp(r->name, cases[i].rule) != 0))
			fail_msg("%s/%s: wanted %s", cases[i].token, cases[i].label, cases[i].rule);
	}
	p11g_policy_free(p);
}

/* The policy of finding 2 in issue 16: keys without a label under one rule, a named key under
 * another.  object= is the empty label and nothing else. */
static const char empty_label_policy[] =
    "{\"rules\": ["
    "{\"name\": \"unlabelled\", \"keys\": [\"pkcs11:token=prod;object=\"], \"orderers\": [], "
    "\"approvals\": 0},"
    "{\"name\": \"fw\", \"keys\": [\"pkcs11:token=prod;object=fw-rsa\"], \"orderers\": [], "
    "\"approvals\": 0},"
    "{\"name\": \"dev\", \"keys\": [\"pkcs11:token=dev\"], \"orderers\": [], \"approvals\": 0}"
    "]}";

static void test_empty_label_rule(void **state)
{
	struct p11g_policy *p = NULL;
	char *err = NULL;

	if (p11g_policy_parse("p.json", empty_label_policy, strlen(empty_label_policy), &p, &err))
		fail_msg("%s", err);
	static const struct {
		const char *token, *label, *rule;
	} cases[] = {
	    {"prod", "", "unlabelled"}, {"prod", "fw-rsa", "fw"}, {"prod", "other", NULL},
	    {"dev", "", "dev"},         {"dev", "fw-rsa", "dev"},
	};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(cases); i++) {
		struct p11g_keyid k = mkkey(cases[i].token, cases[i].label, "\x01", 1);
		const struct p11g_rule *r = p11g_policy_match(p, &k);
		if (cases[i].rule ? !r || strcmp(r->name, cases[i].rule) : r != NULL)
			fail_msg("%s/%s: got %s", cases[i].token, cases[i].label,
			         r ? r->name : "none");
	}

	/* Request patterns and the rules that could govern a key they name. */
	static const struct {
		const char *uri;
		size_t n;
		const char *first, *second;
	} req[] = {
	    {"pkcs11:token=prod", 2, "unlabelled", "fw"},
	    {"pkcs11:", 3, "unlabelled", "fw"},
	    {"pkcs11:object=", 2, "unlabelled", "dev"},
	    {"pkcs11:token=prod;object=", 1, "unlabelled", NULL},
	    {"pkcs11:token=prod;object=fw-rsa;id=%01", 1, "fw", NULL},
	    {"pkcs11:token=prod;id=%01", 2, "unlabelled", "fw"},
	    {"pkcs11:token=prod;object=other", 0, NULL, NULL},
	    {"pkcs11:token=dev", 1, "dev", NULL},
	};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(req); i++) {
		P11KitUri *u = NULL;
		const struct p11g_rule *r[1] = {NULL};
		p11g_err e;
		assert_int_equal(p11g_keyuri_parse(req[i].uri, &u, &e), 0);
		/* at most max filled, all counted */
		size_t n = p11g_policy_overlapping(p, u, r, 1);
		if (n != req[i].n)
			fail_msg("%s: %zu rules, wanted %zu", req[i].uri, n, req[i].n);
		if (req[i].first && strcmp(r[0]->name, req[i].first))
			fail_msg("%s: first %s, wanted %s", req[i].uri, r[0]->name, req[i].first);
		const struct p11g_rule *two[2];
		if (req[i].second && (p11g_policy_overlapping(p, u, two, 2) < 2 ||
		                      strcmp(two[1]->name, req[i].second)))
			fail_msg("%s: second rule, wanted %s", req[i].uri, req[i].second);
		p11_kit_uri_free(u);
	}
	p11g_policy_free(p);
}

/*
 * What a request is judged under and what a use finds agree: when a pattern
 * could name keys of one rule only, every key it matches has that rule or none.
 * Over every pattern and key built from a few attribute values.
 */
static void test_request_judging_agrees_with_match(void **state)
{
	static const char *const tokens[] = {NULL, "prod", "dev"};
	static const char *const labels[] = {NULL, "", "fw-rsa", "other"};
	static const char *const ids[] = {NULL, "", "%01"};
	struct p11g_policy *p = NULL;
	char *err = NULL;
	size_t judged = 0;

	if (p11g_policy_parse("p.json", empty_label_policy, strlen(empty_label_policy), &p, &err))
		fail_msg("%s", err);
	for (size_t t = 0; t < P11G_ARRAY_SIZE(tokens); t++)
		for (size_t l = 0; l < P11G_ARRAY_SIZE(labels); l++)
			for (size_t d = 0; d < P11G_ARRAY_SIZE(ids); d++) {
				char uri[128] = "pkcs11:";
				size_t len = strlen(uri);
				if (tokens[t])
					len += (size_t)snprintf(uri + len, sizeof(uri) - len,
					                        "token=%s;", tokens[t]);
				if (labels[l])
					len += (size_t)snprintf(uri + len, sizeof(uri) - len,
					                        "object=%s;", labels[l]);
				if (ids[d])
					len += (size_t)snprintf(uri + len, sizeof(uri) - len,
					                        "id=%s;", ids[d]);
				if (uri[len - 1] == ';')
					uri[len - 1] = '\0';
				P11KitUri *u = NULL;
				const struct p11g_rule *one[1];
				p11g_err e;
				assert_int_equal(p11g_keyuri_parse(uri, &u, &e), 0);
				if (p11g_policy_overlapping(p, u, one, 1) != 1) {
					p11_kit_uri_free(u);
					continue;
				}
				judged++;
				for (size_t kt = 1; kt < P11G_ARRAY_SIZE(tokens); kt++)
					for (size_t kl = 1; kl < P11G_ARRAY_SIZE(labels); kl++)
						for (size_t kd = 1; kd < P11G_ARRAY_SIZE(ids);
						     kd++) {
							struct p11g_keyid k =
							    mkkey(tokens[kt], labels[kl],
							          kd == 2 ? "\x01" : "", kd == 2);
							const struct p11g_rule *r =
							    p11g_policy_match(p, &k);
							if (p11g_keyid_matches(&k, u) && r &&
							    r != one[0])
								fail_msg(
								    "%s judged under %s, but key "
								    "%s/%s is %s's",
								    uri, one[0]->name, tokens[kt],
								    labels[kl], r->name);
						}
				p11_kit_uri_free(u);
			}
	assert_true(judged > 5);
	p11g_policy_free(p);
}

static void test_default_allow(void **state)
{
	const char a[] = "{\"default\": \"allow\"}";
	struct p11g_policy *p = NULL;
	char *err = NULL;

	assert_int_equal(p11g_policy_parse("a.json", a, strlen(a), &p, &err), 0);
	assert_true(p->default_allow);
	assert_int_equal(p->n_rules, 0);
	p11g_policy_free(p);
	assert_int_equal(p11g_policy_parse("b.json", "{}", 2, &p, &err), 0);
	assert_false(p->default_allow);
	p11g_policy_free(p);
}

static void test_digest(void **state)
{
	struct p11g_policy *a, *b, *c, *d;
	char *err = NULL;

	assert_int_equal(p11g_policy_parse("x.json", "{}", 2, &a, &err), 0);
	assert_int_equal(p11g_policy_parse("x.json", "{}", 2, &b, &err), 0);
	assert_int_equal(p11g_policy_parse("y.json", "{}", 2, &c, &err), 0);
	assert_int_equal(p11g_policy_parse("x.json", "{ }", 3, &d, &err), 0);
	assert_string_equal(a->digest, b->digest);
	assert_string_not_equal(a->digest, c->digest);
	assert_string_not_equal(a->digest, d->digest);
	for (size_t i = 0; i < 64; i++)
		assert_true(strchr("0123456789abcdef", a->digest[i]) != NULL);
	p11g_policy_free(a);
	p11g_policy_free(b);
	p11g_policy_free(c);
	p11g_policy_free(d);

	/* A file's digest depends on its name, not on the directory it is read from. */
	a = load_ok(EXAMPLES_DIR "/dev.json");
	FILE *f = fopen(EXAMPLES_DIR "/dev.json", "r");
	char buf[4096];
	assert_non_null(f);
	size_t n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	assert_int_equal(p11g_policy_parse("dev.json", buf, n, &b, &err), 0);
	assert_string_equal(a->digest, b->digest);
	p11g_policy_free(a);
	p11g_policy_free(b);
}

static json_t *load_json(const char *text)
{
	json_error_t je;
	json_t *j = json_loads(text, 0, &je);
	if (!j)
		fail_msg("test JSON: %s", je.text);
	return j;
}

static void test_rule_round_trip(void **state)
{
	struct p11g_policy *p = load_ok(EXAMPLES_DIR);
	p11g_err err;

	for (size_t i = 0; i < p->n_rules; i++) {
		const struct p11g_rule *r = &p->rules[i];
		struct p11g_rule *back = NULL;
		json_t *j1 = p11g_rule_to_json(r), *j2;

		assert_non_null(j1);
		if (p11g_rule_from_json(j1, &back, &err) != 0)
			fail_msg("%s: %s", r->name, err.msg);
		j2 = p11g_rule_to_json(back);
		if (!json_equal(j1, j2)) {
			char *s1 = json_dumps(j1, 0), *s2 = json_dumps(j2, 0);
			fail_msg("%s\n%s", s1, s2);
		}
		assert_string_equal(back->name, r->name);
		assert_string_equal(back->file, r->file);
		assert_int_equal(back->line, r->line);
		assert_int_equal(back->column, r->column);
		assert_int_equal(back->n_keys, r->n_keys);
		assert_int_equal(back->n_quorum, r->n_quorum);
		for (size_t k = 0; k < r->n_quorum; k++)
			assert_int_equal(back->quorum[k].count, r->quorum[k].count);
		assert_int_equal(back->max_uses, r->max_uses);
		assert_int_equal(back->max_validity, r->max_validity);
		assert_int_equal(back->n_mechanisms, r->n_mechanisms);
		assert_memory_equal(back->mechanisms, r->mechanisms,
		                    r->n_mechanisms * sizeof(*r->mechanisms));
		assert_int_equal(back->bind_digest, r->bind_digest);
		assert_int_equal(back->allow_raw, r->allow_raw);
		assert_int_equal(back->n_registries, r->n_registries);
		/* The snapshot still matches the same keys. */
		struct p11g_keyid k = mkkey("prod", "fw-signing", "", 0);
		for (size_t u = 0; u < r->n_keys; u++)
			assert_int_equal(p11g_keyid_matches(&k, back->key_uris[u]),
			                 p11g_keyid_matches(&k, r->key_uris[u]));
		json_decref(j1);
		json_decref(j2);
		p11g_rule_free(back);
	}

	const struct p11g_rule *r = p11g_policy_rule(p, "prod-firmware");
	json_t *j = p11g_rule_to_json(r);
	json_t *want = load_json(
	    "{\"name\": \"prod-firmware\", \"keys\": [\"pkcs11:token=prod;object=fw-signing\"],"
	    " \"orderers\": [\"group:ci\", \"user:release\"],"
	    " \"quorum\": [{\"from\": [\"group:release-approvers\"], \"count\": 2}],"
	    " \"auto_approve\": [], \"admins\": [\"group:security\"], \"max_uses\": 10,"
	    " \"max_validity\": \"1d\","
	    " \"mechanisms\": [\"CKM_ECDSA\", \"CKM_ECDSA_SHA256\", \"CKM_SHA256_RSA_PKCS\"],"
	    " \"allow_raw\": false, \"bind_digest\": false,"
	    " \"defined_at\": {\"file\": \"" EXAMPLES_DIR "/prod.json\", \"line\": 4,"
	    " \"column\": 5}}");
	assert_true(json_equal(j, want));
	json_decref(j);
	json_decref(want);
	p11g_policy_free(p);
}

static void test_rule_from_json_strict(void **state)
{
	static const struct {
		const char *json, *msg;
	} bad[] = {
	    {"{\"name\": \"r\", \"keys\": [\"pkcs11:token=a\"], \"orderers\": [], \"approvals\": 0,"
	     " \"approver\": []}",
	     "unknown member \"approver\" in rule"},
	    {"{\"keys\": [\"pkcs11:token=a\"], \"orderers\": [], \"approvals\": 0}",
	     "rule is missing \"name\""},
	    {"{\"name\": \"r\", \"keys\": [\"pkcs11:token=a\"], \"orderers\": [], \"approvals\": 0,"
	     " \"mechanisms\": [\"CKM_RSA_X_509\"]}",
	     "CKM_RSA_X_509 is a raw mechanism and needs \"allow_raw\": true"},
	    {"{\"name\": \"r\", \"keys\": [\"pkcs11:token=a\"], \"orderers\": [\"x\"],"
	     " \"approvals\": 0}",
	     "bad principal \"x\": expected user:NAME, group:NAME or uid:N"},
	    {"{\"name\": \"r\", \"keys\": [\"pkcs11:token=a\"], \"orderers\": [], \"approvals\": 0,"
	     " \"defined_at\": {\"file\": \"a\", \"line\": 0, \"column\": 1}}",
	     "\"line\" must be between 1 and 4294967295"},
	    {"{\"name\": \"r\", \"keys\": [\"pkcs11:token=a\"], \"orderers\": [], \"approvals\": 0,"
	     " \"bind_digest\": \"yes\"}",
	     "\"bind_digest\" must be a boolean, not a string"},
	};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(bad); i++) {
		json_t *j = load_json(bad[i].json);
		struct p11g_rule *r = NULL;
		p11g_err err = {0};
		if (p11g_rule_from_json(j, &r, &err) != -1)
			fail_msg("accepted %s", bad[i].json);
		assert_null(r);
		assert_string_equal(err.code, P11G_E_BAD_REQUEST);
		const char *prefix = "<rule snapshot>:";
		assert_true(strncmp(err.msg, prefix, strlen(prefix)) == 0);
		size_t ml = strlen(err.msg), wl = strlen(bad[i].msg);
		if (ml < wl || strcmp(err.msg + ml - wl, bad[i].msg) != 0)
			fail_msg("got %s, wanted ...%s", err.msg, bad[i].msg);
		json_decref(j);
	}

	/* A position inside the snapshot text: JSON_INDENT(2) puts each member on a line. */
	json_t *j = load_json("{\"name\": \"r\", \"keys\": [\"pkcs11:token=a\"], \"orderers\": [],"
	                      " \"approvals\": 0, \"approver\": []}");
	struct p11g_rule *r = NULL;
	p11g_err err;
	assert_int_equal(p11g_rule_from_json(j, &r, &err), -1);
	assert_string_equal(err.msg, "<rule snapshot>:8:3: unknown member \"approver\" in rule");
	json_decref(j);

	/* "defined_at" belongs to snapshots, not to policy files. */
	const char text[] = "{\"rules\": [{\"name\": \"r\", \"keys\": [\"pkcs11:token=a\"], "
	                    "\"orderers\": [], \"approvals\": 0, \"defined_at\": {}}]}";
	struct p11g_policy *p = NULL;
	char *msg = NULL;
	assert_int_equal(p11g_policy_parse("f.json", text, strlen(text), &p, &msg), -1);
	assert_string_equal(msg, "f.json:1:86: unknown member \"defined_at\" in rule");
	free(msg);

	/* Without "defined_at" the snapshot itself is where the rule was defined. */
	j = load_json("{\"name\": \"r\", \"keys\": [\"pkcs11:token=a\"], \"orderers\": [],"
	              " \"approvals\": 0}");
	assert_int_equal(p11g_rule_from_json(j, &r, &err), 0);
	assert_string_equal(r->file, "<rule snapshot>");
	assert_int_equal(r->line, 1);
	assert_int_equal(r->n_quorum, 0);
	p11g_rule_free(r);
	json_decref(j);
	assert_int_equal(p11g_rule_from_json(NULL, &r, &err), -1);
}

static void test_duration(void **state)
{
	static const struct {
		const char *s;
		int64_t v;
	} cases[] = {
	    {"90s", 90},
	    {"15m", 900},
	    {"24h", 86400},
	    {"7d", 604800},
	    {"1s", 1},
	    {"3650d", 3650LL * 86400},
	    {"315360000s", 315360000},
	    {"315360001s", -1},
	    {"3651d", -1},
	    {"99999999999999999999d", -1},
	    {"0s", -1},
	    {"0d", -1},
	    {"", -1},
	    {"s", -1},
	    {"10", -1},
	    {"10x", -1},
	    {"10ss", -1},
	    {"-5m", -1},
	    {"+5m", -1},
	    {" 5m", -1},
	    {"5m ", -1},
	    {"5 m", -1},
	    {"1.5h", -1},
	    {"1h30m", -1},
	    {"5M", -1},
	};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(cases); i++)
		if (p11g_duration_parse(cases[i].s) != cases[i].v)
			fail_msg("\"%s\": got %lld, wanted %lld", cases[i].s,
			         (long long)p11g_duration_parse(cases[i].s), (long long)cases[i].v);
	assert_int_equal(p11g_duration_parse(NULL), -1);
}

static void test_principal_parse(void **state)
{
	static const struct {
		const char *s;
		enum p11g_principal_kind kind;
		const char *name;
	} good[] = {
	    {"user:alice", P11G_PRINCIPAL_USER, "alice"},
	    {"group:release-approvers", P11G_PRINCIPAL_GROUP, "release-approvers"},
	    {"group:domain users", P11G_PRINCIPAL_GROUP, "domain users"},
	    {"uid:0", P11G_PRINCIPAL_UID, "0"},
	    {"uid:4294967294", P11G_PRINCIPAL_UID, "4294967294"},
	};
	static const char *const bad[] = {
	    "alice",  "user:",    "group:",   "uid:",       "uid:-1",    "uid:01", "uid:4294967295",
	    "uid:1x", "user:a:b", "group: x", "User:alice", "user:a\tb", "grp:x",  "",
	};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(good); i++) {
		struct p11g_principal p;
		p11g_err err;
		if (p11g_principal_parse(good[i].s, &p, &err) != 0)
			fail_msg("%s: %s", good[i].s, err.msg);
		assert_int_equal(p.kind, good[i].kind);
		assert_string_equal(p.name, good[i].name);
		char *s = p11g_principal_to_string(&p);
		assert_string_equal(s, good[i].s);
		free(s);
		p11g_principal_clear(&p);
	}
	for (size_t i = 0; i < P11G_ARRAY_SIZE(bad); i++) {
		struct p11g_principal p;
		p11g_err err = {0};
		if (p11g_principal_parse(bad[i], &p, &err) != -1)
			fail_msg("accepted \"%s\"", bad[i]);
		assert_string_equal(err.code, P11G_E_BAD_REQUEST);
	}
	/* A user name longer than struct p11g_ident can hold could never match. */
	char longname[80] = "user:";
	memset(longname + 5, 'a', 64);
	struct p11g_principal p;
	p11g_err err;
	assert_int_equal(p11g_principal_parse(longname, &p, &err), -1);
	longname[5 + 63] = '\0';
	assert_int_equal(p11g_principal_parse(longname, &p, &err), 0);
	p11g_principal_clear(&p);
}

static void test_principal_match(void **state)
{
	char *groups[] = {"staff", "release-approvers"};
	struct p11g_ident alice = {
	    .uid = 1001, .gid = 100, .user = "alice", .groups = groups, .n_groups = 2};
	struct p11g_ident nobody = {.uid = 1001, .user = ""};
	static const struct {
		const char *principal;
		bool alice, nobody;
	} cases[] = {
	    {"user:alice", true, false},     {"user:bob", false, false},
	    {"uid:1001", true, true},        {"uid:1002", false, false},
	    {"group:staff", true, false},    {"group:release-approvers", true, false},
	    {"group:release", false, false}, {"group:alice", false, false},
	};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(cases); i++) {
		struct p11g_principal p;
		p11g_err err;
		assert_int_equal(p11g_principal_parse(cases[i].principal, &p, &err), 0);
		if (p11g_principal_matches(&p, &alice) != cases[i].alice ||
		    p11g_principal_matches(&p, &nobody) != cases[i].nobody)
			fail_msg("%s", cases[i].principal);
		p11g_principal_clear(&p);
	}

	struct p11g_principal v[2];
	p11g_err err;
	assert_int_equal(p11g_principal_parse("user:bob", &v[0], &err), 0);
	assert_int_equal(p11g_principal_parse("group:staff", &v[1], &err), 0);
	struct p11g_principals ps = {v, 2}, none = {NULL, 0};
	assert_true(p11g_principals_match(&ps, &alice));
	assert_false(p11g_principals_match(&ps, &nobody));
	assert_false(p11g_principals_match(&none, &alice));
	p11g_principal_clear(&v[0]);
	p11g_principal_clear(&v[1]);
}

static void test_ident_resolve_root(void **state)
{
	struct p11g_ident id;

	assert_int_equal(p11g_ident_resolve(0, 0, 1, &id), 0);
	assert_int_equal(id.uid, 0);
	assert_int_equal(id.pid, 1);
	assert_string_equal(id.user, "root");
	bool root_group = false;
	for (size_t i = 0; i < id.n_groups; i++)
		root_group |= strcmp(id.groups[i], "root") == 0;
	assert_true(root_group);
	p11g_ident_clear(&id);
	assert_null(id.groups);

	/* A uid with no passwd entry: no user name, only the given gid's group. */
	assert_int_equal(p11g_ident_resolve(3999999999u, 0, 0, &id), 0);
	assert_string_equal(id.user, "");
	assert_int_equal(id.n_groups, 1);
	assert_string_equal(id.groups[0], "root");
	p11g_ident_clear(&id);
}

static void test_ident_json(void **state)
{
	char *groups[] = {"a", "b c"};
	struct p11g_ident id = {.uid = 42, .user = "alice", .groups = groups, .n_groups = 2}, back;
	json_t *j = p11g_ident_to_json(&id);

	assert_non_null(j);
	assert_int_equal(json_integer_value(json_object_get(j, "uid")), 42);
	assert_int_equal(p11g_ident_from_json(j, &back), 0);
	assert_int_equal(back.uid, 42);
	assert_string_equal(back.user, "alice");
	assert_int_equal(back.n_groups, 2);
	assert_string_equal(back.groups[1], "b c");
	p11g_ident_clear(&back);

	/* Stored approval records carry more members; they are ignored. */
	json_object_set_new(j, "time", json_integer(1));
	assert_int_equal(p11g_ident_from_json(j, &back), 0);
	p11g_ident_clear(&back);

	json_object_set_new(j, "uid", json_integer(-1));
	assert_int_equal(p11g_ident_from_json(j, &back), -EINVAL);
	json_object_set_new(j, "uid", json_integer(1));
	json_object_set_new(j, "groups", json_pack("[i]", 1));
	assert_int_equal(p11g_ident_from_json(j, &back), -EINVAL);
	json_object_del(j, "groups");
	assert_int_equal(p11g_ident_from_json(j, &back), -EINVAL);
	json_decref(j);
}

static void test_pjson_positions(void **state)
{
	const char text[] = "{\n  \"a\": [1, -2, 3.5e1],\n\t\"é\": \"x\\u00e9\\ud83d\\ude00\",\n"
	                    "  \"b\": {\"c\": null, \"d\": true}\n}";
	struct pjson_value *v;
	struct pjson_error err;

	assert_int_equal(pjson_parse(text, strlen(text), &v, &err), 0);
	assert_int_equal(v->type, PJSON_OBJECT);
	assert_int_equal(v->u.obj.n, 3);
	const struct pjson_member *a = pjson_get(v, "a");
	assert_int_equal(a->line, 2);
	assert_int_equal(a->column, 3);
	assert_int_equal(a->value->line, 2);
	assert_int_equal(a->value->column, 8);
	assert_int_equal(a->value->u.arr.n, 3);
	assert_int_equal(a->value->u.arr.v[1]->u.i, -2);
	assert_int_equal(a->value->u.arr.v[1]->column, 12);
	assert_int_equal(a->value->u.arr.v[2]->type, PJSON_REAL);
	/* A tab is one column; é is one column though two bytes. */
	const struct pjson_member *e = pjson_get(v, "\xc3\xa9");
	assert_non_null(e);
	assert_int_equal(e->line, 3);
	assert_int_equal(e->column, 2);
	assert_int_equal(e->value->column, 7);
	assert_string_equal(e->value->u.str.s, "x\xc3\xa9\xf0\x9f\x98\x80");
	assert_int_equal(e->value->u.str.len, 7);
	const struct pjson_member *b = pjson_get(v, "b");
	assert_int_equal(pjson_get(b->value, "d")->value->u.b, true);
	assert_int_equal(pjson_get(b->value, "c")->value->type, PJSON_NULL);
	assert_null(pjson_get(v, "z"));
	pjson_free(v);
}

static void test_pjson_limits(void **state)
{
	struct pjson_value *v;
	struct pjson_error err;
	char buf[256];

	/* 64 levels are fine, 65 are not. */
	memset(buf, '[', 64);
	memset(buf + 64, ']', 64);
	assert_int_equal(pjson_parse(buf, 128, &v, &err), 0);
	pjson_free(v);
	memset(buf, '[', 65);
	memset(buf + 65, ']', 65);
	assert_int_equal(pjson_parse(buf, 130, &v, &err), -1);
	assert_string_equal(err.msg, "nesting deeper than 64");
	assert_int_equal(err.column, 65);

	const char *ints = "[9223372036854775807, -9223372036854775808, -0]";
	assert_int_equal(pjson_parse(ints, strlen(ints), &v, &err), 0);
	assert_true(v->u.arr.v[0]->u.i == INT64_MAX);
	assert_true(v->u.arr.v[1]->u.i == INT64_MIN);
	assert_int_equal(v->u.arr.v[2]->u.i, 0);
	pjson_free(v);

	static const struct {
		const char *text, *msg;
	} bad[] = {
	    {"9223372036854775808", "integer out of range"},
	    {"-9223372036854775809", "integer out of range"},
	    {"01", "bad number: leading zero"},
	    {"1.", "bad number: digits expected after '.'"},
	    {"1e", "bad number: digits expected in the exponent"},
	    {"-", "bad number"},
	    {"+1", "unexpected '+'"},
	    {"tru", "invalid literal (expected true, false or null)"},
	    {"\"\\u0000\"", "\\u0000 is not allowed in strings"},
	    {"\"\\ud83d\"", "unpaired surrogate \\ud83d"},
	    {"\"\\ude00\"", "unpaired surrogate \\ude00"},
	    {"\"\\u12g4\"", "bad \\u escape: expected 4 hex digits"},
	    {"\"\xed\xa0\x80\"", "invalid UTF-8 in string"},
	    {"\"\xf4\x90\x80\x80\"", "invalid UTF-8 in string"},
	    {"\"\xe2\x82\"", "invalid UTF-8 in string"},
	    {"\xef\xbb\xbf{}", "byte order mark is not allowed"},
	    {"{\"a\":1,}", "trailing comma"},
	    {"[1,]", "trailing comma"},
	    {"[1 2]", "expected ',' or ']'"},
	    {"{a:1}", "expected a member name in double quotes"},
	    {"{\"a\" 1}", "expected ':' after member name"},
	    {"\"abc", "unterminated string"},
	    {"[", "unexpected end of input"},
	    {"", "unexpected end of input"},
	    {"\xc3\xa9", "unexpected non-ASCII character"},
	};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(bad); i++) {
		if (pjson_parse(bad[i].text, strlen(bad[i].text), &v, &err) != -1)
			fail_msg("accepted %s", bad[i].text);
		if (strcmp(err.msg, bad[i].msg) != 0)
			fail_msg("%s: got \"%s\", wanted \"%s\"", bad[i].text, err.msg, bad[i].msg);
	}

	/* Duplicates among many members are still found, at the second one. */
	size_t cap = 20 * 1000 + 64, len = 0;
	char *big = malloc(cap);
	assert_non_null(big);
	big[len++] = '{';
	for (int i = 0; i < 1000; i++)
		len += (size_t)snprintf(big + len, cap - len, "%s\"k%d\":%d", i ? "," : "", i, i);
	len += (size_t)snprintf(big + len, cap - len, ",\"k500\":0}");
	assert_int_equal(pjson_parse(big, len, &v, &err), -1);
	assert_true(strncmp(err.msg, "duplicate member \"k500\"", 23) == 0);
	big[len - 8] = 'j'; /* "k500" -> "j500" */
	assert_int_equal(pjson_parse(big, len, &v, &err), 0);
	assert_int_equal(v->u.obj.n, 1001);
	pjson_free(v);
	free(big);

	/* 1 MiB is the limit. */
	size_t max = PJSON_MAX_INPUT;
	char *huge = malloc(max + 1);
	assert_non_null(huge);
	memset(huge, ' ', max + 1);
	huge[0] = '0';
	assert_int_equal(pjson_parse(huge, max, &v, &err), 0);
	pjson_free(v);
	assert_int_equal(pjson_parse(huge, max + 1, &v, &err), -1);
	assert_int_equal(err.line, 0);
	free(huge);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bad_policies),
	    cmocka_unit_test(test_bad_policy_table_covers_dir),
	    cmocka_unit_test(test_parse_buffer_errors),
	    cmocka_unit_test(test_load_path_errors),
	    cmocka_unit_test(test_empty_dir),
	    cmocka_unit_test(test_examples_load),
	    cmocka_unit_test(test_match),
	    cmocka_unit_test(test_empty_label_rule),
	    cmocka_unit_test(test_request_judging_agrees_with_match),
	    cmocka_unit_test(test_default_allow),
	    cmocka_unit_test(test_digest),
	    cmocka_unit_test(test_rule_round_trip),
	    cmocka_unit_test(test_rule_from_json_strict),
	    cmocka_unit_test(test_duration),
	    cmocka_unit_test(test_principal_parse),
	    cmocka_unit_test(test_principal_match),
	    cmocka_unit_test(test_ident_resolve_root),
	    cmocka_unit_test(test_ident_json),
	    cmocka_unit_test(test_pjson_positions),
	    cmocka_unit_test(test_pjson_limits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
