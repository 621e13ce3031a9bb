/*
 * approvald-notify: delivers approvald's notifications (issue 21).  approvald starts it with two
 * connections of its own: descriptor 3 asks for the deliveries due (notify_take, answered when
 * there are some, or after a second), descriptor 4 reports how each went (notify_done).  Each
 * delivery is an HTTPS POST (libcurl's multi interface: many at once, each with its notifier's
 * timeout, no redirects, the server verified, only its ca_file's CA when it names one) or a
 * program run without a shell with the body on its standard input (killed at its timeout).  It
 * keeps nothing: what to retry and when is approvald's, in its store.  The HMAC signature comes
 * with the delivery: the notifiers' keys never reach this process.
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "approvald/helper_user.h"
#include "p11gate/errors.h"
#include "p11gate/log.h"
#include "p11gate/wire.h"

#define TAKE_FD     3
#define DONE_FD     4
#define MAX_AT_ONCE 32
#define REPLY_MAX   (64 * 1024) /* of a receiver's answer, read and dropped */
#define CALL_MS     30000

static const char *const usage_text =
    "Usage: approvald-notify --parent PID\n"
    "Delivers approvald's notifications.  approvald starts it with its two connections as\n"
    "descriptors 3 and 4; it is not run by hand.\n";

/* A job keeps its slot from start to end (libcurl holds pointers into it): used marks it. */
struct job {
	bool used;
	json_int_t id;
	CURL *easy;
	struct curl_slist *headers;
	char *body;
	size_t got; /* bytes of the answer read */
	pid_t pid;  /* a command's */
	bool cut;   /* a command's standard input did not take the whole body */
	int64_t deadline_ms;
};

static struct job jobs[MAX_AT_ONCE];
static size_t n_jobs;
static json_t *results; /* to report */

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void result(json_int_t id, bool ok, long status, long retry_after, const char *error)
{
	json_t *r = json_pack("{s:I, s:b}", "id", id, "ok", ok);
	if (!r)
		return;
	if (status)
		json_object_set_new(r, "status", json_integer(status));
	if (retry_after > 0)
		json_object_set_new(r, "retry_after", json_integer(retry_after));
	if (error)
		json_object_set_new(r, "error", json_string(error));
	json_array_append_new(results, r);
}

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
	struct job *j = arg;
	(void)p;
	j->got += size * n;
	return j->got > REPLY_MAX ? 0 : size * n;
}

static void job_free(struct job *j)
{
	free(j->body);
	curl_slist_free_all(j->headers);
	memset(j, 0, sizeof(*j));
}

static bool start_http(CURLM *m, struct job *j, const json_t *d)
{
	const char *url = json_string_value(json_object_get(d, "url"));
	const char *ca = json_string_value(json_object_get(d, "ca_file"));
	const char *sig = json_string_value(json_object_get(d, "signature"));
	char h[256];
	long timeout = (long)json_integer_value(json_object_get(d, "timeout"));
	if (!(j->easy = curl_easy_init()))
		return false;
	struct curl_slist *hs = curl_slist_append(NULL, "Content-Type: application/json");
	snprintf(h, sizeof(h), "X-P11gate-Event: %.64s",
	         json_string_value(json_object_get(d, "event")));
	hs = curl_slist_append(hs, h);
	snprintf(h, sizeof(h), "X-P11gate-Delivery: %.64s",
	         json_string_value(json_object_get(d, "delivery")));
	hs = curl_slist_append(hs, h);
	if (sig) {
		snprintf(h, sizeof(h), "X-P11gate-Signature-256: %.80s", sig);
		hs = curl_slist_append(hs, h);
	}
	hs = curl_slist_append(hs, "Expect:");
	j->headers = hs;
	CURL *e = j->easy;
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https,http");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT, timeout > 0 ? timeout : 10L);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, timeout > 0 ? timeout : 10L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	if (ca) {
		curl_easy_setopt(e, CURLOPT_CAINFO, ca);
		curl_easy_setopt(e, CURLOPT_CAPATH, NULL);
	}
	curl_easy_setopt(e, CURLOPT_USERAGENT, "p11gate-approvald/" P11GATE_VERSION);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, hs);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, j->body);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(j->body));
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, j);
	curl_easy_setopt(e, CURLOPT_PRIVATE, j);
	return curl_multi_add_handle(m, e) == CURLM_OK;
}

