/* Unit tests for approvald's policy loader (policy_load.c): files, directories, their order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <sys/stat.h>

#include "approvald/policy_load.h"
#include "p11gate/errors.h"

/* A scratch directory and the files the tests write into it. */
struct scratch {
	char dir[32];
	char paths[8][64];
	size_t n;
};

static void scratch_new(struct scratch *s)
{
	memset(s, 0, sizeof(*s));
	snprintf(s->dir, sizeof(s->dir), "/tmp/p11g-policy-XXXXXX");
	assert_non_null(mkdtemp(s->dir));
}

static const char *scratch_file(struct scratch *s, const char *name, const char *text)
{
	assert_true(s->n < P11G_ARRAY_SIZE(s->paths));
	char *path = s->paths[s->n++];
	size_t n = strlen(s->dir);
	memcpy(path, s->dir, n);
	snprintf(path + n, sizeof(s->paths[0]) - n, "/%s", name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
	return path;
}

static void scratch_remove(struct scratch *s)
{
	for (size_t i = 0; i < s->n; i++)
		unlink(s->paths[i]);
	rmdir(s->dir);
}

static struct p11g_policy *load_ok(const char *path)
{
	struct p11g_policy *p = NULL;
	p11g_err err = {0};
	if (p11g_policy_load(path, &p, &err) != 0)
		fail_msg("%s: %s", path, err.msg);
	return p;
}

static void load_fails(const char *path, const char *msg)
{
	struct p11g_policy *p = NULL;
	p11g_err err = {0};

	assert_int_equal(p11g_policy_load(path, &p, &err), -1);
	assert_null(p);
	assert_string_equal(err.code, P11G_E_BAD_REQUEST);
	if (strcmp(err.msg, msg) != 0)
		fail_msg("%s:\n   got: %s\nwanted: %s", path, err.msg, msg);
}

static void test_path_errors(void **state)
{
	load_fails("/nonexistent/policy.d", "/nonexistent/policy.d: No such file or directory");
	load_fails("/dev/null", "/dev/null: not a regular file or directory");
}

static void test_empty_dir(void **state)
{
	struct scratch s;

	scratch_new(&s);
	/* Neither a non-.json file nor a dotfile counts. */
	scratch_file(&s, "README", "not json");
	scratch_file(&s, ".#x.json", "not json");
	struct p11g_policy *p = load_ok(s.dir);
	assert_int_equal(p->n_rules, 0);
	assert_int_equal(p->n_files, 0);
	assert_false(p->default_allow);
	assert_int_equal(strlen(p->digest), 64);
	p11g_policy_free(p);
	scratch_remove(&s);
}

/* Files in name order, whatever order they were made in; messages name the paths. */
static void test_dir_order(void **state)
{
	struct scratch s;
	char msg[256];

	scratch_new(&s);
	scratch_file(&s, "20-b.json",
	             "{\n  \"rules\": [\n"
	             "    {\"name\": \"dev\", \"keys\": [\"pkcs11:token=b\"], \"orderers\": [], "
	             "\"approvals\": 0},\n"
	             "    {\"name\": \"prod\", \"keys\": [\"pkcs11:token=c\"], \"orderers\": [], "
	             "\"approvals\": 0}\n  ]\n}\n");
	scratch_file(&s, "10-a.json",
	             "{\n  \"rules\": [\n"
	             "    {\"name\": \"prod\", \"keys\": [\"pkcs11:token=a\"], \"orderers\": [], "
	             "\"approvals\": 0}\n  ]\n}\n");
	snprintf(msg, sizeof(msg),
	         "%s/20-b.json:4:14: duplicate rule name \"prod\" (first at %s/10-a.json:3:5)",
	         s.dir, s.dir);
	load_fails(s.dir, msg);
	scratch_remove(&s);
}

static void test_file_errors(void **state)
{
	struct scratch s;
	char msg[256];

	scratch_new(&s);
	/* A directory named like a policy file is skipped in a directory, refused named alone. */
	const char *sub = scratch_file(&s, "x", "");
	unlink(sub);
	assert_int_equal(mkdir(sub, 0700), 0);
	char *big = malloc(P11G_POLICY_TEXT_MAX + 2);
	assert_non_null(big);
	memset(big, ' ', P11G_POLICY_TEXT_MAX + 1);
	big[P11G_POLICY_TEXT_MAX + 1] = '\0';
	const char *path = scratch_file(&s, "big.json", big);
	free(big);
	snprintf(msg, sizeof(msg), "%s: larger than 1 MiB", path);
	load_fails(path, msg);
	load_fails(s.dir, msg);
	rmdir(sub);
	scratch_remove(&s);
}

static void test_examples(void **state)
{
	static const char *const files[] = {"dev.json", "notify.json", "pipeline.json", "prod.json",
	                                    "quorum.json"};
	char path[512];

	for (size_t i = 0; i < P11G_ARRAY_SIZE(files); i++) {
		snprintf(path, sizeof(path), "%s/%s", EXAMPLES_DIR, files[i]);
		struct p11g_policy *p = load_ok(path);
		assert_int_equal(p->n_rules, 1);
		assert_int_equal(p->n_files, 1);
		p11g_policy_free(p);
	}

	struct p11g_policy *p = load_ok(EXAMPLES_DIR);
	assert_int_equal(p->n_files, 5);
	assert_int_equal(p->n_rules, 5);
	/* Name order: dev, notify, pipeline, prod, quorum. */
	assert_string_equal(p->rules[0].name, "dev-signing");
	assert_string_equal(p->rules[1].name, "release-packages");
	assert_string_equal(p->rules[2].name, "release-images");
	assert_string_equal(p->rules[3].name, "prod-firmware");
	assert_string_equal(p->rules[4].name, "prod-images");
	assert_string_equal(p->rules[3].file, EXAMPLES_DIR "/prod.json");
	/* the pipeline example's issuer, with a key set from its URL (none read at load) */
	const struct p11g_issuer *is = p11g_policy_issuer(p, "github");
	assert_non_null(is);
	assert_non_null(is->jwks_url);
	assert_non_null(p->rules[2].claims);
	assert_string_equal(p->rules[2].claims->actor_claim, "actor");
	/* the notify example's notifiers, which its rule names */
	assert_int_equal(p->n_notifiers, 2);
	assert_int_equal(p->rules[1].n_notify, 2);
	assert_non_null(p11g_policy_notifier(p, "release-slack"));
	assert_string_equal(p11g_policy_notifier(p, "security-mail")->command[0],
	                    "/usr/sbin/sendmail");
	p11g_policy_free(p);
}

/* What the loader hands the parser is the file's bytes under its path: the digest is the
 * one the same bytes parse to under the file's name. */
static void test_digest_is_the_texts(void **state)
{
	struct p11g_policy *a = load_ok(EXAMPLES_DIR "/dev.json"), *b = NULL;
	char buf[4096];
	p11g_err err = {0};
	FILE *f = fopen(EXAMPLES_DIR "/dev.json", "r");

	assert_non_null(f);
	size_t n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	assert_int_equal(p11g_policy_parse("dev.json", buf, n, &b, &err), 0);
	assert_string_equal(a->digest, b->digest);
	p11g_policy_free(a);
	p11g_policy_free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_path_errors), cmocka_unit_test(test_empty_dir),
	    cmocka_unit_test(test_dir_order),   cmocka_unit_test(test_file_errors),
	    cmocka_unit_test(test_examples),    cmocka_unit_test(test_digest_is_the_texts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
