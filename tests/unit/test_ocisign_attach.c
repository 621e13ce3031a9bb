/* Unit tests for ocisign's .sig manifest builder: cosign's layout, appending, duplicate detection.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <jansson.h>

#include "attach.h"

#define P1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define P2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"

static json_t *add(const char *existing, const char *digest, const char *sig, int want,
                   json_t **ret_config)
{
	char *m = NULL, *c = NULL;
	size_t ml, cl;
	p11g_err err;
	int r =
	    oci_sig_manifest_add((const unsigned char *)existing, existing ? strlen(existing) : 0,
	                         digest, 123, sig, NULL, NULL, &m, &ml, &c, &cl, &err);
	assert_int_equal(r, want);
	if (r < 0)
		assert_string_equal(err.code, P11G_E_PROTOCOL);
	if (r != 0)
		return NULL;
	json_t *mj = json_loads(m, JSON_REJECT_DUPLICATES, NULL);
	assert_non_null(mj);
	char cd[OCI_DIGEST_LEN + 1];
	oci_sha256_digest(c, cl, cd);
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(mj, "config"), "digest")), cd);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(mj, "config"), "size")),
	                 cl);
	if (ret_config)
		*ret_config = json_loads(c, 0, NULL);
	free(m);
	free(c);
	return mj;
}

static void test_first_signature(void **state)
{
	(void)state;
	json_t *cfg = NULL, *m = add(NULL, P1, "c2ln", 0, &cfg);
	assert_int_equal(json_integer_value(json_object_get(m, "schemaVersion")), 2);
	assert_string_equal(json_string_value(json_object_get(m, "mediaType")),
	                    "application/vnd.oci.image.manifest.v1+json");
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(m, "config"), "mediaType")),
	    "application/vnd.oci.image.config.v1+json");
	json_t *layers = json_object_get(m, "layers");
	assert_int_equal(json_array_size(layers), 1);
	json_t *l = json_array_get(layers, 0);
	assert_string_equal(json_string_value(json_object_get(l, "mediaType")),
	                    "application/vnd.dev.cosign.simplesigning.v1+json");
	assert_string_equal(json_string_value(json_object_get(l, "digest")), P1);
	assert_int_equal(json_integer_value(json_object_get(l, "size")), 123);
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(l, "annotations"),
	                                      "dev.cosignproject.cosign/signature")),
	    "c2ln");
	json_t *diff = json_object_get(json_object_get(cfg, "rootfs"), "diff_ids");
	assert_int_equal(json_array_size(diff), 1);
	assert_string_equal(json_string_value(json_array_get(diff, 0)), P1);
	json_decref(cfg);
	json_decref(m);
}

static void test_append_keeps_and_skips(void **state)
{
	(void)state;
	json_t *m1 = add(NULL, P1, "c2ln", 0, NULL);
	/* an extra annotation on the old layer (cosign's bundle, say) must survive */
	json_object_set_new(
	    json_object_get(json_array_get(json_object_get(m1, "layers"), 0), "annotations"),
	    "dev.sigstore.cosign/bundle", json_string("{}"));
	char *s1 = json_dumps(m1, JSON_COMPACT);
	json_t *cfg = NULL, *m2 = add(s1, P2, "b3RoZXI=", 0, &cfg);
	json_t *layers = json_object_get(m2, "layers");
	assert_int_equal(json_array_size(layers), 2);
	assert_true(json_equal(json_array_get(layers, 0),
	                       json_array_get(json_object_get(m1, "layers"), 0)));
	assert_string_equal(json_string_value(json_object_get(json_array_get(layers, 1), "digest")),
	                    P2);
	assert_int_equal(
	    json_array_size(json_object_get(json_object_get(cfg, "rootfs"), "diff_ids")), 2);
	/* the same payload with the same signature: nothing to do */
	char *s2 = json_dumps(m2, JSON_COMPACT);
	add(s2, P1, "c2ln", 1, NULL);
	/* the same payload with another signature (another key): appended */
	json_t *m3 = add(s2, P1, "YW5vdGhlcg==", 0, NULL);
	assert_int_equal(json_array_size(json_object_get(m3, "layers")), 3);
	free(s1);
	free(s2);
	json_decref(cfg);
	json_decref(m1);
	json_decref(m2);
	json_decref(m3);
}

static void test_bad_existing(void **state)
{
	(void)state;
	add("not json", P1, "c2ln", -1, NULL);
	add("{\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[]}", P1,
	    "c2ln", -1, NULL);
	add("{\"layers\":[{\"digest\":\"md5:x\"}]}", P1, "c2ln", -1, NULL);
	add("{\"layers\":[],\"layers\":[]}", P1, "c2ln", -1, NULL);
}

static void test_sig_tag(void **state)
{
	(void)state;
	char tag[80];
	oci_sig_tag(P1, tag);
	assert_string_equal(
	    tag, "sha256-1111111111111111111111111111111111111111111111111111111111111111.sig");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_first_signature),
	    cmocka_unit_test(test_append_keeps_and_skips),
	    cmocka_unit_test(test_bad_existing),
	    cmocka_unit_test(test_sig_tag),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
