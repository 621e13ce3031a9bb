/* Internal interfaces of p11gate.so: state, hooks, sessions, digests, approvald client, config. */
#ifndef P11GATE_MODULE_H
#define P11GATE_MODULE_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/un.h>

#include <openssl/evp.h>

#include "module/slots.h"
#include "p11gate/common.h"
#include "p11gate/keyid.h"
#include "p11gate/mech.h"

/* ---- configuration (config.c) -------------------------------------------- */

#define P11G_DEFAULT_CONF "/etc/p11gate/p11gate.conf"
#define P11G_WAIT_MAX     86400 /* what approvald's "wait" accepts */

struct p11g_config {
	char module[PATH_MAX];
	char socket[sizeof(((struct sockaddr_un *)0)->sun_path)];
	unsigned wait;         /* seconds to wait for an on-demand approval; 0: do not ask */
	char remote[PATH_MAX]; /* "unix:path=...": approvald serves the module, we forward */
	char source[PATH_MAX]; /* the file read, for messages ("" when none) */
	/* the pipeline's ID token an on-demand request carries (issue 19): read anew from the
	 * file for each request, or taken from the environment variable (GitLab's id_tokens);
	 * "": none */
	char id_token_file[PATH_MAX];
	char id_token_env[128];
	char id_token_github[256]; /* the audience of a GitHub Actions job's token */
};

/*
 * Parses `key = value` lines (module, socket, wait, remote; '#' comments).  name is
 * used in messages.  On error returns -1 with err bad_request "NAME:LINE:COLUMN: reason"; cfg
 * keeps whatever was set before the bad line.
 */
int p11g_config_parse(const char *name, const char *text, size_t len, struct p11g_config *cfg,
                      p11g_err *err);

/*
 * The whole configuration: defaults, then $P11GATE_CONF (or the default
 * file), then $P11GATE_MODULE, $P11GATE_SOCKET, $P11GATE_WAIT.  The default
 * file may be missing when $P11GATE_MODULE names the module.  -1 with one
 * line in err (file and line where there is one).
 */
int p11g_config_load(struct p11g_config *ret, p11g_err *err);

/* ---- hosted by approvald (host.c) ------------------------------------------ */

struct p11g_host {
	bool on;                 /* set by p11g_gate_host() before C_Initialize */
	int fd;                  /* approvald's connection for this client */
	pthread_mutex_t fd_lock; /* one exchange at a time on fd */
	char token[33];          /* "": every token */
	uid_t uid;               /* the client, for messages */
	pid_t pid;
	pthread_mutex_t lock; /* the login table */
	struct {
		CK_SLOT_ID slot;
		CK_SESSION_HANDLE session;
	} login[16];
	size_t n_login;
};

/* After the real C_Initialize: one logged-in session per token (or the
 * named one).  CKR_OK, or the failing code after one line on stderr. */
CK_RV p11g_host_login_all(void);
/* C_Finalize: the sessions went with the module. */
void p11g_host_forget(void);
/* A session approvald keeps for the login: not the client's to close. */
bool p11g_host_is_login_session(CK_SESSION_HANDLE s);
/* After C_CloseAllSessions(slot) logged the token out: log in again. */
void p11g_host_relogin(CK_SLOT_ID slot);

/* ---- module state (p11gate.c) -------------------------------------------- */

struct p11g_module {
	/* The real module's entry points, never NULL: what it lacks (the 3.0
	 * functions of a 2.x module) answers CKR_FUNCTION_NOT_SUPPORTED. */
	CK_FUNCTION_LIST_3_0 real;
	bool real_3_0; /* the real module gave us a 3.x interface */
	struct p11g_config cfg;
	struct p11g_host host;
};

extern CK_FUNCTION_LIST p11g_list_2_40;
extern CK_FUNCTION_LIST_3_0 p11g_list_3_0;

/* Read-only between C_Initialize and C_Finalize; hooks read it between
 * p11g_enter() and p11g_leave(). */
extern struct p11g_module p11g_m;

/* CKR_OK and a read lock on the module state, or CKR_CRYPTOKI_NOT_INITIALIZED
 * (never initialised, finalised, or a forked child that has not called
 * C_Initialize). */
CK_RV p11g_enter(void);
void p11g_leave(void);
static inline void p11g_leavep(int *entered)
{
	if (*entered)
		p11g_leave();
}
/* First statement of a hook: leaves on every return path. */
#define P11G_ENTER()                                                                               \
	CK_RV p11g_enter_rv_ = p11g_enter();                                                       \
	if (p11g_enter_rv_ != CKR_OK)                                                              \
		return p11g_enter_rv_;                                                             \
	__attribute__((cleanup(p11g_leavep))) int p11g_entered_ = 1;                               \
	(void)p11g_entered_

