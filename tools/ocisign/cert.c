/* X.509 for ocisign with OpenSSL: a PKCS#10 request around the token's key, certificates and
 * chains checked the way cosign checks them. */
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "cert.h"

#define SAN_MAX 255 /* bytes of one subject alternative name */

/* What was written to a memory BIO, as a malloc'd string ("" for nothing; NULL: out of
 * memory).  An empty BIO gives no data pointer at all. */
static char *bio_string(BIO *b)
{
	char *p = NULL;
	long n = BIO_get_mem_data(b, &p);
	return n > 0 && p ? strndup(p, (size_t)n) : n == 0 ? strdup("") : NULL;
}

X509_NAME *oci_subject_parse(const char *s, p11g_err *err)
{
	X509_NAME *name = X509_NAME_new();
	size_t len = strlen(s);
	char *buf = malloc(len + 1);
	size_t parts = 0;

	if (!name || !buf) {
		p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
		goto fail;
	}
	if (s[0] != '/' || len < 2) {
		p11g_err_set(err, P11G_E_BAD_REQUEST,
		             "--subject \"%.200s\": expected /TYPE=VALUE[/TYPE=VALUE]... "
		             "(e.g. /CN=release signing/O=Acme)",
		             s);
		goto fail;
	}
	const char *p = s + 1;
	while (*p) {
		/* one TYPE=VALUE, unescaped into buf */
		size_t n = 0;
		while (*p && *p != '/') {
			if (*p == '\\' && (p[1] == '/' || p[1] == '\\'))
				p++;
			else if (*p == '\\') {
				p11g_err_set(err, P11G_E_BAD_REQUEST,
				             "--subject: a backslash escapes only / and \\");
				goto fail;
			}
			buf[n++] = *p++;
		}
		buf[n] = '\0';
		if (*p == '/')
			p++;
		char *eq = strchr(buf, '=');
		if (!eq || eq == buf || !eq[1]) {
			p11g_err_set(err, P11G_E_BAD_REQUEST,
			             "--subject: \"%.100s\" is not TYPE=VALUE with a value", buf);
			goto fail;
		}
		*eq = '\0';
		if (OBJ_txt2nid(buf) == NID_undef) {
			p11g_err_set(
			    err, P11G_E_BAD_REQUEST,
			    "--subject: unknown attribute type \"%.60s\" (CN, O, OU, C, L, ST, "
			    "emailAddress, ...)",
			    buf);
			goto fail;
		}
		if (X509_NAME_add_entry_by_txt(name, buf, MBSTRING_UTF8,
		                               (const unsigned char *)eq + 1, -1, -1, 0) != 1) {
			ERR_clear_error();
			p11g_err_set(
			    err, P11G_E_BAD_REQUEST,
			    "--subject: OpenSSL refuses %.60s=\"%.100s\" (C takes two letters; "
			    "values are UTF-8 of at most 64 characters)",
			    buf, eq + 1);
			goto fail;
		}
		parts++;
	}
	if (parts == 0) {
		p11g_err_set(err, P11G_E_BAD_REQUEST, "--subject names nothing");
		goto fail;
	}
	free(buf);
	return name;
fail:
	free(buf);
	X509_NAME_free(name);
	return NULL;
}

static int san_push(GENERAL_NAMES *gens, const char *san, p11g_err *err)
{
	static const struct {
		const char *prefix;
		int type;
	} kinds[] = {{"DNS:", GEN_DNS}, {"email:", GEN_EMAIL}, {"URI:", GEN_URI}};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(kinds); i++) {
		size_t pl = strlen(kinds[i].prefix);
		if (strncmp(san, kinds[i].prefix, pl))
			continue;
		const char *v = san + pl;
		size_t n = strlen(v);
		if (n == 0 || n > SAN_MAX)
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "--san %.60s: the value has 1 to %d characters",
			                    kinds[i].prefix, SAN_MAX);
		for (size_t j = 0; j < n; j++)
			if (v[j] < 0x21 || v[j] > 0x7e)
				return p11g_err_set(
				    err, P11G_E_BAD_REQUEST,
				    "--san \"%.300s\": printable ASCII without spaces "
				    "only (IA5String)",
				    san);
		if (kinds[i].type == GEN_URI && !strchr(v, ':'))
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "--san \"%.300s\": a URI has a scheme (https://...)",
			                    san);
		if (kinds[i].type == GEN_EMAIL && !strchr(v, '@'))
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "--san \"%.300s\": an email address has an @", san);
		GENERAL_NAME *g = a2i_GENERAL_NAME(NULL, NULL, NULL, kinds[i].type, v, 0);
		if (!g || !sk_GENERAL_NAME_push(gens, g)) {
			GENERAL_NAME_free(g);
			ERR_clear_error();
			return p11g_err_set(err, P11G_E_BAD_REQUEST, "--san \"%.300s\" is refused",
			                    san);
		}
		return 0;
	}
	return p11g_err_set(err, P11G_E_BAD_REQUEST,
	                    "--san \"%.300s\": expected DNS:NAME, email:ADDRESS or URI:URI", san);
}

