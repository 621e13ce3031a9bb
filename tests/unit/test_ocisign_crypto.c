/* Unit tests for ocisign's signature formats: ECDSA r||s to DER, keys from token attributes,
 * verification. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/x509.h>

#include "sigcrypto.h"

static void test_raw_to_der_known(void **state)
{
	(void)state;
	unsigned char raw[64], *der;
	size_t len;
	/* r = 1 (leading zeros go), s = 0x80 00.. (the high bit needs a 0x00 pad) */
	memset(raw, 0, sizeof(raw));
	raw[31] = 1;
	raw[32] = 0x80;
	assert_int_equal(oci_ecdsa_raw_to_der(raw, 64, &der, &len), 0);
	static const unsigned char want_head[] = {0x30, 0x26, 0x02, 0x01, 0x01,
	                                          0x02, 0x21, 0x00, 0x80};
	assert_int_equal(len, 0x28);
	assert_memory_equal(der, want_head, sizeof(want_head));
	OPENSSL_free(der);
}

static void test_raw_to_der_refusals(void **state)
{
	(void)state;
	unsigned char raw[200] = {1}, *der;
	size_t len;
	assert_int_equal(oci_ecdsa_raw_to_der(raw, 0, &der, &len), -1);
	assert_int_equal(oci_ecdsa_raw_to_der(raw, 63, &der, &len), -1);
	assert_int_equal(oci_ecdsa_raw_to_der(raw, 134, &der, &len), -1);
	/* P-521: 66-byte halves are fine */
	memset(raw, 0x7f, 132);
	assert_int_equal(oci_ecdsa_raw_to_der(raw, 132, &der, &len), 0);
	OPENSSL_free(der);
}

/* Signs with OpenSSL, turns the DER into r||s the way a token returns it, converts back and
 * verifies. */
static void test_roundtrip_verifies(void **state)
{
	(void)state;
	for (int round = 0; round < 50; round++) {
		EVP_PKEY *pk = EVP_EC_gen("P-256");
		assert_non_null(pk);
		const char msg[] = "{\"critical\":{}}";
		EVP_MD_CTX *ctx = EVP_MD_CTX_new();
		unsigned char sig[128], raw[64], *der;
		size_t slen = sizeof(sig), dlen;
		assert_int_equal(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, pk), 1);
		assert_int_equal(
		    EVP_DigestSign(ctx, sig, &slen, (const unsigned char *)msg, strlen(msg)), 1);
		EVP_MD_CTX_free(ctx);
		const unsigned char *p = sig;
		ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)slen);
		assert_non_null(es);
		assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, 32), 32);
		assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + 32, 32), 32);
		ECDSA_SIG_free(es);
		assert_int_equal(oci_ecdsa_raw_to_der(raw, 64, &der, &dlen), 0);
		assert_int_equal(dlen, slen);
		assert_memory_equal(der, sig, slen);
		assert_int_equal(oci_verify(pk, msg, strlen(msg), der, dlen), 1);
		assert_int_equal(oci_verify(pk, "other", 5, der, dlen), 0);
		OPENSSL_free(der);
		EVP_PKEY_free(pk);
	}
}

static void test_ec_key_from_attributes(void **state)
{
	(void)state;
	EVP_PKEY *pk = EVP_EC_gen("P-256");
	unsigned char point[65], params[16];
	size_t plen;
	p11g_err err;
	assert_int_equal(EVP_PKEY_get_octet_string_param(pk, OSSL_PKEY_PARAM_PUB_KEY, point,
	                                                 sizeof(point), &plen),
	                 1);
	assert_int_equal(plen, 65);
	/* CKA_EC_PARAMS: the prime256v1 OID */
	static const unsigned char oid[] = {0x06, 0x08, 0x2a, 0x86, 0x48,
	                                    0xce, 0x3d, 0x03, 0x01, 0x07};
	memcpy(params, oid, sizeof(oid));
	/* CKA_EC_POINT as DER OCTET STRING, and bare */
	unsigned char wrapped[67] = {0x04, 65};
	memcpy(wrapped + 2, point, 65);
	EVP_PKEY *a = oci_pkey_from_ec(params, sizeof(oid), wrapped, sizeof(wrapped), &err);
	EVP_PKEY *b = oci_pkey_from_ec(params, sizeof(oid), point, sizeof(point), &err);
	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(EVP_PKEY_eq(a, pk), 1);
	assert_int_equal(EVP_PKEY_eq(b, pk), 1);
	char *pem = NULL;
	assert_int_equal(oci_pkey_to_pem(a, &pem, &err), 0);
	assert_non_null(strstr(pem, "-----BEGIN PUBLIC KEY-----"));
	free(pem);
	/* a point off the curve, an unknown curve */
	point[40] ^= 1;
	assert_null(oci_pkey_from_ec(params, sizeof(oid), point, sizeof(point), &err));
	params[9] = 0x7f;
	assert_null(oci_pkey_from_ec(params, sizeof(oid), wrapped, sizeof(wrapped), &err));
	EVP_PKEY_free(a);
	EVP_PKEY_free(b);
	EVP_PKEY_free(pk);
}

