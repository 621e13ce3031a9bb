/* The OCI distribution API over libcurl: auth challenges, bearer token cache, bounded bodies,
 * retries. */
#include <curl/curl.h>
#include <jansson.h>

#include "auth.h"
#include "registry.h"

#define RETRIES         3  /* on 429, 5xx and transient network errors: 4 tries in all */
#define RETRY_AFTER_CAP 30 /* seconds: a Retry-After longer than this is cut to it */
#define ACCEPT_MANIFESTS                                                                           \
	OCI_MT_OCI_MANIFEST ", " OCI_MT_OCI_INDEX ", " OCI_MT_DOCKER_MANIFEST                      \
	                    ", " OCI_MT_DOCKER_LIST

struct oci_reg {
	CURL *curl;
	struct oci_ref ref;
	char base[OCI_REGISTRY_MAX + 16]; /* "https://host:port" */
	struct oci_reg_opts opts;
	const char *ca_file;
	char *basic;     /* base64 USER:PASS, or NULL */
	bool send_basic; /* the registry asked for Basic: send it up front */
	char *token;     /* bearer token, or NULL */
	int64_t token_expiry_us;
	struct oci_challenge bearer; /* realm and service of the last Bearer challenge */
	unsigned token_fetches;
};

struct resp {
	long status;
	struct oci_buf body;
	char content_type[128];
	char digest[96];
	char location[2048];
	char www_auth[2048];
	long retry_after; /* seconds, -1 when absent */
};

static void resp_reset(struct resp *rs, size_t max)
{
	oci_buf_free(&rs->body);
	memset(rs, 0, sizeof(*rs));
	oci_buf_init(&rs->body, max);
	rs->retry_after = -1;
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	struct resp *rs = arg;
	/* A refused append aborts the transfer: curl reports CURLE_WRITE_ERROR. */
	return oci_buf_append(&rs->body, p, size * n) < 0 ? 0 : size * n;
}

static void header_value(const char *p, size_t n, size_t name_len, char *out, size_t outlen)
{
	p += name_len;
	n -= name_len;
	while (n && (*p == ' ' || *p == '\t'))
		p++, n--;
	while (n && (p[n - 1] == '\r' || p[n - 1] == '\n' || p[n - 1] == ' '))
		n--;
	if (n >= outlen)
		n = outlen - 1; /* a cut value fails later checks rather than overflowing */
	memcpy(out, p, n);
	out[n] = '\0';
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
	struct resp *rs = arg;
	size_t len = size * n;
	char tmp[32];

	if (len >= 5 && !strncmp(p, "HTTP/", 5)) {
		/* a new response (after a redirect or 100-continue): forget the last one's headers
		 */
		rs->content_type[0] = rs->digest[0] = rs->location[0] = rs->www_auth[0] = '\0';
		rs->retry_after = -1;
	} else if (len > 13 && !strncasecmp(p, "content-type:", 13)) {
		header_value(p, len, 13, rs->content_type, sizeof(rs->content_type));
		rs->content_type[strcspn(rs->content_type, "; ")] = '\0';
	} else if (len > 22 && !strncasecmp(p, "docker-content-digest:", 22)) {
		header_value(p, len, 22, rs->digest, sizeof(rs->digest));
	} else if (len > 9 && !strncasecmp(p, "location:", 9)) {
		header_value(p, len, 9, rs->location, sizeof(rs->location));
	} else if (len > 17 && !strncasecmp(p, "www-authenticate:", 17)) {
		header_value(p, len, 17, rs->www_auth, sizeof(rs->www_auth));
	} else if (len > 12 && !strncasecmp(p, "retry-after:", 12)) {
		header_value(p, len, 12, tmp, sizeof(tmp));
		char *end;
		long v = strtol(tmp, &end, 10);
		if (end != tmp && *end == '\0' && v >= 0)
			rs->retry_after = v;
		else if (tmp[0]) {
			time_t t = curl_getdate(tmp, NULL);
			rs->retry_after = t > time(NULL) ? (long)(t - time(NULL)) : 0;
		}
	}
	return len;
}

