/* The gate inside approvald: one process per PKCS#11 client, the same code as p11gate.so. */
/*
 * The module's hosting interface: what approvald/host.c (approvald-local)
 * calls, and nothing of the module's insides (those are module/module.h's).
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

#endif