static void test_ed25519_and_rsa(void **state)
{
	(void)state;
	p11g_err err;
	EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	unsigned char pub[32], wrapped[34] = {0x04, 32};
	size_t plen = sizeof(pub);
	assert_int_equal(EVP_PKEY_get_raw_public_key(ed, pub, &plen), 1);
	memcpy(wrapped + 2, pub, 32);
	static const unsigned char printable[] = {0x13, 0x0c, 'e', 'd', 'w', 'a', 'r',
	                                          'd',  's',  '2', '5', '5', '1', '9'};
	static const unsigned char oid[] = {0x06, 0x03, 0x2b, 0x65, 0x70};
	EVP_PKEY *a =
	    oci_pkey_from_ec(printable, sizeof(printable), wrapped, sizeof(wrapped), &err);
	EVP_PKEY *b = oci_pkey_from_ec(oid, sizeof(oid), pub, sizeof(pub), &err);
	assert_int_equal(EVP_PKEY_eq(a, ed), 1);
	assert_int_equal(EVP_PKEY_eq(b, ed), 1);
	unsigned char sig[64];
	size_t slen = sizeof(sig);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	assert_int_equal(EVP_DigestSignInit(ctx, NULL, NULL, NULL, ed), 1);
	assert_int_equal(EVP_DigestSign(ctx, sig, &slen, (const unsigned char *)"payload", 7), 1);
	EVP_MD_CTX_free(ctx);
	assert_int_equal(oci_verify(a, "payload", 7, sig, slen), 1);
	sig[0] ^= 1;
	assert_int_equal(oci_verify(a, "payload", 7, sig, slen), 0);
	EVP_PKEY_free(a);
	EVP_PKEY_free(b);
	EVP_PKEY_free(ed);

	EVP_PKEY *rsa = EVP_RSA_gen(2048);
	BIGNUM *n = NULL, *e = NULL;
	assert_int_equal(EVP_PKEY_get_bn_param(rsa, OSSL_PKEY_PARAM_RSA_N, &n), 1);
	assert_int_equal(EVP_PKEY_get_bn_param(rsa, OSSL_PKEY_PARAM_RSA_E, &e), 1);
	unsigned char nb[256], eb[8];
	int nl = BN_bn2bin(n, nb), el = BN_bn2bin(e, eb);
	EVP_PKEY *r = oci_pkey_from_rsa(nb, (size_t)nl, eb, (size_t)el, &err);
	assert_int_equal(EVP_PKEY_eq(r, rsa), 1);
	unsigned char rs[256];
	slen = sizeof(rs);
	ctx = EVP_MD_CTX_new();
	assert_int_equal(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, rsa), 1);
	assert_int_equal(EVP_DigestSign(ctx, rs, &slen, (const unsigned char *)"payload", 7), 1);
	EVP_MD_CTX_free(ctx);
	assert_int_equal(oci_verify(r, "payload", 7, rs, slen), 1);
	assert_int_equal(oci_verify(r, "payloaD", 7, rs, slen), 0);
	BN_free(n);
	BN_free(e);
	EVP_PKEY_free(r);
	EVP_PKEY_free(rsa);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_raw_to_der_known),
	    cmocka_unit_test(test_raw_to_der_refusals),
	    cmocka_unit_test(test_roundtrip_verifies),
	    cmocka_unit_test(test_ec_key_from_attributes),
	    cmocka_unit_test(test_ed25519_and_rsa),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
