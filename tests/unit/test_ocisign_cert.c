/* Unit tests for ocisign's X.509 part: --subject parsing, the PKCS#10 request around a key (signed
 * here by OpenSSL in the token's formats), and cosign's certificate annotations byte for byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "attach.h"
#include "cert.h"

#define P1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"

static void test_subject_parse(void **state)
{
	(void)state;
	p11g_err err;
	char buf[256];
	X509_NAME *n = oci_subject_parse("/CN=release signing/O=Acme\\/Labs/C=DE", &err);
	assert_non_null(n);
	X509_NAME_oneline(n, buf, sizeof(buf));
	assert_string_equal(buf, "/CN=release signing/O=Acme\\/Labs/C=DE");
	assert_int_equal(X509_NAME_entry_count(n), 3);
	X509_NAME_free(n);

	static const char *const bad[] = {"CN=x",  "/",          "/CN=",     "/=x",    "/CN",
	                                  "/XX=y", "/C=Germany", "/CN=a\\b", "/CN=x//"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&err, 0, sizeof(err));
		n = oci_subject_parse(bad[i], &err);
		if (n)
			fail_msg("subject \"%s\" was accepted", bad[i]);
		assert_string_equal(err.code, P11G_E_BAD_REQUEST);
		assert_true(strstr(err.msg, "subject") != NULL);
	}
}

static EVP_PKEY *keygen(const char *alg, const char *param)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, alg, NULL);
	EVP_PKEY *pk = NULL;
	assert_non_null(ctx);
	assert_int_equal(EVP_PKEY_keygen_init(ctx), 1);
	if (param && !strcmp(alg, "EC"))
		assert_int_equal(EVP_PKEY_CTX_set_group_name(ctx, param), 1);
	if (param && !strcmp(alg, "RSA"))
		assert_int_equal(EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, atoi(param)), 1);
	assert_int_equal(EVP_PKEY_generate(ctx, &pk), 1);
	EVP_PKEY_CTX_free(ctx);
	return pk;
}

/* What the token returns after ocisign's conversions: DER ECDSA over SHA-256, RSA PKCS#1 v1.5
 * over SHA-256, Ed25519 over the bytes. */
static unsigned char *sign(EVP_PKEY *pk, const unsigned char *tbs, size_t n, size_t *ret_len)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	const EVP_MD *md = EVP_PKEY_get_base_id(pk) == EVP_PKEY_ED25519 ? NULL : EVP_sha256();
	size_t len = 0;
	assert_int_equal(EVP_DigestSignInit(ctx, NULL, md, NULL, pk), 1);
	assert_int_equal(EVP_DigestSign(ctx, NULL, &len, tbs, n), 1);
	unsigned char *sig = malloc(len);
	assert_int_equal(EVP_DigestSign(ctx, sig, &len, tbs, n), 1);
	EVP_MD_CTX_free(ctx);
	*ret_len = len;
	return sig;
}

static void csr_for(EVP_PKEY *pk, int want_sig_nid)
{
	p11g_err err;
	static const char *const sans[] = {"email:release@acme.example",
	                                   "URI:https://acme.example/ci", "DNS:build.acme.example"};
	X509_NAME *subj = oci_subject_parse("/CN=release/O=Acme", &err);
	X509_REQ *req = NULL;
	unsigned char *tbs = NULL;
	size_t tlen = 0, slen = 0;
	char *pem = NULL;
	assert_non_null(subj);
	assert_int_equal(oci_csr_build(pk, subj, sans, 3, &req, &tbs, &tlen, &err), 0);

	/* a signature that is not the key's is refused */
	unsigned char junk[72] = {0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01};
	assert_int_equal(oci_csr_finish(req, pk, junk, 8, &pem, &err), -1);
	assert_string_equal(err.code, P11G_E_BAD_SIGNATURE);
	assert_null(pem);

	unsigned char *sig = sign(pk, tbs, tlen, &slen);
	assert_int_equal(oci_csr_finish(req, pk, sig, slen, &pem, &err), 0);

	/* read back as any CA would */
	BIO *b = BIO_new_mem_buf(pem, -1);
	X509_REQ *back = PEM_read_bio_X509_REQ(b, NULL, NULL, NULL);
	assert_non_null(back);
	assert_int_equal(X509_REQ_verify(back, pk), 1);
	assert_int_equal(X509_REQ_get_signature_nid(back), want_sig_nid);
	assert_int_equal(EVP_PKEY_eq(X509_REQ_get0_pubkey(back), pk), 1);
	unsigned char *tbs2 = NULL;
	int t2 = i2d_re_X509_REQ_tbs(back, &tbs2);
	assert_int_equal((size_t)t2, tlen);
	assert_memory_equal(tbs2, tbs, tlen); /* the bytes approvald pins are the bytes signed */
	STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(back);
	assert_int_equal(sk_X509_EXTENSION_num(exts), 3);
	int ku = X509v3_get_ext_by_NID(exts, NID_key_usage, -1);
	assert_true(ku >= 0);
	assert_true(X509_EXTENSION_get_critical(sk_X509_EXTENSION_value(exts, ku)));
	EXTENDED_KEY_USAGE *eku = X509V3_get_d2i(exts, NID_ext_key_usage, NULL, NULL);
	assert_int_equal(sk_ASN1_OBJECT_num(eku), 1);
	assert_int_equal(OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, 0)), NID_code_sign);
	GENERAL_NAMES *gens = X509V3_get_d2i(exts, NID_subject_alt_name, NULL, NULL);
	assert_int_equal(sk_GENERAL_NAME_num(gens), 3);
	assert_int_equal(sk_GENERAL_NAME_value(gens, 0)->type, GEN_EMAIL);
	assert_int_equal(sk_GENERAL_NAME_value(gens, 1)->type, GEN_URI);
	assert_int_equal(sk_GENERAL_NAME_value(gens, 2)->type, GEN_DNS);
	GENERAL_NAMES_free(gens);
	EXTENDED_KEY_USAGE_free(eku);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	OPENSSL_free(tbs2);
	X509_REQ_free(back);
	BIO_free(b);
	free(pem);
	free(sig);
	OPENSSL_free(tbs);
	X509_REQ_free(req);
	X509_NAME_free(subj);
}