void oci_registry_error_text(const unsigned char *body, size_t len, char *out, size_t outlen)
{
	json_t *root = body && len ? json_loadb((const char *)body, len, 0, NULL) : NULL;
	const json_t *errs = json_object_get(root, "errors"), *e;
	size_t i, o = 0;

	out[0] = '\0';
	json_array_foreach(errs, i, e)
	{
		const char *code = json_string_value(json_object_get(e, "code"));
		const char *msg = json_string_value(json_object_get(e, "message"));
		int n = snprintf(out + o, outlen - o, "%s%s%s%s", i ? "; " : "", code ? code : "",
		                 code && msg ? ": " : "", msg ? msg : "");
		if (n < 0 || (size_t)n >= outlen - o)
			break;
		o += (size_t)n;
		if (i >= 3)
			break;
	}
	if (!o && body && len && !root) {
		/* not OCI error JSON: show the start of a text body */
		snprintf(out, outlen, "%.*s", (int)(len < 200 ? len : 200), (const char *)body);
	}
	/* One line: the message goes into "ocisign: ..." */
	for (char *p = out; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = ' ';
	json_decref(root);
}

static const char *status_words(long status)
{
	switch (status) {
	case 400:
		return "bad request";
	case 401:
		return "authentication required";
	case 403:
		return "access denied";
	case 404:
		return "not found";
	case 405:
		return "method not allowed";
	case 413:
		return "too large";
	case 429:
		return "too many requests";
	default:
		return status >= 500 ? "server error" : "unexpected status";
	}
}

/* The code of a refusing status: credentials refused, nothing there, the registry overloaded or
 * down (after the retries), else an answer ocisign did not expect. */
static const char *status_code(long status)
{
	if (status == 401 || status == 403)
		return P11G_E_FORBIDDEN;
	if (status == 404)
		return P11G_E_NOT_FOUND;
	if (status == 429 || status >= 500)
		return P11G_E_UNAVAILABLE;
	return P11G_E_PROTOCOL;
}

/* A transfer that failed: the registry could not be reached, or it sent more than we read. */
static const char *curl_code(CURLcode code, const struct resp *rs)
{
	return code == CURLE_WRITE_ERROR && rs->body.overflow ? P11G_E_PROTOCOL
	                                                      : P11G_E_UNAVAILABLE;
}

/* "REGISTRY: WHAT: 404 not found: MANIFEST_UNKNOWN: manifest unknown" */
static int http_fail(struct oci_reg *r, const char *what, const struct resp *rs, int tries,
                     p11g_err *err)
{
	char text[600];
	oci_registry_error_text(rs->body.data, rs->body.len, text, sizeof(text));
	const char *hint = "";
	if (rs->status == 401)
		hint = r->basic || r->token
		           ? " (the credentials were refused)"
		           : " (give --creds USER:PASSWORD or log in to the registry)";
	else if (rs->status == 403)
		hint = " (these credentials may not do this)";
	char after[48] = "";
	if (tries > 1)
		snprintf(after, sizeof(after), " after %d tries", tries);
	return p11g_err_set(err, status_code(rs->status), "%s: %s: %ld %s%s%s%s%s", r->ref.registry,
	                    what, rs->status, status_words(rs->status), after, text[0] ? ": " : "",
	                    text, hint);
}

static void sleep_s(double s)
{
	struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static bool transient_curl(CURLcode c)
{
	return c == CURLE_COULDNT_CONNECT || c == CURLE_OPERATION_TIMEDOUT ||
	       c == CURLE_RECV_ERROR || c == CURLE_SEND_ERROR || c == CURLE_GOT_NOTHING ||
	       c == CURLE_PARTIAL_FILE;
}

static void setup_tls(struct oci_reg *r)
{
	curl_easy_setopt(r->curl, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(r->curl, CURLOPT_SSL_VERIFYHOST, 2L);
	if (r->ca_file)
		curl_easy_setopt(r->curl, CURLOPT_CAINFO, r->ca_file);
	curl_easy_setopt(r->curl, CURLOPT_PROTOCOLS_STR, r->opts.insecure ? "http,https" : "https");
	curl_easy_setopt(r->curl, CURLOPT_REDIR_PROTOCOLS_STR,
	                 r->opts.insecure ? "http,https" : "https");
}

/* One HTTP exchange (no auth handling, no retries). */
static int exchange(struct oci_reg *r, const char *method, const char *url,
                    struct curl_slist *headers, const void *body, size_t blen, size_t max,
                    struct resp *rs, CURLcode *ret_code, char *curl_msg, size_t msglen)
{
	char errbuf[CURL_ERROR_SIZE] = "";
	CURL *c = r->curl;

	curl_easy_reset(c);
	resp_reset(rs, max);
	setup_tls(r);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, rs);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, rs);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "ocisign/" P11GATE_VERSION);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
	/* A stalled registry must not hang a CI job: under 1 byte/s for 60 s ends it. */
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	if (!strcmp(method, "GET")) {
		/* Blobs are often served from a CDN; curl drops our Authorization on another host.
		 */
		curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
		curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
	} else if (!strcmp(method, "HEAD")) {
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	} else {
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
	}
	CURLcode code = curl_easy_perform(c);
	*ret_code = code;
	if (code != CURLE_OK) {
		if (code == CURLE_WRITE_ERROR && rs->body.overflow)
			snprintf(curl_msg, msglen, "the response is larger than %zu bytes", max);
		else
			snprintf(curl_msg, msglen, "%s",
			         errbuf[0] ? errbuf : curl_easy_strerror(code));
		return -1;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &rs->status);
	return 0;
}

