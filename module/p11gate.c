/* Entry points: function lists, interfaces, C_Initialize/C_Finalize, fork handling, forwarders. */
#include <dlfcn.h>
#include <stdatomic.h>
#include <syslog.h>

#include "module/module.h"
#include "p11gate/log.h"

#define P11G_EXPORT __attribute__((visibility("default")))

struct p11g_module p11g_m;

/*
 * Lifecycle.  `lock` is taken for reading by every call for its whole
 * duration and for writing by C_Initialize and C_Finalize, so the real
 * module is never finalised or unloaded under a running call.  The fork
 * generation is bumped by the atfork child handler and nothing else; a call
 * compares it with the generation C_Initialize ran in and, in a child that
 * has not initialised yet, answers CKR_CRYPTOKI_NOT_INITIALIZED without
 * touching any lock a parent thread may have held at fork time.
 */
static pthread_rwlock_t lock = PTHREAD_RWLOCK_INITIALIZER;
static atomic_uint fork_gen;
static atomic_uint init_gen;
static atomic_bool initialized;
static void *real_dl;
static bool real_owned; /* we initialised the real module, so we finalise it */
static atomic_uint slot_waiters;

static void atfork_child(void)
{
	atomic_fetch_add(&fork_gen, 1);
}

static void register_atfork(void)
{
	pthread_atfork(NULL, NULL, atfork_child);
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

CK_RV p11g_enter(void)
{
	if (!atomic_load(&initialized) || atomic_load(&init_gen) != atomic_load(&fork_gen))
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	pthread_rwlock_rdlock(&lock);
	if (!atomic_load(&initialized)) {
		pthread_rwlock_unlock(&lock);
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	}
	return CKR_OK;
}

void p11g_leave(void)
{
	pthread_rwlock_unlock(&lock);
}

void p11g_refusal(const char *fmt, ...)
{
	char line[1536];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* approvald's sentences end up here: one line, whatever they hold. */
	for (char *p = line; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = ' ';
	if (p11g_m.host.on) {
		/* In approvald: stderr is its log; name the client it serves. */
		fprintf(stderr, "p11gate: %s (PKCS#11 client uid %u pid %ld)\n", line,
		        (unsigned)p11g_m.host.uid, (long)p11g_m.host.pid);
		syslog(LOG_AUTH | LOG_WARNING, "p11gate: %s (PKCS#11 client uid %u pid %ld)", line,
		       (unsigned)p11g_m.host.uid, (long)p11g_m.host.pid);
		return;
	}
	fprintf(stderr, "p11gate: %s\n", line);
	syslog(LOG_AUTH | LOG_WARNING, "p11gate: %s (%s, pid %ld)", line,
	       program_invocation_short_name, (long)getpid());
}

void p11g_complain(const char *fmt, ...)
{
	char line[1536];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "p11gate: %s\n", line);
}

/* ---- generated forwarders and deniers ---------------------------------- */

#define P11G_DEFINE_FORWARD(name, params, args)                                                    \
	static CK_RV slot_##name params                                                            \
	{                                                                                          \
		P11G_ENTER();                                                                      \
		return p11g_m.real.name args;                                                      \
	}
#define P11G_DEFINE_DENY(name, params, args)                                                       \
	static CK_RV slot_##name params                                                            \
	{                                                                                          \
		P11G_ENTER();                                                                      \
		p11g_debug("%s refused: p11gate does not pass it on", #name);                      \
		return CKR_FUNCTION_NOT_SUPPORTED;                                                 \
	}
#define P11G_DEFINE_HOOK(name, params, args)
#define P11G_DEFINE_SLOT(name, kind, version, params, args) P11G_DEFINE_##kind(name, params, args)
P11G_SLOTS(P11G_DEFINE_SLOT)

#define P11G_FN_FORWARD(name) slot_##name
#define P11G_FN_DENY(name)    slot_##name
#define P11G_FN_HOOK(name)    hook_##name

/* ---- the lists ------------------------------------------------------------ */

#define P11G_ENTRY_2_2(name, kind) .name = P11G_FN_##kind(name),
#define P11G_ENTRY_2_3(name, kind)
#define P11G_ENTRY_2(name, kind, version, params, args) P11G_ENTRY_2_##version(name, kind)
#define P11G_ENTRY_3(name, kind, version, params, args) .name = P11G_FN_##kind(name),

CK_FUNCTION_LIST p11g_list_2_40 = {.version = {2, 40}, P11G_SLOTS(P11G_ENTRY_2)};

CK_FUNCTION_LIST_3_0 p11g_list_3_0 = {.version = {3, 0}, P11G_SLOTS(P11G_ENTRY_3)};

#define P11G_COUNT_2(name, kind, version, params, args)   +(version == 2)
#define P11G_COUNT_ALL(name, kind, version, params, args) +1
#define P11G_FN_SLOTS(type)                                                                        \
	((sizeof(type) - offsetof(type, C_Initialize)) / sizeof(CK_C_Initialize))

/* Designated initialisers leave a forgotten slot NULL without a word (and
 * -Woverride-init catches a doubled one): count them. */
_Static_assert(0 P11G_SLOTS(P11G_COUNT_2) == P11G_FN_SLOTS(CK_FUNCTION_LIST),
               "P11G_SLOTS must list every CK_FUNCTION_LIST member");
_Static_assert(0 P11G_SLOTS(P11G_COUNT_ALL) == P11G_FN_SLOTS(CK_FUNCTION_LIST_3_0),
               "P11G_SLOTS must list every CK_FUNCTION_LIST_3_0 member");
_Static_assert(offsetof(CK_FUNCTION_LIST_3_0, C_WaitForSlotEvent) ==
                   offsetof(CK_FUNCTION_LIST, C_WaitForSlotEvent),
               "the 3.0 list must begin with the 2.40 list");

#define P11G_INFO(name, kind, version, params, args) {#name, P11G_SLOT_##kind, version},
const struct p11g_slot_info p11g_slot_table[] = {P11G_SLOTS(P11G_INFO)};
const size_t p11g_slot_count = P11G_ARRAY_SIZE(p11g_slot_table);

static CK_INTERFACE interfaces[] = {
    {(CK_UTF8CHAR_PTR) "PKCS 11", &p11g_list_3_0, 0},
    {(CK_UTF8CHAR_PTR) "PKCS 11", &p11g_list_2_40, 0},
};

/* ---- the real module ------------------------------------------------------ */

/* What the real module lacks (a 2.x module's 3.0 functions, an empty entry)
 * answers CKR_FUNCTION_NOT_SUPPORTED, so no caller of p11g_m.real checks
 * for NULL. */
#define P11G_DEFINE_UNSUPPORTED(name, kind, version, params, args)                                 \
	static CK_RV unsupported_##name params                                                     \
	{                                                                                          \
		return CKR_FUNCTION_NOT_SUPPORTED;                                                 \
	}
P11G_SLOTS(P11G_DEFINE_UNSUPPORTED)

#define P11G_COPY_2(name)                            p11g_m.real.name = (l3 ? l3->name : l2->name) ?: unsupported_##name;
#define P11G_COPY_3(name)                            p11g_m.real.name = (l3 ? l3->name : NULL) ?: unsupported_##name;
#define P11G_COPY(name, kind, version, params, args) P11G_COPY_##version(name)

static void unload_real(void)
{
	/* A thread still inside the real C_WaitForSlotEvent runs its code. */
	if (real_dl && atomic_load(&slot_waiters) == 0)
		dlclose(real_dl);
	real_dl = NULL;
	memset(&p11g_m.real, 0, sizeof(p11g_m.real));
	p11g_m.real_3_0 = false;
}

static CK_RV load_real(const char *path)
{
	CK_FUNCTION_LIST_PTR l2 = NULL;
	CK_FUNCTION_LIST_3_0 *l3 = NULL;
	CK_C_GetFunctionList gfl;
	CK_C_GetInterface gi;
	CK_RV rv;

	real_dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!real_dl) {
		p11g_complain("cannot load the module %s named in %s: %s", path,
		              p11g_m.cfg.source[0] ? p11g_m.cfg.source : "P11GATE_MODULE",
		              dlerror());
		return CKR_GENERAL_ERROR;
	}
	gfl = (CK_C_GetFunctionList)dlsym(real_dl, "C_GetFunctionList");
	gi = (CK_C_GetInterface)dlsym(real_dl, "C_GetInterface");
	if (gfl == C_GetFunctionList || gi == C_GetInterface) {
		p11g_complain("the module %s is p11gate itself; name the real PKCS#11 module",
		              path);
		goto fail;
	}
	if (gi) {
		/* Any 3.x list begins with the 3.0 list. */
		CK_INTERFACE_PTR iface = NULL;
		if (gi((CK_UTF8CHAR_PTR) "PKCS 11", NULL, &iface, 0) == CKR_OK && iface &&
		    iface->pFunctionList && ((CK_VERSION *)iface->pFunctionList)->major >= 3)
			l3 = iface->pFunctionList;
	}
	if (!l3) {
		if (!gfl || (rv = gfl(&l2)) != CKR_OK || !l2) {
			p11g_complain("the module %s has no usable C_GetFunctionList", path);
			goto fail;
		}
	}
	if (!(l3 ? l3->C_Initialize : l2->C_Initialize) ||
	    !(l3 ? l3->C_Finalize : l2->C_Finalize)) {
		p11g_complain("the module %s lacks C_Initialize or C_Finalize", path);
		goto fail;
	}
	P11G_SLOTS(P11G_COPY)
	p11g_m.real_3_0 = l3 != NULL;
	return CKR_OK;
fail:
	unload_real();
	return CKR_GENERAL_ERROR;
}

/* Validates C_Initialize's argument as the spec asks. */
static CK_RV check_init_args(CK_VOID_PTR pInitArgs)
{
	CK_C_INITIALIZE_ARGS *a = pInitArgs;
	int n;

	if (!a)
		return CKR_OK;
	if (a->pReserved)
		return CKR_ARGUMENTS_BAD;
	n = !!a->CreateMutex + !!a->DestroyMutex + !!a->LockMutex + !!a->UnlockMutex;
	if (n != 0 && n != 4)
		return CKR_ARGUMENTS_BAD;
	/* Mutex callbacks or not, we lock with pthreads (CKF_OS_LOCKING_OK
	 * semantics); the real module gets the caller's arguments as given. */
	return CKR_OK;
}

static void set_debug(void)
{
	const char *d = secure_getenv("P11GATE_DEBUG");
	p11g_log_ident = "p11gate";
	p11g_log_threshold = d && !strcmp(d, "1") ? P11G_LOG_DEBUG : P11G_LOG_INFO;
}

CK_RV hook_C_Initialize(CK_VOID_PTR pInitArgs)
{
	p11g_err err = {0};
	unsigned gen;
	bool forked = false;
	CK_RV rv;

	pthread_once(&atfork_once, register_atfork);
	if ((rv = check_init_args(pInitArgs)) != CKR_OK)
		return rv;
	gen = atomic_load(&fork_gen);
	if (atomic_load(&initialized) && atomic_load(&init_gen) != gen) {
		/* A child of a process that had us initialised: the parent's
		 * threads, sessions and locks are not ours any more. */
		forked = true;
		pthread_rwlock_init(&lock, NULL);
		p11g_sessions_reset_after_fork();
		p11g_client_reset_after_fork();
		p11g_gate_cache_clear(true);
	}
	pthread_rwlock_wrlock(&lock);
	if (atomic_load(&initialized) && !forked) {
		rv = CKR_CRYPTOKI_ALREADY_INITIALIZED;
		goto out;
	}
	set_debug();
	if (!forked) {
		/* Hosted by approvald: p11g_gate_host() set the configuration. */
		if (!p11g_m.host.on && p11g_config_load(&p11g_m.cfg, &err) < 0) {
			p11g_complain("%s", err.msg);
			rv = CKR_GENERAL_ERROR;
			goto out;
		}
		if (p11g_m.cfg.remote[0]) {
			/* remote_probe failed (and said why), or the configuration
			 * changed after it: fail closed rather than guess. */
			p11g_complain("remote = %s: approvald's PKCS#11 socket could not be used",
			              p11g_m.cfg.remote);
			rv = CKR_GENERAL_ERROR;
			goto out;
		}
		if ((rv = load_real(p11g_m.cfg.module)) != CKR_OK)
			goto out;
		p11g_sessions_init();
		p11g_client_init();
		rv = p11g_m.real.C_Initialize(pInitArgs);
		real_owned = rv == CKR_OK;
		/* Someone else in this process initialised it (a program that
		 * loads it directly as well): share it, leave its C_Finalize to
		 * them. */
		if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED)
			rv = CKR_OK;
		if (rv != CKR_OK) {
			unload_real();
			goto out;
		}
		if (p11g_m.host.on && (rv = p11g_host_login_all()) != CKR_OK) {
			p11g_m.real.C_Finalize(NULL);
			unload_real();
			rv = CKR_GENERAL_ERROR;
			goto out;
		}
	} else {
		/*
		 * The real module in a child.  SoftHSMv2 2.6.1 keeps the
		 * parent's state across fork (its C_Initialize answers
		 * CKR_CRYPTOKI_ALREADY_INITIALIZED, and the child sees the
		 * parent's login); C_Finalize then C_Initialize gives the child
		 * a fresh one that works.  A module with its own fork handling
		 * answers CKR_OK at once.
		 */
		rv = p11g_m.real.C_Initialize(pInitArgs);
		if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED) {
			p11g_m.real.C_Finalize(NULL);
			rv = p11g_m.real.C_Initialize(pInitArgs);
		}
		if (rv != CKR_OK) {
			p11g_debug("re-initialising the real module in a forked child: 0x%lx", rv);
			atomic_store(&initialized, false);
			goto out;
		}
		real_owned = true;
	}
	atomic_store(&init_gen, gen);
	atomic_store(&initialized, true);
	p11g_debug("initialised: module %s, socket %s, wait %u s%s", p11g_m.cfg.module,
	           p11g_m.cfg.socket, p11g_m.cfg.wait, forked ? " (in a forked child)" : "");
