/* Tests of p11gate.so: slot table, interfaces, configuration, the gate on SoftHSMv2. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "module/gate_host.h"
#include "module/module.h"
#include "p11gate/wire.h"

#ifndef SOFTHSM_MODULE
#define SOFTHSM_MODULE "/usr/lib/softhsm/libsofthsm2.so"
#endif

/* ==== the slot table and the lists ======================================== */

static const struct p11g_slot_info *slot(const char *name)
{
	for (size_t i = 0; i < p11g_slot_count; i++)
		if (!strcmp(p11g_slot_table[i].name, name))
			return &p11g_slot_table[i];
	return NULL;
}

static void test_slot_table_complete(void **state)
{
	size_t n2 = 0;
	(void)state;
	assert_int_equal(p11g_slot_count, 92); /* 68 of 2.40, 24 of 3.0 */
	for (size_t i = 0; i < p11g_slot_count; i++) {
		n2 += p11g_slot_table[i].version == 2;
		assert_true(p11g_slot_table[i].version == 2 || p11g_slot_table[i].version == 3);
		for (size_t j = 0; j < i; j++)
			assert_string_not_equal(p11g_slot_table[i].name, p11g_slot_table[j].name);
	}
	assert_int_equal(n2, 68);
}

/*
 * Every slot through which a private key can be used: the ones named after
 * signing, and the other transforms and key-management calls.  None may be a
 * plain forward.
 */
static void test_signing_family_gated(void **state)
{
	static const char *const private_key_paths[] = {
	    "C_DecryptInit",        "C_EncryptInit",        "C_VerifyRecoverInit",
	    "C_UnwrapKey",          "C_DeriveKey",          "C_WrapKey",
	    "C_SetAttributeValue",  "C_CopyObject",         "C_SetOperationState",
	    "C_MessageDecryptInit", "C_MessageEncryptInit", "C_DecryptVerifyUpdate",
	    "C_SessionCancel",
	};
	size_t n_sign = 0;
	(void)state;
	for (size_t i = 0; i < p11g_slot_count; i++) {
		const struct p11g_slot_info *s = &p11g_slot_table[i];
		if (!strstr(s->name, "Sign"))
			continue;
		n_sign++;
		if (s->kind == P11G_SLOT_FORWARD)
			fail_msg("%s is a signing slot but forwards", s->name);
	}
	assert_int_equal(n_sign, 12);
	for (size_t i = 0; i < P11G_ARRAY_SIZE(private_key_paths); i++) {
		const struct p11g_slot_info *s = slot(private_key_paths[i]);
		assert_non_null(s);
		if (s->kind == P11G_SLOT_FORWARD)
			fail_msg("%s reaches a private key but forwards", s->name);
	}
	/* Hosted, token objects are pkcs11_object_admins' (p11g_object_admin_check). */
	static const char *const object_paths[] = {
	    "C_CreateObject",  "C_GenerateKey",       "C_GenerateKeyPair", "C_CopyObject",
	    "C_DestroyObject", "C_SetAttributeValue", "C_UnwrapKey",       "C_DeriveKey",
	};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(object_paths); i++) {
		const struct p11g_slot_info *s = slot(object_paths[i]);
		assert_non_null(s);
		if (s->kind != P11G_SLOT_HOOK)
			fail_msg("%s makes or changes objects but is not a hook", s->name);
	}
}

static void test_lists_are_ours_and_full(void **state)
{
	CK_FUNCTION_LIST_PTR l2 = NULL;
	void *const *p2, *const *p3;
	size_t n2 =
	    (sizeof(CK_FUNCTION_LIST) - offsetof(CK_FUNCTION_LIST, C_Initialize)) / sizeof(void *);
	size_t n3 = (sizeof(CK_FUNCTION_LIST_3_0) - offsetof(CK_FUNCTION_LIST_3_0, C_Initialize)) /
	            sizeof(void *);
	(void)state;

	assert_int_equal(C_GetFunctionList(NULL), CKR_ARGUMENTS_BAD);
	assert_int_equal(C_GetFunctionList(&l2), CKR_OK);
	assert_ptr_equal(l2, &p11g_list_2_40);
	assert_int_equal(l2->version.major, 2);
	assert_int_equal(l2->version.minor, 40);
	assert_int_equal(p11g_list_3_0.version.major, 3);
	assert_int_equal(p11g_list_3_0.version.minor, 0);
	p2 = (void *const *)&l2->C_Initialize;
	p3 = (void *const *)&p11g_list_3_0.C_Initialize;
	for (size_t i = 0; i < n3; i++) {
		assert_non_null(p3[i]);
		if (i < n2)
			assert_ptr_equal(p2[i], p3[i]);
	}
	/* The entry points in the lists are the exported ones' twins. */
	CK_FUNCTION_LIST_PTR again = NULL;
	assert_int_equal(l2->C_GetFunctionList(&again), CKR_OK);
	assert_ptr_equal(again, l2);
}

static void test_interfaces(void **state)
{
	CK_INTERFACE list[4];
	CK_ULONG n = 0;
	CK_INTERFACE_PTR it = NULL;
	CK_VERSION v240 = {2, 40}, v30 = {3, 0}, v31 = {3, 1};
	(void)state;

	assert_int_equal(C_GetInterfaceList(NULL, NULL), CKR_ARGUMENTS_BAD);
	assert_int_equal(C_GetInterfaceList(NULL, &n), CKR_OK);
	assert_int_equal(n, 2);
	n = 1;
	assert_int_equal(C_GetInterfaceList(list, &n), CKR_BUFFER_TOO_SMALL);
	assert_int_equal(n, 2);
	n = P11G_ARRAY_SIZE(list);
	assert_int_equal(C_GetInterfaceList(list, &n), CKR_OK);
	assert_int_equal(n, 2);
	assert_string_equal((char *)list[0].pInterfaceName, "PKCS 11");
	assert_string_equal((char *)list[1].pInterfaceName, "PKCS 11");
	assert_ptr_equal(list[0].pFunctionList, &p11g_list_3_0);
	assert_ptr_equal(list[1].pFunctionList, &p11g_list_2_40);

	assert_int_equal(C_GetInterface(NULL, NULL, NULL, 0), CKR_ARGUMENTS_BAD);
	assert_int_equal(C_GetInterface(NULL, NULL, &it, 0), CKR_OK);
	assert_ptr_equal(it->pFunctionList, &p11g_list_3_0);
	assert_int_equal(C_GetInterface((CK_UTF8CHAR_PTR) "PKCS 11", &v240, &it, 0), CKR_OK);
	assert_ptr_equal(it->pFunctionList, &p11g_list_2_40);
	assert_int_equal(C_GetInterface((CK_UTF8CHAR_PTR) "PKCS 11", &v30, &it, 0), CKR_OK);
	assert_ptr_equal(it->pFunctionList, &p11g_list_3_0);
	assert_int_equal(C_GetInterface((CK_UTF8CHAR_PTR) "PKCS 11", &v31, &it, 0),
	                 CKR_ARGUMENTS_BAD);
	assert_int_equal(C_GetInterface((CK_UTF8CHAR_PTR) "Vendor X", NULL, &it, 0),
	                 CKR_ARGUMENTS_BAD);
	/* We do not claim 3.0 fork tolerance: a child must initialise again. */
	assert_int_equal(C_GetInterface(NULL, NULL, &it, CKF_INTERFACE_FORK_SAFE),
	                 CKR_ARGUMENTS_BAD);
}

/* The built p11gate.so exports the three entry points and nothing else of
 * ours, and hands out its own lists. */
