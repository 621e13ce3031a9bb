/* ocisign's shared pieces: bounded byte buffers, limits, base64 and digests.  Errors are
 * p11g_err (common.h): a P11G_E_* code and the sentence printed as "ocisign: MSG". */
#ifndef OCISIGN_H
#define OCISIGN_H

#include "p11gate/common.h"
#include "p11gate/errors.h"

#define OCI_EXIT_FAIL  1
#define OCI_EXIT_USAGE 2

/* Every response body we read is bounded: a hostile or broken registry must
 * not make us allocate without limit. */
#define OCI_MANIFEST_MAX   (4u << 20)   /* manifests and indexes */
#define OCI_BLOB_MAX       (4u << 20)   /* signature payload blobs read by verify */
#define OCI_SMALL_MAX      (256u << 10) /* token replies, error bodies, config.json, key files */
#define OCI_SIG_LAYERS_MAX 1000u        /* layers in one .sig manifest */

#define OCI_DIGEST_LEN 71 /* "sha256:" + 64 hex */

/* A growable buffer that refuses to grow past max (0: no data accepted). */
struct oci_buf {
	unsigned char *data;
	size_t len, cap, max;
	bool overflow; /* an append was refused because of max */
};

static inline void oci_buf_init(struct oci_buf *b, size_t max)
{
	memset(b, 0, sizeof(*b));
	b->max = max;
}
/* 0, or -1 (overflow set when max was the reason).  data stays NUL-terminated. */
int oci_buf_append(struct oci_buf *b, const void *p, size_t n);
int oci_buf_puts(struct oci_buf *b, const char *s);
void oci_buf_free(struct oci_buf *b);
/* Hands the bytes over (NUL-terminated) and empties the buffer. */
char *oci_buf_steal(struct oci_buf *b, size_t *ret_len);

/* Reads a whole regular file of at most max bytes (O_CLOEXEC). */
int oci_read_file(const char *path, size_t max, struct oci_buf *ret, const char *what,
                  p11g_err *err);

/* Standard base64 with padding.  encode: malloc'd string or NULL.  decode:
 * strict (no whitespace, correct padding); 0 or -1. */
char *oci_b64_encode(const unsigned char *p, size_t n);
int oci_b64_decode(const char *s, size_t len, unsigned char **ret, size_t *ret_len);

/* "sha256:<64 hex>" of the bytes; out holds OCI_DIGEST_LEN + 1. */
void oci_sha256_digest(const void *p, size_t n, char out[OCI_DIGEST_LEN + 1]);
void oci_sha256(const void *p, size_t n, unsigned char out[32]);
/* sha256:<64 lowercase hex> exactly (the only digest cosign's names accept). */
bool oci_digest_valid(const char *s);

#define _cleanup_buf_ __attribute__((cleanup(oci_buf_free)))

#endif
