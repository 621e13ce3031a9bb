/* PKCS#10 requests as approvald reads them (OpenSSL): what approvers see of a CSR is read from
 * the bytes the operation is pinned to, not from the requester's words. */
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "approvald/csr_payload.h"

#define CSR_TBS_MAX     16384
#define CSR_SUBJECT_MAX 1000 /* characters of the subject as shown (a request's metadata's) */
#define CSR_TEXT_MAX    1000 /* of one extension as shown */

/* bytes as printable ASCII, anything else as \xHH: a name is shown as it is, byte for byte,
 * whatever its encoding */
static json_t *safe_string(const char *prefix, const unsigned char *p, size_t n)
{
	size_t o = strlen(prefix);
	char *s = malloc(o + 4 * n + 1);
	if (!s)
		return NULL;
	memcpy(s, prefix, o);
	for (size_t i = 0; i < n; i++) {
		if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\')
			s[o++] = (char)p[i];
		else
			o += (size_t)snprintf(s + o, 5, "\\x%02x", p[i]);
	}
	s[o] = '\0';
	json_t *j = json_string(s);
	free(s);
	return j;
}

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
		const char *kind = g->type == GEN_EMAIL ? "email:"
		                   : g->type == GEN_DNS ? "DNS:"
		                   : g->type == GEN_URI ? "URI:"
		                                        : NULL;
		json_t *s;
		if (kind) {
			/* byte for byte, a NUL or a non-ASCII byte escaped (safe_string) */
			s = safe_string(kind, ASN1_STRING_get0_data(g->d.ia5),
			                (size_t)ASN1_STRING_length(g->d.ia5));
		} else {
			s = json_string(g->type == GEN_IPADD     ? "IP address (not shown)"
			                : g->type == GEN_DIRNAME ? "directory name (not shown)"
			                                         : "other name (not shown)");
		}
		if (!s || json_array_append_new(a, s) < 0) {
			json_decref(a);
			return NULL;
		}
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

/* Every requested extension but the names and extended key usages (shown apart) as "name
 * [(critical)]: value", as OpenSSL prints it ("other_extensions"); one it cannot print is
 * refused. */
static int others_of(json_t *res, const STACK_OF(X509_EXTENSION) * exts, char *why, size_t why_len)
{
	json_t *a = json_array();
	BIO *b = BIO_new(BIO_s_mem());
	int rc = -1;

	if (!a || !b) {
		snprintf(why, why_len, "out of memory");
		goto out;
	}
	for (int i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
		X509_EXTENSION *e = sk_X509_EXTENSION_value(exts, i);
		int nid = OBJ_obj2nid(X509_EXTENSION_get_object(e));
		if (nid == NID_subject_alt_name || nid == NID_ext_key_usage)
			continue;
		char name[80], *p;
		if (nid != NID_undef)
			snprintf(name, sizeof(name), "%s", OBJ_nid2ln(nid));
		else if (OBJ_obj2txt(name, sizeof(name), X509_EXTENSION_get_object(e), 1) <= 0)
			snprintf(name, sizeof(name), "?");
		(void)BIO_reset(b);
		BIO_printf(b, "%s%s: ", name, X509_EXTENSION_get_critical(e) ? " (critical)" : "");
		if (X509V3_EXT_print(b, e, X509V3_EXT_DEFAULT, 0) != 1) {
			snprintf(
			    why, why_len,
			    "the certificate request asks for an extension approvald cannot show "
			    "(%.60s)",
			    name);
			goto out;
		}
		long n = BIO_get_mem_data(b, &p);
		if (n <= 0 || n > CSR_TEXT_MAX) {
			snprintf(why, why_len,
			         "the certificate request's %.60s is too long to show", name);
			goto out;
		}
		/* OpenSSL prints multi-valued extensions on several lines */
		for (long k = 0; k < n; k++)
			if (p[k] == '\n' || p[k] == '\r')
				p[k] = ' ';
		if (json_array_append_new(a, safe_string("", (unsigned char *)p, (size_t)n)) < 0) {
			snprintf(why, why_len, "out of memory");
			goto out;
		}
	}
	rc = json_array_size(a) && json_object_set(res, "other_extensions", a) < 0 ? -1 : 0;
	if (rc < 0)
		snprintf(why, why_len, "out of memory");
out:
	BIO_free(b);
	json_decref(a);
	return rc;
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
	/* the whole subject (a cut one would show some of it as all of it) */
	char *subject = X509_NAME_oneline(X509_REQ_get_subject_name(req), NULL, 0);
	if (!subject || strlen(subject) > CSR_SUBJECT_MAX) {
		snprintf(why, why_len,
		         subject ? "the certificate request's subject is longer than %d characters"
		                 : "the certificate request's subject cannot be read",
		         CSR_SUBJECT_MAX);
		OPENSSL_free(subject);
		goto out;
	}
	res =
	    json_pack("{s:s, s:o}", "subject", subject, "key", key_text(X509_REQ_get0_pubkey(req)));
	OPENSSL_free(subject);
	if (!res)
		goto oom;
	/* one attribute at most, the extension request, read whole: what a CA reads and
	 * approvers do not see is refused */
	int n_attr = X509_REQ_get_attr_count(req);
	if (n_attr > 1 || (n_attr == 1 && OBJ_obj2nid(X509_ATTRIBUTE_get0_object(
	                                      X509_REQ_get_attr(req, 0))) != NID_ext_req)) {
		snprintf(why, why_len,
		         "the certificate request has attributes other than one extension request");
		goto fail;
	}
	exts = X509_REQ_get_extensions(req);
	if (n_attr == 1 && !exts) {
		snprintf(why, why_len, "the certificate request's extensions cannot be read");
		goto fail;
	}
	if (others_of(res, exts, why, why_len) < 0)
		goto fail;
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
