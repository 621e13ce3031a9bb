/* OpenPGP v4 packets, written (openpgp.h): keys, certifications and signed messages. */
#include <openssl/core_names.h>

#include "openpgp.h"

static void put_be(unsigned char *p, uint32_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (unsigned char)(v >> (8 * (n - 1 - i)));
}

static int app_be(struct oci_buf *b, uint32_t v, int n)
{
	unsigned char p[4];
	put_be(p, v, n);
	return oci_buf_append(b, p, (size_t)n);
}

static int app_byte(struct oci_buf *b, unsigned char c)
{
	return oci_buf_append(b, &c, 1);
}

/* A new-format packet header (RFC 4880 4.2.2). */
static int app_header(struct oci_buf *b, uint8_t tag, size_t len)
{
	if (app_byte(b, (unsigned char)(0xc0 | tag)) < 0)
		return -1;
	if (len < 192)
		return app_byte(b, (unsigned char)len);
	if (len < 8384)
		return app_byte(b, (unsigned char)(((len - 192) >> 8) + 192)) < 0
		           ? -1
		           : app_byte(b, (unsigned char)((len - 192) & 0xff));
	return app_byte(b, 0xff) < 0 ? -1 : app_be(b, (uint32_t)len, 4);
}

/* An MPI (RFC 4880 3.2): the bit count, then the bytes without leading zeros. */
static int app_mpi(struct oci_buf *b, const unsigned char *p, size_t n)
{
	while (n && !*p) {
		p++;
		n--;
	}
	unsigned bits = (unsigned)(n * 8);
	if (n)
		for (unsigned char top = p[0]; !(top & 0x80); top <<= 1)
			bits--;
	return app_be(b, bits, 2) < 0 ? -1 : oci_buf_append(b, p, n);
}

static int bn_mpi(struct oci_buf *b, EVP_PKEY *pk, const char *param)
{
	BIGNUM *bn = NULL;
	unsigned char buf[1024];
	int n, r = -1;
	if (EVP_PKEY_get_bn_param(pk, param, &bn) == 1 && BN_num_bytes(bn) <= (int)sizeof(buf) &&
	    (n = BN_bn2bin(bn, buf)) >= 0)
		r = app_mpi(b, buf, (size_t)n);
	BN_free(bn);
	return r;
}

static int ec_key(EVP_PKEY *pk, struct oci_buf *b, struct oci_pgp_key *k, p11g_err *err)
{
	char group[64] = "";
	unsigned char pt[200];
	size_t ptlen = 0;
	const char *oid;
	size_t oidlen;

	if (EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
	                                   NULL) != 1)
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "cannot read the EC key's curve");
	if (!strcmp(group, "prime256v1") || !strcmp(group, "P-256")) {
		oid = P11G_PGP_OID_P256, oidlen = sizeof(P11G_PGP_OID_P256) - 1;
		snprintf(k->desc, sizeof(k->desc), "ECDSA P-256");
	} else if (!strcmp(group, "secp384r1") || !strcmp(group, "P-384")) {
		oid = P11G_PGP_OID_P384, oidlen = sizeof(P11G_PGP_OID_P384) - 1;
		k->hash = P11G_PGP_SHA384; /* RFC 6637: P-384 signs SHA-384 */
		snprintf(k->desc, sizeof(k->desc), "ECDSA P-384");
	} else {
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "OpenPGP keys are ECDSA P-256 or P-384, not curve %s", group);
	}
	if (EVP_PKEY_get_octet_string_param(pk, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt), &ptlen) !=
	        1 ||
	    ptlen == 0 || pt[0] != 0x04)
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "cannot read the EC key's point uncompressed");
	k->algo = P11G_PGP_ECDSA;
	return app_byte(b, (unsigned char)oidlen) < 0 || oci_buf_append(b, oid, oidlen) < 0 ||
	               app_mpi(b, pt, ptlen) < 0
	           ? p11g_err_set(err, P11G_E_INTERNAL, "out of memory")
	           : 0;
}