static void test_shared_object_exports(void **state)
{
#ifdef P11GATE_SO
	void *h = dlopen(P11GATE_SO, RTLD_NOW | RTLD_LOCAL);
	CK_C_GetFunctionList gfl;
	CK_C_GetInterface gi;
	CK_FUNCTION_LIST_PTR l = NULL;
	CK_INTERFACE_PTR it = NULL;
	(void)state;
	assert_non_null(h);
	gfl = (CK_C_GetFunctionList)dlsym(h, "C_GetFunctionList");
	gi = (CK_C_GetInterface)dlsym(h, "C_GetInterface");
	assert_non_null(gfl);
	assert_non_null(gi);
	assert_non_null(dlsym(h, "C_GetInterfaceList"));
	assert_null(dlsym(h, "C_Sign"));
	assert_null(dlsym(h, "hook_C_Sign"));
	assert_null(dlsym(h, "p11g_slot_table"));
	assert_null(dlsym(h, "p11g_wire_call"));
	assert_int_equal(gfl(&l), CKR_OK);
	assert_ptr_not_equal(l, &p11g_list_2_40); /* its own copy, not this test's */
	assert_int_equal(gi(NULL, NULL, &it, 0), CKR_OK);
	assert_int_equal(((CK_VERSION *)it->pFunctionList)->major, 3);
	/* Not initialised: every call says so. */
	assert_int_equal(l->C_GetSlotList(CK_TRUE, NULL, &(CK_ULONG){0}),
	                 CKR_CRYPTOKI_NOT_INITIALIZED);
	assert_int_equal(l->C_Finalize(NULL), CKR_CRYPTOKI_NOT_INITIALIZED);
	dlclose(h);
#else
	(void)state;
	skip();
#endif
}

/* ==== configuration ========================================================== */

/* The message of a failed parse or load into err; a failure is always bad_request. */
static int result(int r, const p11g_err *e, char *err, size_t errsize)
{
	snprintf(err, errsize, "%s", r < 0 ? e->msg : "");
	if (r < 0)
		assert_string_equal(e->code, "bad_request");
	return r;
}

static int parse_n(const char *text, size_t len, struct p11g_config *cfg, char *err, size_t errsize)
{
	p11g_err e = {0};
	memset(cfg, 0, sizeof(*cfg));
	return result(p11g_config_parse("test.conf", text, len, cfg, &e), &e, err, errsize);
}

static int parse(const char *text, struct p11g_config *cfg, char *err, size_t errsize)
{
	return parse_n(text, strlen(text), cfg, err, errsize);
}

static int load(struct p11g_config *cfg, char *err, size_t errsize)
{
	p11g_err e = {0};
	return result(p11g_config_load(cfg, &e), &e, err, errsize);
}

static void test_config_parse(void **state)
{
	struct p11g_config cfg;
	char err[sizeof(((p11g_err *)0)->msg)];
	(void)state;

	assert_int_equal(parse("# comment\n\nmodule = /usr/lib/x.so\n"
	                       "socket=/run/a#b.sock   # trailing comment\n"
	                       "  wait   =  30\t\n",
	                       &cfg, err, sizeof(err)),
	                 0);
	assert_string_equal(cfg.module, "/usr/lib/x.so");
	assert_string_equal(cfg.socket, "/run/a#b.sock");
	assert_int_equal(cfg.wait, 30);
	assert_int_equal(parse("module = /a.so", &cfg, err, sizeof(err)), 0); /* no newline */
	assert_string_equal(cfg.module, "/a.so");

	static const struct {
		const char *text, *msg;
	} bad[] = {
	    /* FILE:LINE:COLUMN: the key's column for the key, the value's for the value */
	    {"module = /a.so\nsokcet = /x\n", "test.conf:2:1: unknown setting \"sokcet\""},
	    {"module = /a.so\n  module = /b.so\n", "test.conf:2:3: \"module\" is set twice"},
	    {"\n\nwait = 10s\n", "test.conf:3:8: wait must be a number of seconds"},
	    {"wait = -1\n", "test.conf:1:8: wait must be"},
	    {"wait =\t86401\n", "test.conf:1:8: wait must be"},
	    {"module /a.so\n", "test.conf:1:8: expected \"key = value\""},
	    {"= /a.so\n", "test.conf:1:1: expected \"key = value\""},
	    {"module =\n", "test.conf:1:9: \"module\" has no value"},
	    {"module = lib.so\n", "test.conf:1:10: module must be an absolute path"},
	};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(bad); i++) {
		assert_int_equal(parse(bad[i].text, &cfg, err, sizeof(err)), -1);
		if (strncmp(err, bad[i].msg, strlen(bad[i].msg)))
			fail_msg("for %s got \"%s\"", bad[i].text, err);
		assert_null(strchr(err, '\n'));
	}
	/* approvald_user: a uid or a user name, looked up at once */
	assert_int_equal(parse("module = /a.so\napprovald_user = 4242\n", &cfg, err, sizeof(err)),
	                 0);
	assert_true(p11g_config_approvald_user.set);
	assert_int_equal(p11g_config_approvald_user.uid, 4242);
	assert_int_equal(parse("approvald_user = root\n", &cfg, err, sizeof(err)), 0);
	assert_int_equal(p11g_config_approvald_user.uid, 0);
	assert_int_equal(parse("approvald_user = p11gt-no-such-user\n", &cfg, err, sizeof(err)),
	                 -1);
	assert_string_equal(err,
	                    "test.conf:1:18: approvald_user \"p11gt-no-such-user\": no such user");
	/* A NUL byte is refused where it stands, not taken for the end of the setting. */
	assert_int_equal(parse_n("module = /a.so\nwait = 1\0 0\n", 24, &cfg, err, sizeof(err)), -1);
	assert_string_equal(err, "test.conf:2:9: a NUL byte in a setting");
	assert_int_equal(parse("approvald_user = 4294967295\n", &cfg, err, sizeof(err)), -1);

	char longsock[200];
	memset(longsock, 'a', sizeof(longsock));
	memcpy(longsock, "socket = /", 10);
	longsock[sizeof(longsock) - 1] = '\0';
	assert_int_equal(parse(longsock, &cfg, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "socket path longer than"));
}

static char tmpdir[64];

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void test_config_load_and_env(void **state)
{
	struct p11g_config cfg;
	char err[1024], path[128];
	(void)state;

	snprintf(path, sizeof(path), "%s/missing.conf", tmpdir);
	setenv("P11GATE_CONF", path, 1);
	unsetenv("P11GATE_MODULE");
	unsetenv("P11GATE_SOCKET");
	unsetenv("P11GATE_WAIT");
	assert_int_equal(load(&cfg, err, sizeof(err)), -1);
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, "No such file"));
	/* An explicit file must exist even when the environment names the module. */
	setenv("P11GATE_MODULE", "/env/module.so", 1);
	assert_int_equal(load(&cfg, err, sizeof(err)), -1);

	snprintf(path, sizeof(path), "%s/ok.conf", tmpdir);
	write_file(path, "module = /file/module.so\nwait = 5\n");
	setenv("P11GATE_CONF", path, 1);
	unsetenv("P11GATE_MODULE");
	p11g_config_approvald_user.set = true; /* what an earlier file said */
	assert_int_equal(load(&cfg, err, sizeof(err)), 0);
	assert_false(p11g_config_approvald_user.set);
	assert_string_equal(cfg.module, "/file/module.so");
	assert_string_equal(cfg.socket, P11G_DEFAULT_SOCKET);
	assert_int_equal(cfg.wait, 5);
	assert_string_equal(cfg.source, path);

	setenv("P11GATE_MODULE", "/env/module.so", 1);
	setenv("P11GATE_SOCKET", "/env/sock", 1);
	setenv("P11GATE_WAIT", "7", 1);
	assert_int_equal(load(&cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg.module, "/env/module.so");
	assert_string_equal(cfg.socket, "/env/sock");
	assert_int_equal(cfg.wait, 7);
	setenv("P11GATE_WAIT", "soon", 1);
	assert_int_equal(load(&cfg, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "P11GATE_WAIT"));
	unsetenv("P11GATE_WAIT");
	unsetenv("P11GATE_SOCKET");
	unsetenv("P11GATE_MODULE");

	write_file(path, "wait = 5\n");
	assert_int_equal(load(&cfg, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "no \"module\" setting"));

	/* C_Initialize turns any of this into CKR_GENERAL_ERROR. */
	write_file(path, "module = /x.so\nbogus = 1\n");
	assert_int_equal(p11g_list_2_40.C_Initialize(NULL), CKR_GENERAL_ERROR);
	write_file(path, "module = /nonexistent/module.so\n");
	assert_int_equal(p11g_list_2_40.C_Initialize(NULL), CKR_GENERAL_ERROR);
	assert_int_equal(p11g_list_2_40.C_GetSlotList(CK_TRUE, NULL, &(CK_ULONG){0}),
	                 CKR_CRYPTOKI_NOT_INITIALIZED);
	unsetenv("P11GATE_CONF");
}

