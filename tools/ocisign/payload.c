/* The cosign simple-signing payload, byte-identical to cosign's Go encoding, and its parser. */
#include <jansson.h>

#include "payload.h"

#include "approvald/textsafe.h"

int oci_annotation_parse(const char *arg, struct oci_annotation *ret, p11g_err *err)
{
	const char *eq = strchr(arg, '=');
	if (!eq || strchr(eq + 1, '='))
		return p11g_err_set(
		    err, P11G_E_BAD_REQUEST,
		    "bad annotation \"%s\": expected KEY=VALUE with exactly one '='", arg);
	ret->key = strndup(arg, (size_t)(eq - arg));
	if (!ret->key)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	ret->value = eq + 1;
	return 0;
}

int oci_json_go_string(struct oci_buf *b, const char *str, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *s = (const unsigned char *)str;
	int r = oci_buf_append(b, "\"", 1);

	for (size_t i = 0; i < len && r == 0;) {
		unsigned char c = s[i];
		char esc[8];
		if (c < 0x80) {
			const char *short_esc = NULL;
			switch (c) {
			case '"':
				short_esc = "\\\"";
				break;
			case '\\':
				short_esc = "\\\\";
				break;
			case '\b':
				short_esc = "\\b";
				break;
			case '\f':
				short_esc = "\\f";
				break;
			case '\n':
				short_esc = "\\n";
				break;
			case '\r':
				short_esc = "\\r";
				break;
			case '\t':
				short_esc = "\\t";
				break;
			}
			if (short_esc) {
				r = oci_buf_puts(b, short_esc);
			} else if (c < 0x20 || c == '<' || c == '>' || c == '&') {
				memcpy(esc, "\\u00", 4);
				esc[4] = hex[c >> 4];
				esc[5] = hex[c & 15];
				r = oci_buf_append(b, esc, 6);
			} else {
				r = oci_buf_append(b, &c, 1);
			}
			i++;
			continue;
		}
		uint32_t cp;
		/* 0 for an invalid sequence: Go replaces each invalid byte with U+FFFD */
		size_t n = p11g_utf8_decode(s + i, len - i, &cp);
		if (n == 0) {
			r = oci_buf_puts(b, "\\ufffd");
			i++;
		} else if (cp == 0x2028 || cp == 0x2029) {
			/* U+2028 and U+2029 break JavaScript string literals; Go escapes them. */
			r = oci_buf_puts(b, cp == 0x2028 ? "\\u2028" : "\\u2029");
			i += 3;
		} else {
			r = oci_buf_append(b, s + i, n);
			i += n;
		}
	}
	return r < 0 ? r : oci_buf_append(b, "\"", 1);
}

static int cmp_ann(const void *a, const void *b)
{
	const struct oci_annotation *x = a, *y = b;
	return strcmp(x->key, y->key);
}

int oci_payload_build(const char *docker_reference, const char *digest,
                      const struct oci_annotation *ann, size_t n_ann, char **ret, size_t *ret_len,
                      p11g_err *err)
{
	struct oci_buf b;
	struct oci_annotation *sorted = NULL;
	size_t n = 0;
	int r;

	oci_buf_init(&b, OCI_SMALL_MAX);
	if (n_ann) {
		/* A Go map: the last value of a repeated key wins, keys come out sorted. */
		sorted = calloc(n_ann, sizeof(*sorted));
		if (!sorted)
			return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
		for (size_t i = 0; i < n_ann; i++) {
			size_t j;
			for (j = 0; j < n; j++)
				if (!strcmp(sorted[j].key, ann[i].key))
					break;
			sorted[j] = ann[i];
			if (j == n)
				n++;
		}
		qsort(sorted, n, sizeof(*sorted), cmp_ann);
	}
	r = oci_buf_puts(&b, "{\"critical\":{\"identity\":{\"docker-reference\":");
	if (!r)
		r = oci_json_go_string(&b, docker_reference, strlen(docker_reference));
	if (!r)
		r = oci_buf_puts(&b, "},\"image\":{\"docker-manifest-digest\":");
	if (!r)
		r = oci_json_go_string(&b, digest, strlen(digest));
	if (!r)
		r = oci_buf_puts(&b, "},\"type\":\"" OCI_PAYLOAD_TYPE "\"},\"optional\":");
	if (!r && n == 0)
		r = oci_buf_puts(&b, "null");
	for (size_t i = 0; i < n && !r; i++) {
		r = oci_buf_puts(&b, i ? "," : "{");
		if (!r)
			r = oci_json_go_string(&b, sorted[i].key, strlen(sorted[i].key));
		if (!r)
			r = oci_buf_puts(&b, ":");
		if (!r)
			r = oci_json_go_string(&b, sorted[i].value, strlen(sorted[i].value));
		if (!r && i + 1 == n)
			r = oci_buf_puts(&b, "}");
	}
	if (!r)
		r = oci_buf_puts(&b, "}");
	free(sorted);
	if (r < 0) {
		bool big = b.overflow;
		oci_buf_free(&b);
		if (big)
			return p11g_err_set(
			    err, P11G_E_BAD_REQUEST,
			    "payload larger than %u bytes: fewer or shorter annotations",
			    OCI_SMALL_MAX);
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	}
	*ret = oci_buf_steal(&b, ret_len);
	return 0;
}

int oci_payload_parse(const unsigned char *p, size_t len, char digest[OCI_DIGEST_LEN + 1],
                      char *ret_ref, size_t ref_len, p11g_err *err)
{
	json_error_t jerr;
	json_t *root = json_loadb((const char *)p, len, JSON_REJECT_DUPLICATES, &jerr);
	const char *type, *dig, *ref;
	int r = 0;

	if (!root)
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "payload is not JSON: %s", jerr.text);
	json_t *crit = json_object_get(root, "critical");
	type = json_string_value(json_object_get(crit, "type"));
	dig = json_string_value(
	    json_object_get(json_object_get(crit, "image"), "docker-manifest-digest"));
	ref = json_string_value(
	    json_object_get(json_object_get(crit, "identity"), "docker-reference"));
	if (!type || strcmp(type, OCI_PAYLOAD_TYPE))
		r = p11g_err_set(err, P11G_E_BAD_REQUEST,
		                 "payload is not a cosign container image signature");
	else if (!dig || !oci_digest_valid(dig))
		r = p11g_err_set(err, P11G_E_BAD_REQUEST,
		                 "payload has no sha256 docker-manifest-digest");
	else if (!ref)
		r = p11g_err_set(err, P11G_E_BAD_REQUEST, "payload has no docker-reference");
	else if (strlen(ref) >= ref_len)
		/* Cut, it could name another image (or end inside a UTF-8 sequence). */
		r = p11g_err_set(err, P11G_E_BAD_REQUEST,
		                 "payload's docker-reference is longer than %zu bytes",
		                 ref_len - 1);
	if (r == 0) {
		memcpy(digest, dig, OCI_DIGEST_LEN + 1);
		snprintf(ret_ref, ref_len, "%s", ref);
	}
	json_decref(root);
	return r;
}