int oci_pgp_key_init(EVP_PKEY *pk, uint32_t created, struct oci_pgp_key *k, p11g_err *err)
{
	struct oci_buf b;
	int r;

	memset(k, 0, sizeof(*k));
	if (created == 0)
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "a key's creation time is after 1970");
	k->created = created;
	k->hash = P11G_PGP_SHA256;
	oci_buf_init(&b, sizeof(k->body));
	if (app_byte(&b, 4) < 0 || app_be(&b, created, 4) < 0)
		goto nomem;
	switch (EVP_PKEY_get_base_id(pk)) {
	case EVP_PKEY_RSA: {
		int bits = EVP_PKEY_get_bits(pk);
		if (bits < 2048 || bits > 8192) {
			oci_buf_free(&b);
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "OpenPGP RSA keys here are 2048 to 8192 bits, not %d",
			                    bits);
		}
		k->algo = P11G_PGP_RSA;
		snprintf(k->desc, sizeof(k->desc), "RSA %d", bits);
		if (app_byte(&b, P11G_PGP_RSA) < 0 || bn_mpi(&b, pk, OSSL_PKEY_PARAM_RSA_N) < 0 ||
		    bn_mpi(&b, pk, OSSL_PKEY_PARAM_RSA_E) < 0)
			goto nomem;
		break;
	}
	case EVP_PKEY_EC:
		if (app_byte(&b, P11G_PGP_ECDSA) < 0)
			goto nomem;
		if ((r = ec_key(pk, &b, k, err)) < 0) {
			oci_buf_free(&b);
			return r;
		}
		break;
	case EVP_PKEY_ED25519: {
		unsigned char pt[33] = {0x40}; /* GnuPG's prefix for a native point */
		size_t n = 32;
		if (EVP_PKEY_get_raw_public_key(pk, pt + 1, &n) != 1 || n != 32) {
			oci_buf_free(&b);
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "cannot read the Ed25519 public key");
		}
		k->algo = P11G_PGP_EDDSA;
		snprintf(k->desc, sizeof(k->desc), "Ed25519");
		if (app_byte(&b, P11G_PGP_EDDSA) < 0 ||
		    app_byte(&b, sizeof(P11G_PGP_OID_ED25519) - 1) < 0 ||
		    oci_buf_append(&b, P11G_PGP_OID_ED25519, sizeof(P11G_PGP_OID_ED25519) - 1) <
		        0 ||
		    app_mpi(&b, pt, sizeof(pt)) < 0)
			goto nomem;
		break;
	}
	default:
		oci_buf_free(&b);
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "OpenPGP keys here are RSA, ECDSA P-256/P-384 or Ed25519");
	}
	memcpy(k->body, b.data, b.len);
	k->body_len = b.len;
	oci_buf_free(&b);
	return p11g_pgp_fingerprint(k->body, k->body_len, k->fpr)
	           ? 0
	           : p11g_err_set(err, P11G_E_INTERNAL, "SHA-1 failed (fingerprint)");
nomem:
	oci_buf_free(&b);
	return p11g_err_set(err, P11G_E_INTERNAL, "out of memory (OpenPGP key)");
}