/* ==== a fake approvald ======================================================= */

enum use_mode { USE_GRANT, USE_REFUSE, USE_ONDEMAND };

static struct fake {
	pthread_mutex_t lock;
	pthread_t thread;
	int listen_fd;
	char path[108];
	bool running;
	/* behaviour */
	bool guard_k, guard_r, allow_raw_r;
	enum use_mode use_mode;
	const char *refuse_code;
	bool request_refused;
	/* what it saw */
	int n_key, n_use, n_request, n_wait;
	char last_digest[200], last_mech[64], last_label[64], last_desc[200];
	bool last_raw;
	json_int_t last_operation;
} fk = {.lock = PTHREAD_MUTEX_INITIALIZER, .listen_fd = -1};

static json_t *ok_reply(json_t *result)
{
	return json_pack("{s:i, s:b, s:o}", "v", 1, "ok", 1, "result", result);
}

static json_t *err_reply(const char *code, const char *msg)
{
	return json_pack("{s:i, s:b, s:{s:s, s:s}}", "v", 1, "ok", 0, "error", "code", code,
	                 "message", msg);
}

static json_t *fake_answer(json_t *req)
{
	const char *verb = json_string_value(json_object_get(req, "verb"));
	const char *label =
	    json_string_value(json_object_get(json_object_get(req, "key"), "label"));
	json_t *rep = NULL;

	pthread_mutex_lock(&fk.lock);
	if (!strcmp(verb, "key")) {
		fk.n_key++;
		bool is_k = label && !strcmp(label, "k"), is_r = label && !strcmp(label, "r");
		rep = ok_reply(json_pack("{s:b, s:b}", "guarded",
		                         (is_k && fk.guard_k) || (is_r && fk.guard_r), "allow_raw",
		                         is_r && fk.allow_raw_r));
	} else if (!strcmp(verb, "use")) {
		fk.n_use++;
		snprintf(fk.last_digest, sizeof(fk.last_digest), "%s",
		         json_string_value(json_object_get(req, "digest")));
		snprintf(fk.last_mech, sizeof(fk.last_mech), "%s",
		         json_string_value(json_object_get(req, "mechanism")));
		snprintf(fk.last_label, sizeof(fk.last_label), "%s", label ? label : "");
		fk.last_raw = json_is_true(json_object_get(req, "raw"));
		fk.last_operation = json_integer_value(json_object_get(req, "operation"));
		if (fk.use_mode == USE_GRANT ||
		    (fk.use_mode == USE_ONDEMAND && fk.last_operation == 42))
			rep = ok_reply(json_pack("{s:i, s:i}", "operation", 42, "remaining", 0));
		else if (fk.use_mode == USE_ONDEMAND)
			rep = err_reply(P11G_E_NO_OPERATION, "no approved operation; request one");
		else
			rep = err_reply(fk.refuse_code, "refused by the test; ask the test");
	} else if (!strcmp(verb, "request")) {
		fk.n_request++;
		json_t *keys = json_object_get(req, "keys"),
		       *digests = json_object_get(req, "digests");
		snprintf(fk.last_desc, sizeof(fk.last_desc), "%s",
		         json_string_value(json_object_get(req, "description")));
		assert_int_equal(json_array_size(keys), 1);
		assert_int_equal(
		    json_integer_value(json_object_get(json_array_get(keys, 0), "uses")), 1);
		assert_non_null(
		    strstr(json_string_value(json_object_get(json_array_get(keys, 0), "uri")),
		           "object=k"));
		assert_string_equal(json_string_value(json_array_get(digests, 0)), fk.last_digest);
		rep = fk.request_refused
		          ? err_reply(P11G_E_NOT_ORDERER, "you may not order uses of this key")
		          : ok_reply(json_pack("{s:i, s:s}", "id", 42, "state", "pending"));
	} else if (!strcmp(verb, "wait")) {
		fk.n_wait++;
		assert_int_equal(json_integer_value(json_object_get(req, "id")), 42);
		assert_true(json_integer_value(json_object_get(req, "timeout")) > 0);
		rep = ok_reply(
		    json_pack("{s:{s:i, s:s}}", "operation", "id", 42, "state", "approved"));
	} else {
		rep = err_reply(P11G_E_UNKNOWN_VERB, "unknown verb");
	}
	pthread_mutex_unlock(&fk.lock);
	return rep;
}

/* One connection: the module keeps connections for later calls, so each is
 * served by its own thread, as approvald serves them all at once. */
static void *fake_conn(void *arg)
{
	int c = (int)(intptr_t)arg;
	for (;;) {
		char *buf = NULL, *out;
		size_t len = 0, olen;
		json_t *req, *rep;
		if (p11g_wire_recv(c, &buf, &len, 30000) < 0)
			break;
		req = p11g_wire_decode(buf, len, NULL);
		free(buf);
		if (!req)
			break;
		rep = fake_answer(req);
		json_decref(req);
		out = p11g_wire_encode(rep, &olen);
		json_decref(rep);
		if (!out || p11g_wire_send(c, out, olen) < 0) {
			free(out);
			break;
		}
		free(out);
	}
	close(c);
	return NULL;
}

static void *fake_main(void *arg)
{
	(void)arg;
	for (;;) {
		pthread_t t;
		int c = accept4(fk.listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0) {
			if (errno == EINTR)
				continue;
			return NULL; /* shut down */
		}
		if (pthread_create(&t, NULL, fake_conn, (void *)(intptr_t)c) != 0) {
			close(c);
			continue;
		}
		pthread_detach(t);
	}
}

static void fake_start(void)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	fk.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fk.listen_fd >= 0);
	unlink(fk.path);
	memcpy(sa.sun_path, fk.path, strlen(fk.path) + 1);
	assert_int_equal(bind(fk.listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fk.listen_fd, 64), 0);
	assert_int_equal(pthread_create(&fk.thread, NULL, fake_main, NULL), 0);
	fk.running = true;
}

static void fake_stop(void)
{
	if (!fk.running)
		return;
	shutdown(fk.listen_fd, SHUT_RDWR);
	pthread_join(fk.thread, NULL);
	close(fk.listen_fd);
	unlink(fk.path);
	fk.running = false;
}

