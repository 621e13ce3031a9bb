/* Verifying OpenPGP signed messages with GPGME (GnuPG), as containers/image does: a keyring
 * imported into a GnuPG home of its own, one signature per message, by one of its keys. */
#ifndef OCISIGN_PGPVERIFY_H
#define OCISIGN_PGPVERIFY_H

#include "ocisign.h"

struct oci_pgp_verifier;

/* Imports the keys of keyring_file (armored or binary) into a new temporary GnuPG home. */
int oci_pgp_verifier_open(const char *keyring_file, struct oci_pgp_verifier **ret, p11g_err *err);
/* The number of keys imported (shown in messages). */
size_t oci_pgp_verifier_keys(const struct oci_pgp_verifier *v);
/* Checks a signed message: exactly one signature, good, by a key of the keyring (not
 * revoked or expired, usable for signing).  0 with the signed data in *ret and the signing
 * key's fingerprint, or -1 with the reason. */
int oci_pgp_verify(struct oci_pgp_verifier *v, const void *msg, size_t len, struct oci_buf *ret,
                   char fpr[64], p11g_err *err);
/* Whether the keyring holds the primary key with this fingerprint (40 hex digits); its
 * creation time in *created. */
bool oci_pgp_verifier_has(struct oci_pgp_verifier *v, const char *fpr, uint32_t *created);
/* The creation times of the keyring's primary keys (at most max): how many. */
size_t oci_pgp_verifier_times(struct oci_pgp_verifier *v, uint32_t *times, size_t max);

/* Ends it and removes the temporary GnuPG home. */
void oci_pgp_verifier_close(struct oci_pgp_verifier *v);

#endif
