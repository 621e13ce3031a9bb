/* Sign benchmark: N threads signing through any PKCS#11 module; prints throughput and p50/p99. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST_PTR f;
static const char *token, *pin, *label;
static CK_MECHANISM_TYPE mech;
static double seconds;
static unsigned char data[32];

struct worker {
	pthread_t t;
	double *lat; /* microseconds */
	size_t n, cap;
	unsigned errors;
};

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static CK_SLOT_ID find_slot(void)
{
	CK_SLOT_ID slots[64];
	CK_ULONG n = 64;
	if (f->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK)
		exit(2);
	for (CK_ULONG i = 0; i < n; i++) {
		CK_TOKEN_INFO ti;
		char lab[33];
		if (f->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue;
		memcpy(lab, ti.label, 32);
		lab[32] = 0;
		for (int k = 31; k >= 0 && lab[k] == ' '; k--)
			lab[k] = 0;
		if (!strcmp(lab, token))
			return slots[i];
	}
	fprintf(stderr, "bench: no token %s\n", token);
	exit(2);
}

static CK_OBJECT_HANDLE find_key(CK_SESSION_HANDLE h)
{
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)},
	                    {CKA_LABEL, (void *)label, strlen(label)}};
	CK_OBJECT_HANDLE o;
	CK_ULONG n = 0;
	f->C_FindObjectsInit(h, t, 2);
	f->C_FindObjects(h, &o, 1, &n);
	f->C_FindObjectsFinal(h);
	if (n != 1) {
		fprintf(stderr, "bench: no key %s\n", label);
		exit(2);
	}
	return o;
}

static void *run(void *arg)
{
	struct worker *w = arg;
	CK_SESSION_HANDLE h;
	if (f->C_OpenSession(find_slot(), CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &h))
		exit(2);
	CK_OBJECT_HANDLE key = find_key(h);
	CK_MECHANISM m = {mech, NULL, 0};
	double end = now_us() + seconds * 1e6;
	while (now_us() < end) {
		unsigned char sig[1024];
		CK_ULONG sl = sizeof(sig);
		double t0 = now_us();
		CK_RV rv = f->C_SignInit(h, &m, key);
		if (rv == CKR_OK)
			rv = f->C_Sign(h, data, sizeof(data), sig, &sl);
		double t1 = now_us();
		if (rv != CKR_OK) {
			w->errors++;
			continue;
		}
		if (w->n == w->cap) {
			w->cap = w->cap ? 2 * w->cap : 4096;
			w->lat = realloc(w->lat, w->cap * sizeof(double));
		}
		w->lat[w->n++] = t1 - t0;
	}
	f->C_CloseSession(h);
	return NULL;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	if (argc != 9) {
		fprintf(stderr, "usage: bench_sign MODULE TOKEN PIN LABEL ecdsa|rsa|eddsa THREADS "
		                "SECONDS NAME\n");
		return 2;
	}
	token = argv[2];
	pin = argv[3];
	label = argv[4];
	mech = !strcmp(argv[5], "rsa")     ? CKM_SHA256_RSA_PKCS
	       : !strcmp(argv[5], "eddsa") ? 0x1057 /* CKM_EDDSA, not in p11-kit 0.24's headers */
	                                   : CKM_ECDSA;
	int threads = atoi(argv[6]);
	seconds = strtod(argv[7], NULL);
	void *dl = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	CK_C_GetFunctionList gfl = dl ? (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList") : NULL;
	if (!gfl || gfl(&f) != CKR_OK) {
		fprintf(stderr, "bench: cannot load %s\n", argv[1]);
		return 2;
	}
	CK_C_INITIALIZE_ARGS ia = {.flags = CKF_OS_LOCKING_OK};
	if (f->C_Initialize(&ia) != CKR_OK)
		return 2;
	CK_SESSION_HANDLE h;
	f->C_OpenSession(find_slot(), CKF_SERIAL_SESSION, NULL, NULL, &h);
	f->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
	memset(data, 0x42, sizeof(data));
	struct worker *w = calloc(threads, sizeof(*w));
	double t0 = now_us();
	for (int i = 0; i < threads; i++)
		pthread_create(&w[i].t, NULL, run, &w[i]);
	size_t total = 0;
	unsigned errors = 0;
	for (int i = 0; i < threads; i++) {
		pthread_join(w[i].t, NULL);
		total += w[i].n;
		errors += w[i].errors;
	}
	double elapsed = (now_us() - t0) / 1e6;
	double *all = malloc((total ? total : 1) * sizeof(double));
	size_t k = 0;
	for (int i = 0; i < threads; i++) {
		memcpy(all + k, w[i].lat, w[i].n * sizeof(double));
		k += w[i].n;
	}
	qsort(all, total, sizeof(double), cmp);
	printf("{\"name\": \"%s\", \"alg\": \"%s\", \"threads\": %d, \"signatures\": %zu, "
	       "\"errors\": %u, \"per_second\": %.1f, \"p50_us\": %.1f, \"p99_us\": %.1f}\n",
	       argv[8], argv[5], threads, total, errors, total / elapsed,
	       total ? all[total / 2] : 0.0, total ? all[(size_t)(total * 0.99)] : 0.0);
	f->C_Finalize(NULL);
	return errors && !total ? 1 : 0;
}
