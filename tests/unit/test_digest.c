/* Tests of the digest a use is bound to, against OpenSSL and approvald's own parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <openssl/rsa.h>

#include "approvald/ops.h"
#include "module/module.h"

static const struct p11g_mech_info *mech(CK_MECHANISM_TYPE t)
{
	const struct p11g_mech_info *m = p11g_mech_by_type(t);
	assert_non_null(m);
	return m;
}

/* "alg:" + hex of EVP's hash of data. */
static void expect_hash(const char *evp_name, const char *alg, const void *data, size_t len,
                        char *out, size_t outsz)
{
	unsigned char h[EVP_MAX_MD_SIZE];
	unsigned hl = 0;
	char hex[2 * EVP_MAX_MD_SIZE + 1];

	assert_int_equal(EVP_Digest(data, len, h, &hl, EVP_get_digestbyname(evp_name), NULL), 1);
	p11g_hex_encode(h, hl, hex);
	snprintf(out, outsz, "%s:%s", alg, hex);
}

/* approvald accepts what the module sends, unchanged. */
static void assert_wire_form(const struct p11g_use_digest *d)
{
	char norm[160];
	assert_true(p11g_digest_normalise(d->text, norm, sizeof(norm)));
	assert_string_equal(norm, d->text);
}

static void test_hash_sign(void **state)
{
	static const struct {
		CK_MECHANISM_TYPE type;
		const char *evp, *alg;
	} cases[] = {
	    {CKM_SHA256_RSA_PKCS, "SHA256", "sha256"},
	    {CKM_SHA1_RSA_PKCS, "SHA1", "sha1"},
	    {CKM_SHA384_RSA_PKCS_PSS, "SHA384", "sha384"},
	    {CKM_SHA512_RSA_PKCS, "SHA512", "sha512"},
	    {CKM_SHA224_RSA_PKCS, "SHA224", "sha224"},
	    {0x1044UL /* CKM_ECDSA_SHA256 */, "SHA256", "sha256"},
	};
	const char msg[] = "the quick brown fox";
	(void)state;
	for (size_t i = 0; i < P11G_ARRAY_SIZE(cases); i++) {
		struct p11g_use_digest d;
		char want[200];
		expect_hash(cases[i].evp, cases[i].alg, msg, strlen(msg), want, sizeof(want));
		assert_int_equal(p11g_digest_oneshot(mech(cases[i].type),
		                                     (const unsigned char *)msg, strlen(msg), &d),
		                 0);
		assert_string_equal(d.text, want);
		assert_false(d.raw);
		assert_wire_form(&d);
	}
}

/* C_SignUpdate pieces hash to what one C_Sign of the whole would. */
static void test_multipart_equals_oneshot(void **state)
{
	static const CK_MECHANISM_TYPE types[] = {CKM_SHA256_RSA_PKCS, CKM_ECDSA, CKM_RSA_PKCS,
	                                          CKM_RSA_X_509, 0x1057UL /* CKM_EDDSA */};
	unsigned char data[300];
	(void)state;
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (unsigned char)(i * 7);
	for (size_t t = 0; t < P11G_ARRAY_SIZE(types); t++) {
		for (size_t len = 0; len <= sizeof(data); len += 13) {
			struct p11g_digest_ctx ctx;
			struct p11g_use_digest one, parts;
			assert_int_equal(p11g_digest_oneshot(mech(types[t]), data, len, &one), 0);
			assert_int_equal(p11g_digest_init(&ctx, mech(types[t])), 0);
			for (size_t off = 0; off < len; off += 5)
				assert_int_equal(p11g_digest_update(&ctx, data + off,
				                                    len - off < 5 ? len - off : 5),
				                 0);
			assert_int_equal(p11g_digest_final(&ctx, &parts), 0);
			p11g_digest_free(&ctx);
			assert_string_equal(one.text, parts.text);
			assert_int_equal(one.raw, parts.raw);
		}
	}
}

