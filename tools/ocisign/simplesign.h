/* containers/image "simple signing": the atomic container signature claim, as containers/image
 * writes it, and the lookaside store ("sigstore") it keeps signatures in. */
#ifndef OCISIGN_SIMPLESIGN_H
#define OCISIGN_SIMPLESIGN_H

#include "ocisign.h"
#include "ref.h"

#define OCI_ATOMIC_TYPE     "atomic container signature"
#define OCI_ATOMIC_MAX      (4u << 20) /* containers/image's limit on one signature */
#define OCI_LOOKASIDE_MAX_N 1000       /* signature-N files of one image */

/* The claim's identity as containers/image writes it: "docker.io/library/x:tag" for Docker Hub
 * (its name for it), with the tag the image was named by, "REGISTRY/REPOSITORY@sha256:HEX" for
 * one named by digest, both for one named by both. */
void oci_atomic_identity(const struct oci_ref *r, char *out, size_t outlen);

/* The claim, byte for byte as containers/image's json.Marshal writes it:
 * {"critical":{"identity":{"docker-reference":..},"image":{"docker-manifest-digest":..},
 * "type":"atomic container signature"},"optional":{"creator":..,"timestamp":..}}. */
int oci_atomic_claim(const char *identity, const char *digest, const char *creator,
                     int64_t timestamp, char **ret, size_t *ret_len, p11g_err *err);

/* Checks a verified claim as containers/image's signedBy with the default signedIdentity
 * (matchRepoDigestOrExact) does: the type, no unknown critical member, the manifest digest,
 * and the identity: the same name, tag (and digest) for an image named by tag, the same
 * repository (with a tag or digest: a name alone matches nothing) for one named by digest
 * alone.  0, or -1 with the
 * reason. */
int oci_atomic_check(const unsigned char *p, size_t len, const struct oci_ref *r,
                     const char *digest, p11g_err *err);

/* A lookaside store: a directory, a file:// URL, or (read only) an http(s):// URL. */
struct oci_lookaside {
	char base[2048]; /* the directory, or the URL without a trailing '/' */
	bool http;
	const char *ca_file;
};
int oci_lookaside_open(const char *where, bool for_writing, const char *ca_file,
                       struct oci_lookaside *ret, p11g_err *err);

/* Makes the image's directory of the store and checks it can be written: before the
 * signature is asked for, so that an approved use is not spent on a store that fails. */
int oci_lookaside_prepare(const struct oci_lookaside *l, const struct oci_ref *r,
                          const char *digest, p11g_err *err);

/* Stores a signature as the image's next free REPO@sha256=HEX/signature-N; *ret_n is N. */
int oci_lookaside_put(const struct oci_lookaside *l, const struct oci_ref *r, const char *digest,
                      const void *sig, size_t len, unsigned *ret_n, char *path, size_t pathlen,
                      p11g_err *err);

/* Reads signature-n of the image: 0, 1 when there is none (the list ends there), -1. */
int oci_lookaside_get(const struct oci_lookaside *l, const struct oci_ref *r, const char *digest,
                      unsigned n, struct oci_buf *ret, p11g_err *err);

#endif
