/* OpenPGP's numbers and the computations both sides of simple signing make (issue 24): ocisign
 * writes signatures (tools/ocisign/openpgp.c), approvald reads what they hash
 * (approvald/pgp_payload.c).  One definition, so that what approvers are shown and what the
 * gate binds cannot drift apart. */
#ifndef P11GATE_OPENPGP_H
#define P11GATE_OPENPGP_H

#include <openssl/evp.h>

#include "p11gate/common.h"

/* public key algorithms, hash algorithms and signature types (RFC 4880 9.1, 9.4, 5.2.1) */
enum { P11G_PGP_RSA = 1, P11G_PGP_ECDSA = 19, P11G_PGP_EDDSA = 22 };
enum { P11G_PGP_SHA256 = 8, P11G_PGP_SHA384 = 9 };
enum { P11G_PGP_SIG_BINARY = 0x00, P11G_PGP_SIG_POSITIVE_CERT = 0x13 };

/* curve OIDs as OpenPGP writes them (no DER tag or length): P-256, P-384 (RFC 6637), and
 * 1.3.6.1.4.1.11591.15.1, GnuPG's Ed25519 for EdDSA; sizeof - 1 bytes each */
#define P11G_PGP_OID_P256    "\x2a\x86\x48\xce\x3d\x03\x01\x07"
#define P11G_PGP_OID_P384    "\x2b\x81\x04\x00\x22"
#define P11G_PGP_OID_ED25519 "\x2b\x06\x01\x04\x01\xda\x47\x0f\x01"

/* "sha384:" and 96 hex digits */
#define P11G_PGP_DIGEST_MAX 104

/* The hash a v4 signature of OpenPGP hash algorithm `hash` (P11G_PGP_SHA256 or _SHA384) is
 * made over: SHA-384 for P11G_PGP_SHA384, else SHA-256. */
static inline const EVP_MD *p11g_pgp_md(uint8_t hash)
{
	return hash == P11G_PGP_SHA384 ? EVP_sha384() : EVP_sha256();
}

/* The digest p11gate.so binds the token's signature of a v4 signature's hashed data to, as
 * ocisign signs it: RSA the hash-and-sign mechanism over the data, ECDSA CKM_ECDSA over its
 * hash (named by its length), Ed25519 CKM_EDDSA over its hash as the message, whose SHA-256
 * the gate names (module/digest.c).  false, out left empty, when OpenSSL fails. */
__attribute__((warn_unused_result)) static inline bool
p11g_pgp_use_digest(uint8_t algo, uint8_t hash, const void *data, size_t len,
                    char out[P11G_PGP_DIGEST_MAX])
{
	unsigned char h[EVP_MAX_MD_SIZE], hh[32];
	unsigned hl = 0;
	const char *alg = hash == P11G_PGP_SHA384 ? "sha384" : "sha256";

	out[0] = '\0';
	if (!EVP_Digest(data, len, h, &hl, p11g_pgp_md(hash), NULL))
		return false;
	if (algo == P11G_PGP_EDDSA) {
		if (!EVP_Digest(h, hl, hh, NULL, EVP_sha256(), NULL))
			return false;
		memcpy(h, hh, sizeof(hh));
		hl = sizeof(hh);
		alg = "sha256";
	}
	int n = snprintf(out, P11G_PGP_DIGEST_MAX, "%s:", alg);
	p11g_hex_encode(h, hl, out + n);
	return true;
}

/* A v4 key's fingerprint: SHA-1 of 0x99, the public key packet body's length, the body.  false
 * when the body is longer than a v4 key's can be or OpenSSL fails. */
static inline bool p11g_pgp_fingerprint(const unsigned char *body, size_t len,
                                        unsigned char out[20])
{
	unsigned char pre[3] = {0x99, (unsigned char)(len >> 8), (unsigned char)len};
	EVP_MD_CTX *c = len <= 0xffff ? EVP_MD_CTX_new() : NULL;
	bool ok = c && EVP_DigestInit_ex(c, EVP_sha1(), NULL) == 1 &&
	          EVP_DigestUpdate(c, pre, sizeof(pre)) == 1 &&
	          EVP_DigestUpdate(c, body, len) == 1 && EVP_DigestFinal_ex(c, out, NULL) == 1;
	EVP_MD_CTX_free(c);
	return ok;
}

/* A fingerprint as GnuPG prints it: 40 upper-case hex digits. */
static inline void p11g_pgp_fingerprint_hex(const unsigned char fpr[20], char out[41])
{
	static const char hex[] = "0123456789ABCDEF";
	for (size_t i = 0; i < 20; i++) {
		out[2 * i] = hex[fpr[i] >> 4];
		out[2 * i + 1] = hex[fpr[i] & 15];
	}
	out[40] = '\0';
}

#endif