static int fetch_token(struct oci_reg *r, const char *challenge_scope, p11g_err *err)
{
	char scope[1200];
	char url[4096];
	struct resp rs = {0};
	CURLcode code;
	char cmsg[CURL_ERROR_SIZE + 64];
	struct curl_slist *h = NULL;
	int64_t started = p11g_mono_us();
	int ret = -1;

	/* Ask once for everything this session will do, so one token serves it. */
	snprintf(scope, sizeof(scope), "repository:%s:%s", r->ref.repository,
	         r->opts.push ? "pull,push" : "pull");
	if (strncasecmp(r->bearer.realm, "https://", 8) &&
	    !(r->opts.insecure && !strncasecmp(r->bearer.realm, "http://", 7)))
		return p11g_err_set(err, P11G_E_PROTOCOL,
		                    "%s: the token service %s is not https (plain http only with "
		                    "--insecure-registry)",
		                    r->ref.registry, r->bearer.realm);
	char *esc_service = curl_easy_escape(r->curl, r->bearer.service, 0);
	char *esc_scope = curl_easy_escape(r->curl, scope, 0);
	char *esc_extra = challenge_scope && *challenge_scope && strcmp(challenge_scope, scope)
	                      ? curl_easy_escape(r->curl, challenge_scope, 0)
	                      : NULL;
	int n = snprintf(url, sizeof(url), "%s%sservice=%s&scope=%s%s%s", r->bearer.realm,
	                 strchr(r->bearer.realm, '?') ? "&" : "?", esc_service ? esc_service : "",
	                 esc_scope ? esc_scope : "", esc_extra ? "&scope=" : "",
	                 esc_extra ? esc_extra : "");
	curl_free(esc_service);
	curl_free(esc_scope);
	curl_free(esc_extra);
	if (n < 0 || (size_t)n >= sizeof(url))
		return p11g_err_set(err, P11G_E_PROTOCOL, "%s: the token service URL is too long",
		                    r->ref.registry);
	char auth[1024];
	if (r->basic) {
		snprintf(auth, sizeof(auth), "Authorization: Basic %s", r->basic);
		h = curl_slist_append(h, auth);
		explicit_bzero(auth, sizeof(auth));
	}
	for (int attempt = 0;; attempt++) {
		if (exchange(r, "GET", url, h, NULL, 0, OCI_SMALL_MAX, &rs, &code, cmsg,
		             sizeof(cmsg)) < 0) {
			if (transient_curl(code) && attempt < RETRIES) {
				sleep_s(1 << attempt);
				continue;
			}
			p11g_err_set(err, curl_code(code, &rs),
			             "%s: cannot get a token from %s: %s", r->ref.registry,
			             r->bearer.realm, cmsg);
			goto out;
		}
		if ((rs.status == 429 || rs.status >= 500) && attempt < RETRIES) {
			long wait = rs.retry_after >= 0 ? rs.retry_after : 1L << attempt;
			sleep_s((double)(wait > RETRY_AFTER_CAP ? RETRY_AFTER_CAP : wait));
			continue;
		}
		break;
	}
	if (rs.status != 200) {
		char text[600];
		oci_registry_error_text(rs.body.data, rs.body.len, text, sizeof(text));
		p11g_err_set(
		    err, status_code(rs.status), "%s: the token service %s refused: %ld %s%s%s%s",
		    r->ref.registry, r->bearer.realm, rs.status, status_words(rs.status),
		    text[0] ? ": " : "", text,
		    rs.status == 401 || rs.status == 403 ? " (check --creds or the registry login)"
		                                         : "");
		goto out;
	}
	char *tok = NULL;
	long expires_in;
	if (oci_token_parse((const char *)rs.body.data, rs.body.len, &tok, &expires_in, err) < 0) {
		char m[sizeof(err->msg)];
		snprintf(m, sizeof(m), "%s", err->msg);
		p11g_err_set(err, err->code, "%s: %s", r->ref.registry, m);
		goto out;
	}
	if (r->token)
		p11g_freezero(r->token, strlen(r->token));
	r->token = tok;
	/* Cached until it expires; a tenth earlier so it cannot lapse in flight. */
	r->token_expiry_us = started + (int64_t)expires_in * 900000;
	r->token_fetches++;
	ret = 0;
out:
	curl_slist_free_all(h);
	oci_buf_free(&rs.body);
	return ret;
}