/* A command: its own process, the body on its standard input, nothing else of ours. */
static bool start_command(struct job *j, const json_t *d)
{
	const json_t *argv_j = json_object_get(d, "command");
	size_t n = json_array_size(argv_j);
	long timeout = (long)json_integer_value(json_object_get(d, "timeout"));
	int p[2];
	if (!n || n > 64 || pipe2(p, O_CLOEXEC) < 0)
		return false;
	char **argv = calloc(n + 1, sizeof(char *));
	if (!argv) {
		close(p[0]);
		close(p[1]);
		return false;
	}
	for (size_t i = 0; i < n; i++)
		argv[i] = (char *)json_string_value(json_array_get(argv_j, i));
	/* what a webhook's headers say, for the program: event, delivery id, signature */
	char ev[96], dl[64], sig[128];
	snprintf(ev, sizeof(ev), "P11GATE_EVENT=%.64s",
	         json_string_value(json_object_get(d, "event")) ?: "");
	snprintf(dl, sizeof(dl), "P11GATE_DELIVERY=%.32s",
	         json_string_value(json_object_get(d, "delivery")) ?: "");
	snprintf(sig, sizeof(sig), "P11GATE_SIGNATURE_256=%.80s",
	         json_string_value(json_object_get(d, "signature")) ?: "");
	char *envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", ev, dl,
	                json_object_get(d, "signature") ? sig : NULL, NULL};
	pid_t pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);
		dup2(p[0], 0);
		if (null >= 0)
			dup2(null, 1);
		/* nothing of ours but stdin, stdout and stderr (libcurl's sockets included) */
		close_range(3, ~0U, 0);
		signal(SIGPIPE, SIG_DFL);
		setpgid(0, 0);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execve(argv[0], argv, envp);
		_exit(127);
	}
	free(argv);
	close(p[0]);
	if (pid < 0) {
		close(p[1]);
		return false;
	}
	/* the body fits the pipe (approvald keeps bodies under 64 KiB); a program that does not
	 * read it gets the rest cut off (non-blocking) and is judged by its exit */
	fcntl(p[1], F_SETFL, O_NONBLOCK);
	size_t len = strlen(j->body), off = 0;
	while (off < len) {
		ssize_t w = write(p[1], j->body + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		off += (size_t)w;
	}
	j->cut = off < len; /* not delivered, whatever the program answers */
	close(p[1]);
	j->pid = pid;
	j->deadline_ms = now_ms() + (timeout > 0 ? timeout : 10) * 1000;
	return true;
}

static void start(CURLM *m, const json_t *d)
{
	json_int_t id = json_integer_value(json_object_get(d, "id"));
	const char *body = json_string_value(json_object_get(d, "body"));
	const char *err = json_string_value(json_object_get(d, "error"));
	if (err || !body) {
		/* approvald could not prepare it (its secret_file, say) */
		result(id, false, 0, 0, err ? err : "no body");
		return;
	}
	if (n_jobs == MAX_AT_ONCE) {
		result(id, false, 0, 0, "approvald-notify is busy");
		return;
	}
	struct job *j = NULL;
	for (size_t i = 0; i < MAX_AT_ONCE && !j; i++)
		if (!jobs[i].used)
			j = &jobs[i];
	if (!j) {
		result(id, false, 0, 0, "approvald-notify is busy");
		return;
	}
	memset(j, 0, sizeof(*j));
	j->used = true;
	j->id = id;
	if (!(j->body = strdup(body))) {
		result(id, false, 0, 0, "out of memory");
		return;
	}
	bool ok = json_object_get(d, "url") ? start_http(m, j, d) : start_command(j, d);
	if (!ok) {
		if (j->easy)
			curl_easy_cleanup(j->easy);
		job_free(j);
		result(id, false, 0, 0, "cannot start the delivery");
		return;
	}
	n_jobs++;
}

static void finish(struct job *j)
{
	job_free(j); /* clears used */
	n_jobs--;
}

static void http_done(CURLM *m)
{
	CURLMsg *msg;
	int left;
	while ((msg = curl_multi_info_read(m, &left))) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		struct job *j = NULL;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&j);
		long status = 0;
		curl_off_t after = 0;
		char why[300];
		curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
		curl_easy_getinfo(msg->easy_handle, CURLINFO_RETRY_AFTER, &after);
		if (msg->data.result != CURLE_OK &&
		    !(msg->data.result == CURLE_WRITE_ERROR && status))
			snprintf(why, sizeof(why), "%s", curl_easy_strerror(msg->data.result));
		else
			snprintf(why, sizeof(why), "the receiver answered HTTP %ld", status);
		bool ok = status >= 200 && status < 300 &&
		          (msg->data.result == CURLE_OK || msg->data.result == CURLE_WRITE_ERROR);
		result(j->id, ok, status, (long)after, ok ? NULL : why);
		curl_multi_remove_handle(m, msg->easy_handle);
		curl_easy_cleanup(msg->easy_handle);
		j->easy = NULL;
		finish(j);
	}
}