static void fake_set(bool guard_k, bool guard_r, bool allow_raw_r, enum use_mode mode,
                     const char *refuse_code)
{
	pthread_mutex_lock(&fk.lock);
	fk.guard_k = guard_k;
	fk.guard_r = guard_r;
	fk.allow_raw_r = allow_raw_r;
	fk.use_mode = mode;
	fk.refuse_code = refuse_code;
	fk.request_refused = false;
	fk.n_key = fk.n_use = fk.n_request = fk.n_wait = 0;
	fk.last_digest[0] = fk.last_mech[0] = fk.last_label[0] = fk.last_desc[0] = '\0';
	fk.last_raw = false;
	fk.last_operation = 0;
	pthread_mutex_unlock(&fk.lock);
	/* A new policy: what the module cached is for the old one. */
	p11g_client_cache_clear();
}

static int fake_count(int *what)
{
	pthread_mutex_lock(&fk.lock);
	int n = *what;
	pthread_mutex_unlock(&fk.lock);
	return n;
}

/* ==== capturing the module's stderr ============================================ */

static int saved_stderr = -1;
static char cap_path[128];

static void capture_begin(void)
{
	int fd;
	snprintf(cap_path, sizeof(cap_path), "%s/stderr.txt", tmpdir);
	fd = open(cap_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	fflush(stderr);
	saved_stderr = dup(2);
	dup2(fd, 2);
	close(fd);
}

static void capture_end(char *buf, size_t size)
{
	int fd;
	ssize_t n;
	fflush(stderr);
	dup2(saved_stderr, 2);
	close(saved_stderr);
	fd = open(cap_path, O_RDONLY | O_CLOEXEC);
	n = read(fd, buf, size - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
}

static size_t count_lines(const char *s)
{
	size_t n = 0;
	for (; *s; s++)
		n += *s == '\n';
	return n;
}

/* ==== SoftHSMv2 through the module ============================================== */

static CK_FUNCTION_LIST_PTR f;
static CK_SLOT_ID token_slot;
static bool have_token;

struct keys {
	CK_OBJECT_HANDLE k_priv, k_pub, r_priv, r_pub;
};

static void pad(CK_UTF8CHAR *dst, size_t n, const char *s)
{
	memset(dst, ' ', n);
	memcpy(dst, s, strlen(s));
}

static bool find_slot(const char *label, CK_SLOT_ID *ret, bool want_uninitialised)
{
	CK_SLOT_ID slots[16];
	CK_ULONG n = P11G_ARRAY_SIZE(slots);
	CK_UTF8CHAR want[32];

	pad(want, sizeof(want), label);
	if (f->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK)
		return false;
	for (CK_ULONG i = 0; i < n; i++) {
		CK_TOKEN_INFO ti;
		if (f->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue;
		bool init = ti.flags & CKF_TOKEN_INITIALIZED;
		if ((want_uninitialised && !init) ||
		    (!want_uninitialised && init && !memcmp(ti.label, want, 32))) {
			*ret = slots[i];
			return true;
		}
	}
	return false;
}

/* No cmocka asserts: also used from threads and forked children. */
static CK_OBJECT_HANDLE find_obj_quiet(CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls, const char *label)
{
	CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)},
	                    {CKA_LABEL, (void *)label, strlen(label)}};
	CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
	CK_ULONG n = 0;
	if (f->C_FindObjectsInit(s, t, 2) != CKR_OK)
		return CK_INVALID_HANDLE;
	if (f->C_FindObjects(s, &h, 1, &n) != CKR_OK || n != 1)
		h = CK_INVALID_HANDLE;
	f->C_FindObjectsFinal(s);
	return h;
}

static CK_OBJECT_HANDLE find_obj(CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls, const char *label)
{
	CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)},
	                    {CKA_LABEL, (void *)label, strlen(label)}};
	CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
	CK_ULONG n = 0;
	assert_int_equal(f->C_FindObjectsInit(s, t, 2), CKR_OK);
	assert_int_equal(f->C_FindObjects(s, &h, 1, &n), CKR_OK);
	assert_int_equal(f->C_FindObjectsFinal(s), CKR_OK);
	assert_int_equal(n, 1);
	return h;
}

static void get_keys(CK_SESSION_HANDLE s, struct keys *k)
{
	k->k_priv = find_obj(s, CKO_PRIVATE_KEY, "k");
	k->k_pub = find_obj(s, CKO_PUBLIC_KEY, "k");
	k->r_priv = find_obj(s, CKO_PRIVATE_KEY, "r");
	k->r_pub = find_obj(s, CKO_PUBLIC_KEY, "r");
}

static CK_SESSION_HANDLE open_session(void)
{
	CK_SESSION_HANDLE s;
	assert_int_equal(
	    f->C_OpenSession(token_slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s),
	    CKR_OK);
	return s;
}

static void make_token(void)
{
	CK_SLOT_ID free_slot;
	CK_UTF8CHAR label[32];
	CK_SESSION_HANDLE s;
	CK_BBOOL yes = CK_TRUE;
	CK_MECHANISM ecgen = {CKM_EC_KEY_PAIR_GEN, NULL, 0},
	             rsagen = {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
	static CK_BYTE p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
	CK_BYTE id1 = 1, id2 = 2, e[] = {1, 0, 1};
	CK_ULONG bits = 2048;
	CK_OBJECT_HANDLE pub, priv;

	assert_true(find_slot("", &free_slot, true));
	pad(label, sizeof(label), "t");
	assert_int_equal(f->C_InitToken(free_slot, (CK_UTF8CHAR_PTR) "12345678", 8, label), CKR_OK);
	assert_true(find_slot("t", &token_slot, false));
	s = open_session();
	assert_int_equal(f->C_Login(s, CKU_SO, (CK_UTF8CHAR_PTR) "12345678", 8), CKR_OK);
	assert_int_equal(f->C_InitPIN(s, (CK_UTF8CHAR_PTR) "1234", 4), CKR_OK);
	assert_int_equal(f->C_Logout(s), CKR_OK);
	assert_int_equal(f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR) "1234", 4), CKR_OK);

	CK_ATTRIBUTE ecpub[] = {{CKA_TOKEN, &yes, 1},
	                        {CKA_VERIFY, &yes, 1},
	                        {CKA_EC_PARAMS, p256, sizeof(p256)},
	                        {CKA_LABEL, "k", 1},
	                        {CKA_ID, &id1, 1}};
	CK_ATTRIBUTE ecpriv[] = {{CKA_TOKEN, &yes, 1},  {CKA_PRIVATE, &yes, 1}, {CKA_SIGN, &yes, 1},
	                         {CKA_DERIVE, &yes, 1}, {CKA_LABEL, "k", 1},    {CKA_ID, &id1, 1}};
	assert_int_equal(f->C_GenerateKeyPair(s, &ecgen, ecpub, P11G_ARRAY_SIZE(ecpub), ecpriv,
	                                      P11G_ARRAY_SIZE(ecpriv), &pub, &priv),
	                 CKR_OK);
	CK_ATTRIBUTE rsapub[] = {{CKA_TOKEN, &yes, 1},
	                         {CKA_VERIFY, &yes, 1},
	                         {CKA_ENCRYPT, &yes, 1},
	                         {CKA_WRAP, &yes, 1},
	                         {CKA_MODULUS_BITS, &bits, sizeof(bits)},
	                         {CKA_PUBLIC_EXPONENT, e, sizeof(e)},
	                         {CKA_LABEL, "r", 1},
	                         {CKA_ID, &id2, 1}};
	CK_ATTRIBUTE rsapriv[] = {{CKA_TOKEN, &yes, 1},  {CKA_PRIVATE, &yes, 1},
	                          {CKA_SIGN, &yes, 1},   {CKA_DECRYPT, &yes, 1},
	                          {CKA_UNWRAP, &yes, 1}, {CKA_LABEL, "r", 1},
	                          {CKA_ID, &id2, 1}};
	assert_int_equal(f->C_GenerateKeyPair(s, &rsagen, rsapub, P11G_ARRAY_SIZE(rsapub), rsapriv,
	                                      P11G_ARRAY_SIZE(rsapriv), &pub, &priv),
	                 CKR_OK);
	/* The login is the token's, for every session of this process. */
}

