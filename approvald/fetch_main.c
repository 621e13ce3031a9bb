/*
 * approvald-fetch: one HTTPS GET for approvald, run as its own process so that neither libcurl
 * nor a TLS session ever lives in approvald's address space (which holds the PIN in the
 * isolated deployment).  Fetches a trusted issuer's key set (jwks_url) for jwks_sources.c:
 *
 *   approvald-fetch --parent PID [--ca-file FILE] URL
 *   approvald-fetch --parent PID --github-id-token AUDIENCE
 *
 * https only (redirects too, at most 3), the server's certificate verified (against FILE when
 * given, else the system's CA certificates), 10 s to connect, 20 s in all, at most
 * P11G_JWKS_MAX bytes.  The body on stdout and exit 0, or one line on stderr and exit 1.  It
 * ends when approvald does.
 *
 * The second form is for clients in a GitHub Actions job (idtoken_src.c): the job's OIDC ID
 * token for AUDIENCE, from $ACTIONS_ID_TOKEN_REQUEST_URL with the bearer
 * $ACTIONS_ID_TOKEN_REQUEST_TOKEN (read from the environment, never from the command line),
 * printed alone ($CURL_CA_BUNDLE, when set, verifies that server).
 */
#include <curl/curl.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <jansson.h>

#include "approvald/idtoken.h"

struct body {
	char buf[P11G_JWKS_MAX];
	size_t len;
	bool over;
};

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
	struct body *b = arg;
	size_t len = size * n;
	if (len > sizeof(b->buf) - b->len) {
		b->over = true;
		return 0; /* ends the transfer: CURLE_WRITE_ERROR */
	}
	memcpy(b->buf + b->len, p, len);
	b->len += len;
	return len;
}

static int usage(void)
{
	fputs("usage: approvald-fetch --parent PID [--ca-file FILE] https://URL\n"
	      "       approvald-fetch --parent PID --github-id-token AUDIENCE\n",
	      stderr);
	return 2;
}

/* Audience as a query value: the unreserved characters as they are, the rest %XX. */
static char *query_escape(const char *s)
{
	char *out = malloc(3 * strlen(s) + 1), *o = out;
	for (; out && *s; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    strchr("-._~", c))
			*o++ = (char)c;
		else
			o += sprintf(o, "%%%02X", c);
	}
	if (out)
		*o = '\0';
	return out;
}