static int ext_push(STACK_OF(X509_EXTENSION) * exts, X509_EXTENSION *e)
{
	if (e && sk_X509_EXTENSION_push(exts, e))
		return 0;
	X509_EXTENSION_free(e);
	return -1;
}

int oci_csr_build(EVP_PKEY *pk, X509_NAME *subject, const char *const *sans, size_t n_sans,
                  X509_REQ **ret, unsigned char **ret_tbs, size_t *ret_tbs_len, p11g_err *err)
{
	X509_REQ *req = X509_REQ_new();
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
	unsigned char *tbs = NULL;
	int res = -1;

	if (!req || !exts || !gens) {
		p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n_sans; i++)
		if (san_push(gens, sans[i], err) < 0)
			goto out;
	if (X509_REQ_set_version(req, X509_REQ_VERSION_1) != 1 ||
	    X509_REQ_set_subject_name(req, subject) != 1 || X509_REQ_set_pubkey(req, pk) != 1 ||
	    ext_push(exts, X509V3_EXT_nconf_nid(NULL, NULL, NID_key_usage,
	                                        "critical,digitalSignature")) < 0 ||
	    ext_push(exts, X509V3_EXT_nconf_nid(NULL, NULL, NID_ext_key_usage, "codeSigning")) <
	        0 ||
	    (n_sans && ext_push(exts, X509V3_EXT_i2d(NID_subject_alt_name, 0, gens)) < 0) ||
	    X509_REQ_add_extensions(req, exts) != 1) {
		ERR_clear_error();
		p11g_err_set(err, P11G_E_INTERNAL, "OpenSSL cannot build the certificate request");
		goto out;
	}
	int n = i2d_re_X509_REQ_tbs(req, &tbs);
	if (n <= 0) {
		ERR_clear_error();
		p11g_err_set(err, P11G_E_INTERNAL, "OpenSSL cannot encode the certificate request");
		goto out;
	}
	*ret = req;
	req = NULL;
	*ret_tbs = tbs;
	*ret_tbs_len = (size_t)n;
	res = 0;
out:
	X509_REQ_free(req);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	GENERAL_NAMES_free(gens);
	return res;
}

int oci_csr_finish(X509_REQ *req, EVP_PKEY *pk, const unsigned char *sig, size_t slen,
                   char **ret_pem, p11g_err *err)
{
	int nid, ptype = V_ASN1_UNDEF;
	switch (EVP_PKEY_get_base_id(pk)) {
	case EVP_PKEY_EC:
		nid = NID_ecdsa_with_SHA256;
		break;
	case EVP_PKEY_RSA:
		nid = NID_sha256WithRSAEncryption;
		ptype = V_ASN1_NULL;
		break;
	case EVP_PKEY_ED25519:
		nid = NID_ED25519;
		break;
	default:
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "certificate requests are made for EC, RSA and Ed25519 keys");
	}
	X509_ALGOR *alg = X509_ALGOR_new();
	ASN1_BIT_STRING *bs = ASN1_BIT_STRING_new();
	BIO *b = BIO_new(BIO_s_mem());
	int res = -1;
	if (!alg || !bs || !b || X509_ALGOR_set0(alg, OBJ_nid2obj(nid), ptype, NULL) != 1 ||
	    X509_REQ_set1_signature_algo(req, alg) != 1 ||
	    ASN1_BIT_STRING_set(bs, (unsigned char *)sig, (int)slen) != 1) {
		ERR_clear_error();
		p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
		goto out;
	}
	/* a signature is whole bytes: no unused bits, none trimmed */
	bs->flags &= ~(ASN1_STRING_FLAG_BITS_LEFT | 0x07);
	bs->flags |= ASN1_STRING_FLAG_BITS_LEFT;
	X509_REQ_set0_signature(req, bs);
	bs = NULL;
	if (X509_REQ_verify(req, pk) != 1) {
		ERR_clear_error();
		p11g_err_set(err, P11G_E_BAD_SIGNATURE,
		             "the token's signature of the request does not verify with the key's "
		             "public key");
		goto out;
	}
	if (PEM_write_bio_X509_REQ(b, req) != 1 || !(*ret_pem = bio_string(b))) {
		ERR_clear_error();
		p11g_err_set(err, P11G_E_INTERNAL, "cannot write the request as PEM");
		goto out;
	}
	res = 0;
out:
	X509_ALGOR_free(alg);
	ASN1_BIT_STRING_free(bs);
	BIO_free(b);
	return res;
}

