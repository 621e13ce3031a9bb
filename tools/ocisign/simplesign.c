/* Simple signing's claim and lookaside store (simplesign.h). */
#include <curl/curl.h>
#include <fcntl.h>
#include <jansson.h>
#include <sys/stat.h>

#include "payload.h"
#include "simplesign.h"

/* containers/image names Docker Hub docker.io, where cosign says index.docker.io */
static void claim_name(const struct oci_ref *r, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s/%s",
	         strcmp(r->registry, OCI_DEFAULT_REGISTRY) ? r->registry : "docker.io",
	         r->repository);
}

void oci_atomic_identity(const struct oci_ref *r, char *out, size_t outlen)
{
	char name[600];
	claim_name(r, name, sizeof(name));
	/* named by both: the tag (skopeo takes no reference with both, and the digest is the
	 * claim's own) */
	if (r->digest[0] && !r->tag[0])
		snprintf(out, outlen, "%s@%s", name, r->digest);
	else
		snprintf(out, outlen, "%s:%s", name, r->tag[0] ? r->tag : "latest");
}

int oci_atomic_claim(const char *identity, const char *digest, const char *creator,
                     int64_t timestamp, char **ret, size_t *ret_len, p11g_err *err)
{
	struct oci_buf b;
	char ts[32];
	oci_buf_init(&b, OCI_SMALL_MAX);
	snprintf(ts, sizeof(ts), "%lld", (long long)timestamp);
	/* Go's json.Marshal of containers/image's maps: keys sorted, <>& escaped */
	int r = oci_buf_puts(&b, "{\"critical\":{\"identity\":{\"docker-reference\":") < 0 ||
	        oci_json_go_string(&b, identity, strlen(identity)) < 0 ||
	        oci_buf_puts(&b, "},\"image\":{\"docker-manifest-digest\":") < 0 ||
	        oci_json_go_string(&b, digest, strlen(digest)) < 0 ||
	        oci_buf_puts(&b, "},\"type\":\"" OCI_ATOMIC_TYPE "\"},\"optional\":{\"creator\":") <
	            0 ||
	        oci_json_go_string(&b, creator, strlen(creator)) < 0 ||
	        oci_buf_puts(&b, ",\"timestamp\":") < 0 || oci_buf_puts(&b, ts) < 0 ||
	        oci_buf_puts(&b, "}}") < 0;
	if (r) {
		oci_buf_free(&b);
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory (claim)");
	}
	*ret = oci_buf_steal(&b, ret_len);
	return 0;
}

static bool exactly(const json_t *o, const char *a, const char *b, const char *c)
{
	size_t n = 0;
	for (const char *const *k = (const char *const[]){a, b, c, NULL}; *k; k++, n++)
		if (!json_object_get(o, *k))
			return false;
	return json_is_object(o) && json_object_size(o) == n;
}

int oci_atomic_check(const unsigned char *p, size_t len, const struct oci_ref *r,
                     const char *digest, p11g_err *err)
{
	json_error_t je;
	json_t *root = json_loadb((const char *)p, len, JSON_REJECT_DUPLICATES, &je);
	const json_t *crit = json_object_get(root, "critical");
	const char *type = json_string_value(json_object_get(crit, "type"));
	const char *ref = json_string_value(
	    json_object_get(json_object_get(crit, "identity"), "docker-reference"));
	const char *dig = json_string_value(
	    json_object_get(json_object_get(crit, "image"), "docker-manifest-digest"));
	char want[800], name[600];
	int res = -1;

	if (!root) {
		p11g_err_set(err, P11G_E_BAD_SIGNATURE, "the signed claim is not JSON: %s",
		             je.text);
		goto out;
	}
	if (!exactly(root, "critical", "optional", NULL) ||
	    !exactly(crit, "identity", "image", "type") ||
	    !exactly(json_object_get(crit, "identity"), "docker-reference", NULL, NULL) ||
	    !exactly(json_object_get(crit, "image"), "docker-manifest-digest", NULL, NULL) ||
	    !type || strcmp(type, OCI_ATOMIC_TYPE) || !ref || !dig) {
		p11g_err_set(err, P11G_E_BAD_SIGNATURE,
		             "the signed claim is not an atomic container signature");
		goto out;
	}
	if (strcmp(dig, digest)) {
		p11g_err_set(err, P11G_E_BAD_SIGNATURE, "the claim signs %.100s, not this image",
		             dig);
		goto out;
	}
	/* the identity read as containers/image reads it (Docker Hub names normalised), then
	 * matched as its matchRepoDigestOrExact does; a name alone matches nothing */
	struct oci_ref cref;
	p11g_err perr;
	/* (containers/image reads "localhost/x" as a registry, go-containerregistry and so
	 * oci_ref_parse as Docker Hub's localhost/x: such a claim is refused) */
	if (!strncmp(ref, "localhost/", 10) || oci_ref_parse(ref, &cref, &perr) < 0 ||
	    (!cref.tag[0] && !cref.digest[0])) {
		p11g_err_set(
		    err, P11G_E_BAD_SIGNATURE,
		    "the claim's identity %.300s is no image reference with a tag or digest", ref);
		goto out;
	}
	bool same_repo =
	    !strcmp(cref.registry, r->registry) && !strcmp(cref.repository, r->repository);
	bool exact = r->tag[0] || !r->digest[0]; /* named by tag: the same tag, no digest */
	const char *tag = r->tag[0] ? r->tag : "latest";
	oci_atomic_identity(r, want, sizeof(want));
	claim_name(r, name, sizeof(name));
	if (!same_repo || (exact && (cref.digest[0] || strcmp(cref.tag, tag)))) {
		p11g_err_set(err, P11G_E_BAD_SIGNATURE, "the claim is for %.300s, not %s", ref,
		             exact ? want : name);
		goto out;
	}
	res = 0;
out:
	json_decref(root);
	return res;
}

