/* Signing keys named by PKCS#11 URIs: loading a module, finding the key, signing, exporting its
 * public key. */
#ifndef OCISIGN_P11_H
#define OCISIGN_P11_H

#include <openssl/x509.h>

#include "ocisign.h"

struct oci_key;

struct oci_key_opts {
	const char *uri;      /* pkcs11:token=..;object=..[?pin-value=..&module-path=..] */
	const char *module;   /* --module, or NULL */
	const char *pin_file; /* --pin-file, or NULL */
	bool rw;              /* a read-write session (import-cert) */
};

/* Which module a key URI goes through: --module, else the URI's
 * module-path, else $OCISIGN_MODULE, else the installed p11gate.so (so that
 * signing goes through the gate unless asked otherwise).  Never
 * $P11GATE_MODULE: that names the real module *behind* the gate. */
const char *oci_key_module_path(const struct oci_key_opts *o, p11g_err *err);

/* Loads the module and finds exactly one private key (for_signing, after
 * logging in) or its public half (else; public objects need no PIN) that
 * the URI names. */
int oci_key_open(const struct oci_key_opts *o, bool for_signing, struct oci_key **ret,
                 p11g_err *err);
void oci_key_close(struct oci_key *k);

/* The opened key's URI without its query (so without a PIN): for messages. */
const char *oci_key_uri(const struct oci_key *k);

/* The key's URI without its query (no PIN, no module): what approvald's
 * policy matches. malloc'd. */
int oci_key_request_uri(const char *uri, char **ret, p11g_err *err);

/* Signs data the way cosign's verifiers expect: ECDSA P-256/384/521 over
 * SHA-256(data) with CKM_ECDSA and the raw r||s turned into DER; RSA with
 * CKM_SHA256_RSA_PKCS; Ed25519 with CKM_EDDSA over the data itself. */
int oci_key_sign(struct oci_key *k, const void *data, size_t len, unsigned char **ret,
                 size_t *ret_len, p11g_err *err);

/* The key's public key as a PEM SubjectPublicKeyInfo (malloc'd). */
/* An OpenPGP signature's raw token signature of data (openpgp.h): RSA PKCS#1 v1.5 with SHA-256
 * or SHA-384 (s), ECDSA over the hash (r||s), EdDSA over the hash as its message (R||S). */
int oci_key_sign_pgp(struct oci_key *k, bool sha384, const void *data, size_t len,
                     unsigned char **ret, size_t *ret_len, p11g_err *err);

/* The key's CKA_START_DATE as seconds since the epoch (midnight UTC), that of its public key
 * object when it has one (the public half, as oci_key_public finds it): 0, 1 when there is
 * none, -1 when it cannot be read. */
int oci_key_start_date(struct oci_key *k, uint32_t *ret, p11g_err *err);

int oci_key_public_pem(struct oci_key *k, char **ret, p11g_err *err);

/* The key's public key: from its public key object (same CKA_ID, else label), else from the
 * private key's attributes. */
int oci_key_public(struct oci_key *k, EVP_PKEY **ret, p11g_err *err);

/* The X.509 certificate on the token for the key: a CKO_CERTIFICATE with the key's CKA_ID whose
 * public key is the key's (of several, the one valid longest).  1 when there is none. */
int oci_key_token_cert(struct oci_key *k, EVP_PKEY *pk, X509 **ret, p11g_err *err);

/* Stores x (already checked to certify the key) as a token CKO_CERTIFICATE with the key's
 * CKA_ID and CKA_LABEL, then removes the certificates with that CKA_ID it replaces (their
 * number in *ret_replaced).  Needs a key opened rw and for signing (logged in). */
int oci_key_import_cert(struct oci_key *k, X509 *x, unsigned *ret_replaced, p11g_err *err);

/* Says that approvers approved what is about to be signed (a refusal is then not "approval
 * needed"). */
void oci_key_note_approved(struct oci_key *k);

/* "CKR_PIN_INCORRECT" and so on. */
const char *oci_ckr_name(unsigned long rv);

#endif