void oci_certs_free(STACK_OF(X509) * s)
{
	sk_X509_pop_free(s, X509_free);
}

STACK_OF(X509) * oci_certs_from_pem(const void *p, size_t n, const char *what, p11g_err *err)
{
	STACK_OF(X509) *s = sk_X509_new_null();
	BIO *b = n <= INT_MAX ? BIO_new_mem_buf(p, (int)n) : NULL;
	X509 *x;

	if (!s || !b) {
		BIO_free(b);
		sk_X509_free(s);
		p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
		return NULL;
	}
	ERR_clear_error();
	while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL))) {
		if (sk_X509_num(s) >= OCI_CERTS_MAX || !sk_X509_push(s, x)) {
			X509_free(x);
			p11g_err_set(err, P11G_E_BAD_REQUEST, "%s holds more than %d certificates",
			             what, OCI_CERTS_MAX);
			goto fail;
		}
	}
	unsigned long e = ERR_peek_last_error();
	ERR_clear_error();
	BIO_free(b);
	b = NULL;
	if (e && ERR_GET_REASON(e) != PEM_R_NO_START_LINE) {
		p11g_err_set(err, P11G_E_BAD_REQUEST,
		             "%s: certificate %d is not a valid X.509 "
		             "certificate in PEM",
		             what, sk_X509_num(s) + 1);
		goto fail;
	}
	if (sk_X509_num(s) == 0) {
		p11g_err_set(err, P11G_E_BAD_REQUEST,
		             "%s holds no PEM certificate (-----BEGIN CERTIFICATE-----)", what);
		goto fail;
	}
	return s;
fail:
	BIO_free(b);
	oci_certs_free(s);
	return NULL;
}

STACK_OF(X509) * oci_certs_load(const char *path, const char *what, p11g_err *err)
{
	_cleanup_buf_ struct oci_buf buf = {0};
	char w[600];
	snprintf(w, sizeof(w), "%s %s", what, path);
	if (oci_read_file(path, OCI_SMALL_MAX, &buf, what, err) < 0)
		return NULL;
	return oci_certs_from_pem(buf.data, buf.len, w, err);
}

char *oci_cert_to_pem(X509 *x, p11g_err *err)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *res = b && PEM_write_bio_X509(b, x) == 1 ? bio_string(b) : NULL;
	BIO_free(b);
	if (!res) {
		ERR_clear_error();
		p11g_err_set(err, P11G_E_INTERNAL, "cannot write the certificate as PEM");
	}
	return res;
}

void oci_cert_subject(const X509 *x, char *out, size_t len)
{
	if (!X509_NAME_oneline(X509_get_subject_name(x), out, (int)len))
		snprintf(out, len, "?");
}

static void time_text(const ASN1_TIME *t, char *out, size_t len)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *s = b && ASN1_TIME_print(b, t) == 1 ? bio_string(b) : NULL;
	snprintf(out, len, "%s", s ? s : "?");
	free(s);
	BIO_free(b);
}

int oci_cert_check_key(X509 *x, EVP_PKEY *pk, const char *what, p11g_err *err)
{
	EVP_PKEY *cpk = X509_get0_pubkey(x);
	ERR_clear_error();
	if (!cpk || EVP_PKEY_eq(cpk, pk) != 1) {
		char subj[256];
		ERR_clear_error();
		oci_cert_subject(x, subj, sizeof(subj));
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "%s (%s) certifies another key: its public key is not the "
		                    "token key's",
		                    what, subj);
	}
	return 0;
}

bool oci_cert_valid_now(const X509 *x)
{
	return X509_cmp_current_time(X509_get0_notBefore(x)) < 0 &&
	       X509_cmp_current_time(X509_get0_notAfter(x)) > 0;
}

int oci_cert_check_time(const X509 *x, const char *what, p11g_err *err)
{
	char t[64];
	if (X509_cmp_current_time(X509_get0_notBefore(x)) >= 0) {
		time_text(X509_get0_notBefore(x), t, sizeof(t));
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "%s is not valid before %s", what, t);
	}
	if (X509_cmp_current_time(X509_get0_notAfter(x)) <= 0) {
		time_text(X509_get0_notAfter(x), t, sizeof(t));
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "%s expired on %s", what, t);
	}
	return 0;
}

/* The extended key usages of x allow code signing (a CA's may be absent: then anything). */
static bool eku_allows_codesign(X509 *x, bool required)
{
	if (!(X509_get_extension_flags(x) & EXFLAG_XKUSAGE))
		return !required;
	uint32_t xku = X509_get_extended_key_usage(x);
	return (xku & XKU_CODE_SIGN) || (!required && (xku & XKU_ANYEKU));
}