static bool token_valid(const struct oci_reg *r)
{
	return r->token && p11g_mono_us() < r->token_expiry_us;
}

/*
 * One request with authentication and retries.  A 401 is answered once per
 * scheme: Basic with the configured credentials, Bearer by fetching a token
 * (or a wider one).  429 and 5xx are retried with backoff, honouring
 * Retry-After up to RETRY_AFTER_CAP.  Other statuses go back to the caller;
 * *ret_tries says how many tries it took.
 */
static int request(struct oci_reg *r, const char *method, const char *url, const char *accept,
                   const char *content_type, const void *body, size_t blen, size_t max,
                   struct resp *rs, int *ret_tries, p11g_err *err)
{
	bool tried_basic = false, tried_bearer = false;
	int retries = 0;
	char cmsg[CURL_ERROR_SIZE + 64];

	for (;;) {
		struct curl_slist *h = NULL;
		char line[2200];
		CURLcode code;
		if (r->token && !token_valid(r) && r->bearer.realm[0]) {
			/* expired: get a fresh one before the registry has to say so */
			if (fetch_token(r, r->bearer.scope, err) < 0)
				return -1;
		}
		if (accept) {
			snprintf(line, sizeof(line), "Accept: %s", accept);
			h = curl_slist_append(h, line);
		}
		if (content_type) {
			snprintf(line, sizeof(line), "Content-Type: %s", content_type);
			h = curl_slist_append(h, line);
		}
		if (token_valid(r)) {
			snprintf(line, sizeof(line), "Authorization: Bearer %s", r->token);
			h = curl_slist_append(h, line);
		} else if (r->send_basic && r->basic) {
			snprintf(line, sizeof(line), "Authorization: Basic %s", r->basic);
			h = curl_slist_append(h, line);
		}
		explicit_bzero(line, sizeof(line));
		/* Expect: 100-continue only slows small uploads down. */
		h = curl_slist_append(h, "Expect:");
		int x = exchange(r, method, url, h, body, blen, max, rs, &code, cmsg, sizeof(cmsg));
		curl_slist_free_all(h);
		if (x < 0) {
			if (transient_curl(code) && retries < RETRIES) {
				sleep_s(1 << retries++);
				continue;
			}
			const char *hint = "";
			if (code == CURLE_PEER_FAILED_VERIFICATION)
				hint = " (trust its CA with --ca-file or SSL_CERT_FILE)";
			else if (code == CURLE_SSL_CONNECT_ERROR && !r->opts.insecure)
				hint = " (if it speaks plain http, say --insecure-registry)";
			return p11g_err_set(err, curl_code(code, rs), "%s: %s %s: %s%s",
			                    r->ref.registry, method, url, cmsg, hint);
		}
		if (rs->status == 401) {
			struct oci_challenge ch;
			if (!rs->www_auth[0] ||
			    oci_challenge_parse(rs->www_auth, strlen(rs->www_auth), &ch) < 0)
				break; /* nothing we can answer: the caller reports the 401 */
			if (ch.scheme == OCI_AUTH_BASIC && !tried_basic) {
				tried_basic = true;
				if (!r->basic)
					break;
				r->send_basic = true;
				continue;
			}
			if (ch.scheme == OCI_AUTH_BEARER && !tried_bearer) {
				tried_bearer = true;
				r->bearer = ch;
				if (fetch_token(r, ch.scope, err) < 0)
					return -1;
				continue;
			}
			break;
		}
		if ((rs->status == 429 || rs->status >= 500) && retries < RETRIES) {
			long wait = rs->retry_after >= 0 ? rs->retry_after : 1L << retries;
			retries++;
			sleep_s((double)(wait > RETRY_AFTER_CAP ? RETRY_AFTER_CAP : wait));
			continue;
		}
		break;
	}
	*ret_tries = 1 + retries; /* tries that count: an auth round trip is not a retry */
	return 0;
}

