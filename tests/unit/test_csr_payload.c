/* Unit tests for csr_payload.c: what approvald reads of a certificate request it is asked to
 * have signed, and what it refuses to read. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "approvald/csr_payload.h"

/* The DER CertificationRequestInfo of a request for a fresh key (what ocisign csr signs). */
static unsigned char *tbs_of(const char *alg, const char *group, const char *san, const char *eku,
                             size_t *ret_len)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, alg, NULL);
	EVP_PKEY *pk = NULL;
	assert_int_equal(EVP_PKEY_keygen_init(ctx), 1);
	if (group)
		assert_int_equal(EVP_PKEY_CTX_set_group_name(ctx, group), 1);
	assert_int_equal(EVP_PKEY_generate(ctx, &pk), 1);
	X509_REQ *req = X509_REQ_new();
	X509_NAME *n = X509_NAME_new();
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8,
	                           (const unsigned char *)"release <b>signing</b>", -1, -1, 0);
	X509_NAME_add_entry_by_txt(n, "O", MBSTRING_UTF8, (const unsigned char *)"Acme", -1, -1, 0);
	X509_REQ_set_subject_name(req, n);
	X509_REQ_set_pubkey(req, pk);
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	if (san)
		sk_X509_EXTENSION_push(exts,
		                       X509V3_EXT_nconf_nid(NULL, NULL, NID_subject_alt_name, san));
	if (eku)
		sk_X509_EXTENSION_push(exts,
		                       X509V3_EXT_nconf_nid(NULL, NULL, NID_ext_key_usage, eku));
	if (sk_X509_EXTENSION_num(exts))
		assert_int_equal(X509_REQ_add_extensions(req, exts), 1);
	unsigned char *tbs = NULL;
	int len = i2d_re_X509_REQ_tbs(req, &tbs);
	assert_true(len > 0);
	*ret_len = (size_t)len;
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_NAME_free(n);
	X509_REQ_free(req);
	EVP_PKEY_free(pk);
	EVP_PKEY_CTX_free(ctx);
	return tbs;
}

static const char *str(const json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));
	assert_non_null(s);
	return s;
}

static void test_described(void **state)
{
	(void)state;
	size_t n;
	char why[160];
	unsigned char *tbs =
	    tbs_of("EC", "P-256", "email:release@acme.example,URI:https://a.example/ci",
	           "codeSigning", &n);
	assert_true(p11g_csr_payload_looks(tbs, n));
	json_t *d = p11g_csr_payload_describe(tbs, n, why, sizeof(why));
	assert_non_null(d);
	assert_string_equal(str(d, "subject"), "/CN=release <b>signing<\\/b>/O=Acme");
	assert_string_equal(str(d, "key"), "EC P-256");
	json_t *names = json_object_get(d, "names");
	assert_int_equal(json_array_size(names), 2);
	assert_string_equal(json_string_value(json_array_get(names, 0)),
	                    "email:release@acme.example");
	assert_string_equal(json_string_value(json_array_get(names, 1)),
	                    "URI:https://a.example/ci");
	json_t *eku = json_object_get(d, "extended_key_usage");
	assert_int_equal(json_array_size(eku), 1);
	assert_string_equal(json_string_value(json_array_get(eku, 0)), "codeSigning");
	json_decref(d);
	OPENSSL_free(tbs);

	/* no extensions: none shown; other key types named */
	tbs = tbs_of("ED25519", NULL, NULL, NULL, &n);
	assert_non_null(d = p11g_csr_payload_describe(tbs, n, why, sizeof(why)));
	assert_string_equal(str(d, "key"), "Ed25519");
	assert_null(json_object_get(d, "names"));
	assert_null(json_object_get(d, "extended_key_usage"));
	json_decref(d);
	OPENSSL_free(tbs);
	tbs = tbs_of("EC", "P-384", NULL, "serverAuth", &n);
	assert_non_null(d = p11g_csr_payload_describe(tbs, n, why, sizeof(why)));
	assert_string_equal(str(d, "key"), "EC P-384");
	assert_string_equal(
	    json_string_value(json_array_get(json_object_get(d, "extended_key_usage"), 0)),
	    "serverAuth");
	json_decref(d);
	OPENSSL_free(tbs);
}

