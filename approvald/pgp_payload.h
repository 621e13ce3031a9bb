/* What approvald reads of an OpenPGP signature it is asked to have made (ocisign's simple
 * signing and OpenPGP keys): the signature's hashed data, which a request's payload carries
 * whole, so what approvers see is what the token signs. */
#ifndef APPROVALD_PGP_PAYLOAD_H
#define APPROVALD_PGP_PAYLOAD_H

#include <jansson.h>

#include "p11gate/common.h"
#include "p11gate/openpgp.h"

struct p11g_pgp_payload {
	uint8_t type;       /* 0x00: a binary document; 0x10..0x13: a user ID certification */
	uint8_t algo, hash; /* OpenPGP's numbers: RSA 1, ECDSA 19, EdDSA 22; SHA-256 8, SHA-384 9 */
	uint32_t when;      /* the signature's creation time */
	char issuer[41];    /* the issuer fingerprint subpacket, 40 hex digits */
	size_t doc_len;     /* a binary document: the first doc_len bytes */
	json_t *certification; /* a certification: {user_id, fingerprint, key, created} */
	/* a certification: SHA-256 of the certified key's SubjectPublicKeyInfo, lowercase hex,
	 * the name p11gate.so gives a token key (only that key may sign its certification) */
	char key_spki[65];
	/* The digest p11gate.so binds the token's signature to: the hash of the data for RSA and
	 * ECDSA, SHA-256 of that hash for EdDSA (CKM_EDDSA signs the hash as its message). */
	char use_digest[P11G_PGP_DIGEST_MAX];
};

/* Whether the bytes end as an OpenPGP v4 signature's hashed data does (the 0x04 0xff trailer
 * and the fields it counts): else they are read as another kind of payload. */
bool p11g_pgp_payload_looks(const unsigned char *p, size_t n);

/*
 * Reads the hashed data of a v4 signature: the signed bytes, then version 4, the type, the
 * algorithms, the hashed subpackets (a creation time and an issuer fingerprint; for a
 * certification also key flags, preferences and features; nothing else, and each once), and
 * the trailer.  A binary-document signature's document is left to the caller (doc_len); a
 * certification's key (a v4 RSA, ECDSA P-256/P-384 or Ed25519 key whose fingerprint is the
 * issuer's: a self-certification) and user ID (printable UTF-8) are read and described.
 * 0, or -1 with the reason in why.  `now` bounds the creation time (10 minutes ahead at most).
 */
int p11g_pgp_payload_read(const unsigned char *p, size_t n, int64_t now,
                          struct p11g_pgp_payload *ret, char *why, size_t why_len);
void p11g_pgp_payload_clear(struct p11g_pgp_payload *pp);

#endif
