/* PKCS#10 requests as approvald reads them (OpenSSL): what approvers see of a CSR is read from
 * the bytes the operation is pinned to, not from the requester's words. */
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "approvald/csr_payload.h"

#define CSR_TBS_MAX 16384

bool p11g_csr_payload_looks(const unsigned char *p, size_t n)
{
	return n >= 2 && p[0] == 0x30;
}

/* A DER length field for n (n < 65536). */
static size_t put_len(unsigned char *out, size_t n)
{
	if (n < 0x80) {
		out[0] = (unsigned char)n;
		return 1;
	}
	if (n < 0x100) {
		out[0] = 0x81;
		out[1] = (unsigned char)n;
		return 2;
	}
	out[0] = 0x82;
	out[1] = (unsigned char)(n >> 8);
	out[2] = (unsigned char)n;
	return 3;
}

static json_t *key_text(EVP_PKEY *pk)
{
	char buf[64], group[32] = "";
	size_t gl = 0;
	if (!pk)
		return json_string("unreadable");
	switch (EVP_PKEY_get_base_id(pk)) {
	case EVP_PKEY_EC:
		if (EVP_PKEY_get_utf8_string_param(pk, "group", group, sizeof(group), &gl) != 1)
			snprintf(group, sizeof(group), "?");
		snprintf(buf, sizeof(buf), "EC %s",
		         !strcmp(group, "prime256v1")  ? "P-256"
		         : !strcmp(group, "secp384r1") ? "P-384"
		         : !strcmp(group, "secp521r1") ? "P-521"
		                                       : group);
		break;
	case EVP_PKEY_RSA:
		snprintf(buf, sizeof(buf), "RSA %d", EVP_PKEY_get_bits(pk));
		break;
	case EVP_PKEY_ED25519:
		snprintf(buf, sizeof(buf), "Ed25519");
		break;
	default:
		snprintf(buf, sizeof(buf), "%s", OBJ_nid2sn(EVP_PKEY_get_base_id(pk)));
	}
	return json_string(buf);
}

/* The subject alternative names as "email:x" and so on; other kinds by their kind alone. */
static json_t *names_of(GENERAL_NAMES *gens)
{
	json_t *a = json_array();
	for (int i = 0; a && i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		const char *kind = g->type == GEN_EMAIL ? "email"
		                   : g->type == GEN_DNS ? "DNS"
		                   : g->type == GEN_URI ? "URI"
		                                        : NULL;
		char *s = NULL;
		if (kind) {
			/* shown escaped wherever shown; a NUL inside is not hidden behind */
			const unsigned char *d = ASN1_STRING_get0_data(g->d.ia5);
			int n = ASN1_STRING_length(g->d.ia5);
			int r = memchr(d, 0, (size_t)n)
			            ? asprintf(&s, "%s:(contains NUL)", kind)
			            : asprintf(&s, "%s:%.*s", kind, n, (const char *)d);
			if (r < 0)
				s = NULL;
		} else if (asprintf(&s, "%s",
		                    g->type == GEN_IPADD     ? "IP address (not shown)"
		                    : g->type == GEN_DIRNAME ? "directory name (not shown)"
		                                             : "other name (not shown)") < 0) {
			s = NULL;
		}
		if (!s || json_array_append_new(a, json_string(s)) < 0) {
			free(s);
			json_decref(a);
			return NULL;
		}
		free(s);
	}
	return a;
}

static json_t *ekus_of(EXTENDED_KEY_USAGE *eku)
{
	json_t *a = json_array();
	for (int i = 0; a && i < sk_ASN1_OBJECT_num(eku); i++) {
		char oid[80];
		const ASN1_OBJECT *o = sk_ASN1_OBJECT_value(eku, i);
		int nid = OBJ_obj2nid(o);
		if (nid != NID_undef)
			snprintf(oid, sizeof(oid), "%s", OBJ_nid2sn(nid));
		else if (OBJ_obj2txt(oid, sizeof(oid), o, 1) <= 0)
			snprintf(oid, sizeof(oid), "?");
		if (json_array_append_new(a, json_string(oid)) < 0) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

json_t *p11g_csr_payload_describe(const unsigned char *der, size_t n, char *why, size_t why_len)
{
	/* the request is wrapped as a whole CertificationRequest (an empty signature) so that
	 * OpenSSL's accessors read it */
	static const unsigned char tail[] = {0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, /* Ed25519 */
	                                     0x03, 0x01, 0x00};
	unsigned char *whole = NULL, *re = NULL;
	X509_REQ *req = NULL;
	json_t *res = NULL;
	STACK_OF(X509_EXTENSION) *exts = NULL;
	GENERAL_NAMES *gens = NULL;
	EXTENDED_KEY_USAGE *eku = NULL;

	if (n < 2 || n > CSR_TBS_MAX || der[0] != 0x30) {
		snprintf(why, why_len, "not a DER CertificationRequestInfo of at most %d bytes",
		         CSR_TBS_MAX);
		goto out;
	}
	size_t body = n + sizeof(tail);
	if (!(whole = malloc(body + 4)))
		goto oom;
	whole[0] = 0x30;
	size_t off = 1 + put_len(whole + 1, body);
	memcpy(whole + off, der, n);
	memcpy(whole + off + n, tail, sizeof(tail));
	const unsigned char *p = whole;
	req = d2i_X509_REQ(NULL, &p, (long)(off + body));
	if (!req || p != whole + off + body) {
		snprintf(why, why_len, "not a DER CertificationRequestInfo (PKCS#10)");
		goto out;
	}
	int rn = i2d_re_X509_REQ_tbs(req, &re);
	if (rn <= 0 || (size_t)rn != n || memcmp(re, der, n)) {
		snprintf(why, why_len,
		         "the certificate request is not in DER as it re-encodes (what approvers "
		         "see must be what is signed)");
		goto out;
	}
	char subject[1024];
	if (!X509_NAME_oneline(X509_REQ_get_subject_name(req), subject, sizeof(subject))) {
		snprintf(why, why_len, "the certificate request's subject cannot be read");
		goto out;
	}
	if (!(res = json_pack("{s:s, s:o}", "subject", subject, "key",
	                      key_text(X509_REQ_get0_pubkey(req)))))
		goto oom;
	exts = X509_REQ_get_extensions(req);
	int crit = -1;
	gens = X509V3_get_d2i(exts, NID_subject_alt_name, &crit, NULL);
	if (!gens && crit != -1) {
		snprintf(why, why_len,
		         "the certificate request's subject alternative names cannot "
		         "be read");
		goto fail;
	}
	crit = -1;
	eku = X509V3_get_d2i(exts, NID_ext_key_usage, &crit, NULL);
	if (!eku && crit != -1) {
		snprintf(why, why_len,
		         "the certificate request's extended key usage cannot be read");
		goto fail;
	}
	if ((gens && json_object_set_new(res, "names", names_of(gens)) < 0) ||
	    (eku && json_object_set_new(res, "extended_key_usage", ekus_of(eku)) < 0))
		goto oom;
	goto out;
oom:
	snprintf(why, why_len, "out of memory");
fail:
	json_decref(res);
	res = NULL;
out:
	ERR_clear_error();
	GENERAL_NAMES_free(gens);
	EXTENDED_KEY_USAGE_free(eku);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	OPENSSL_free(re);
	X509_REQ_free(req);
	free(whole);
	return res;
}