static void commands_done(void)
{
	int64_t now = now_ms();
	for (size_t i = 0; i < MAX_AT_ONCE; i++) {
		struct job *j = &jobs[i];
		int st;
		if (!j->used || !j->pid)
			continue;
		pid_t r = waitpid(j->pid, &st, WNOHANG);
		if (r == 0 && now < j->deadline_ms)
			continue;
		if (r == 0) {
			kill(-j->pid, SIGKILL);
			kill(j->pid, SIGKILL);
			waitpid(j->pid, &st, 0);
			result(j->id, false, 0, 0, "the command did not end within its timeout");
		} else if (j->cut) {
			result(j->id, false, 0, 0,
			       "the command did not read the whole event from its standard input");
		} else if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
			result(j->id, true, 0, 0, NULL);
		} else {
			char why[80];
			if (WIFEXITED(st))
				snprintf(why, sizeof(why), "the command exited with status %d",
				         WEXITSTATUS(st));
			else
				snprintf(why, sizeof(why), "the command was ended by signal %d",
				         WTERMSIG(st));
			result(j->id, false, 0, 0, why);
		}
		finish(j);
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {{"parent", required_argument, NULL, 'p'},
	                                     {"help", no_argument, NULL, 'h'},
	                                     {NULL, 0, NULL, 0}};
	long parent = 0;
	int o;
	p11g_log_ident = "approvald-notify";
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (o == 'p')
			parent = strtol(optarg, NULL, 10);
		else if (o == 'h') {
			fputs(usage_text, stdout);
			return 0;
		} else {
			fputs(usage_text, stderr);
			return 2;
		}
	}
	if (parent <= 0 || optind != argc || fcntl(TAKE_FD, F_GETFD) < 0 ||
	    fcntl(DONE_FD, F_GETFD) < 0) {
		fputs(usage_text, stderr);
		return 2;
	}
	fcntl(TAKE_FD, F_SETFD, FD_CLOEXEC);
	fcntl(DONE_FD, F_SETFD, FD_CLOEXEC);
	if (p11g_helper_drop_root() < 0)
		return 1;
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != (pid_t)parent)
		return 1;
	prctl(PR_SET_DUMPABLE, 0);
	signal(SIGPIPE, SIG_IGN);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return 1;
	CURLM *m = curl_multi_init();
	if (!m || !(results = json_array()))
		return 1;
	bool asking = false;
	int rc = 0;
	for (;;) {
		/* ask for more while there is room; approvald answers when some are due */
		if (!asking && n_jobs < MAX_AT_ONCE) {
			json_t *req = json_pack("{s:i, s:s, s:i}", "v", 1, "verb", "notify_take",
			                        "max", (int)(MAX_AT_ONCE - n_jobs));
			size_t len = 0;
			char *out = req ? p11g_wire_encode(req, &len) : NULL;
			json_decref(req);
			if (!out || p11g_wire_send(TAKE_FD, out, len) < 0) {
				free(out);
				break;
			}
			free(out);
			asking = true;
		}
		struct curl_waitfd extra = {.fd = TAKE_FD, .events = CURL_WAIT_POLLIN};
		int numfds = 0;
		if (curl_multi_poll(m, &extra, 1, 100, &numfds) != CURLM_OK)
			break;
		if (extra.revents) {
			char *buf = NULL;
			size_t len = 0;
			p11g_err err = {0};
			if (p11g_wire_recv(TAKE_FD, &buf, &len, CALL_MS) < 0)
				break; /* approvald is gone */
			json_t *rep = p11g_wire_decode(buf, len, &err);
			free(buf);
			asking = false;
			/* approvald could not hand any out: ask again in a while, not at once */
			if (!json_is_true(json_object_get(rep, "ok")))
				usleep(1000000);
			const json_t *ds = json_object_get(json_object_get(rep, "result"),
			                                   "deliveries"),
			             *d;
			size_t i;
			json_array_foreach(ds, i, d) start(m, d);
			json_decref(rep);
		}
		int running = 0;
		curl_multi_perform(m, &running);
		http_done(m);
		commands_done();
		if (json_array_size(results)) {
			json_t *req =
			    json_pack("{s:s, s:O}", "verb", "notify_done", "results", results);
			json_t *res = NULL;
			p11g_err err = {0};
			if (!req || p11g_wire_call(DONE_FD, req, &res, CALL_MS, &err) < 0) {
				json_decref(req);
				if (strcmp(err.code, P11G_E_UNAVAILABLE) &&
				    strcmp(err.code, P11G_E_PROTOCOL) &&
				    strcmp(err.code, P11G_E_TIMEOUT)) {
					/* approvald refused them (its store): they are retried as
					 * in flight when this process ends; end now */
					p11g_error("approvald did not take the results: %s",
					           err.msg);
				}
				rc = 1;
				break;
			}
			json_decref(req);
			json_decref(res);
			json_array_clear(results);
		}
	}
	for (size_t i = 0; i < MAX_AT_ONCE; i++) {
		if (!jobs[i].used)
			continue;
		if (jobs[i].easy) {
			curl_multi_remove_handle(m, jobs[i].easy);
			curl_easy_cleanup(jobs[i].easy);
		}
		if (jobs[i].pid)
			kill(jobs[i].pid, SIGKILL);
		job_free(&jobs[i]);
	}
	curl_multi_cleanup(m);
	curl_global_cleanup();
	json_decref(results);
	return rc;
}