static void test_csr(void **state)
{
	(void)state;
	EVP_PKEY *ec = keygen("EC", "P-256"), *ec384 = keygen("EC", "P-384"),
	         *rsa = keygen("RSA", "2048"), *ed = keygen("ED25519", NULL);
	csr_for(ec, NID_ecdsa_with_SHA256);
	csr_for(ec384, NID_ecdsa_with_SHA256);
	csr_for(rsa, NID_sha256WithRSAEncryption);
	csr_for(ed, NID_ED25519);
	/* RSA signatures end in a zero byte now and then: none may be trimmed */
	for (int i = 0; i < 40; i++)
		csr_for(rsa, NID_sha256WithRSAEncryption);
	EVP_PKEY_free(ec);
	EVP_PKEY_free(ec384);
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(ed);
}

static void test_bad_sans(void **state)
{
	(void)state;
	static const char *const bad[] = {
	    "release@acme.example", "email:nobody", "URI:acme", "DNS:", "DNS:a b",
	    "email:\xc3\xa9@x",     "IP:127.0.0.1"};
	EVP_PKEY *ec = keygen("EC", "P-256");
	p11g_err err;
	X509_NAME *subj = oci_subject_parse("/CN=x", &err);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		X509_REQ *req = NULL;
		unsigned char *tbs = NULL;
		size_t tlen = 0;
		memset(&err, 0, sizeof(err));
		if (oci_csr_build(ec, subj, &bad[i], 1, &req, &tbs, &tlen, &err) == 0)
			fail_msg("--san \"%s\" was accepted", bad[i]);
		assert_string_equal(err.code, P11G_E_BAD_REQUEST);
		assert_true(strstr(err.msg, "--san") != NULL);
	}
	X509_NAME_free(subj);
	EVP_PKEY_free(ec);
}

/* A self-signed certificate for pk (enough for the annotation and PEM tests). */
static X509 *self_signed(EVP_PKEY *pk)
{
	X509 *x = X509_new();
	X509_NAME *n = X509_NAME_new();
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)"release", -1, -1,
	                           0);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
	X509_set_subject_name(x, n);
	X509_set_issuer_name(x, n);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, pk);
	assert_true(X509_sign(x, pk, EVP_sha256()) > 0);
	X509_NAME_free(n);
	return x;
}