static void test_refused(void **state)
{
	(void)state;
	size_t n;
	char why[160];
	unsigned char *tbs = tbs_of("EC", "P-256", "DNS:a.example", "codeSigning", &n);
	unsigned char *buf = malloc(n + 8);

	/* every truncation */
	for (size_t k = 0; k < n; k++) {
		why[0] = '\0';
		json_t *d = p11g_csr_payload_describe(tbs, k, why, sizeof(why));
		if (d)
			fail_msg("a request cut to %zu of %zu bytes was read", k, n);
		assert_true(why[0] != '\0');
	}
	/* a byte after it */
	memcpy(buf, tbs, n);
	buf[n] = 0;
	assert_null(p11g_csr_payload_describe(buf, n + 1, why, sizeof(why)));
	/* BER, not DER: the outer length in a longer form than needed */
	assert_true(tbs[1] & 0x80);
	size_t lenlen = tbs[1] & 0x7f;
	buf[0] = 0x30;
	buf[1] = (unsigned char)(0x80 | (lenlen + 1));
	buf[2] = 0;
	memcpy(buf + 3, tbs + 2, n - 2);
	assert_null(p11g_csr_payload_describe(buf, n + 1, why, sizeof(why)));
	assert_non_null(strstr(why, "DER"));
	/* not a SEQUENCE at all, or a JSON payload */
	assert_false(p11g_csr_payload_looks((const unsigned char *)"{\"critical\":{}}", 15));
	assert_null(p11g_csr_payload_describe((const unsigned char *)"{}", 2, why, sizeof(why)));
	/* a flipped bit anywhere is refused or read as another request, never a crash */
	for (size_t k = 0; k < n; k++) {
		memcpy(buf, tbs, n);
		buf[k] ^= 0x01;
		json_decref(p11g_csr_payload_describe(buf, n, why, sizeof(why)));
	}
	free(buf);
	OPENSSL_free(tbs);
}

/* A request built here with whatever attributes and extensions a test wants. */
static unsigned char *tbs_custom(void (*add)(X509_REQ *), size_t *ret_len)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "ED25519", NULL);
	EVP_PKEY *pk = NULL;
	assert_int_equal(EVP_PKEY_keygen_init(ctx), 1);
	assert_int_equal(EVP_PKEY_generate(ctx, &pk), 1);
	X509_REQ *req = X509_REQ_new();
	X509_REQ_set_pubkey(req, pk);
	add(req);
	unsigned char *tbs = NULL;
	int len = i2d_re_X509_REQ_tbs(req, &tbs);
	assert_true(len > 0);
	*ret_len = (size_t)len;
	X509_REQ_free(req);
	EVP_PKEY_free(pk);
	EVP_PKEY_CTX_free(ctx);
	return tbs;
}

static void add_exts(X509_REQ *req, const char *const *conf)
{
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	for (; *conf; conf += 2)
		sk_X509_EXTENSION_push(exts, X509V3_EXT_nconf(NULL, NULL, conf[0], conf[1]));
	assert_int_equal(X509_REQ_add_extensions(req, exts), 1);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
}

static void add_ca(X509_REQ *req)
{
	static const char *const c[] = {"basicConstraints", "critical,CA:TRUE", "keyUsage",
	                                "critical,keyCertSign", NULL};
	add_exts(req, c);
}

static void add_two_requests(X509_REQ *req)
{
	static const char *const a[] = {"extendedKeyUsage", "codeSigning", NULL},
	                         *const b[] = {"basicConstraints", "CA:TRUE", NULL};
	add_exts(req, a);
	/* OpenSSL adds one attribute of a type: the second extension request is Microsoft's,
	 * which OpenSSL also reads extensions from */
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	sk_X509_EXTENSION_push(exts, X509V3_EXT_nconf(NULL, NULL, b[0], b[1]));
	unsigned char *der = NULL;
	int len = i2d_X509_EXTENSIONS(exts, &der);
	assert_true(len > 0);
	assert_int_equal(X509_REQ_add1_attr_by_NID(req, NID_ms_ext_req, V_ASN1_SEQUENCE, der, len),
	                 1);
	assert_int_equal(X509_REQ_get_attr_count(req), 2);
	OPENSSL_free(der);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
}