int oci_cert_check_codesign(X509 *x, const char *what, p11g_err *err)
{
	if (!eku_allows_codesign(x, true))
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "%s has no code-signing extended key usage (extendedKeyUsage = "
		                    "codeSigning)",
		                    what);
	return 0;
}

static bool name_is(const ASN1_STRING *s, const char *identity)
{
	size_t n = (size_t)ASN1_STRING_length(s);
	return n == strlen(identity) && !memcmp(ASN1_STRING_get0_data(s), identity, n);
}

int oci_cert_check_identity(X509 *x, const char *identity, p11g_err *err)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	bool found = false;
	for (int i = 0; i < sk_GENERAL_NAME_num(gens) && !found; i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		if (g->type == GEN_EMAIL || g->type == GEN_DNS || g->type == GEN_URI)
			found = name_is(g->d.ia5, identity);
	}
	GENERAL_NAMES_free(gens);
	/* the whole subject: a cut one would match a prefix */
	char *whole = X509_NAME_oneline(X509_get_subject_name(x), NULL, 0), oneline[256];
	found |= whole && !strcmp(whole, identity);
	OPENSSL_free(whole);
	oci_cert_subject(x, oneline, sizeof(oneline));
	/* RFC 2253 writes the last attribute first; people (and Go for the usual C, O, CN order)
	 * write them as the subject lists them: either is taken */
	static const unsigned long orders[] = {XN_FLAG_RFC2253, XN_FLAG_RFC2253 & ~XN_FLAG_DN_REV};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(orders) && !found; i++) {
		BIO *b = BIO_new(BIO_s_mem());
		char *name = b && X509_NAME_print_ex(b, X509_get_subject_name(x), 0,
		                                     orders[i] & ~ASN1_STRFLGS_ESC_MSB) >= 0
		                 ? bio_string(b)
		                 : NULL;
		found = name && !strcmp(name, identity);
		free(name);
		BIO_free(b);
	}
	ERR_clear_error();
	if (!found)
		return p11g_err_set(err, P11G_E_BAD_SIGNATURE,
		                    "the certificate (%s) is not for %.300s: neither its subject "
		                    "nor a subject alternative name is that",
		                    oneline, identity);
	return 0;
}

int oci_cert_verify_chain(X509 *leaf, STACK_OF(X509) * untrusted, STACK_OF(X509) * roots,
                          const char *what, p11g_err *err)
{
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	int res = -1;

	if (!store || !ctx) {
		p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
		goto out;
	}
	for (int i = 0; i < sk_X509_num(roots); i++)
		if (X509_STORE_add_cert(store, sk_X509_value(roots, i)) != 1) {
			p11g_err_set(err, P11G_E_INTERNAL, "cannot add a root certificate");
			goto out;
		}
	if (X509_STORE_CTX_init(ctx, store, leaf, untrusted) != 1) {
		p11g_err_set(err, P11G_E_INTERNAL, "cannot set up the chain verification");
		goto out;
	}
	if (X509_verify_cert(ctx) != 1) {
		int e = X509_STORE_CTX_get_error(ctx);
		char subj[256];
		X509 *at = X509_STORE_CTX_get_current_cert(ctx);
		oci_cert_subject(at ? at : leaf, subj, sizeof(subj));
		p11g_err_set(err, P11G_E_BAD_SIGNATURE,
		             "%s does not chain to the trusted roots: %s (at %s)", what,
		             X509_verify_cert_error_string(e), subj);
		goto out;
	}
	/* as Go's x509 (and so cosign) does: every certificate of the chain allows code signing */
	STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(ctx);
	for (int i = 0; i < sk_X509_num(chain); i++)
		if (!eku_allows_codesign(sk_X509_value(chain, i), i == 0)) {
			char subj[256];
			oci_cert_subject(sk_X509_value(chain, i), subj, sizeof(subj));
			p11g_err_set(err, P11G_E_BAD_SIGNATURE,
			             i == 0
			                 ? "%s has no code-signing extended key usage (%s)"
			                 : "%s: the CA certificate %s does not allow code signing",
			             what, subj);
			goto out;
		}
	res = 0;
out:
	ERR_clear_error();
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	return res;
}

int oci_cert_verify_chain_file(X509 *leaf, STACK_OF(X509) * chain, const char *what, p11g_err *err)
{
	/* the stacks share chain's certificates: freed shallow */
	STACK_OF(X509) *mid = sk_X509_dup(chain), *root = sk_X509_new_null();
	int res = -1;
	if (!mid || !root || sk_X509_num(chain) < 1 || !sk_X509_push(root, sk_X509_pop(mid)))
		p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	else
		res = oci_cert_verify_chain(leaf, mid, root, what, err);
	sk_X509_free(mid);
	sk_X509_free(root);
	return res;
}