int oci_pgp_tbs(const struct oci_pgp_key *k, uint8_t type, uint32_t when, const void *doc,
                size_t doc_len, const char *uid, struct oci_buf *ret, size_t *ret_fields,
                p11g_err *err)
{
	unsigned char sub[80];
	size_t sl = 0;

	/* hashed subpackets: creation time (2), issuer fingerprint (33) */
	sub[sl++] = 5, sub[sl++] = 2;
	put_be(sub + sl, when, 4), sl += 4;
	sub[sl++] = 22, sub[sl++] = 33, sub[sl++] = 4;
	memcpy(sub + sl, k->fpr, 20), sl += 20;
	if (type == P11G_PGP_SIG_POSITIVE_CERT) {
		static const unsigned char cert_subs[] = {
		    2, 27, 0x03,        /* key flags: certify, sign data */
		    4, 21, 8,    9, 10, /* preferred hashes: SHA-256, SHA-384, SHA-512 */
		    4, 11, 9,    8, 7,  /* preferred ciphers: AES-256, AES-192, AES-128 */
		    2, 30, 0x01,        /* features: modification detection */
		};
		memcpy(sub + sl, cert_subs, sizeof(cert_subs));
		sl += sizeof(cert_subs);
	}
	oci_buf_init(ret, OCI_SMALL_MAX + 64 * 1024);
	if (type == P11G_PGP_SIG_POSITIVE_CERT) {
		size_t ul = strlen(uid);
		if (app_byte(ret, 0x99) < 0 || app_be(ret, (uint32_t)k->body_len, 2) < 0 ||
		    oci_buf_append(ret, k->body, k->body_len) < 0 || app_byte(ret, 0xb4) < 0 ||
		    app_be(ret, (uint32_t)ul, 4) < 0 || oci_buf_append(ret, uid, ul) < 0)
			goto nomem;
	} else if (oci_buf_append(ret, doc, doc_len) < 0) {
		goto nomem;
	}
	*ret_fields = ret->len;
	unsigned char head[6] = {
	    4, type, k->algo, k->hash, (unsigned char)(sl >> 8), (unsigned char)sl};
	if (oci_buf_append(ret, head, sizeof(head)) < 0 || oci_buf_append(ret, sub, sl) < 0 ||
	    app_byte(ret, 4) < 0 || app_byte(ret, 0xff) < 0 ||
	    app_be(ret, (uint32_t)(sizeof(head) + sl), 4) < 0)
		goto nomem;
	return 0;
nomem:
	oci_buf_free(ret);
	return p11g_err_set(err, P11G_E_INTERNAL, "what is signed is too large");
}

int oci_pgp_sig_packet(const struct oci_pgp_key *k, const struct oci_buf *tbs, size_t fields,
                       const unsigned char *sig, size_t slen, struct oci_buf *out, p11g_err *err)
{
	unsigned char h[EVP_MAX_MD_SIZE];
	unsigned hl = 0;
	struct oci_buf body;
	size_t flen = tbs->len - fields - 6; /* the hashed fields, without the trailer */

	if (tbs->len < fields + 6 ||
	    !EVP_Digest(tbs->data, tbs->len, h, &hl, p11g_pgp_md(k->hash), NULL))
		return p11g_err_set(err, P11G_E_INTERNAL, "cannot hash what was signed");
	if ((k->algo != P11G_PGP_RSA && (slen % 2 || slen == 0)) ||
	    (k->algo == P11G_PGP_EDDSA && slen != 64))
		return p11g_err_set(err, P11G_E_PROTOCOL,
		                    "the token returned a %zu-byte %s signature", slen, k->desc);
	oci_buf_init(&body, 4 * OCI_PGP_BODY_MAX);
	/* unhashed: the issuer's key id (16), for older readers */
	unsigned char unh[12] = {0, 10, 9, 16};
	memcpy(unh + 4, k->fpr + 12, 8);
	int r = oci_buf_append(&body, tbs->data + fields, flen) < 0 ||
	        oci_buf_append(&body, unh, sizeof(unh)) < 0 || oci_buf_append(&body, h, 2) < 0;
	if (k->algo == P11G_PGP_RSA)
		r = r || app_mpi(&body, sig, slen) < 0;
	else /* r, s (ECDSA) or R, S (EdDSA): each half an MPI */
		r = r || app_mpi(&body, sig, slen / 2) < 0 ||
		    app_mpi(&body, sig + slen / 2, slen / 2) < 0;
	r = r || app_header(out, 2, body.len) < 0 || oci_buf_append(out, body.data, body.len) < 0;
	oci_buf_free(&body);
	return r ? p11g_err_set(err, P11G_E_INTERNAL, "out of memory (signature packet)") : 0;
}

