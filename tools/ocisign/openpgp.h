/* The OpenPGP (RFC 4880) packets simple signing needs, written, never parsed: a v4 public key
 * (RSA, ECDSA P-256/P-384 per RFC 6637, Ed25519 as GnuPG's EdDSA), its user ID and
 * self-certification, and a signed message (one-pass signature, literal data, signature), all
 * signed through a PKCS#11 key.  Reading OpenPGP is GnuPG's (pgpverify.c). */
#ifndef OCISIGN_OPENPGP_H
#define OCISIGN_OPENPGP_H

#include <openssl/evp.h>

#include "ocisign.h"
#include "p11gate/openpgp.h"

#define OCI_PGP_FPR_HEX  41   /* 40 hex digits and a NUL */
#define OCI_PGP_BODY_MAX 1100 /* a public key packet's body: RSA up to 8192 bits */

struct oci_pgp_key {
	unsigned char body[OCI_PGP_BODY_MAX]; /* the public key packet's body */
	size_t body_len;
	unsigned char fpr[20]; /* SHA-1 of 0x99, the body's length and the body */
	uint8_t algo;          /* P11G_PGP_RSA, _ECDSA, _EDDSA */
	uint8_t hash;          /* what it signs with: SHA-384 for P-384, else SHA-256 */
	uint32_t created;      /* part of the fingerprint: the same time, the same key */
	char desc[24];         /* "RSA 3072", "ECDSA P-256", "Ed25519" */
};

/* The OpenPGP key of a public key (RSA of 2048 to 8192 bits, EC P-256 or P-384, Ed25519)
 * created at `created` (seconds since the epoch, 1 to 2^32 - 1). */
int oci_pgp_key_init(EVP_PKEY *pk, uint32_t created, struct oci_pgp_key *k, p11g_err *err);

/*
 * What a signature of type `type` made at `when` hashes (its "to be signed" bytes): for a
 * binary document (P11G_PGP_SIG_BINARY) the document, for a certification
 * (P11G_PGP_SIG_POSITIVE_CERT) the key and the user ID; then the signature's hashed fields
 * (version, type, algorithms, hashed subpackets: creation time, issuer fingerprint, and for a
 * certification key flags "sign and certify" and preferences) and the v4 trailer.  *ret_fields
 * is where the hashed fields start in ret (they open the signature packet too).
 */
int oci_pgp_tbs(const struct oci_pgp_key *k, uint8_t type, uint32_t when, const void *doc,
                size_t doc_len, const char *uid, struct oci_buf *ret, size_t *ret_fields,
                p11g_err *err);

/* The signature packet for tbs (from oci_pgp_tbs) and the token's raw signature of it (RSA: s,
 * ECDSA: r||s, EdDSA: R||S), appended to out. */
int oci_pgp_sig_packet(const struct oci_pgp_key *k, const struct oci_buf *tbs, size_t fields,
                       const unsigned char *sig, size_t slen, struct oci_buf *out, p11g_err *err);

/* A transferable public key (key, user ID, its certification packet), ASCII-armored. */
int oci_pgp_public_key_block(const struct oci_pgp_key *k, const char *uid,
                             const struct oci_buf *certification, char **ret, p11g_err *err);

/* A signed message: one-pass signature, literal data (binary, no file name, date 0), the
 * signature packet.  Binary, as containers/image stores signatures. */
int oci_pgp_signed_message(const struct oci_pgp_key *k, const void *doc, size_t doc_len,
                           const struct oci_buf *sigpacket, struct oci_buf *ret, p11g_err *err);

/* Armor (RFC 4880 section 6.2): "-----BEGIN PGP <what>-----", base64 in lines of 64, the
 * CRC-24 line, the END line.  malloc'd, or NULL. */
char *oci_pgp_armor(const char *what, const unsigned char *p, size_t n);
uint32_t oci_pgp_crc24(const unsigned char *p, size_t n);

#endif