int main(int argc, char **argv)
{
	const char *url = NULL, *ca = NULL, *audience = NULL;
	char *github_url = NULL, auth[8192 + 32] = "";
	struct curl_slist *headers = NULL;
	long parent = -1;
	static struct body b;
	char errbuf[CURL_ERROR_SIZE] = "";

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--parent") && i + 1 < argc)
			parent = strtol(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--ca-file") && i + 1 < argc)
			ca = argv[++i];
		else if (!strcmp(argv[i], "--github-id-token") && i + 1 < argc)
			audience = argv[++i];
		else if (!url && strncmp(argv[i], "https://", 8) == 0)
			url = argv[i];
		else
			return usage();
	}
	if (!url == !audience || parent <= 0)
		return usage();
	if (audience) {
		const char *base = getenv("ACTIONS_ID_TOKEN_REQUEST_URL"),
		           *bearer = getenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN");
		_cleanup_free_ char *aud = query_escape(audience);
		if (!base || !bearer || strncmp(base, "https://", 8) != 0) {
			fputs("not in a GitHub Actions job that may have an ID token "
			      "($ACTIONS_ID_TOKEN_REQUEST_URL and _TOKEN; the workflow needs "
			      "\"permissions: id-token: write\")\n",
			      stderr);
			return 1;
		}
		if (!aud ||
		    asprintf(&github_url, "%s%saudience=%s", base, strchr(base, '?') ? "&" : "?",
		             aud) < 0 ||
		    strlen(bearer) > 8192) {
			fputs("cannot build the token request\n", stderr);
			return 1;
		}
		snprintf(auth, sizeof(auth), "Authorization: bearer %s", bearer);
		url = github_url;
		ca = getenv("CURL_CA_BUNDLE");
	}
	/* approvald's child: gone with it, and never more privileged than it */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != (pid_t)parent ||
	    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || prctl(PR_SET_DUMPABLE, 0) < 0) {
		fputs("approvald-fetch: not approvald's child\n", stderr);
		return 1;
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
		fputs("cannot initialise libcurl\n", stderr);
		return 1;
	}
	CURL *c = curl_easy_init();
	if (!c) {
		fputs("cannot initialise libcurl\n", stderr);
		return 1;
	}
	int bad = 0;
	bad |= curl_easy_setopt(c, CURLOPT_URL, url) != CURLE_OK;
	bad |= curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https") != CURLE_OK;
	bad |= curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "https") != CURLE_OK;
	bad |= curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L) != CURLE_OK;
	bad |= curl_easy_setopt(c, CURLOPT_MAXREDIRS, 3L) != CURLE_OK;
	bad |= curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L) != CURLE_OK;
	bad |= curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L) != CURLE_OK;
	bad |= curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
	bad |= curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L) != CURLE_OK;
	bad |= curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK;
	bad |= curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L) != CURLE_OK;
	bad |= curl_easy_setopt(c, CURLOPT_USERAGENT, "approvald/" P11GATE_VERSION) != CURLE_OK;
	bad |= curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf) != CURLE_OK;
	bad |= curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data) != CURLE_OK;
	bad |= curl_easy_setopt(c, CURLOPT_WRITEDATA, &b) != CURLE_OK;
	bad |=
	    curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)P11G_JWKS_MAX) != CURLE_OK;
	if (ca && *ca) /* these CA certificates alone, not the system's directory besides */
		bad |= curl_easy_setopt(c, CURLOPT_CAINFO, ca) != CURLE_OK ||
		       curl_easy_setopt(c, CURLOPT_CAPATH, NULL) != CURLE_OK;
	if (auth[0]) {
		headers = curl_slist_append(NULL, auth);
		bad |= !headers || curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers) != CURLE_OK;
		/* the bearer goes to that server alone, not where it redirects */
		bad |= curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK;
	}
	CURLcode rc = bad ? CURLE_FAILED_INIT : curl_easy_perform(c);
	curl_easy_cleanup(c);
	curl_slist_free_all(headers);
	explicit_bzero(auth, sizeof(auth));
	free(github_url);
	curl_global_cleanup();
	if (bad) {
		fputs("libcurl refused an option (https only, TLS verified)\n", stderr);
		return 1;
	}
	if (rc != CURLE_OK) {
		if (b.over || rc == CURLE_FILESIZE_EXCEEDED)
			fprintf(stderr, "the key set is longer than %d bytes\n", P11G_JWKS_MAX);
		else
			fprintf(stderr, "%s\n", errbuf[0] ? errbuf : curl_easy_strerror(rc));
		return 1;
	}
	const char *out = b.buf;
	size_t out_len = b.len;
	json_t *answer = NULL;
	if (audience) {
		/* {"value": TOKEN, "count": N} */
		json_error_t je;
		answer = json_loadb(b.buf, b.len, JSON_REJECT_DUPLICATES, &je);
		const json_t *v = json_object_get(answer, "value");
		if (!json_is_string(v) || !json_string_length(v)) {
			json_decref(answer);
			fputs("the token service's answer holds no \"value\"\n", stderr);
			return 1;
		}
		out = json_string_value(v);
		out_len = json_string_length(v);
	}
	for (size_t off = 0; off < out_len;) {
		ssize_t w = write(STDOUT_FILENO, out + off, out_len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			fputs("cannot write the answer\n", stderr);
			json_decref(answer);
			return 1;
		}
		off += (size_t)w;
	}
	json_decref(answer);
	explicit_bzero(b.buf, b.len);
	return 0;
}
