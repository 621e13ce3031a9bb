/* Signature formats and verification with OpenSSL 3: ECDSA raw->DER, keys from token attributes,
 * cosign checks. */
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "sigcrypto.h"

int oci_ecdsa_raw_to_der(const unsigned char *raw, size_t len, unsigned char **ret, size_t *ret_len)
{
	/* P-521 halves are 66 bytes. */
	if (len == 0 || len % 2 || len > 2 * 66)
		return -1;
	ECDSA_SIG *sig = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(raw, (int)(len / 2), NULL),
	       *s = BN_bin2bn(raw + len / 2, (int)(len / 2), NULL);
	unsigned char *der = NULL;
	int n = -1;

	if (sig && r && s && ECDSA_SIG_set0(sig, r, s) == 1) {
		r = s = NULL; /* owned by sig now */
		n = i2d_ECDSA_SIG(sig, &der);
	}
	BN_free(r);
	BN_free(s);
	ECDSA_SIG_free(sig);
	if (n <= 0)
		return -1;
	*ret = der; /* OPENSSL_malloc'd, which is malloc unless the application changed it */
	*ret_len = (size_t)n;
	return 0;
}

static const unsigned char *unwrap_octet_string(const unsigned char *p, size_t len, size_t *ret_len)
{
	/* CKA_EC_POINT should be a DER OCTET STRING, but some tokens give the
	 * bare point; a bare uncompressed point also starts with 0x04, so only
	 * take the wrapping when its length covers the rest exactly. */
	if (len >= 2 && p[0] == 0x04) {
		size_t hdr, inner;
		if (p[1] < 0x80) {
			hdr = 2, inner = p[1];
		} else if (p[1] == 0x81 && len >= 3) {
			hdr = 3, inner = p[2];
		} else if (p[1] == 0x82 && len >= 4) {
			hdr = 4, inner = (size_t)p[2] << 8 | p[3];
		} else {
			*ret_len = len;
			return p;
		}
		if (hdr + inner == len) {
			*ret_len = inner;
			return p + hdr;
		}
	}
	*ret_len = len;
	return p;
}

/* The public key q on curve, checked to be on it; NULL when it is not one. */
static EVP_PKEY *ec_public_key(const char *curve, const unsigned char *q, size_t qlen)
{
	EVP_PKEY *pk = NULL;
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	OSSL_PARAM *op = NULL;
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	if (bld && ctx &&
	    OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, curve, 0) &&
	    OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, q, qlen) &&
	    (op = OSSL_PARAM_BLD_to_param(bld)) && EVP_PKEY_fromdata_init(ctx) == 1 &&
	    EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, op) == 1) {
		/* fromdata does not check the point is on the curve */
		EVP_PKEY_CTX *chk = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
		if (!chk || EVP_PKEY_public_check(chk) != 1) {
			EVP_PKEY_free(pk);
			pk = NULL;
		}
		EVP_PKEY_CTX_free(chk);
	}
	OSSL_PARAM_free(op);
	OSSL_PARAM_BLD_free(bld);
	EVP_PKEY_CTX_free(ctx);
	return pk;
}

