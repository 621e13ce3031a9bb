/* Unit tests for ocisign's image reference parsing (go-containerregistry's rules, as cosign names
 * images). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ref.h"

#define D "sha256:3fbc632167424a6d997e74f52b878d7cc478225cffac6bc977eedfe51c7f4e79"

static void check(const char *in, const char *reg, const char *repo, const char *tag,
                  const char *digest)
{
	struct oci_ref r;
	p11g_err err;
	if (oci_ref_parse(in, &r, &err) != 0)
		fail_msg("%s: %s", in, err.msg);
	assert_string_equal(r.registry, reg);
	assert_string_equal(r.repository, repo);
	assert_string_equal(r.tag, tag);
	assert_string_equal(r.digest, digest);
}

static void test_docker_hub_defaults(void **state)
{
	(void)state;
	check("busybox", "index.docker.io", "library/busybox", "", "");
	check("busybox:1.36", "index.docker.io", "library/busybox", "1.36", "");
	check("docker.io/busybox", "index.docker.io", "library/busybox", "", "");
	check("index.docker.io/busybox", "index.docker.io", "library/busybox", "", "");
	check("docker.io/library/busybox@" D, "index.docker.io", "library/busybox", "", D);
	check("acme/app:v1", "index.docker.io", "acme/app", "v1", "");
	/* no '.' or ':' in the first component: it is a repository, even "localhost" */
	check("localhost/app", "index.docker.io", "localhost/app", "", "");
}

static void test_registries_and_ports(void **state)
{
	(void)state;
	check("localhost:5000/app", "localhost:5000", "app", "", "");
	check("localhost:5000/team/app:v2", "localhost:5000", "team/app", "v2", "");
	check("127.0.0.1:5000/team/app@" D, "127.0.0.1:5000", "team/app", "", D);
	check("ghcr.io/a/b/c:latest", "ghcr.io", "a/b/c", "latest", "");
	check("656666598317.dkr.ecr.eu-west-1.amazonaws.com/test@" D,
	      "656666598317.dkr.ecr.eu-west-1.amazonaws.com", "test", "", D);
	check("[::1]:5000/app:x", "[::1]:5000", "app", "x", "");
	check("Registry.Example.COM/app", "Registry.Example.COM", "app", "", "");
}

static void test_tag_and_digest(void **state)
{
	(void)state;
	struct oci_ref r;
	p11g_err err;
	check("reg.io/app:v1@" D, "reg.io", "app", "v1", D);
	check("reg.io:443/app:V_1.2-rc@" D, "reg.io:443", "app", "V_1.2-rc", D);
	assert_int_equal(oci_ref_parse("reg.io/app:v1@" D, &r, &err), 0);
	assert_string_equal(oci_ref_reference(&r), D);
	assert_int_equal(oci_ref_parse("reg.io/app:v1", &r, &err), 0);
	assert_string_equal(oci_ref_reference(&r), "v1");
	assert_int_equal(oci_ref_parse("reg.io/app", &r, &err), 0);
	assert_string_equal(oci_ref_reference(&r), "latest");
	char name[600];
	oci_ref_name(&r, name, sizeof(name));
	assert_string_equal(name, "reg.io/app");
	assert_string_equal(oci_ref_api_host(&r), "reg.io");
	assert_int_equal(oci_ref_parse("busybox", &r, &err), 0);
	assert_string_equal(oci_ref_api_host(&r), "registry-1.docker.io");
}

static void test_bad_references(void **state)
{
	(void)state;
	static const char *const bad[] = {
	    "",
	    "a",               /* repositories are 2..255 characters */
	    "Upper/case",      /* repositories are lower case */
	    "reg.io/app:",     /* empty tag */
	    "reg.io/app:bad!", /* tag characters */
	    "reg.io/app:-x",   /* a tag starts with a letter, digit or _ */
	    "reg.io/app:.x",
	    "reg.io/app@sha256:abc", /* short digest */
	    "reg.io/app@sha512:" D,  /* only sha256 */
	    "reg.io/app@" D "@" D,   /* two '@' */
	    "reg.io/app@SHA256:3fbc632167424a6d997e74f52b878d7cc478225cffac6bc977eedfe51c7f4e79",
	    "reg.io:0/app", /* port range */
	    "reg.io:65536/app",
	    "reg.io:/app",
	    "-reg.io/app",
	    "user@reg.io/app",
	    "reg.io/app with space",
	    "reg.io/",
	    "127.0.0.1:1/../../../evil", /* path components: no "..", ".", empty or edges */
	    "reg.io/team/../app",
	    "reg.io/./app",
	    "reg.io/team//app",
	    "reg.io/team/app/",
	    "reg.io/-team/app",
	    "reg.io/team_/app",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct oci_ref r;
		p11g_err err = {0};
		if (oci_ref_parse(bad[i], &r, &err) != -1)
			fail_msg("accepted \"%s\"", bad[i]);
		assert_true(err.msg[0] != '\0');
		assert_string_equal(err.code, P11G_E_BAD_REQUEST);
	}
	/* a 128-character tag is one too many; 127 is fine */
	char ref[300];
	memset(ref, 0, sizeof(ref));
	memcpy(ref, "reg.io/app:", 11);
	memset(ref + 11, 't', 127);
	struct oci_ref r;
	p11g_err err;
	assert_int_equal(oci_ref_parse(ref, &r, &err), 0);
	ref[11 + 127] = 't';
	assert_int_equal(oci_ref_parse(ref, &r, &err), -1);
	assert_string_equal(err.code, P11G_E_BAD_REQUEST);
}

static void test_digest_valid(void **state)
{
	(void)state;
	assert_true(oci_digest_valid(D));
	assert_false(oci_digest_valid("sha256:"));
	assert_false(oci_digest_valid(D "0"));
	assert_false(oci_digest_valid(
	    "sha256:3FBC632167424a6d997e74f52b878d7cc478225cffac6bc977eedfe51c7f4e79"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_docker_hub_defaults), cmocka_unit_test(test_registries_and_ports),
	    cmocka_unit_test(test_tag_and_digest),      cmocka_unit_test(test_bad_references),
	    cmocka_unit_test(test_digest_valid),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