static void test_certificate_annotations(void **state)
{
	(void)state;
	p11g_err err;
	EVP_PKEY *rsa = keygen("RSA", "2048");
	X509 *x = self_signed(rsa);
	char *pem = oci_cert_to_pem(x, &err);
	assert_non_null(pem);
	/* Go's pem.Encode: 64 columns, a final newline */
	assert_true(!strncmp(pem, "-----BEGIN CERTIFICATE-----\n", 28));
	assert_true(strlen(pem) > 100 &&
	            !strcmp(pem + strlen(pem) - 26, "-----END CERTIFICATE-----\n"));
	for (const char *l = pem + 28; *l != '-'; l = strchr(l, '\n') + 1)
		assert_true(strchr(l, '\n') - l <= 64);

	STACK_OF(X509) *back = oci_certs_from_pem(pem, strlen(pem), "t", &err);
	assert_non_null(back);
	assert_int_equal(sk_X509_num(back), 1);
	assert_int_equal(X509_cmp(sk_X509_value(back, 0), x), 0);
	oci_certs_free(back);

	const char *chain = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
	char *m = NULL, *c = NULL, *want = NULL;
	size_t ml, cl;
	assert_int_equal(
	    oci_sig_manifest_add(NULL, 0, P1, 123, "c2ln", pem, chain, &m, &ml, &c, &cl, &err), 0);
	/* cosign's layer, byte for byte: its map's keys sorted, the chain file as it is */
	json_t *jp = json_string(pem), *jc = json_string(chain);
	char *ep = json_dumps(jp, JSON_ENCODE_ANY), *ec = json_dumps(jc, JSON_ENCODE_ANY);
	assert_true(asprintf(&want,
	                     "\"layers\":[{\"mediaType\":\"application/"
	                     "vnd.dev.cosign.simplesigning.v1+json\",\"size\":123,\"digest\":\"" P1
	                     "\",\"annotations\":{\"dev.cosignproject.cosign/"
	                     "signature\":\"c2ln\",\"dev.sigstore.cosign/certificate\":%s,"
	                     "\"dev.sigstore.cosign/chain\":%s}}]",
	                     ep, ec) > 0);
	assert_non_null(strstr(m, want));
	assert_non_null(strstr(ep, "\\n")); /* newlines escaped as Go escapes them */
	free(m);
	free(c);
	free(want);
	/* without a chain: cosign writes the chain annotation empty */
	assert_int_equal(
	    oci_sig_manifest_add(NULL, 0, P1, 123, "c2ln", pem, NULL, &m, &ml, &c, &cl, &err), 0);
	assert_non_null(strstr(m, "\"dev.sigstore.cosign/chain\":\"\"}"));
	free(m);
	free(c);
	free(ep);
	free(ec);
	json_decref(jp);
	json_decref(jc);

	/* a renewal: the same deterministic signature with another certificate replaces the layer
	 * (once), the same certificate again is a duplicate */
	char *m0 = NULL, *m1 = NULL, *m2 = NULL;
	assert_int_equal(
	    oci_sig_manifest_add(NULL, 0, P1, 123, "c2ln", NULL, NULL, &m0, &ml, &c, &cl, &err), 0);
	free(c);
	assert_int_equal(oci_sig_manifest_add((unsigned char *)m0, strlen(m0), P1, 123, "c2ln", pem,
	                                      NULL, &m1, &ml, &c, &cl, &err),
	                 0);
	free(c);
	json_t *j1 = json_loads(m1, 0, NULL);
	assert_int_equal(json_array_size(json_object_get(j1, "layers")), 1);
	assert_non_null(strstr(m1, "dev.sigstore.cosign/certificate"));
	assert_int_equal(oci_sig_manifest_add((unsigned char *)m1, strlen(m1), P1, 123, "c2ln", pem,
	                                      NULL, &m2, &ml, &c, &cl, &err),
	                 1);
	assert_int_equal(oci_sig_manifest_add((unsigned char *)m1, strlen(m1), P1, 123, "c2ln", pem,
	                                      chain, &m2, &ml, &c, &cl, &err),
	                 0);
	free(c);
	json_t *j2 = json_loads(m2, 0, NULL);
	assert_int_equal(json_array_size(json_object_get(j2, "layers")), 1);
	assert_non_null(strstr(m2, "AAAA"));
	json_decref(j1);
	json_decref(j2);
	free(m0);
	free(m1);
	free(m2);

	/* the key check */
	EVP_PKEY *other = keygen("EC", "P-256");
	assert_int_equal(oci_cert_check_key(x, rsa, "c", &err), 0);
	assert_int_equal(oci_cert_check_key(x, other, "c", &err), -1);
	assert_non_null(strstr(err.msg, "certifies another key"));
	/* no EKU at all is not code signing */
	assert_int_equal(oci_cert_check_codesign(x, "c", &err), -1);
	assert_int_equal(oci_cert_check_time(x, "c", &err), 0);
	assert_int_equal(oci_cert_check_identity(x, "/CN=release", &err), 0);
	assert_int_equal(oci_cert_check_identity(x, "CN=release", &err), 0);
	assert_int_equal(oci_cert_check_identity(x, "CN=release,O=x", &err), -1);
	assert_int_equal(oci_cert_check_identity(x, "CN=releasе", &err), -1);
	assert_int_equal(oci_cert_check_identity(x, "release", &err), -1);
	free(pem);
	X509_free(x);
	EVP_PKEY_free(other);
	EVP_PKEY_free(rsa);
}

static void test_pem_limits(void **state)
{
	(void)state;
	p11g_err err;
	assert_null(oci_certs_from_pem("no certificate here\n", 20, "f.pem", &err));
	assert_non_null(strstr(err.msg, "holds no PEM certificate"));
	const char *broken = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
	assert_null(oci_certs_from_pem(broken, strlen(broken), "f.pem", &err));
	assert_non_null(strstr(err.msg, "not a valid X.509"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_subject_parse), cmocka_unit_test(test_csr),
	    cmocka_unit_test(test_bad_sans),      cmocka_unit_test(test_certificate_annotations),
	    cmocka_unit_test(test_pem_limits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