static CK_C_INITIALIZE_ARGS init_args = {.flags = CKF_OS_LOCKING_OK};

static int group_setup(void **state)
{
	char path[128], conf[512];
	(void)state;
	snprintf(path, sizeof(path), "%s/tokens", tmpdir);
	mkdir(path, 0700);
	snprintf(path, sizeof(path), "%s/softhsm2.conf", tmpdir);
	snprintf(
	    conf, sizeof(conf),
	    "directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n",
	    tmpdir);
	write_file(path, conf);
	setenv("SOFTHSM2_CONF", path, 1);
	snprintf(fk.path, sizeof(fk.path), "%s/a.sock", tmpdir);
	snprintf(path, sizeof(path), "%s/p11gate.conf", tmpdir);
	/* The fake approvald below listens as this process: believed only as
	 * root or as approvald_user. */
	snprintf(conf, sizeof(conf), "module = %s\nsocket = %s\nwait = 0\napprovald_user = %u\n",
	         SOFTHSM_MODULE, fk.path, (unsigned)geteuid());
	write_file(path, conf);
	setenv("P11GATE_CONF", path, 1);
	unsetenv("P11GATE_MODULE");
	unsetenv("P11GATE_SOCKET");
	unsetenv("P11GATE_WAIT");
	/* A missing SoftHSMv2 is an error, not a reason to pass by skipping (tools/debian-packages
	 * installs it). */
	if (access(SOFTHSM_MODULE, R_OK) != 0) {
		fprintf(stderr, "test_module_slots: SoftHSMv2 not found at %s\n", SOFTHSM_MODULE);
		return -1;
	}
	fake_start();
	assert_int_equal(C_GetFunctionList(&f), CKR_OK);
	/* Threads below: the real module must lock too (with NULL arguments
	 * SoftHSMv2 assumes one thread; we pass the caller's arguments on). */
	assert_int_equal(f->C_Initialize(&init_args), CKR_OK);
	make_token();
	/* SoftHSMv2 moves a new token to its own slot id at the next start:
	 * start again now, so the slot stays put in forked children. */
	assert_int_equal(f->C_Finalize(NULL), CKR_OK);
	assert_int_equal(f->C_Initialize(&init_args), CKR_OK);
	assert_true(find_slot("t", &token_slot, false));
	CK_SESSION_HANDLE s = open_session();
	assert_int_equal(f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR) "1234", 4), CKR_OK);
	have_token = true;
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	if (have_token)
		f->C_Finalize(NULL);
	fake_stop();
	return 0;
}

#define NEED_TOKEN()                                                                               \
	do {                                                                                       \
		if (!have_token)                                                                   \
			fail_msg("no SoftHSMv2 token: the group setup failed");                    \
	} while (0)

static void hex_of(const unsigned char *b, size_t n, const char *alg, char *out, size_t size)
{
	char hex[2 * EVP_MAX_MD_SIZE + 1];
	p11g_hex_encode(b, n, hex);
	snprintf(out, size, "%s:%s", alg, hex);
}

static void test_not_initialised_twice(void **state)
{
	(void)state;
	NEED_TOKEN();
	assert_int_equal(f->C_Initialize(NULL), CKR_CRYPTOKI_ALREADY_INITIALIZED);
	assert_int_equal(f->C_Finalize((void *)1), CKR_ARGUMENTS_BAD);
	CK_C_INITIALIZE_ARGS half = {.CreateMutex = (CK_CREATEMUTEX)1};
	assert_int_equal(f->C_Initialize(&half), CKR_ARGUMENTS_BAD);
}

/* The happy path: length query and short buffer cost nothing, the use is
 * bound to the input of CKM_ECDSA, the signature verifies. */
static void test_guarded_sign_granted(void **state)
{
	CK_SESSION_HANDLE s;
	struct keys k;
	CK_MECHANISM m = {CKM_ECDSA, NULL, 0};
	unsigned char in[32], sig[256];
	CK_ULONG len;
	char want[200];
	(void)state;
	NEED_TOKEN();
	fake_set(true, false, false, USE_GRANT, NULL);
	s = open_session();
	get_keys(s, &k);
	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (unsigned char)i;

	assert_int_equal(f->C_SignInit(s, &m, k.k_priv), CKR_OK);
	assert_int_equal(fake_count(&fk.n_key), 1);
	len = 0;
	assert_int_equal(f->C_Sign(s, in, sizeof(in), NULL, &len), CKR_OK);
	assert_int_equal(len, 64);
	len = 10;
	assert_int_equal(f->C_Sign(s, in, sizeof(in), sig, &len), CKR_BUFFER_TOO_SMALL);
	assert_int_equal(len, 64);
	assert_int_equal(fake_count(&fk.n_use), 0);
	len = sizeof(sig);
	assert_int_equal(f->C_Sign(s, in, sizeof(in), sig, &len), CKR_OK);
	assert_int_equal(len, 64);
	assert_int_equal(fake_count(&fk.n_use), 1);
	hex_of(in, sizeof(in), "sha256", want, sizeof(want));
	assert_string_equal(fk.last_digest, want);
	assert_string_equal(fk.last_mech, "CKM_ECDSA");
	assert_string_equal(fk.last_label, "k");
	assert_false(fk.last_raw);

	/* the operation is over: a new one starts cleanly, and the signature is good */
	assert_int_equal(f->C_Sign(s, in, sizeof(in), sig, &len), CKR_OPERATION_NOT_INITIALIZED);
	assert_int_equal(f->C_VerifyInit(s, &m, k.k_pub), CKR_OK);
	assert_int_equal(f->C_Verify(s, in, sizeof(in), sig, len), CKR_OK);

	/* another length than a known digest's: raw */
	assert_int_equal(f->C_SignInit(s, &m, k.k_priv), CKR_OK);
	len = sizeof(sig);
	assert_int_equal(f->C_Sign(s, in, 31, sig, &len), CKR_OK);
	assert_true(fk.last_raw);
	assert_int_equal(f->C_CloseSession(s), CKR_OK);
}

/* A refusal: CKR_FUNCTION_REJECTED, one line naming key, code and message,
 * and the session's next C_SignInit works (the real operation was ended). */
