/* ocisign's small shared helpers: bounded buffers, file reading, base64, SHA-256. */
#include <fcntl.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "ocisign.h"

int oci_buf_append(struct oci_buf *b, const void *p, size_t n)
{
	if (n > b->max || b->len > b->max - n) {
		b->overflow = true;
		return -1;
	}
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + n + 1)
			cap *= 2;
		unsigned char *d = realloc(b->data, cap);
		if (!d)
			return -1;
		b->data = d;
		b->cap = cap;
	}
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

int oci_buf_puts(struct oci_buf *b, const char *s)
{
	return oci_buf_append(b, s, strlen(s));
}

void oci_buf_free(struct oci_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

char *oci_buf_steal(struct oci_buf *b, size_t *ret_len)
{
	char *s = (char *)b->data;
	if (!s)
		s = calloc(1, 1);
	if (ret_len)
		*ret_len = b->len;
	b->data = NULL;
	b->len = b->cap = 0;
	return s;
}

int oci_read_file(const char *path, size_t max, struct oci_buf *ret, const char *what,
                  p11g_err *err)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	struct stat st;
	struct oci_buf b;
	unsigned char chunk[8192];

	if (fd < 0)
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "cannot open %s %s: %s", what, path,
		                    strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "%s %s is not a regular file", what,
		                    path);
	oci_buf_init(&b, max);
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			oci_buf_free(&b);
			return p11g_err_set(err, P11G_E_BAD_REQUEST, "cannot read %s %s: %s", what,
			                    path, strerror(errno));
		}
		if (n == 0)
			break;
		if (oci_buf_append(&b, chunk, (size_t)n) < 0) {
			bool big = b.overflow;
			oci_buf_free(&b);
			return big ? p11g_err_set(err, P11G_E_BAD_REQUEST,
			                          "%s %s is larger than %zu bytes", what, path, max)
			           : p11g_err_set(err, P11G_E_INTERNAL, "out of memory reading %s",
			                          path);
		}
	}
	if (!b.data && oci_buf_append(&b, "", 0) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	*ret = b;
	return 0;
}

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *oci_b64_encode(const unsigned char *p, size_t n)
{
	if (n > (SIZE_MAX / 4) * 3 - 3)
		return NULL;
	size_t olen = (n + 2) / 3 * 4;
	char *out = malloc(olen + 1), *o = out;
	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned)p[i] << 16;
		if (i + 1 < n)
			v |= (unsigned)p[i + 1] << 8;
		if (i + 2 < n)
			v |= p[i + 2];
		*o++ = b64chars[v >> 18 & 63];
		*o++ = b64chars[v >> 12 & 63];
		*o++ = i + 1 < n ? b64chars[v >> 6 & 63] : '=';
		*o++ = i + 2 < n ? b64chars[v & 63] : '=';
	}
	*o = '\0';
	return out;
}

static int b64val(char c)
{
	const char *p = c ? strchr(b64chars, c) : NULL;
	return p ? (int)(p - b64chars) : -1;
}

int oci_b64_decode(const char *s, size_t len, unsigned char **ret, size_t *ret_len)
{
	if (len % 4)
		return -1;
	size_t pad = 0;
	if (len && s[len - 1] == '=')
		pad = len >= 2 && s[len - 2] == '=' ? 2 : 1;
	unsigned char *out = malloc(len / 4 * 3 + 1);
	size_t o = 0;
	if (!out)
		return -1;
	for (size_t i = 0; i < len; i += 4) {
		bool last = i + 4 == len;
		int v[4];
		for (int j = 0; j < 4; j++) {
			bool padded = last && j >= 4 - (int)pad;
			v[j] = padded ? 0 : b64val(s[i + j]);
			if (v[j] < 0) {
				free(out);
				return -1;
			}
		}
		unsigned w = (unsigned)v[0] << 18 | (unsigned)v[1] << 12 | (unsigned)v[2] << 6 |
		             (unsigned)v[3];
		out[o++] = (unsigned char)(w >> 16);
		if (!(last && pad == 2))
			out[o++] = (unsigned char)(w >> 8);
		if (!(last && pad >= 1))
			out[o++] = (unsigned char)w;
	}
	*ret = out;
	*ret_len = o;
	return 0;
}

void oci_sha256(const void *p, size_t n, unsigned char out[32])
{
	SHA256(p, n, out);
}

void oci_sha256_digest(const void *p, size_t n, char out[OCI_DIGEST_LEN + 1])
{
	unsigned char md[32];
	SHA256(p, n, md);
	memcpy(out, "sha256:", 7);
	p11g_hex_encode(md, sizeof(md), out + 7);
}

bool oci_digest_valid(const char *s)
{
	if (strncmp(s, "sha256:", 7) || strlen(s) != OCI_DIGEST_LEN)
		return false;
	for (const char *p = s + 7; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return false;
	return true;
}