int oci_pgp_public_key_block(const struct oci_pgp_key *k, const char *uid,
                             const struct oci_buf *certification, char **ret, p11g_err *err)
{
	struct oci_buf b;
	size_t ul = strlen(uid);

	oci_buf_init(&b, 4 * OCI_PGP_BODY_MAX + ul + certification->len);
	if (app_header(&b, 6, k->body_len) < 0 || oci_buf_append(&b, k->body, k->body_len) < 0 ||
	    app_header(&b, 13, ul) < 0 || oci_buf_append(&b, uid, ul) < 0 ||
	    oci_buf_append(&b, certification->data, certification->len) < 0 ||
	    !(*ret = oci_pgp_armor("PUBLIC KEY BLOCK", b.data, b.len))) {
		oci_buf_free(&b);
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory (public key block)");
	}
	oci_buf_free(&b);
	return 0;
}

int oci_pgp_signed_message(const struct oci_pgp_key *k, const void *doc, size_t doc_len,
                           const struct oci_buf *sigpacket, struct oci_buf *ret, p11g_err *err)
{
	unsigned char ops[13] = {3, P11G_PGP_SIG_BINARY, k->hash, k->algo};
	unsigned char lit[6] = {'b', 0, 0, 0, 0, 0}; /* binary, no file name, no date */

	memcpy(ops + 4, k->fpr + 12, 8);
	ops[12] = 1; /* the signature follows the data, as usual */
	oci_buf_init(ret, doc_len + sigpacket->len + 64);
	if (app_header(ret, 4, sizeof(ops)) < 0 || oci_buf_append(ret, ops, sizeof(ops)) < 0 ||
	    app_header(ret, 11, sizeof(lit) + doc_len) < 0 ||
	    oci_buf_append(ret, lit, sizeof(lit)) < 0 || oci_buf_append(ret, doc, doc_len) < 0 ||
	    oci_buf_append(ret, sigpacket->data, sigpacket->len) < 0) {
		oci_buf_free(ret);
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory (signed message)");
	}
	return 0;
}

uint32_t oci_pgp_crc24(const unsigned char *p, size_t n)
{
	uint32_t crc = 0xb704ce;
	while (n--) {
		crc ^= (uint32_t)*p++ << 16;
		for (int i = 0; i < 8; i++) {
			crc <<= 1;
			if (crc & 0x1000000)
				crc ^= 0x1864cfb;
		}
	}
	return crc & 0xffffff;
}

char *oci_pgp_armor(const char *what, const unsigned char *p, size_t n)
{
	unsigned char crc[3];
	char *b64 = oci_b64_encode(p, n), *out = NULL;
	put_be(crc, oci_pgp_crc24(p, n), 3);
	char *c64 = oci_b64_encode(crc, sizeof(crc));
	struct oci_buf b;

	oci_buf_init(&b, 2 * n + 256);
	if (b64 && c64) {
		size_t len = strlen(b64);
		int r = oci_buf_puts(&b, "-----BEGIN PGP ") < 0 || oci_buf_puts(&b, what) < 0 ||
		        oci_buf_puts(&b, "-----\n\n") < 0;
		for (size_t i = 0; !r && i < len; i += 64)
			r = oci_buf_append(&b, b64 + i, len - i < 64 ? len - i : 64) < 0 ||
			    oci_buf_puts(&b, "\n") < 0;
		r = r || oci_buf_puts(&b, "=") < 0 || oci_buf_puts(&b, c64) < 0 ||
		    oci_buf_puts(&b, "\n-----END PGP ") < 0 || oci_buf_puts(&b, what) < 0 ||
		    oci_buf_puts(&b, "-----\n") < 0;
		if (!r)
			out = oci_buf_steal(&b, NULL);
	}
	oci_buf_free(&b);
	free(b64);
	free(c64);
	return out;
}