static void test_prehashed_named_by_length(void **state)
{
	static const struct {
		size_t len;
		const char *alg;
	} lens[] = {{20, "sha1"}, {28, "sha224"}, {32, "sha256"}, {48, "sha384"}, {64, "sha512"}};
	unsigned char in[80];
	char hex[2 * sizeof(in) + 1], want[200];
	(void)state;
	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (unsigned char)(0xa0 + i);
	for (size_t i = 0; i < P11G_ARRAY_SIZE(lens); i++) {
		struct p11g_use_digest d;
		assert_int_equal(p11g_digest_oneshot(mech(CKM_ECDSA), in, lens[i].len, &d), 0);
		p11g_hex_encode(in, lens[i].len, hex);
		snprintf(want, sizeof(want), "%s:%s", lens[i].alg, hex);
		assert_string_equal(d.text, want);
		assert_false(d.raw);
		assert_wire_form(&d);
		/* PSS takes the same pre-hashed input */
		assert_int_equal(p11g_digest_oneshot(mech(CKM_RSA_PKCS_PSS), in, lens[i].len, &d),
		                 0);
		assert_string_equal(d.text, want);
	}
	/* another length: raw, bound to the SHA-256 of the input for the audit */
	for (size_t len = 0; len <= sizeof(in); len++) {
		struct p11g_use_digest d;
		if (len == 20 || len == 28 || len == 32 || len == 48 || len == 64)
			continue;
		assert_int_equal(p11g_digest_oneshot(mech(CKM_ECDSA), in, len, &d), 0);
		expect_hash("SHA256", "sha256", in, len, want, sizeof(want));
		assert_string_equal(d.text, want);
		assert_true(d.raw);
	}
}

/*
 * The DigestInfo prefixes are checked against OpenSSL: a PKCS#1 v1.5
 * signature made with a message digest, opened again without one, gives the
 * DigestInfo OpenSSL built.
 */
static void test_rsa_pkcs_digestinfo_from_openssl(void **state)
{
	static const struct {
		const char *evp, *alg;
	} algs[] = {{"SHA1", "sha1"},
	            {"SHA224", "sha224"},
	            {"SHA256", "sha256"},
	            {"SHA384", "sha384"},
	            {"SHA512", "sha512"}};
	EVP_PKEY *key = EVP_RSA_gen(1024);
	const char msg[] = "firmware image";
	(void)state;
	assert_non_null(key);
	for (size_t i = 0; i < P11G_ARRAY_SIZE(algs); i++) {
		const EVP_MD *md = EVP_get_digestbyname(algs[i].evp);
		unsigned char h[EVP_MAX_MD_SIZE], sig[256], di[256];
		unsigned hl;
		size_t siglen = sizeof(sig), dilen = sizeof(di), off = 0;
		EVP_PKEY_CTX *c;
		struct p11g_use_digest d;
		char want[200];

		assert_int_equal(EVP_Digest(msg, strlen(msg), h, &hl, md, NULL), 1);
		c = EVP_PKEY_CTX_new(key, NULL);
		assert_int_equal(EVP_PKEY_sign_init(c), 1);
		assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING), 1);
		assert_int_equal(EVP_PKEY_CTX_set_signature_md(c, md), 1);
		assert_int_equal(EVP_PKEY_sign(c, sig, &siglen, h, hl), 1);
		EVP_PKEY_CTX_free(c);
		c = EVP_PKEY_CTX_new(key, NULL);
		assert_int_equal(EVP_PKEY_verify_recover_init(c), 1);
		assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING), 1);
		assert_int_equal(EVP_PKEY_verify_recover(c, di, &dilen, sig, siglen), 1);
		EVP_PKEY_CTX_free(c);

		assert_string_equal(p11g_digestinfo_parse(di, dilen, &off), algs[i].alg);
		assert_int_equal(dilen - off, hl);
		assert_memory_equal(di + off, h, hl);

		assert_int_equal(p11g_digest_oneshot(mech(CKM_RSA_PKCS), di, dilen, &d), 0);
		expect_hash(algs[i].evp, algs[i].alg, msg, strlen(msg), want, sizeof(want));
		assert_string_equal(d.text, want);
		assert_false(d.raw);
		assert_wire_form(&d);

		/* one byte short or long, or a changed prefix byte: not a DigestInfo */
		assert_null(p11g_digestinfo_parse(di, dilen - 1, NULL));
		di[dilen] = 0;
		assert_null(p11g_digestinfo_parse(di, dilen + 1, NULL));
		di[4] ^= 1;
		assert_null(p11g_digestinfo_parse(di, dilen, NULL));
		assert_int_equal(p11g_digest_oneshot(mech(CKM_RSA_PKCS), di, dilen, &d), 0);
		assert_true(d.raw);
		expect_hash("SHA256", "sha256", di, dilen, want, sizeof(want));
		assert_string_equal(d.text, want);
	}
	EVP_PKEY_free(key);
}

