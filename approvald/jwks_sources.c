/* Trusted issuers' key sets from their jwks_url (jwks_sources.h). */
#include "approvald/jwks_sources.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "approvald/progpath.h"
#include "approvald/textsafe.h"
#include "p11gate/log.h"
#include "p11gate/wire.h"

#define FETCH_PROGRAM "approvald-fetch"

static bool same(const char *a, const char *b)
{
	return a == b || (a && b && !strcmp(a, b));
}

static struct p11g_jwks_source *find(const struct p11g_jwks_sources *s, const char *url,
                                     const char *ca)
{
	for (size_t i = 0; i < s->n; i++)
		if (!strcmp(s->v[i].url, url) && same(s->v[i].ca_file, ca))
			return &s->v[i];
	return NULL;
}

static void close_fds(struct p11g_jwks_source *src)
{
	if (src->out_fd >= 0)
		close(src->out_fd);
	if (src->err_fd >= 0)
		close(src->err_fd);
	src->out_fd = src->err_fd = -1;
}

static int64_t gap_s(const struct p11g_jwks_sources *s)
{
	return s->gap_s ? s->gap_s : P11G_JWKS_WANT_GAP_S;
}

static void failed(const struct p11g_jwks_sources *s, struct p11g_jwks_source *src, const char *why)
{
	int64_t now = p11g_mono_us(), wait = gap_s(s);
	for (unsigned i = 0; i < src->failures && wait < P11G_JWKS_RETRY_MAX_S; i++)
		wait *= 2;
	if (wait > P11G_JWKS_RETRY_MAX_S)
		wait = P11G_JWKS_RETRY_MAX_S;
	src->failures++;
	p11g_text_escape(src->error, sizeof(src->error), why, strlen(why));
	src->next_us = now + wait * 1000000LL;
	if (src->keys)
		p11g_warn("key set %s: %s; the keys fetched %lld s ago stay in use, trying again "
		          "in %lld s",
		          src->url, src->error, (long long)(p11g_now() - src->fetched),
		          (long long)wait);
	else
		p11g_warn("key set %s: %s; no keys of it yet (tokens of its issuer are refused), "
		          "trying again in %lld s",
		          src->url, src->error, (long long)wait);
}

/* Starts approvald-fetch for src: 0, or -1 (recorded as a failure). */
static int start(struct p11g_jwks_sources *s, struct p11g_jwks_source *src)
{
	p11g_err err = {0};
	char parent[24];
	pid_t pid;

	src->last_try_us = p11g_mono_us();
	if (!s->program[0] && p11g_find_program(FETCH_PROGRAM, s->program, &err) < 0) {
		s->program[0] = '\0';
		failed(s, src, err.msg);
		return -1;
	}
	src->out_fd = memfd_create("jwks", MFD_CLOEXEC);
	src->err_fd = memfd_create("jwks-error", MFD_CLOEXEC);
	if (src->out_fd < 0 || src->err_fd < 0) {
		close_fds(src);
		failed(s, src, "memfd_create failed");
		return -1;
	}
	snprintf(parent, sizeof(parent), "%ld", (long)getpid());
	const char *argv[] = {s->program, "--parent", parent, src->url, NULL, NULL, NULL};
	if (src->ca_file) {
		argv[3] = "--ca-file";
		argv[4] = src->ca_file;
		argv[5] = src->url;
	}
	const int moves[][2] = {{src->out_fd, 1}, {src->err_fd, 2}};
	int r = p11g_spawn_helper(s->program, argv, moves, 2, &pid);
	if (r != 0) {
		close_fds(src);
		failed(s, src, "cannot start " FETCH_PROGRAM);
		return -1;
	}
	src->pid = pid;
	src->started_us = src->last_try_us;
	s->fetches++;
	return 0;
}

/* A source no policy names any more: its fetch stopped and reaped, all it holds freed. */
static void drop(struct p11g_jwks_source *src)
{
	if (src->pid > 0) {
		kill(src->pid, SIGKILL);
		(void)waitpid(src->pid, NULL, 0);
	}
	close_fds(src);
	p11g_jwks_free(src->keys);
	free(src->url);
	free(src->ca_file);
}

void p11g_jwks_sources_sync(struct p11g_jwks_sources *s, const struct p11g_policy *p)
{
	for (size_t i = 0; i < s->n; i++)
		s->v[i].named = false;
	for (size_t i = 0; p && i < p->n_issuers; i++) {
		const struct p11g_issuer *is = &p->issuers[i];
		if (!is->jwks_url)
			continue;
		struct p11g_jwks_source *src = find(s, is->jwks_url, is->jwks_ca_file);
		if (!src) {
			struct p11g_jwks_source *v = reallocarray(s->v, s->n + 1, sizeof(*v));
			if (!v) {
				p11g_error("out of memory: no keys from %s", is->jwks_url);
				continue;
			}
			s->v = v;
			src = &s->v[s->n];
			*src = (struct p11g_jwks_source){.out_fd = -1, .err_fd = -1};
			src->url = strdup(is->jwks_url);
			src->ca_file = is->jwks_ca_file ? strdup(is->jwks_ca_file) : NULL;
			if (!src->url || (is->jwks_ca_file && !src->ca_file)) {
				free(src->url);
				free(src->ca_file);
				p11g_error("out of memory: no keys from %s", is->jwks_url);
				continue;
			}
			s->n++;
		}
		src->named = true;
	}
	size_t keep = 0;
	for (size_t i = 0; i < s->n; i++) {
		struct p11g_jwks_source *src = &s->v[i];
		if (src->named)
			s->v[keep++] = *src;
		else
			drop(src);
	}
	s->n = keep;
	p11g_jwks_sources_tick(s);
}