EVP_PKEY *oci_pkey_from_ec(const unsigned char *params, size_t plen, const unsigned char *point,
                           size_t qlen, p11g_err *err)
{
	static const unsigned char ed25519_oid[] = {0x06, 0x03, 0x2b, 0x65, 0x70};
	static const unsigned char ed25519_name[] = {0x13, 0x0c, 'e', 'd', 'w', 'a', 'r',
	                                             'd',  's',  '2', '5', '5', '1', '9'};
	size_t plen2;
	const unsigned char *q = unwrap_octet_string(point, qlen, &plen2);
	EVP_PKEY *pk = NULL;

	if ((plen == sizeof(ed25519_oid) && !memcmp(params, ed25519_oid, plen)) ||
	    (plen == sizeof(ed25519_name) && !memcmp(params, ed25519_name, plen))) {
		if (plen2 != 32) {
			p11g_err_set(err, P11G_E_PROTOCOL,
			             "the Ed25519 public key is %zu bytes, not 32", plen2);
			return NULL;
		}
		pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, q, 32);
		if (!pk)
			p11g_err_set(err, P11G_E_PROTOCOL,
			             "OpenSSL cannot load the Ed25519 public key");
		return pk;
	}
	const unsigned char *pp = params;
	ASN1_OBJECT *oid = d2i_ASN1_OBJECT(NULL, &pp, (long)plen);
	int nid = oid ? OBJ_obj2nid(oid) : NID_undef;
	ASN1_OBJECT_free(oid);
	const char *curve = nid != NID_undef ? OBJ_nid2sn(nid) : NULL;
	if (!curve || pp != params + plen) {
		p11g_err_set(err, P11G_E_PROTOCOL,
		             "the key's CKA_EC_PARAMS is not a named curve OpenSSL knows");
		return NULL;
	}
	/* a bare point whose first coordinate byte reads as the rest's length looks wrapped:
	 * the bytes as they came are the other reading */
	pk = ec_public_key(curve, q, plen2);
	if (!pk && q != point)
		pk = ec_public_key(curve, point, qlen);
	if (!pk)
		p11g_err_set(err, P11G_E_PROTOCOL, "the key's CKA_EC_POINT is not a point on %s",
		             curve);
	return pk;
}

EVP_PKEY *oci_pkey_from_rsa(const unsigned char *n, size_t nlen, const unsigned char *e,
                            size_t elen, p11g_err *err)
{
	BIGNUM *bn = BN_bin2bn(n, (int)nlen, NULL), *be = BN_bin2bn(e, (int)elen, NULL);
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	OSSL_PARAM *op = NULL;
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
	EVP_PKEY *pk = NULL;

	if (bn && be && bld && ctx && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) &&
	    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) &&
	    (op = OSSL_PARAM_BLD_to_param(bld)) && EVP_PKEY_fromdata_init(ctx) == 1 &&
	    EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, op) == 1) {
	}
	if (!pk)
		p11g_err_set(err, P11G_E_PROTOCOL, "OpenSSL cannot load the RSA public key");
	OSSL_PARAM_free(op);
	OSSL_PARAM_BLD_free(bld);
	EVP_PKEY_CTX_free(ctx);
	BN_free(bn);
	BN_free(be);
	return pk;
}

int oci_pkey_to_pem(EVP_PKEY *pk, char **ret, p11g_err *err)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *p;
	long n;
	int res = -1;

	if (b && PEM_write_bio_PUBKEY(b, pk) == 1 && (n = BIO_get_mem_data(b, &p)) > 0) {
		if ((*ret = strndup(p, (size_t)n)))
			res = 0;
	}
	BIO_free(b);
	if (res < 0)
		p11g_err_set(err, P11G_E_INTERNAL, "cannot write the public key as PEM");
	return res;
}

EVP_PKEY *oci_pkey_load_pem(const char *path, p11g_err *err)
{
	_cleanup_buf_ struct oci_buf buf = {0};
	if (oci_read_file(path, OCI_SMALL_MAX, &buf, "public key", err) < 0)
		return NULL;
	BIO *b = BIO_new_mem_buf(buf.data, (int)buf.len);
	EVP_PKEY *pk = b ? PEM_read_bio_PUBKEY(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	ERR_clear_error();
	if (!pk)
		p11g_err_set(err, P11G_E_BAD_REQUEST,
		             "%s is not a PEM public key (-----BEGIN PUBLIC KEY-----)", path);
	return pk;
}

int oci_verify(EVP_PKEY *pk, const void *msg, size_t mlen, const unsigned char *sig, size_t slen)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok = 0;
	int id = EVP_PKEY_get_base_id(pk);
	/* Ed25519 signs the message itself; the others SHA-256 of it. */
	const EVP_MD *md = id == EVP_PKEY_ED25519 ? NULL : EVP_sha256();

	if (id != EVP_PKEY_EC && id != EVP_PKEY_RSA && id != EVP_PKEY_ED25519) {
		EVP_MD_CTX_free(ctx);
		return 0;
	}
	if (ctx && EVP_DigestVerifyInit(ctx, NULL, md, NULL, pk) == 1)
		ok = EVP_DigestVerify(ctx, sig, slen, msg, mlen) == 1;
	EVP_MD_CTX_free(ctx);
	ERR_clear_error();
	return ok;
}