int oci_reg_open(const struct oci_ref *ref, const struct oci_reg_opts *opts, struct oci_reg **ret,
                 p11g_err *err)
{
	struct oci_reg *r = calloc(1, sizeof(*r));
	if (!r)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	r->ref = *ref;
	r->opts = *opts;
	r->ca_file = opts->ca_file;
	if (!r->ca_file) {
		/* Go programs (cosign, skopeo) honour SSL_CERT_FILE; so do we. */
		const char *env = getenv("SSL_CERT_FILE");
		if (env && *env)
			r->ca_file = env;
	}
	snprintf(r->base, sizeof(r->base), "%s://%s", opts->insecure ? "http" : "https",
	         oci_ref_api_host(ref));
	if (oci_creds_lookup(ref->registry, opts->creds, &r->basic, err) < 0) {
		free(r);
		return -1;
	}
	r->curl = curl_easy_init();
	if (!r->curl) {
		oci_reg_close(r);
		return p11g_err_set(err, P11G_E_INTERNAL, "cannot start libcurl");
	}
	*ret = r;
	return 0;
}

void oci_reg_close(struct oci_reg *r)
{
	if (!r)
		return;
	if (r->curl)
		curl_easy_cleanup(r->curl);
	if (r->basic)
		p11g_freezero(r->basic, strlen(r->basic));
	if (r->token)
		p11g_freezero(r->token, strlen(r->token));
	free(r);
}

unsigned oci_reg_token_fetches(const struct oci_reg *r)
{
	return r->token_fetches;
}

void oci_manifest_free(struct oci_manifest *m)
{
	oci_buf_free(&m->body);
}

static void url_for(const struct oci_reg *r, const char *kind, const char *what, char *out,
                    size_t outlen)
{
	snprintf(out, outlen, "%s/v2/%s/%s/%s", r->base, r->ref.repository, kind, what);
}