static void test_rsa_pkcs_bare_hash_is_raw(void **state)
{
	unsigned char h[32] = {1, 2, 3};
	struct p11g_use_digest d;
	char want[200];
	(void)state;
	/* A bare hash through CKM_RSA_PKCS is not a PKCS#1 signature of it. */
	assert_int_equal(p11g_digest_oneshot(mech(CKM_RSA_PKCS), h, sizeof(h), &d), 0);
	assert_true(d.raw);
	expect_hash("SHA256", "sha256", h, sizeof(h), want, sizeof(want));
	assert_string_equal(d.text, want);
}

static void test_eddsa_and_raw(void **state)
{
	const char msg[] = "an ssh signature blob, any length at all";
	struct p11g_use_digest d;
	char want[200];
	(void)state;
	expect_hash("SHA256", "sha256", msg, strlen(msg), want, sizeof(want));
	assert_int_equal(
	    p11g_digest_oneshot(mech(0x1057UL), (const unsigned char *)msg, strlen(msg), &d), 0);
	assert_string_equal(d.text, want);
	assert_false(d.raw);
	assert_int_equal(
	    p11g_digest_oneshot(mech(CKM_RSA_X_509), (const unsigned char *)msg, strlen(msg), &d),
	    0);
	assert_string_equal(d.text, want);
	assert_true(d.raw);
	assert_wire_form(&d);
}

/* More input than a digest or DigestInfo can be is raw even when its tail
 * would look like one. */
static void test_overflow_is_raw(void **state)
{
	unsigned char big[P11G_DIGEST_KEEP + 32];
	struct p11g_digest_ctx ctx;
	struct p11g_use_digest d;
	char want[200];
	(void)state;
	memset(big, 0x55, sizeof(big));
	assert_int_equal(p11g_digest_init(&ctx, mech(CKM_ECDSA)), 0);
	assert_int_equal(p11g_digest_update(&ctx, big, P11G_DIGEST_KEEP), 0);
	assert_int_equal(p11g_digest_update(&ctx, big, 32), 0);
	assert_int_equal(p11g_digest_final(&ctx, &d), 0);
	p11g_digest_free(&ctx);
	assert_true(d.raw);
	expect_hash("SHA256", "sha256", big, sizeof(big), want, sizeof(want));
	assert_string_equal(d.text, want);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hash_sign),
	    cmocka_unit_test(test_multipart_equals_oneshot),
	    cmocka_unit_test(test_prehashed_named_by_length),
	    cmocka_unit_test(test_rsa_pkcs_digestinfo_from_openssl),
	    cmocka_unit_test(test_rsa_pkcs_bare_hash_is_raw),
	    cmocka_unit_test(test_eddsa_and_raw),
	    cmocka_unit_test(test_overflow_is_raw),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