int oci_lookaside_open(const char *where, bool for_writing, const char *ca_file,
                       struct oci_lookaside *ret, p11g_err *err)
{
	memset(ret, 0, sizeof(*ret));
	ret->ca_file = ca_file;
	const char *path = where;
	if (!strncmp(where, "http://", 7) || !strncmp(where, "https://", 8)) {
		if (for_writing)
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "%s: signatures are written to a directory or file:// "
			                    "URL (a web server then serves it), as skopeo writes "
			                    "them",
			                    where);
		ret->http = true;
	} else if (!strncmp(where, "file://", 7)) {
		path = where + 7;
		if (path[0] != '/')
			return p11g_err_set(
			    err, P11G_E_BAD_REQUEST,
			    "%s: a file:// URL names an absolute path (file:///...)", where);
	} else if (strstr(where, "://")) {
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "%s: a directory, file:///DIR, http:// or https:// URL", where);
	}
	size_t n = strlen(ret->http ? where : path);
	while (n > 1 && (ret->http ? where : path)[n - 1] == '/')
		n--;
	if (n == 0 || n >= sizeof(ret->base))
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "bad signature store \"%.200s\"",
		                    where);
	memcpy(ret->base, ret->http ? where : path, n);
	ret->base[n] = '\0';
	return 0;
}

static void sig_path(const struct oci_lookaside *l, const struct oci_ref *r, const char *digest,
                     unsigned n, char *out, size_t outlen)
{
	/* containers/image: BASE/REPOSITORY@sha256=HEX/signature-N */
	snprintf(out, outlen, "%s/%s@sha256=%s/signature-%u", l->base, r->repository, digest + 7,
	         n);
}

static int mkdirs(char *path, p11g_err *err)
{
	for (char *s = path + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		int r = mkdir(path, 0755);
		*s = '/';
		if (r < 0 && errno != EEXIST)
			return p11g_err_set(err, P11G_E_INTERNAL, "cannot create %s: %s", path,
			                    strerror(errno));
	}
	return 0;
}

int oci_lookaside_prepare(const struct oci_lookaside *l, const struct oci_ref *r,
                          const char *digest, p11g_err *err)
{
	char path[3072];
	sig_path(l, r, digest, 1, path, sizeof(path));
	if (mkdirs(path, err) < 0)
		return -1;
	*strrchr(path, '/') = '\0';
	if (access(path, W_OK | X_OK) < 0)
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "cannot write to %s: %s", path,
		                    strerror(errno));
	return 0;
}