out:
	pthread_rwlock_unlock(&lock);
	return rv;
}

CK_RV hook_C_Finalize(CK_VOID_PTR pReserved)
{
	CK_RV rv = CKR_OK;

	if (pReserved)
		return CKR_ARGUMENTS_BAD;
	if (!atomic_load(&initialized) || atomic_load(&init_gen) != atomic_load(&fork_gen))
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	pthread_rwlock_wrlock(&lock);
	if (!atomic_load(&initialized)) {
		pthread_rwlock_unlock(&lock);
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	}
	if (real_owned)
		rv = p11g_m.real.C_Finalize(NULL);
	p11g_sessions_clear();
	p11g_client_cache_clear();
	p11g_gate_cache_clear(false);
	p11g_host_forget();
	unload_real();
	atomic_store(&initialized, false);
	pthread_rwlock_unlock(&lock);
	return rv;
}

/* ---- remote: approvald serves the module and gates it --------------------- */

/*
 * With `remote = unix:path=...` this module is a name for p11-kit-client.so
 * talking to approvald's PKCS#11 socket: the function lists handed out are
 * p11-kit-client's own, so no call passes through code of ours.  The gate
 * runs in approvald (approvald/host.c).  p11-kit-client takes its server from
 * $P11_KIT_SERVER_ADDRESS when its C_GetFunctionList runs; that variable is
 * set here, once, for this process.
 */