/* Every HOOK slot's implementation. */
#define P11G_DECLARE_HOOK_HOOK(name, params) CK_RV hook_##name params;
#define P11G_DECLARE_HOOK_FORWARD(name, params)
#define P11G_DECLARE_HOOK_DENY(name, params)
#define P11G_DECLARE_HOOK(name, kind, version, params, args) P11G_DECLARE_HOOK_##kind(name, params)
P11G_SLOTS(P11G_DECLARE_HOOK)

/* One line on stderr and in syslog (LOG_AUTH): refusals, always. */
__attribute__((format(printf, 1, 2))) void p11g_refusal(const char *fmt, ...);
/* One line on stderr: configuration and loading errors. */
__attribute__((format(printf, 1, 2))) void p11g_complain(const char *fmt, ...);
/* Traces: p11g_debug() (p11gate/log.h), shown only with P11GATE_DEBUG=1.  Never PINs or data. */

/* ---- the gate (gate.c) ---------------------------------------------------- */

/* Forgets the key identities cached per (slot, handle); after_fork: without
 * touching the lock a parent thread may have held. */
void p11g_gate_cache_clear(bool after_fork);

/*
 * The real module's C_GetTokenInfo as a token's name is read: CKR_DEVICE_ERROR (a failed
 * read, worth reading again) for an initialised token's answer with a blank label or serial
 * number.  SoftHSMv2
 * answers CKR_OK with both blank when it cannot read its token file, which another process
 * may be rewriting (Token::getTokenInfo): a token of no name would match no rule, and under
 * "default": "allow" its guarded keys would sign unguarded.
 */
CK_RV p11g_token_info(CK_SLOT_ID slot, CK_TOKEN_INFO *ti);

/*
 * How often a read that failed in passing (CKR_GENERAL_ERROR, CKR_DEVICE_ERROR,
 * CKR_FUNCTION_FAILED) is read again, 2 ms after the first failure and twice as long after
 * each next one (126 ms in all): SoftHSMv2's file store fails now and then for longer than
 * 14 ms when 64 signing threads share a token on two loaded cores, and a refusal there
 * would be a signature the approver granted and the client did not get.
 */
#define P11G_READ_RETRIES 6

/* ---- digests (digest.c) -------------------------------------------------- */

/* What a use is bound to: "sha256:<hex>", and whether approvald must treat
 * the input as raw (not a digest of known length or DigestInfo). */
struct p11g_use_digest {
	char text[8 + 1 + 2 * EVP_MAX_MD_SIZE + 1];
	bool raw;
};

/* Bytes of input kept for PREHASHED and RSA_PKCS: enough for any digest or
 * DigestInfo; longer input is raw anyway. */
#define P11G_DIGEST_KEEP 128

struct p11g_digest_ctx {
	const struct p11g_mech_info *mech;
	EVP_MD_CTX *md; /* HASH_SIGN: the mechanism's hash; else SHA-256 over all input */
	unsigned char keep[P11G_DIGEST_KEEP];
	size_t kept;
	bool overflow; /* more than P11G_DIGEST_KEEP bytes seen */
};

/* 0, or -1 when OpenSSL lacks the hash (or memory). */
int p11g_digest_init(struct p11g_digest_ctx *ctx, const struct p11g_mech_info *mech);
int p11g_digest_update(struct p11g_digest_ctx *ctx, const unsigned char *data, size_t len);
/* Once per init. */
int p11g_digest_final(struct p11g_digest_ctx *ctx, struct p11g_use_digest *ret);
void p11g_digest_free(struct p11g_digest_ctx *ctx);
/* init + update + final + free. */
int p11g_digest_oneshot(const struct p11g_mech_info *mech, const unsigned char *data, size_t len,
                        struct p11g_use_digest *ret);
/* The hash a DER DigestInfo names ("sha256") and where its hash starts, or
 * NULL when data is not a DigestInfo of sha1/224/256/384/512. */
const char *p11g_digestinfo_parse(const unsigned char *data, size_t len, size_t *ret_offset);

/* A public key as a token holds it: a SubjectPublicKeyInfo (CKA_PUBLIC_KEY_INFO), or RSA's
 * modulus and exponent, or EC/EdDSA parameters (CKA_EC_PARAMS) and point (CKA_EC_POINT).
 * Lengths 0 where absent. */