int oci_reg_get_manifest(struct oci_reg *r, const char *reference, bool allow_missing,
                         struct oci_manifest *ret, p11g_err *err)
{
	char url[1024], what[400];
	struct resp rs = {0};
	int tries;

	url_for(r, "manifests", reference, url, sizeof(url));
	snprintf(what, sizeof(what), "manifest %s:%s", r->ref.repository, reference);
	if (request(r, "GET", url, ACCEPT_MANIFESTS, NULL, NULL, 0, OCI_MANIFEST_MAX, &rs, &tries,
	            err) < 0)
		goto fail;
	if (rs.status == 404 && allow_missing) {
		oci_buf_free(&rs.body);
		return 1;
	}
	if (rs.status != 200) {
		http_fail(r, what, &rs, tries, err);
		goto fail;
	}
	struct oci_manifest m = {.body = rs.body};
	oci_sha256_digest(m.body.data, m.body.len, m.digest);
	if (rs.digest[0] && !strncmp(rs.digest, "sha256:", 7) && strcmp(rs.digest, m.digest)) {
		p11g_err_set(
		    err, P11G_E_PROTOCOL,
		    "%s: %s: the registry says its digest is %s but the manifest it sent is %s",
		    r->ref.registry, what, rs.digest, m.digest);
		goto fail;
	}
	if (!strncmp(reference, "sha256:", 7) && strcmp(reference, m.digest)) {
		p11g_err_set(err, P11G_E_PROTOCOL,
		             "%s: %s: the registry sent a manifest whose digest is %s",
		             r->ref.registry, what, m.digest);
		goto fail;
	}
	snprintf(m.media_type, sizeof(m.media_type), "%s", rs.content_type);
	/* Some registries send a generic Content-Type; the manifest says what it is. */
	json_t *root = json_loadb((const char *)m.body.data, m.body.len, 0, NULL);
	const char *mt = json_string_value(json_object_get(root, "mediaType"));
	if (!root) {
		json_decref(root);
		p11g_err_set(err, P11G_E_PROTOCOL, "%s: %s is not JSON", r->ref.registry, what);
		goto fail;
	}
	if (mt && (!m.media_type[0] || !strcmp(m.media_type, "application/json") ||
	           !strcmp(m.media_type, "text/plain")))
		snprintf(m.media_type, sizeof(m.media_type), "%s", mt);
	json_decref(root);
	*ret = m;
	return 0;
fail:
	oci_buf_free(&rs.body);
	return -1;
}

int oci_reg_get_blob(struct oci_reg *r, const char *digest, size_t max, struct oci_buf *ret,
                     p11g_err *err)
{
	char url[1024], what[200], got[OCI_DIGEST_LEN + 1];
	struct resp rs = {0};
	int tries;

	if (!oci_digest_valid(digest))
		return p11g_err_set(err, P11G_E_PROTOCOL,
		                    "%s: blob digest \"%.80s\" is not sha256:<hex>",
		                    r->ref.registry, digest);
	url_for(r, "blobs", digest, url, sizeof(url));
	snprintf(what, sizeof(what), "blob %s", digest);
	if (request(r, "GET", url, NULL, NULL, NULL, 0, max, &rs, &tries, err) < 0)
		goto fail;
	if (rs.status != 200) {
		http_fail(r, what, &rs, tries, err);
		goto fail;
	}
	oci_sha256_digest(rs.body.data, rs.body.len, got);
	if (strcmp(got, digest)) {
		p11g_err_set(err, P11G_E_PROTOCOL,
		             "%s: blob %s has the wrong content (its digest is %s)",
		             r->ref.registry, digest, got);
		goto fail;
	}
	if (!rs.body.data && oci_buf_append(&rs.body, "", 0) < 0) {
		p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
		goto fail;
	}
	*ret = rs.body;
	return 0;
fail:
	oci_buf_free(&rs.body);
	return -1;
}