static void add_password(X509_REQ *req)
{
	assert_int_equal(X509_REQ_add1_attr_by_NID(req, NID_pkcs9_challengePassword, MBSTRING_ASC,
	                                           (const unsigned char *)"x", -1),
	                 1);
}

static void add_unknown(X509_REQ *req)
{
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	ASN1_OCTET_STRING *v = ASN1_OCTET_STRING_new();
	ASN1_OCTET_STRING_set(v, (const unsigned char *)"\x05\x00", 2);
	ASN1_OBJECT *o = OBJ_txt2obj("1.3.6.1.4.1.99999.1", 1);
	sk_X509_EXTENSION_push(exts, X509_EXTENSION_create_by_OBJ(NULL, o, 0, v));
	assert_int_equal(X509_REQ_add_extensions(req, exts), 1);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	ASN1_OBJECT_free(o);
	ASN1_OCTET_STRING_free(v);
}

static void add_odd_name(X509_REQ *req)
{
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
	GENERAL_NAME *g = GENERAL_NAME_new();
	ASN1_IA5STRING *s = ASN1_IA5STRING_new();
	ASN1_STRING_set(s, "a\xff\\x41\0b@x", 10);
	GENERAL_NAME_set0_value(g, GEN_EMAIL, s);
	sk_GENERAL_NAME_push(gens, g);
	sk_X509_EXTENSION_push(exts, X509V3_EXT_i2d(NID_subject_alt_name, 0, gens));
	assert_int_equal(X509_REQ_add_extensions(req, exts), 1);
	GENERAL_NAMES_free(gens);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
}

static void add_long_subject(X509_REQ *req)
{
	X509_NAME *n = X509_NAME_new();
	char ou[64];
	memset(ou, 'x', sizeof(ou) - 1);
	ou[sizeof(ou) - 1] = '\0';
	for (int i = 0; i < 20; i++)
		X509_NAME_add_entry_by_txt(n, "OU", MBSTRING_UTF8, (const unsigned char *)ou, -1,
		                           -1, 0);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)"attacker", -1,
	                           -1, 0);
	X509_REQ_set_subject_name(req, n);
	X509_NAME_free(n);
}

static void test_everything_asked_is_shown(void **state)
{
	(void)state;
	size_t n;
	char why[160];
	unsigned char *tbs = tbs_custom(add_ca, &n);
	json_t *d = p11g_csr_payload_describe(tbs, n, why, sizeof(why));
	assert_non_null(d);
	json_t *o = json_object_get(d, "other_extensions");
	assert_int_equal(json_array_size(o), 2);
	assert_string_equal(json_string_value(json_array_get(o, 0)),
	                    "X509v3 Basic Constraints (critical): CA:TRUE");
	assert_string_equal(json_string_value(json_array_get(o, 1)),
	                    "X509v3 Key Usage (critical): Certificate Sign");
	json_decref(d);
	OPENSSL_free(tbs);

	/* a name's bytes, whatever they are: escaped, never taken for out of memory */
	tbs = tbs_custom(add_odd_name, &n);
	assert_non_null(d = p11g_csr_payload_describe(tbs, n, why, sizeof(why)));
	assert_string_equal(json_string_value(json_array_get(json_object_get(d, "names"), 0)),
	                    "email:a\\xff\\x5cx41\\x00b@x");
	json_decref(d);
	OPENSSL_free(tbs);

	/* what could not be shown whole is refused */
	static const struct {
		void (*add)(X509_REQ *);
		const char *why;
	} refused[] = {
	    {add_two_requests, "attributes other than one extension request"},
	    {add_password, "attributes other than one extension request"},
	    {add_unknown, "cannot show (1.3.6.1.4.1.99999.1)"},
	    {add_long_subject, "subject is longer than 1000 characters"},
	};
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		tbs = tbs_custom(refused[i].add, &n);
		why[0] = '\0';
		d = p11g_csr_payload_describe(tbs, n, why, sizeof(why));
		if (d)
			fail_msg("request %zu was read: %s", i, json_dumps(d, 0));
		if (!strstr(why, refused[i].why))
			fail_msg("request %zu refused with \"%s\", not \"%s\"", i, why,
			         refused[i].why);
		OPENSSL_free(tbs);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_described),
	    cmocka_unit_test(test_refused),
	    cmocka_unit_test(test_everything_asked_is_shown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