struct p11g_pubkey_parts {
	const unsigned char *spki, *modulus, *exponent, *params, *point;
	size_t spki_len, modulus_len, exponent_len, params_len, point_len;
};
/* SHA-256 of the key's DER SubjectPublicKeyInfo, lowercase hex, into ret.  -ENOENT when the
 * parts do not make a key, -ENOMEM. */
int p11g_spki_fingerprint(const struct p11g_pubkey_parts *k, char ret[65]);
/* The key's DER SubjectPublicKeyInfo (malloc'd) in *ret, its length in *ret_len; errors as
 * p11g_spki_fingerprint's. */
int p11g_spki_der(const struct p11g_pubkey_parts *k, unsigned char **ret, size_t *ret_len);

/* ---- sessions (sessions.c) ----------------------------------------------- */

/* A guarded (or not yet known) signing operation the real module has active. */
struct p11g_sign_op {
	bool active;
	bool key_known; /* false: approvald was not reachable at C_SignInit */
	struct p11g_keyid key;
	CK_MECHANISM_TYPE mechanism;
	const struct p11g_mech_info *mech;
	struct p11g_digest_ctx dctx;
	bool multipart; /* C_SignUpdate was called */
	bool final_done;
	struct p11g_use_digest final_digest; /* after C_SignFinal computed it */
	/* A use approvald granted whose signature the caller has not taken yet
	 * (the real module said CKR_BUFFER_TOO_SMALL after all). */
	bool granted;
	struct p11g_use_digest granted_digest;
};

struct p11g_session {
	CK_SESSION_HANDLE handle;
	CK_SLOT_ID slot;
	pthread_mutex_t lock; /* held by p11g_session_get() .. p11g_session_put() */
	atomic_uint refs;     /* table's reference plus one per get */
	bool removed;
	struct p11g_sign_op sign;
	bool recover_ok; /* C_SignRecoverInit went through the gate */
	bool msgsign_ok; /* C_MessageSignInit went through the gate */
	struct p11g_session *next;
};

void p11g_sessions_init(void);
/* Drops every session (C_Finalize). */
void p11g_sessions_clear(void);
/* In a forked child: forgets everything without touching locks the parent's
 * threads may have held. */
void p11g_sessions_reset_after_fork(void);
/* 0 or -ENOMEM; an existing entry for h is replaced. */
int p11g_session_add(CK_SESSION_HANDLE h, CK_SLOT_ID slot);
void p11g_session_remove(CK_SESSION_HANDLE h);
void p11g_session_remove_slot(CK_SLOT_ID slot);
/* The session, locked and referenced, or NULL. */
struct p11g_session *p11g_session_get(CK_SESSION_HANDLE h);
void p11g_session_put(struct p11g_session *s);
/* The slot h was opened on, without waiting for the session's lock; false
 * when p11gate does not know h. */
bool p11g_session_slot(CK_SESSION_HANDLE h, CK_SLOT_ID *ret);
/* Ends the bookkeeping of a sign operation (frees the digest state). */
void p11g_sign_op_clear(struct p11g_sign_op *op);
size_t p11g_sessions_count(void);

/* ---- approvald (client.c) ------------------------------------------------- */

enum p11g_guard { P11G_UNGUARDED, P11G_GUARDED, P11G_GUARD_UNKNOWN };

struct p11g_key_policy {
	enum p11g_guard guard;
	bool allow_raw;
	p11g_err err;   /* why UNKNOWN */
	CK_RV class_rv; /* gate.c: the object's class could not be read (fail closed) */
};

#define P11G_KEY_CACHE_US 1000000 /* a policy reload shows within a second */

void p11g_client_init(void);
void p11g_client_reset_after_fork(void);
void p11g_client_cache_clear(void);
/* The "key" verb, cached per key identity for less than a second. */
void p11g_client_key(const struct p11g_keyid *k, struct p11g_key_policy *ret);
/*
 * One use of k: "use", and when refused with no_operation and wait_s > 0 the
 * on-demand request, the wait and the use of the approved operation.  0 when
 * granted; -1 with err (code and approvald's sentence) when refused or when
 * approvald cannot be asked.
 */
int p11g_client_authorize(const struct p11g_keyid *k, const char *mech_name,
                          const struct p11g_use_digest *d, unsigned wait_s, p11g_err *err);

/* ---- token objects of a hosted client, and whom p11gate.so believes ---- */

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
