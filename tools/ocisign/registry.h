/* The OCI distribution API client: manifests and blobs over libcurl, with authentication and
 * retries. */
#ifndef OCISIGN_REGISTRY_H
#define OCISIGN_REGISTRY_H

#include "ocisign.h"
#include "ref.h"

#define OCI_MT_OCI_MANIFEST    "application/vnd.oci.image.manifest.v1+json"
#define OCI_MT_OCI_INDEX       "application/vnd.oci.image.index.v1+json"
#define OCI_MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define OCI_MT_DOCKER_LIST     "application/vnd.docker.distribution.manifest.list.v2+json"
#define OCI_MT_OCI_CONFIG      "application/vnd.oci.image.config.v1+json"

struct oci_reg_opts {
	const char *creds;   /* --creds USER:PASS, or NULL */
	const char *ca_file; /* --ca-file, or NULL (then $SSL_CERT_FILE, else the system's) */
	bool insecure;       /* plain http, asked for explicitly */
	bool push;           /* ask bearer tokens for pull,push */
};

/* A session with one repository of one registry. */
struct oci_reg;

struct oci_manifest {
	struct oci_buf body;
	char media_type[128];
	char digest[OCI_DIGEST_LEN + 1]; /* sha256 of the body */
};

int oci_reg_open(const struct oci_ref *ref, const struct oci_reg_opts *opts, struct oci_reg **ret,
                 p11g_err *err);
void oci_reg_close(struct oci_reg *r);

/* GET a manifest by tag or digest (OCI and Docker manifests and indexes
 * accepted, at most OCI_MANIFEST_MAX).  The digest is the body's sha256,
 * checked against Docker-Content-Digest and against a digest reference.
 * Returns 0, 1 when it does not exist and allow_missing, or -1. */
int oci_reg_get_manifest(struct oci_reg *r, const char *reference, bool allow_missing,
                         struct oci_manifest *ret, p11g_err *err);
void oci_manifest_free(struct oci_manifest *m);

/* GET a blob of at most max bytes, checked against its digest. */
int oci_reg_get_blob(struct oci_reg *r, const char *digest, size_t max, struct oci_buf *ret,
                     p11g_err *err);

/* Uploads a blob unless HEAD shows it is there: POST, then one PUT with the
 * digest (monolithic; what ECR accepts). */
int oci_reg_put_blob(struct oci_reg *r, const void *data, size_t len, p11g_err *err);

/* PUT a manifest under a tag. */
int oci_reg_put_manifest(struct oci_reg *r, const char *tag, const char *media_type,
                         const void *data, size_t len, p11g_err *err);

/* How many tokens this session fetched (tests and --debug read it). */
unsigned oci_reg_token_fetches(const struct oci_reg *r);

/* The human form of a registry's OCI error body: "CODE: message; ...". */
void oci_registry_error_text(const unsigned char *body, size_t len, char *out, size_t outlen);

#endif