static void test_refusal_keeps_session_usable(void **state)
{
	CK_SESSION_HANDLE s;
	struct keys k;
	CK_MECHANISM ec = {CKM_ECDSA, NULL, 0}, rsa = {CKM_SHA256_RSA_PKCS, NULL, 0},
	             pkcs = {CKM_RSA_PKCS, NULL, 0};
	unsigned char in[32] = {0}, sig[512];
	CK_ULONG len;
	char err[4096];
	(void)state;
	NEED_TOKEN();
	fake_set(true, true, false, USE_REFUSE, P11G_E_EXHAUSTED);
	s = open_session();
	get_keys(s, &k);

	assert_int_equal(f->C_SignInit(s, &ec, k.k_priv), CKR_OK);
	len = sizeof(sig);
	capture_begin();
	CK_RV rv = f->C_Sign(s, in, sizeof(in), sig, &len);
	capture_end(err, sizeof(err));
	assert_int_equal(rv, CKR_FUNCTION_REJECTED);
	assert_int_equal(count_lines(err), 1);
	assert_non_null(strstr(err, "p11gate: signing with pkcs11:token=t;"));
	assert_non_null(strstr(err, "object=k;id=%01"));
	assert_non_null(strstr(err, "(exhausted)"));
	assert_non_null(strstr(err, "refused by the test; ask the test"));
	assert_int_equal(f->C_SignInit(s, &ec, k.k_priv), CKR_OK);

	/* multi-part, refused at C_SignFinal */
	assert_int_equal(f->C_SignInit(s, &rsa, k.r_priv), CKR_OPERATION_ACTIVE);
	fake_set(true, true, false, USE_REFUSE, P11G_E_EXHAUSTED);
	len = sizeof(sig);
	capture_begin();
	assert_int_equal(f->C_Sign(s, in, sizeof(in), sig, &len), CKR_FUNCTION_REJECTED);
	assert_int_equal(f->C_SignInit(s, &rsa, k.r_priv), CKR_OK);
	assert_int_equal(f->C_SignUpdate(s, in, 10), CKR_OK);
	assert_int_equal(f->C_SignUpdate(s, in, 10), CKR_OK);
	len = 0;
	assert_int_equal(f->C_SignFinal(s, NULL, &len), CKR_OK);
	assert_int_equal(fake_count(&fk.n_use), 1);
	len = sizeof(sig);
	assert_int_equal(f->C_SignFinal(s, sig, &len), CKR_FUNCTION_REJECTED);
	assert_int_equal(fake_count(&fk.n_use), 2);
	/* single-part RSA, refused */
	assert_int_equal(f->C_SignInit(s, &pkcs, k.r_priv), CKR_OK);
	len = sizeof(sig);
	assert_int_equal(f->C_Sign(s, in, sizeof(in), sig, &len), CKR_FUNCTION_REJECTED);
	capture_end(err, sizeof(err));
	assert_int_equal(count_lines(err), 3);

	/* and after the refusals, granted signatures on the same session */
	fake_set(true, true, false, USE_GRANT, NULL);
	assert_int_equal(f->C_SignInit(s, &rsa, k.r_priv), CKR_OK);
	len = sizeof(sig);
	assert_int_equal(f->C_Sign(s, in, sizeof(in), sig, &len), CKR_OK);
	assert_int_equal(f->C_SignInit(s, &ec, k.k_priv), CKR_OK);
	len = sizeof(sig);
	assert_int_equal(f->C_Sign(s, in, sizeof(in), sig, &len), CKR_OK);
	assert_int_equal(f->C_CloseSession(s), CKR_OK);
}

static void test_multipart_and_digestinfo(void **state)
{
	CK_SESSION_HANDLE s;
	struct keys k;
	CK_MECHANISM rsa = {CKM_SHA256_RSA_PKCS, NULL, 0}, pkcs = {CKM_RSA_PKCS, NULL, 0};
	unsigned char sig[512], h[32], di[51];
	static const unsigned char prefix[19] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60,
	                                         0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
	                                         0x01, 0x05, 0x00, 0x04, 0x20};
	unsigned hl;
	CK_ULONG len;
	char want[200];
	(void)state;
	NEED_TOKEN();
	fake_set(false, true, false, USE_GRANT, NULL);
	s = open_session();
	get_keys(s, &k);

	assert_int_equal(f->C_SignInit(s, &rsa, k.r_priv), CKR_OK);
	assert_int_equal(f->C_SignUpdate(s, (CK_BYTE_PTR) "abc", 3), CKR_OK);
	assert_int_equal(f->C_SignUpdate(s, (CK_BYTE_PTR) "def", 3), CKR_OK);
	len = 0;
	assert_int_equal(f->C_SignFinal(s, NULL, &len), CKR_OK);
	assert_int_equal(len, 256);
	len = sizeof(sig);
	assert_int_equal(f->C_SignFinal(s, sig, &len), CKR_OK);
	assert_int_equal(fake_count(&fk.n_use), 1);
	EVP_Digest("abcdef", 6, h, &hl, EVP_sha256(), NULL);
	hex_of(h, hl, "sha256", want, sizeof(want));
	assert_string_equal(fk.last_digest, want);
	assert_string_equal(fk.last_mech, "CKM_SHA256_RSA_PKCS");
	assert_int_equal(f->C_VerifyInit(s, &rsa, k.r_pub), CKR_OK);
	assert_int_equal(f->C_Verify(s, (CK_BYTE_PTR) "abcdef", 6, sig, len), CKR_OK);

	/* CKM_RSA_PKCS over a DigestInfo: the hash inside it */
	memcpy(di, prefix, sizeof(prefix));
	memcpy(di + sizeof(prefix), h, 32);
	assert_int_equal(f->C_SignInit(s, &pkcs, k.r_priv), CKR_OK);
	len = sizeof(sig);
	assert_int_equal(f->C_Sign(s, di, sizeof(di), sig, &len), CKR_OK);
	assert_string_equal(fk.last_digest, want);
	assert_false(fk.last_raw);
	/* and over anything else: raw */
	assert_int_equal(f->C_SignInit(s, &pkcs, k.r_priv), CKR_OK);
	len = sizeof(sig);
	assert_int_equal(f->C_Sign(s, h, sizeof(h), sig, &len), CKR_OK);
	assert_true(fk.last_raw);
	assert_int_equal(f->C_CloseSession(s), CKR_OK);
}

/* Unguarded keys: no use asked, and the "key" answer cached for a second. */
static void test_unguarded_and_cache(void **state)
{
	CK_SESSION_HANDLE s;
	struct keys k;
	CK_MECHANISM ec = {CKM_ECDSA, NULL, 0};
	unsigned char in[32] = {1}, sig[128];
	CK_ULONG len;
	(void)state;
	NEED_TOKEN();
	fake_set(false, false, false, USE_REFUSE, P11G_E_NO_OPERATION);
	s = open_session();
	get_keys(s, &k);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(f->C_SignInit(s, &ec, k.k_priv), CKR_OK);
		len = sizeof(sig);
		assert_int_equal(f->C_Sign(s, in, sizeof(in), sig, &len), CKR_OK);
	}
	assert_int_equal(fake_count(&fk.n_use), 0);
	assert_int_equal(fake_count(&fk.n_key), 1);
	/* a policy reload shows within a second */
	pthread_mutex_lock(&fk.lock);
	fk.guard_k = true;
	pthread_mutex_unlock(&fk.lock);
	usleep(1100 * 1000);
	assert_int_equal(f->C_SignInit(s, &ec, k.k_priv), CKR_OK);
	assert_int_equal(fake_count(&fk.n_key), 2);
	len = sizeof(sig);
	capture_begin();
	assert_int_equal(f->C_Sign(s, in, sizeof(in), sig, &len), CKR_FUNCTION_REJECTED);
	capture_end((char[512]){0}, 512);
	assert_int_equal(f->C_CloseSession(s), CKR_OK);
}