static pthread_once_t remote_once = PTHREAD_ONCE_INIT;
static CK_FUNCTION_LIST_PTR remote_list;
static CK_INTERFACE remote_iface = {(CK_UTF8CHAR_PTR) "PKCS 11", NULL, 0};

static void remote_probe(void)
{
	struct p11g_config cfg;
	p11g_err err = {0};
	CK_C_GetFunctionList gfl;
	void *dl;

	/* A bad configuration is C_Initialize's to report. */
	if (p11g_config_load(&cfg, &err) < 0 || !cfg.remote[0])
		return;
	if (setenv("P11_KIT_SERVER_ADDRESS", cfg.remote, 1) < 0)
		return;
	dl = dlopen(P11G_P11KIT_CLIENT, RTLD_NOW | RTLD_LOCAL);
	if (!dl) {
		p11g_complain("remote = %s needs %s: %s", cfg.remote, P11G_P11KIT_CLIENT,
		              dlerror());
		return;
	}
	gfl = (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList");
	if (!gfl || gfl(&remote_list) != CKR_OK || !remote_list) {
		p11g_complain("%s gave no function list for %s", P11G_P11KIT_CLIENT, cfg.remote);
		remote_list = NULL;
		return;
	}
	remote_iface.pFunctionList = remote_list;
}

static CK_FUNCTION_LIST_PTR remote(void)
{
	pthread_once(&remote_once, remote_probe);
	return remote_list;
}

CK_RV hook_C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR ppFunctionList)
{
	pthread_once(&atfork_once, register_atfork);
	if (!ppFunctionList)
		return CKR_ARGUMENTS_BAD;
	if (remote()) {
		*ppFunctionList = remote_list;
		return CKR_OK;
	}
	*ppFunctionList = &p11g_list_2_40;
	return CKR_OK;
}

