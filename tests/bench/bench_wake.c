/* What one request/reply between two processes costs on this machine, the floor of a guarded
 * use's round trip to approvald: a 300-byte message over a Unix stream socket and back, the
 * client blocking in poll() like p11gate.so does.  Measured with the two processes on two
 * CPUs (each wake-up crosses CPUs, as when the signer and approvald run in parallel) and on
 * one CPU.  Prints one JSON object with the medians and p99s in microseconds.
 * Usage: bench_wake [ROUND_TRIPS]   (default 20000) */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MSG 300

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void pin_to(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) < 0) {
		fprintf(stderr, "bench_wake: cannot run on CPU %d: %s\n", cpu, strerror(errno));
		exit(2);
	}
}

static int recv_all(int fd, char *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, -1) < 0 && errno != EINTR)
			return -1;
		ssize_t r = recv(fd, buf + got, n - got, MSG_DONTWAIT);
		if (r == 0)
			return -1;
		if (r > 0)
			got += (size_t)r;
		else if (errno != EAGAIN && errno != EINTR)
			return -1;
	}
	return 0;
}

/* Round trips with the client on cpu_client and the echoing server on cpu_server; fills
 * p50/p99.  Returns 0, or -1 (message on stderr). */
static int measure(int cpu_client, int cpu_server, int n, double *p50, double *p99)
{
	int sv[2];
	char buf[MSG];
	double *lat = calloc((size_t)n, sizeof(*lat));

	if (!lat || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		fprintf(stderr, "bench_wake: %s\n", strerror(errno));
		return -1;
	}
	pid_t pid = fork();
	if (pid < 0) {
		fprintf(stderr, "bench_wake: fork: %s\n", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		close(sv[0]);
		pin_to(cpu_server);
		while (recv_all(sv[1], buf, MSG) == 0)
			if (send(sv[1], buf, MSG, MSG_NOSIGNAL) != MSG)
				_exit(1);
		_exit(0);
	}
	close(sv[1]);
	pin_to(cpu_client);
	memset(buf, 'x', sizeof(buf));
	int rc = 0;
	for (int i = 0; i < n && rc == 0; i++) {
		double t = now_us();
		if (send(sv[0], buf, MSG, MSG_NOSIGNAL) != MSG || recv_all(sv[0], buf, MSG) < 0) {
			fprintf(stderr, "bench_wake: the echo process failed\n");
			rc = -1;
		}
		lat[i] = now_us() - t;
	}
	close(sv[0]);
	waitpid(pid, NULL, 0);
	if (rc == 0) {
		qsort(lat, (size_t)n, sizeof(*lat), cmp);
		*p50 = lat[n / 2];
		*p99 = lat[(size_t)n * 99 / 100];
	}
	free(lat);
	return rc;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 20000;
	double c50 = 0, c99 = 0, s50, s99;

	if (n < 100) {
		fprintf(stderr, "usage: bench_wake [ROUND_TRIPS >= 100]\n");
		return 2;
	}
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	if (cpus > 1 && measure(0, 1, n, &c50, &c99) < 0)
		return 1;
	if (measure(0, 0, n, &s50, &s99) < 0)
		return 1;
	if (cpus > 1)
		printf("{\"rtt_two_cpus_p50_us\": %.1f, \"rtt_two_cpus_p99_us\": %.1f, ", c50, c99);
	else
		printf("{");
	printf("\"rtt_one_cpu_p50_us\": %.1f, \"rtt_one_cpu_p99_us\": %.1f}\n", s50, s99);
	return 0;
}