/* approvald gone: signing with private keys refused, the rest works. */
static void test_fail_closed(void **state)
{
	CK_SESSION_HANDLE s;
	struct keys k;
	CK_MECHANISM ec = {CKM_ECDSA, NULL, 0}, pkcs = {CKM_RSA_PKCS, NULL, 0};
	unsigned char in[32] = {2}, sig[512], ct[512], pt[512];
	CK_ULONG len, ctlen = sizeof(ct), ptlen = sizeof(pt);
	char err[2048];
	(void)state;
	NEED_TOKEN();
	fake_set(false, false, false, USE_GRANT, NULL);
	s = open_session();
	get_keys(s, &k);
	fake_stop();

	capture_begin();
	assert_int_equal(f->C_SignInit(s, &ec, k.k_priv), CKR_OK);
	len = sizeof(sig);
	assert_int_equal(f->C_Sign(s, in, sizeof(in), NULL, &len), CKR_OK);
	assert_int_equal(f->C_Sign(s, in, sizeof(in), sig, &len), CKR_FUNCTION_REJECTED);
	capture_end(err, sizeof(err));
	assert_int_equal(count_lines(err), 1);
	assert_non_null(strstr(err, "approvald is not reachable at "));
	assert_non_null(strstr(err, fk.path));
	assert_int_equal(f->C_SignInit(s, &ec, k.k_priv), CKR_OK);
	capture_begin();
	assert_int_equal(f->C_Sign(s, in, sizeof(in), sig, &len), CKR_FUNCTION_REJECTED);
	/* private-key decryption too: nobody can say it is allowed */
	assert_int_equal(f->C_DecryptInit(s, &pkcs, k.r_priv), CKR_KEY_FUNCTION_NOT_PERMITTED);
	capture_end(err, sizeof(err));

	/* public-key operations, listing, verification: untouched */
	assert_int_equal(f->C_EncryptInit(s, &pkcs, k.r_pub), CKR_OK);
	assert_int_equal(f->C_Encrypt(s, in, sizeof(in), ct, &ctlen), CKR_OK);
	assert_int_equal(find_obj(s, CKO_PUBLIC_KEY, "k"), k.k_pub);
	fake_start();
	/* back: the next signature is asked for again */
	assert_int_equal(f->C_SignInit(s, &ec, k.k_priv), CKR_OK);
	len = sizeof(sig);
	assert_int_equal(f->C_Sign(s, in, sizeof(in), sig, &len), CKR_OK);
	assert_int_equal(f->C_VerifyInit(s, &ec, k.k_pub), CKR_OK);
	assert_int_equal(f->C_Verify(s, in, sizeof(in), sig, len), CKR_OK);
	(void)ptlen;
	assert_int_equal(f->C_CloseSession(s), CKR_OK);
}

/* Every other path to a guarded private key. */
static void test_closed_paths(void **state)
{
	CK_SESSION_HANDLE s;
	struct keys k;
	CK_MECHANISM pkcs = {CKM_RSA_PKCS, NULL, 0}, rsa = {CKM_SHA256_RSA_PKCS, NULL, 0},
	             ecdh = {CKM_ECDH1_DERIVE, NULL, 0};
	unsigned char in[32] = {3}, ct[512], pt[512], out[512];
	CK_ULONG ctlen = sizeof(ct), ptlen = sizeof(pt), outlen = sizeof(out);
	CK_ATTRIBUTE lab = {CKA_LABEL, "r", 1}, labk = {CKA_LABEL, "k", 1};
	CK_OBJECT_HANDLE nh;
	(void)state;
	NEED_TOKEN();
	fake_set(true, true, false, USE_GRANT, NULL);
	s = open_session();
	get_keys(s, &k);

	capture_begin();
	assert_int_equal(f->C_DecryptInit(s, &pkcs, k.r_priv), CKR_KEY_FUNCTION_NOT_PERMITTED);
	assert_int_equal(f->C_SignRecoverInit(s, &pkcs, k.r_priv), CKR_KEY_FUNCTION_NOT_PERMITTED);
	assert_int_equal(f->C_SetAttributeValue(s, k.r_priv, &lab, 1),
	                 CKR_KEY_FUNCTION_NOT_PERMITTED);
	assert_int_equal(f->C_CopyObject(s, k.r_priv, &lab, 1, &nh),
	                 CKR_KEY_FUNCTION_NOT_PERMITTED);
	assert_int_equal(f->C_WrapKey(s, &pkcs, k.r_pub, k.r_priv, out, &outlen),
	                 CKR_KEY_FUNCTION_NOT_PERMITTED);
	assert_int_equal(f->C_UnwrapKey(s, &pkcs, k.r_priv, in, sizeof(in), NULL, 0, &nh),
	                 CKR_KEY_FUNCTION_NOT_PERMITTED);
	assert_int_equal(f->C_DeriveKey(s, &ecdh, k.k_priv, NULL, 0, &nh),
	                 CKR_KEY_FUNCTION_NOT_PERMITTED);
	assert_int_equal(f->C_SetOperationState(s, in, sizeof(in), 0, k.r_priv),
	                 CKR_FUNCTION_NOT_SUPPORTED);
	/* dual-function calls beside a guarded signature */
	assert_int_equal(f->C_SignInit(s, &rsa, k.r_priv), CKR_OK);
	assert_int_equal(f->C_SignEncryptUpdate(s, in, sizeof(in), out, &outlen),
	                 CKR_FUNCTION_REJECTED);
	assert_int_equal(f->C_DecryptVerifyUpdate(s, in, sizeof(in), out, &outlen),
	                 CKR_FUNCTION_REJECTED);
	char err[8192];
	capture_end(err, sizeof(err));
	assert_int_equal(count_lines(err), 9);
	assert_int_equal(fake_count(&fk.n_use), 0);
	assert_int_equal(f->C_CloseSession(s), CKR_OK);

	/* allow_raw opens no private-key transform of a guarded key (a raw RSA
	 * decryption is a signature), nor export or relabelling */
	fake_set(false, true, true, USE_GRANT, NULL);
	s = open_session();
	assert_int_equal(f->C_EncryptInit(s, &pkcs, k.r_pub), CKR_OK);
	assert_int_equal(f->C_Encrypt(s, in, sizeof(in), ct, &ctlen), CKR_OK);
	capture_begin();
	assert_int_equal(f->C_DecryptInit(s, &pkcs, k.r_priv), CKR_KEY_FUNCTION_NOT_PERMITTED);
	assert_int_equal(f->C_SetAttributeValue(s, k.r_priv, &lab, 1),
	                 CKR_KEY_FUNCTION_NOT_PERMITTED);
	capture_end(err, sizeof(err));
	assert_int_equal(count_lines(err), 2);
	assert_int_equal(fake_count(&fk.n_use), 0);
	/* an unguarded key's attributes are its owner's business */
	assert_int_equal(f->C_SetAttributeValue(s, k.k_priv, &labk, 1), CKR_OK);
	assert_int_equal(f->C_CloseSession(s), CKR_OK);

	/* and an unguarded key decrypts */
	fake_set(false, false, false, USE_GRANT, NULL);
	s = open_session();
	assert_int_equal(f->C_DecryptInit(s, &pkcs, k.r_priv), CKR_OK);
	assert_int_equal(f->C_Decrypt(s, ct, ctlen, pt, &ptlen), CKR_OK);
	assert_int_equal(ptlen, sizeof(in));
	assert_memory_equal(pt, in, sizeof(in));
	assert_int_equal(f->C_CloseSession(s), CKR_OK);
}

