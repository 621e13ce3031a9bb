/* Image references as cosign (go-containerregistry) reads them: registry/repository[:tag][@digest].
 */
#ifndef OCISIGN_REF_H
#define OCISIGN_REF_H

#include "ocisign.h"

#define OCI_REGISTRY_MAX   255
#define OCI_REPOSITORY_MAX 255
#define OCI_TAG_MAX        127

/* Docker Hub's canonical name in cosign payloads, and where its API lives. */
#define OCI_DEFAULT_REGISTRY "index.docker.io"
#define OCI_DOCKERHUB_API    "registry-1.docker.io"

struct oci_ref {
	char registry[OCI_REGISTRY_MAX + 1];     /* "index.docker.io", "127.0.0.1:5000" */
	char repository[OCI_REPOSITORY_MAX + 1]; /* "library/busybox" */
	char tag[OCI_TAG_MAX + 1];               /* "" when the reference names no tag */
	char digest[OCI_DIGEST_LEN + 1];         /* "" when the reference names no digest */
};

/* Parses an image reference with go-containerregistry's rules, so payloads
 * name the same repository cosign would: the first path component is a
 * registry only if it contains '.' or ':'; "docker.io" and no registry mean
 * index.docker.io, where a one-component repository gets "library/"; a
 * repository is 2..255 of [a-z0-9_-./]; a tag 1..127 of [A-Za-z0-9_.-]; a
 * digest sha256:<64 lowercase hex>; with both, the digest identifies.
 * Returns 0, or -1 with a message naming what is wrong. */
int oci_ref_parse(const char *s, struct oci_ref *ret, p11g_err *err);

/* "registry/repository": the docker-reference of a payload. */
void oci_ref_name(const struct oci_ref *r, char *out, size_t outlen);

/* The host[:port] that serves the registry's API. */
const char *oci_ref_api_host(const struct oci_ref *r);

/* The tag or digest as the user gave it ("latest" when neither). */
const char *oci_ref_reference(const struct oci_ref *r);

#endif
