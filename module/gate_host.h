/* The gate inside approvald: one process per PKCS#11 client, the same code as p11gate.so. */
/*
 * The module's hosting interface: what approvald/host.c (approvald-local)
 * calls, and nothing of the module's insides.  The second part is the hosted
 * gate's own business between the module's files; it sits here until it moves
 * to module/module.h.
 */
#ifndef P11GATE_MODULE_GATE_HOST_H
#define P11GATE_MODULE_GATE_HOST_H

#include <stdbool.h>
#include <sys/types.h>

#include "p11gate/pkcs11_3.h"

#define P11G_HOST_PIN_MAX 256

struct p11g_gate_host_config {
	const char *module;       /* the real PKCS#11 module (absolute path) */
	int approvald_fd;         /* a connection approvald serves as the client's */
	const char *socket;       /* approvald's socket, for messages */
	const unsigned char *pin; /* the user PIN approvald logs in with */
	size_t pin_len;
	const char *token; /* log in to the token with this label only; NULL or "": every token */
	unsigned wait;     /* seconds to wait for an on-demand approval; 0: do not ask */
	uid_t uid;         /* the client, for messages */
	pid_t pid;
	bool object_admin; /* the client may create, change and destroy token objects
	                      (approvald's pkcs11_object_admins) */
};

/*
 * Sets up the gate in this process to be served to one client: no
 * configuration file, the approvald connection given, the PIN held here.
 * Returns the gate's 3.0 function list (whose start is the 2.40 list).  Its
 * C_Initialize loads the module, initialises it and logs in to the token(s);
 * the client's C_Login(CKU_USER) then succeeds without a PIN, C_Logout keeps
 * the login, and C_InitToken, C_InitPIN, C_SetPIN and security-officer
 * logins are refused.
 */
CK_FUNCTION_LIST_3_0 *p11g_gate_host(const struct p11g_gate_host_config *cfg);

/* Ends the PIN this process holds for approvald (wiped, unmapped); the gate
 * can log in no more.  For a process about to end. */
void p11g_gate_host_wipe(void);

/*
 * Memory for a secret: size bytes in pages mapped for it alone, left out of
 * core dumps (MADV_DONTDUMP) and locked in memory where the limit allows;
 * NULL when no mapping can be had.  p11g_secret_free, given the same size,
 * wipes (explicit_bzero) and unmaps it; NULL is ignored.
 */
void *p11g_secret_alloc(size_t size);
void p11g_secret_free(void *p, size_t size);

/* ---- between the module's files, not for approvald ---- */

/*
 * Whether fn may create, change or destroy an object for this client.  In
 * p11gate.so, or hosted for a client in pkcs11_object_admins: CKR_OK.
 * Hosted for any other client, the call is refused when it would make or
 * touch a token object: tmpl (n entries, may be NULL) sets CKA_TOKEN to
 * true, or obj (CK_INVALID_HANDLE: none) is a token object.  Session
 * objects stay the client's own.  A refusal prints one line and returns
 * CKR_ACTION_PROHIBITED; an obj whose CKA_TOKEN cannot be read is refused
 * the same way, except that a handle the module does not know answers its
 * own code (CKR_OBJECT_HANDLE_INVALID, CKR_SESSION_HANDLE_INVALID, ...).
 * Call it between P11G_ENTER() and the real call.
 */
CK_RV p11g_object_admin_check(const char *fn, CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj,
                              CK_ATTRIBUTE_PTR tmpl, CK_ULONG n);

/*
 * After a call that made objects (objs: n pointers to their handles, NULL or
 * CK_INVALID_HANDLE ones skipped) and answered rv: for a client outside
 * pkcs11_object_admins, any of them that is a token object, or whose CKA_TOKEN cannot be
 * read, means all are destroyed again and the call refused (CKR_ACTION_PROHIBITED): a
 * module whose default is a token object must not make one of a template that did not ask.
 * Otherwise rv.
 */
CK_RV p11g_object_admin_after(const char *fn, CK_SESSION_HANDLE h, CK_RV rv,
                              CK_OBJECT_HANDLE_PTR *objs, size_t n);

/*
 * p11gate.conf's approvald_user (config.c): besides root, the uid whose
 * socket p11gate.so believes (SO_PEERCRED of each connection, client.c).
 * What the last p11g_config_parse read, p11g_config_load starting unset;
 * kept here beside struct p11g_config (module/module.h), which does not
 * hold it.  Not used hosted: approvald hands the gate its connection.
 */
struct p11g_approvald_user {
	bool set;
	uid_t uid;
};
extern struct p11g_approvald_user p11g_config_approvald_user;

#endif