/* wait > 0: no operation files a pinned request, waits, and uses it. */
static void test_on_demand(void **state)
{
	CK_SESSION_HANDLE s;
	struct keys k;
	CK_MECHANISM ec = {CKM_ECDSA, NULL, 0};
	unsigned char in[32] = {4}, sig[128];
	CK_ULONG len = sizeof(sig);
	char err[2048], want[64];
	(void)state;
	NEED_TOKEN();
	fake_set(true, false, false, USE_ONDEMAND, NULL);
	p11g_m.cfg.wait = 5;
	s = open_session();
	get_keys(s, &k);
	assert_int_equal(f->C_SignInit(s, &ec, k.k_priv), CKR_OK);
	capture_begin();
	assert_int_equal(f->C_Sign(s, in, sizeof(in), sig, &len), CKR_OK);
	capture_end(err, sizeof(err));
	assert_int_equal(fake_count(&fk.n_use), 2);
	assert_int_equal(fake_count(&fk.n_request), 1);
	assert_int_equal(fake_count(&fk.n_wait), 1);
	assert_int_equal(fk.last_operation, 42);
	assert_string_equal(err, "p11gate: waiting up to 5 s for approval of operation 42: "
	                         "approvald approve 42\n");
	snprintf(want, sizeof(want), "(pid %ld)", (long)getpid());
	assert_non_null(strstr(fk.last_desc, "on-demand signature by "));
	assert_non_null(strstr(fk.last_desc, want));

	/* a refused request: the use's refusal is what the signer sees */
	fake_set(true, false, false, USE_ONDEMAND, NULL);
	fk.request_refused = true;
	assert_int_equal(f->C_SignInit(s, &ec, k.k_priv), CKR_OK);
	len = sizeof(sig);
	capture_begin();
	assert_int_equal(f->C_Sign(s, in, sizeof(in), sig, &len), CKR_FUNCTION_REJECTED);
	capture_end(err, sizeof(err));
	assert_int_equal(fake_count(&fk.n_request), 1);
	assert_int_equal(fake_count(&fk.n_wait), 0);
	assert_int_equal(count_lines(err), 1);
	assert_non_null(strstr(err, "(no_operation)"));
	p11g_m.cfg.wait = 0;
	assert_int_equal(f->C_CloseSession(s), CKR_OK);
}

/* A forked child must initialise again; then it works on its own. */
static void test_fork(void **state)
{
	CK_SESSION_HANDLE s;
	struct keys k;
	CK_MECHANISM ec = {CKM_ECDSA, NULL, 0};
	unsigned char in[32] = {5}, sig[128];
	CK_ULONG len = sizeof(sig);
	int status;
	pid_t pid;
	(void)state;
	NEED_TOKEN();
	fake_set(true, false, false, USE_GRANT, NULL);
	s = open_session();
	get_keys(s, &k);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		CK_ULONG n = 0;
		int bad = 0;
		CK_SESSION_HANDLE cs;
		bad |= f->C_GetSlotList(CK_TRUE, NULL, &n) != CKR_CRYPTOKI_NOT_INITIALIZED;
		bad |= (f->C_SignInit(s, &ec, k.k_priv) != CKR_CRYPTOKI_NOT_INITIALIZED) << 1;
		bad |= (f->C_Finalize(NULL) != CKR_CRYPTOKI_NOT_INITIALIZED) << 2;
		bad |= (f->C_Initialize(&init_args) != CKR_OK) << 3;
		bad |= (f->C_OpenSession(token_slot, CKF_SERIAL_SESSION, NULL, NULL, &cs) != CKR_OK)
		       << 4;
		bad |= (f->C_Login(cs, CKU_USER, (CK_UTF8CHAR_PTR) "1234", 4) != CKR_OK) << 5;
		CK_OBJECT_HANDLE kh = find_obj_quiet(cs, CKO_PRIVATE_KEY, "k");
		bad |= (kh == CK_INVALID_HANDLE) << 9;
		bad |= (f->C_SignInit(cs, &ec, kh) != CKR_OK) << 6;
		bad |= (f->C_Sign(cs, in, sizeof(in), sig, &len) != CKR_OK) << 7;
		bad |= (f->C_Finalize(NULL) != CKR_OK) << 8;
		/* Not cmocka's asserts: a failure would carry on as a second test
		 * runner in this child. */
		if (bad)
			fprintf(stderr, "forked child: failed checks 0x%x\n", bad);
		_exit(bad ? 1 : 0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(fake_count(&fk.n_use), 1);
	/* the parent carries on with its own session */
	assert_int_equal(f->C_SignInit(s, &ec, k.k_priv), CKR_OK);
	len = sizeof(sig);
	assert_int_equal(f->C_Sign(s, in, sizeof(in), sig, &len), CKR_OK);
	assert_int_equal(fake_count(&fk.n_use), 2);
	assert_int_equal(f->C_CloseSession(s), CKR_OK);
}

#define THREADS    4
#define ITERATIONS 15

static void *signer(void *arg)
{
	CK_MECHANISM ec = {CKM_ECDSA, NULL, 0};
	long fails = 0;
	(void)arg;
	for (int i = 0; i < ITERATIONS; i++) {
		CK_SESSION_HANDLE s;
		unsigned char in[32], sig[128];
		CK_ULONG len = sizeof(sig);
		memset(in, i, sizeof(in));
		CK_RV orv = f->C_OpenSession(token_slot, CKF_SERIAL_SESSION, NULL, NULL, &s);
		if (orv != CKR_OK) {
			fprintf(stderr, "thread: C_OpenSession: 0x%lx\n", orv);
			fails++;
			continue;
		}
		CK_OBJECT_HANDLE priv = find_obj_quiet(s, CKO_PRIVATE_KEY, "k"),
		                 pub = find_obj_quiet(s, CKO_PUBLIC_KEY, "k");
		CK_RV rv[5] = {f->C_SignInit(s, &ec, priv), f->C_Sign(s, in, sizeof(in), sig, &len),
		               f->C_VerifyInit(s, &ec, pub),
		               f->C_Verify(s, in, sizeof(in), sig, len), f->C_CloseSession(s)};
		for (size_t j = 0; j < P11G_ARRAY_SIZE(rv); j++) {
			if (rv[j] != CKR_OK) {
				fprintf(stderr, "thread: step %zu: 0x%lx\n", j, rv[j]);
				fails++;
			}
		}
	}
	return (void *)fails;
}

static void test_threads(void **state)
{
	pthread_t t[THREADS];
	size_t before;
	(void)state;
	NEED_TOKEN();
	fake_set(true, false, false, USE_GRANT, NULL);
	before = p11g_sessions_count();
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, signer, NULL), 0);
	for (int i = 0; i < THREADS; i++) {
		void *fails;
		pthread_join(t[i], &fails);
		assert_int_equal((long)fails, 0);
	}
	assert_int_equal(fake_count(&fk.n_use), THREADS * ITERATIONS);
	/* C_CloseSession dropped every record */
	assert_int_equal(p11g_sessions_count(), before);
}

int main(void)
{
	const struct CMUnitTest table[] = {
	    cmocka_unit_test(test_slot_table_complete),
	    cmocka_unit_test(test_signing_family_gated),
	    cmocka_unit_test(test_lists_are_ours_and_full),
	    cmocka_unit_test(test_interfaces),
	    cmocka_unit_test(test_shared_object_exports),
	    cmocka_unit_test(test_config_parse),
	    cmocka_unit_test(test_config_load_and_env),
	};
	const struct CMUnitTest softhsm[] = {
	    cmocka_unit_test(test_not_initialised_twice),
	    cmocka_unit_test(test_guarded_sign_granted),
	    cmocka_unit_test(test_refusal_keeps_session_usable),
	    cmocka_unit_test(test_multipart_and_digestinfo),
	    cmocka_unit_test(test_unguarded_and_cache),
	    cmocka_unit_test(test_fail_closed),
	    cmocka_unit_test(test_closed_paths),
	    cmocka_unit_test(test_on_demand),
	    cmocka_unit_test(test_fork),
	    cmocka_unit_test(test_threads),
	};
	int failed;

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/p11gate-test-XXXXXX");
	if (!mkdtemp(tmpdir))
		return 1;
	failed = cmocka_run_group_tests_name("slots", table, NULL, NULL);
	failed += cmocka_run_group_tests_name("softhsm", softhsm, group_setup, group_teardown);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		failed++;
	return failed;
}