void p11g_jwks_sources_tick(struct p11g_jwks_sources *s)
{
	int64_t now = p11g_mono_us();
	for (size_t i = 0; i < s->n; i++) {
		struct p11g_jwks_source *src = &s->v[i];
		if (src->pid > 0 && now - src->started_us > P11G_JWKS_FETCH_MAX_S * 1000000LL)
			kill(src->pid, SIGKILL); /* its end is reaped and reported as a failure */
		else if (src->pid <= 0 && now >= src->next_us)
			(void)start(s, src);
	}
}

const struct p11g_jwks *p11g_jwks_sources_keys(const struct p11g_jwks_sources *s,
                                               const struct p11g_issuer *is)
{
	const struct p11g_jwks_source *src = s ? find(s, is->jwks_url, is->jwks_ca_file) : NULL;
	return src ? src->keys : NULL;
}

const char *p11g_jwks_sources_want(struct p11g_jwks_sources *s, const struct p11g_issuer *is)
{
	struct p11g_jwks_source *src = s ? find(s, is->jwks_url, is->jwks_ca_file) : NULL;
	if (!src)
		return "";
	if (src->pid <= 0 && p11g_mono_us() - src->last_try_us >= gap_s(s) * 1000000LL)
		(void)start(s, src);
	return src->error;
}

/* Up to n bytes of fd from its start; -1 on a read error. */
static ssize_t read_back(int fd, char *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = pread(fd, buf + got, n - got, (off_t)got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

bool p11g_jwks_sources_exited(struct p11g_jwks_sources *s, pid_t pid, int status)
{
	struct p11g_jwks_source *src = NULL;
	for (size_t i = 0; i < s->n && !src; i++)
		if (s->v[i].pid > 0 && s->v[i].pid == pid)
			src = &s->v[i];
	if (!src)
		return false;
	src->pid = 0;
	char why[256] = "";
	_cleanup_free_ char *body = malloc(P11G_JWKS_MAX + 1);
	ssize_t n = body ? read_back(src->out_fd, body, P11G_JWKS_MAX + 1) : -1;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		ssize_t e = read_back(src->err_fd, why, sizeof(why) - 1);
		why[e > 0 ? e : 0] = '\0';
		why[strcspn(why, "\n")] = '\0';
		if (!why[0])
			snprintf(why, sizeof(why), "%s %s", FETCH_PROGRAM,
			         WIFSIGNALED(status) ? "was killed (it took too long)" : "failed");
		close_fds(src);
		failed(s, src, why);
		return true;
	}
	close_fds(src);
	struct p11g_jwks *keys = NULL;
	p11g_err err = {0};
	if (n < 0 || n > P11G_JWKS_MAX) {
		failed(s, src, n < 0 ? "cannot read the answer" : "the key set is too long");
		return true;
	}
	if (p11g_jwks_parse(body, (size_t)n, &keys, &err) < 0) {
		failed(s, src, err.msg);
		return true;
	}
	p11g_jwks_free(src->keys);
	src->keys = keys;
	src->fetched = p11g_now();
	src->failures = 0;
	src->error[0] = '\0';
	src->next_us = p11g_mono_us() + P11G_JWKS_REFRESH_S * 1000000LL;
	p11g_info("key set %s: %zu keys", src->url, p11g_jwks_count(keys));
	return true;
}

json_t *p11g_jwks_sources_status(const struct p11g_jwks_sources *s)
{
	json_t *a = json_array();
	for (size_t i = 0; a && s && i < s->n; i++) {
		const struct p11g_jwks_source *src = &s->v[i];
		if (json_array_append_new(
		        a, json_pack("{s:s, s:I, s:I, s:s, s:b}", "url", src->url, "keys",
		                     (json_int_t)(src->keys ? p11g_jwks_count(src->keys) : 0),
		                     "fetched", (json_int_t)src->fetched, "error", src->error,
		                     "fetching", src->pid > 0)) < 0) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

void p11g_jwks_sources_free(struct p11g_jwks_sources *s)
{
	for (size_t i = 0; i < s->n; i++)
		drop(&s->v[i]);
	free(s->v);
	s->v = NULL;
	s->n = 0;
}