CK_RV hook_C_GetInterfaceList(CK_INTERFACE_PTR pInterfacesList, CK_ULONG_PTR pulCount)
{
	pthread_once(&atfork_once, register_atfork);
	if (!pulCount)
		return CKR_ARGUMENTS_BAD;
	if (remote()) {
		if (pInterfacesList && *pulCount < 1) {
			*pulCount = 1;
			return CKR_BUFFER_TOO_SMALL;
		}
		if (pInterfacesList)
			pInterfacesList[0] = remote_iface;
		*pulCount = 1;
		return CKR_OK;
	}
	if (!pInterfacesList) {
		*pulCount = P11G_ARRAY_SIZE(interfaces);
		return CKR_OK;
	}
	if (*pulCount < P11G_ARRAY_SIZE(interfaces)) {
		*pulCount = P11G_ARRAY_SIZE(interfaces);
		return CKR_BUFFER_TOO_SMALL;
	}
	memcpy(pInterfacesList, interfaces, sizeof(interfaces));
	*pulCount = P11G_ARRAY_SIZE(interfaces);
	return CKR_OK;
}

CK_RV hook_C_GetInterface(CK_UTF8CHAR_PTR pInterfaceName, CK_VERSION_PTR pVersion,
                          CK_INTERFACE_PTR_PTR ppInterface, CK_FLAGS flags)
{
	pthread_once(&atfork_once, register_atfork);
	if (!ppInterface)
		return CKR_ARGUMENTS_BAD;
	if (remote()) {
		const CK_VERSION *v = &remote_list->version;
		if ((pInterfaceName && strcmp((const char *)pInterfaceName, "PKCS 11")) ||
		    (pVersion && (pVersion->major != v->major || pVersion->minor != v->minor)) ||
		    flags)
			return CKR_ARGUMENTS_BAD;
		*ppInterface = &remote_iface;
		return CKR_OK;
	}
	for (size_t i = 0; i < P11G_ARRAY_SIZE(interfaces); i++) {
		CK_INTERFACE *it = &interfaces[i];
		const CK_VERSION *v = it->pFunctionList;
		if (pInterfaceName &&
		    strcmp((const char *)pInterfaceName, (const char *)it->pInterfaceName))
			continue;
		if (pVersion && (pVersion->major != v->major || pVersion->minor != v->minor))
			continue;
		if ((it->flags & flags) != flags)
			continue;
		*ppInterface = it;
		return CKR_OK;
	}
	return CKR_ARGUMENTS_BAD;
}