/* Resolves an upload Location (absolute or relative) against the registry
 * and adds digest=..., keeping the registry's own query (its upload state). */
static int upload_url(struct oci_reg *r, const char *location, const char *digest, char **ret,
                      p11g_err *err)
{
	CURLU *u = curl_url();
	char base[600], q[100];
	char *out = NULL;
	int res = -1;

	snprintf(base, sizeof(base), "%s/v2/%s/blobs/uploads/", r->base, r->ref.repository);
	snprintf(q, sizeof(q), "digest=%s", digest);
	if (u && curl_url_set(u, CURLUPART_URL, base, 0) == CURLUE_OK &&
	    curl_url_set(u, CURLUPART_URL, location, 0) == CURLUE_OK &&
	    curl_url_set(u, CURLUPART_QUERY, q, CURLU_APPENDQUERY | CURLU_URLENCODE) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_URL, &out, 0) == CURLUE_OK) {
		if (strncmp(out, "https://", 8) &&
		    !(r->opts.insecure && !strncmp(out, "http://", 7)))
			p11g_err_set(err, P11G_E_PROTOCOL,
			             "%s: the upload location %s is not https", r->ref.registry,
			             out);
		else if (!(*ret = strdup(out)))
			p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
		else
			res = 0;
	} else {
		p11g_err_set(err, P11G_E_PROTOCOL, "%s: bad upload location \"%.200s\"",
		             r->ref.registry, location);
	}
	curl_free(out);
	curl_url_cleanup(u);
	return res;
}

int oci_reg_put_blob(struct oci_reg *r, const void *data, size_t len, p11g_err *err)
{
	char url[1024], what[200], digest[OCI_DIGEST_LEN + 1];
	struct resp rs = {0};
	int tries, res = -1;
	char *put = NULL;

	oci_sha256_digest(data, len, digest);
	url_for(r, "blobs", digest, url, sizeof(url));
	snprintf(what, sizeof(what), "blob %s", digest);
	if (request(r, "HEAD", url, NULL, NULL, NULL, 0, 0, &rs, &tries, err) < 0)
		goto out;
	if (rs.status == 200) {
		res = 0; /* already there */
		goto out;
	}
	snprintf(url, sizeof(url), "%s/v2/%s/blobs/uploads/", r->base, r->ref.repository);
	if (request(r, "POST", url, NULL, NULL, "", 0, OCI_SMALL_MAX, &rs, &tries, err) < 0)
		goto out;
	if (rs.status != 202 || !rs.location[0]) {
		if (rs.status == 202)
			p11g_err_set(err, P11G_E_PROTOCOL,
			             "%s: starting an upload: 202 without a Location",
			             r->ref.registry);
		else
			http_fail(r, "starting a blob upload", &rs, tries, err);
		goto out;
	}
	if (upload_url(r, rs.location, digest, &put, err) < 0)
		goto out;
	if (request(r, "PUT", put, NULL, "application/octet-stream", data, len, OCI_SMALL_MAX, &rs,
	            &tries, err) < 0)
		goto out;
	if (rs.status != 201) {
		http_fail(r, what, &rs, tries, err);
		goto out;
	}
	res = 0;
out:
	free(put);
	oci_buf_free(&rs.body);
	return res;
}

int oci_reg_put_manifest(struct oci_reg *r, const char *tag, const char *media_type,
                         const void *data, size_t len, p11g_err *err)
{
	char url[1024], what[400];
	struct resp rs = {0};
	int tries, res = -1;

	url_for(r, "manifests", tag, url, sizeof(url));
	snprintf(what, sizeof(what), "pushing manifest %s:%s", r->ref.repository, tag);
	if (request(r, "PUT", url, NULL, media_type, data, len, OCI_SMALL_MAX, &rs, &tries, err) <
	    0)
		goto out;
	if (rs.status != 201 && rs.status != 200) {
		http_fail(r, what, &rs, tries, err);
		goto out;
	}
	res = 0;
out:
	oci_buf_free(&rs.body);
	return res;
}