/* Writes all of p to fd, then flushes it to disk; closes fd either way. */
static int write_closed(int fd, const void *p, size_t len)
{
	const unsigned char *b = p;
	int r = 0;
	while (len && r == 0) {
		ssize_t w = write(fd, b, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			r = -1;
		else
			b += w, len -= (size_t)w;
	}
	if (r == 0 && fsync(fd) < 0)
		r = -1;
	int saved = errno;
	if (close(fd) < 0 && r == 0)
		return -1;
	errno = saved;
	return r;
}

int oci_lookaside_put(const struct oci_lookaside *l, const struct oci_ref *r, const char *digest,
                      const void *sig, size_t len, unsigned *ret_n, char *path, size_t pathlen,
                      p11g_err *err)
{
	char dir[3072], tmp[3100];

	sig_path(l, r, digest, 1, dir, sizeof(dir));
	if (mkdirs(dir, err) < 0)
		return -1;
	*strrchr(dir, '/') = '\0';
	/* written whole under a name no reader looks for, then linked as the next free
	 * signature-N: a reader never sees half a signature, two signers never one file */
	snprintf(tmp, sizeof(tmp), "%s/.signature-XXXXXX", dir);
	int fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "cannot create a file in %s: %s", dir,
		                    strerror(errno));
	int written = fchmod(fd, 0644), saved = errno;
	if (written < 0)
		close(fd);
	else if ((written = write_closed(fd, sig, len)) < 0)
		saved = errno;
	if (written < 0) {
		unlink(tmp);
		return p11g_err_set(err, P11G_E_INTERNAL, "cannot write %s: %s", tmp,
		                    strerror(saved));
	}
	for (unsigned n = 1; n <= OCI_LOOKASIDE_MAX_N; n++) {
		sig_path(l, r, digest, n, path, pathlen);
		int linked = link(tmp, path);
		if (linked < 0 && (errno == EPERM || errno == ENOTSUP || errno == EOPNOTSUPP)) {
			/* a file system without hard links: the next free name, with O_EXCL */
			int ofd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
			linked = ofd < 0 ? -1 : write_closed(ofd, sig, len);
			if (ofd >= 0 && linked < 0) {
				saved = errno;
				unlink(path);
				unlink(tmp);
				return p11g_err_set(err, P11G_E_INTERNAL, "cannot write %s: %s",
				                    path, strerror(saved));
			}
		}
		if (linked == 0) {
			unlink(tmp);
			int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			/* the signature is there: a failed flush of its directory is said, not an
			 * error (a retry would spend another approved use) */
			if (dfd < 0 || fsync(dfd) < 0)
				fprintf(stderr, "ocisign: warning: cannot flush %s: %s\n", dir,
				        strerror(errno));
			if (dfd >= 0)
				close(dfd);
			*ret_n = n;
			return 0;
		}
		if (errno != EEXIST) {
			saved = errno;
			unlink(tmp);
			return p11g_err_set(err, P11G_E_INTERNAL, "cannot create %s: %s", path,
			                    strerror(saved));
		}
	}
	unlink(tmp);
	return p11g_err_set(err, P11G_E_BAD_REQUEST, "%s already has %u signatures", dir,
	                    OCI_LOOKASIDE_MAX_N);
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
	return oci_buf_append(ud, p, size * n) < 0 ? 0 : size * n;
}

int oci_lookaside_get(const struct oci_lookaside *l, const struct oci_ref *r, const char *digest,
                      unsigned n, struct oci_buf *ret, p11g_err *err)
{
	char path[3072];
	sig_path(l, r, digest, n, path, sizeof(path));
	if (!l->http) {
		struct stat st;
		if (stat(path, &st) < 0 && errno == ENOENT)
			return 1;
		return oci_read_file(path, OCI_ATOMIC_MAX, ret, "signature", err);
	}
	CURL *c = curl_easy_init();
	long status = 0;
	if (!c)
		return p11g_err_set(err, P11G_E_INTERNAL, "curl_easy_init failed");
	oci_buf_init(ret, OCI_ATOMIC_MAX);
	curl_easy_setopt(c, CURLOPT_URL, path);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	/* as containers/image does: a store may redirect (to https or http, as it was given) */
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
	curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, ret);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	if (l->ca_file)
		curl_easy_setopt(c, CURLOPT_CAINFO, l->ca_file);
	CURLcode cr = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c);
	if (cr == CURLE_OK && status == 404) {
		oci_buf_free(ret);
		return 1;
	}
	if (cr != CURLE_OK || status != 200) {
		bool big = ret->overflow;
		oci_buf_free(ret);
		/* a store that does not answer is no "no signature": it fails */
		if (cr != CURLE_OK && !big)
			return p11g_err_set(err, P11G_E_PROTOCOL, "GET %s: %s", path,
			                    curl_easy_strerror(cr));
		return p11g_err_set(err, P11G_E_PROTOCOL, "GET %s: %s (HTTP %ld)", path,
		                    big ? "larger than 4 MiB" : "unexpected answer", status);
	}
	return 0;
}
