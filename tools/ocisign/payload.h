/* The cosign simple-signing payload: building it byte for byte as cosign does, and reading it back.
 */
#ifndef OCISIGN_PAYLOAD_H
#define OCISIGN_PAYLOAD_H

#include "ocisign.h"

#define OCI_PAYLOAD_TYPE "cosign container image signature"

struct oci_annotation {
	char *key;         /* malloc'd by oci_annotation_parse */
	const char *value; /* points into the argument */
};

/* Parses one -a argument as cosign does: exactly one '=' (cosign splits on
 * every '=' and refuses more than two parts); the key may be empty.
 * ret->key is malloc'd. */
int oci_annotation_parse(const char *arg, struct oci_annotation *ret, p11g_err *err);

/* Builds {"critical":{"identity":{"docker-reference":REF},"image":
 * {"docker-manifest-digest":DIGEST},"type":"cosign container image
 * signature"},"optional":ANNOTATIONS|null} exactly as Go's encoding/json
 * writes cosign's struct: compact, members in struct order, annotation keys
 * sorted bytewise, a repeated key keeping its last value, HTML-safe string
 * escapes, no trailing newline.  *ret is malloc'd. */
int oci_payload_build(const char *docker_reference, const char *digest,
                      const struct oci_annotation *ann, size_t n_ann, char **ret, size_t *ret_len,
                      p11g_err *err);

/* Appends s as a JSON string the way Go's json.Marshal does (\u003c for '<',
 * '>' and '&', \u2028/\u2029, \ufffd for invalid UTF-8, \b \f \n \r \t,
 * other control bytes as \u00xx). */
int oci_json_go_string(struct oci_buf *b, const char *s, size_t len);

/* Reads a payload: its type must be cosign's; returns the
 * docker-manifest-digest and the docker-reference (refused, not cut, when it
 * does not fit ref_len with its NUL). */
int oci_payload_parse(const unsigned char *p, size_t len, char digest[OCI_DIGEST_LEN + 1],
                      char *ret_ref, size_t ref_len, p11g_err *err);

#endif