/* The only symbols the version script exports. */
P11G_EXPORT CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR ppFunctionList)
{
	return hook_C_GetFunctionList(ppFunctionList);
}

P11G_EXPORT CK_RV C_GetInterfaceList(CK_INTERFACE_PTR pInterfacesList, CK_ULONG_PTR pulCount)
{
	return hook_C_GetInterfaceList(pInterfacesList, pulCount);
}

P11G_EXPORT CK_RV C_GetInterface(CK_UTF8CHAR_PTR pInterfaceName, CK_VERSION_PTR pVersion,
                                 CK_INTERFACE_PTR_PTR ppInterface, CK_FLAGS flags)
{
	return hook_C_GetInterface(pInterfaceName, pVersion, ppInterface, flags);
}

/* ---- sessions -------------------------------------------------------------- */

CK_RV hook_C_OpenSession(CK_SLOT_ID slotID, CK_FLAGS flags, CK_VOID_PTR pApplication,
                         CK_NOTIFY Notify, CK_SESSION_HANDLE_PTR phSession)
{
	P11G_ENTER();
	CK_RV rv = p11g_m.real.C_OpenSession(slotID, flags, pApplication, Notify, phSession);
	if (rv == CKR_OK && p11g_session_add(*phSession, slotID) < 0) {
		p11g_m.real.C_CloseSession(*phSession);
		return CKR_HOST_MEMORY;
	}
	return rv;
}

CK_RV hook_C_CloseSession(CK_SESSION_HANDLE hSession)
{
	P11G_ENTER();
	if (p11g_host_is_login_session(hSession))
		return CKR_SESSION_HANDLE_INVALID;
	CK_RV rv = p11g_m.real.C_CloseSession(hSession);
	if (rv == CKR_OK || rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED)
		p11g_session_remove(hSession);
	return rv;
}

CK_RV hook_C_CloseAllSessions(CK_SLOT_ID slotID)
{
	P11G_ENTER();
	CK_RV rv = p11g_m.real.C_CloseAllSessions(slotID);
	if (rv == CKR_OK) {
		p11g_session_remove_slot(slotID);
		if (p11g_m.host.on)
			p11g_host_relogin(slotID);
	}
	return rv;
}

CK_RV hook_C_WaitForSlotEvent(CK_FLAGS flags, CK_SLOT_ID_PTR pSlot, CK_VOID_PTR pReserved)
{
	CK_C_WaitForSlotEvent fn;
	CK_RV rv;

	/* Without CKF_DONT_BLOCK this may wait for ever; C_Finalize must be
	 * able to run meanwhile (the real C_Finalize wakes the waiter), so the
	 * lifecycle lock is not held across the call. */
	if ((rv = p11g_enter()) != CKR_OK)
		return rv;
	fn = p11g_m.real.C_WaitForSlotEvent;
	atomic_fetch_add(&slot_waiters, 1);
	p11g_leave();
	rv = fn(flags, pSlot, pReserved);
	atomic_fetch_sub(&slot_waiters, 1);
	return rv;
}
