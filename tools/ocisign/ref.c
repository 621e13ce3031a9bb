/* Image reference parsing with go-containerregistry's rules (what cosign names in its payloads). */
#include <ctype.h>

#include "ref.h"

static bool all_of(const char *s, size_t len, const char *allowed)
{
	for (size_t i = 0; i < len; i++)
		if (!s[i] || !strchr(allowed, s[i]))
			return false;
	return true;
}

/* host, host:port, [v6] or [v6]:port.  go-containerregistry only asks that
 * it be a URI authority; we also refuse user info and odd characters so the
 * name can go into a URL unescaped. */
static bool registry_valid(const char *s, size_t len)
{
	static const char host[] =
	    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-";
	const char *colon;
	size_t hlen;

	if (len == 0 || len > OCI_REGISTRY_MAX)
		return false;
	if (s[0] == '[') {
		const char *close = memchr(s, ']', len);
		if (!close || close == s + 1 ||
		    !all_of(s + 1, (size_t)(close - s - 1), "0123456789abcdefABCDEF:."))
			return false;
		colon = close + 1 < s + len ? close + 1 : NULL;
		if (colon && *colon != ':')
			return false;
	} else {
		colon = memchr(s, ':', len);
		hlen = colon ? (size_t)(colon - s) : len;
		if (hlen == 0 || !all_of(s, hlen, host) || s[0] == '-' || s[0] == '.')
			return false;
	}
	if (colon) {
		size_t plen = len - (size_t)(colon + 1 - s);
		if (plen == 0 || plen > 5 || !all_of(colon + 1, plen, "0123456789"))
			return false;
		unsigned long port = strtoul(colon + 1, NULL, 10);
		if (port == 0 || port > 65535)
			return false;
	}
	return true;
}

static int set_repository(struct oci_ref *r, const char *name, size_t len, p11g_err *err)
{
	static const char repo_chars[] = "abcdefghijklmnopqrstuvwxyz0123456789_-./";
	const char *slash = memchr(name, '/', len);
	const char *repo = name;
	size_t rlen = len;

	if (len == 0)
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "a repository name must be given");
	if (slash && (memchr(name, '.', (size_t)(slash - name)) ||
	              memchr(name, ':', (size_t)(slash - name)))) {
		size_t glen = (size_t)(slash - name);
		if (!registry_valid(name, glen))
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "bad registry \"%.*s\": expected host or host:port",
			                    (int)glen, name);
		memcpy(r->registry, name, glen);
		r->registry[glen] = '\0';
		repo = slash + 1;
		rlen = len - glen - 1;
	} else {
		snprintf(r->registry, sizeof(r->registry), "%s", OCI_DEFAULT_REGISTRY);
	}
	if (!strcmp(r->registry, "docker.io"))
		snprintf(r->registry, sizeof(r->registry), "%s", OCI_DEFAULT_REGISTRY);
	if (rlen < 2 || rlen > OCI_REPOSITORY_MAX || !all_of(repo, rlen, repo_chars))
		return p11g_err_set(
		    err, P11G_E_BAD_REQUEST,
		    "bad repository \"%.*s\": 2 to %d characters of a-z 0-9 _ - . /", (int)rlen,
		    repo, OCI_REPOSITORY_MAX);
	/* each path component starts and ends with a letter or digit (the distribution spec's
	 * grammar): no empty, "." or ".." component reaches a URL or a lookaside path */
	for (size_t i = 0; i < rlen;) {
		size_t n = strcspn(repo + i, "/");
		if (n > rlen - i)
			n = rlen - i;
		if (n == 0 || !isalnum((unsigned char)repo[i]) ||
		    !isalnum((unsigned char)repo[i + n - 1]))
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "bad repository \"%.*s\": each /-separated part starts "
			                    "and ends with a-z or 0-9",
			                    (int)rlen, repo);
		i += n + 1;
		if (i == rlen) /* a trailing slash */
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "bad repository \"%.*s\": it ends with /", (int)rlen,
			                    repo);
	}
	/* Docker Hub's one-component names live under library/. */
	bool implicit = !memchr(repo, '/', rlen) && !strcmp(r->registry, OCI_DEFAULT_REGISTRY);
	int n = snprintf(r->repository, sizeof(r->repository), "%s%.*s", implicit ? "library/" : "",
	                 (int)rlen, repo);
	if (n < 0 || (size_t)n >= sizeof(r->repository))
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "repository \"%.*s\" is too long",
		                    (int)rlen, repo);
	return 0;
}

int oci_ref_parse(const char *s, struct oci_ref *ret, p11g_err *err)
{
	static const char tag_chars[] =
	    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.";
	struct oci_ref r = {0};
	size_t len = strlen(s);
	const char *at = strchr(s, '@');

	if (len == 0)
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "empty image reference");
	if (len > 1024)
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "image reference longer than 1024 bytes");
	if (at) {
		if (strchr(at + 1, '@'))
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "bad image reference \"%s\": more than one '@'", s);
		if (!oci_digest_valid(at + 1))
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "bad digest \"%s\" in \"%s\": expected sha256:<64 "
			                    "lowercase hex digits>",
			                    at + 1, s);
		memcpy(r.digest, at + 1, OCI_DIGEST_LEN + 1);
		len = (size_t)(at - s);
	}
	/* A last ':' starts a tag unless a '/' follows it (then it was a port). */
	const char *colon = NULL;
	for (size_t i = len; i > 0; i--)
		if (s[i - 1] == ':') {
			colon = s + i - 1;
			break;
		}
	size_t name_len = len;
	if (colon && !memchr(colon + 1, '/', len - (size_t)(colon + 1 - s))) {
		size_t tlen = len - (size_t)(colon + 1 - s);
		/* the distribution spec's [\w][\w.-]{0,127}: no '.' or '-' first */
		if (tlen == 0 || tlen > OCI_TAG_MAX || !all_of(colon + 1, tlen, tag_chars) ||
		    colon[1] == '.' || colon[1] == '-')
			return p11g_err_set(
			    err, P11G_E_BAD_REQUEST,
			    "bad tag \"%.*s\" in \"%s\": 1 to %d characters of A-Z a-z 0-9 _ . -",
			    (int)tlen, colon + 1, s, OCI_TAG_MAX);
		memcpy(r.tag, colon + 1, tlen);
		r.tag[tlen] = '\0';
		name_len = (size_t)(colon - s);
	}
	if (set_repository(&r, s, name_len, err) < 0)
		return -1;
	*ret = r;
	return 0;
}

void oci_ref_name(const struct oci_ref *r, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s/%s", r->registry, r->repository);
}

const char *oci_ref_api_host(const struct oci_ref *r)
{
	return strcmp(r->registry, OCI_DEFAULT_REGISTRY) ? r->registry : OCI_DOCKERHUB_API;
}

const char *oci_ref_reference(const struct oci_ref *r)
{
	if (r->digest[0])
		return r->digest;
	return r->tag[0] ? r->tag : "latest";
}
