/*
 * approvald-fetch: one HTTPS GET for approvald, run as its own process so that neither libcurl
 * nor a TLS session ever lives in approvald's address space (which holds the PIN in the
 * isolated deployment).  Fetches a trusted issuer's key set (jwks_url) for jwks_sources.c:
 *
 *   approvald-fetch --parent PID [--ca-file FILE] URL
 *
 * https only (redirects too, at most 3), the server's certificate verified (against FILE when
 * given, else the system's CA certificates), 10 s to connect, 20 s in all, at most
 * P11G_JWKS_MAX bytes.  The body on stdout and exit 0, or one line on stderr and exit 1.  It
 * ends when approvald does.
 */
#include <curl/curl.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

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
	fputs("usage: approvald-fetch --parent PID [--ca-file FILE] https://URL\n", stderr);
	return 2;
}

int main(int argc, char **argv)
{
	const char *url = NULL, *ca = NULL;
	long parent = -1;
	static struct body b;
	char errbuf[CURL_ERROR_SIZE] = "";

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--parent") && i + 1 < argc)
			parent = strtol(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--ca-file") && i + 1 < argc)
			ca = argv[++i];
		else if (!url && strncmp(argv[i], "https://", 8) == 0)
			url = argv[i];
		else
			return usage();
	}
	if (!url || parent <= 0)
		return usage();
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
	if (ca)
		bad |= curl_easy_setopt(c, CURLOPT_CAINFO, ca) != CURLE_OK;
	CURLcode rc = bad ? CURLE_FAILED_INIT : curl_easy_perform(c);
	curl_easy_cleanup(c);
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
	for (size_t off = 0; off < b.len;) {
		ssize_t w = write(STDOUT_FILENO, b.buf + off, b.len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			fputs("cannot write the answer\n", stderr);
			return 1;
		}
		off += (size_t)w;
	}
	return 0;
}
