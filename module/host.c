/* The gate hosted by approvald: approvald holds the PIN and the login, the client holds neither. */
#include <sys/mman.h>
#include <sys/prctl.h>

#include "module/gate_host.h"
#include "module/module.h"

/*
 * In this mode the process serves one client over p11-kit's RPC, and the
 * token's login belongs to approvald: one session per token opened here
 * stays logged in for the life of the process (PKCS#11 logs a token out
 * when its last session closes).  The client's C_Login(CKU_USER) answers
 * CKR_OK without a PIN, C_Logout answers CKR_OK and changes nothing, so
 * tools written for a PIN-protected token work unchanged.
 */

/* What this process holds for approvald besides struct p11g_host: the PIN
 * in a page of its own, and whether the client may manage token objects. */
static struct {
	unsigned char *pin; /* P11G_HOST_PIN_MAX bytes from p11g_secret_alloc() */
	size_t pin_len;
	bool object_admin;
} hosted;

static size_t page_round(size_t size)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	return (size + page - 1) / page * page;
}

void *p11g_secret_alloc(size_t size)
{
	size = page_round(size);
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	/* Out of core dumps; the advice covers this mapping and nothing else.
	 * A kernel without it still gets a non-dumpable process. */
	(void)madvise(p, size, MADV_DONTDUMP);
	/* Out of swap where RLIMIT_MEMLOCK allows (a page, usually). */
	(void)mlock(p, size);
	return p;
}

void p11g_secret_free(void *p, size_t size)
{
	if (!p)
		return;
	size = page_round(size);
	explicit_bzero(p, size);
	munlock(p, size);
	munmap(p, size);
}

void p11g_gate_host_wipe(void)
{
	p11g_secret_free(hosted.pin, P11G_HOST_PIN_MAX);
	hosted.pin = NULL;
	hosted.pin_len = 0;
}

CK_FUNCTION_LIST_3_0 *p11g_gate_host(const struct p11g_gate_host_config *cfg)
{
	struct p11g_host *h = &p11g_m.host;

	/* Whoever can read this process's memory has the PIN: not other
	 * processes of its uid (ptrace), not a core file. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	memset(&p11g_m.cfg, 0, sizeof(p11g_m.cfg));
	snprintf(p11g_m.cfg.module, sizeof(p11g_m.cfg.module), "%s", cfg->module);
	snprintf(p11g_m.cfg.socket, sizeof(p11g_m.cfg.socket), "%s",
	         cfg->socket ? cfg->socket : "");
	snprintf(p11g_m.cfg.source, sizeof(p11g_m.cfg.source), "approvald's configuration");
	p11g_m.cfg.wait = cfg->wait;
	memset(h, 0, sizeof(*h));
	h->on = true;
	h->fd = cfg->approvald_fd;
	pthread_mutex_init(&h->fd_lock, NULL);
	pthread_mutex_init(&h->lock, NULL);
	p11g_gate_host_wipe();
	hosted.pin = p11g_secret_alloc(P11G_HOST_PIN_MAX);
	if (hosted.pin) {
		hosted.pin_len =
		    cfg->pin_len < P11G_HOST_PIN_MAX ? cfg->pin_len : P11G_HOST_PIN_MAX;
		memcpy(hosted.pin, cfg->pin, hosted.pin_len);
	} else {
		/* No page for the PIN: the log-in fails (an empty PIN), and says so. */
		p11g_refusal("no memory for the PIN of client uid %u: its log-in to the token will "
		             "fail",
		             (unsigned)cfg->uid);
	}
	hosted.object_admin = cfg->object_admin;
	snprintf(h->token, sizeof(h->token), "%s", cfg->token ? cfg->token : "");
	h->uid = cfg->uid;
	h->pid = cfg->pid;
	return &p11g_list_3_0;
}

/* A token label as a C string (blank-padded, not terminated, in CK_TOKEN_INFO). */
static void label_of(const CK_TOKEN_INFO *ti, char out[33])
{
	size_t n = sizeof(ti->label);

	memcpy(out, ti->label, n);
	while (n > 0 && out[n - 1] == ' ')
		n--;
	out[n] = '\0';
}

/* Opens the login session of slot and logs in.  Caller holds h->lock. */
static CK_RV login_slot(CK_SLOT_ID slot)
{
	struct p11g_host *h = &p11g_m.host;
	CK_SESSION_HANDLE s;
	CK_RV rv;

	if (h->n_login == P11G_ARRAY_SIZE(h->login))
		return CKR_HOST_MEMORY;
	rv = p11g_m.real.C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s);
	if (rv != CKR_OK)
		return rv;
	rv = p11g_m.real.C_Login(s, CKU_USER, hosted.pin, hosted.pin_len);
	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
		p11g_m.real.C_CloseSession(s);
		return rv;
	}
	h->login[h->n_login].slot = slot;
	h->login[h->n_login].session = s;
	h->n_login++;
	return CKR_OK;
}

CK_RV p11g_host_login_all(void)
{
	struct p11g_host *h = &p11g_m.host;
	CK_SLOT_ID slots[P11G_ARRAY_SIZE(h->login)];
	CK_ULONG n = P11G_ARRAY_SIZE(slots);
	CK_RV rv, unread = CKR_OK;
	size_t done = 0;

	rv = p11g_m.real.C_GetSlotList(CK_TRUE, slots, &n);
	if (rv != CKR_OK) {
		p11g_complain("cannot list the slots of %s: 0x%lx", p11g_m.cfg.module, rv);
		return rv;
	}
	pthread_mutex_lock(&h->lock);
	for (CK_ULONG i = 0; i < n; i++) {
		CK_TOKEN_INFO ti;
		char label[33];
		/* A passing failure (SoftHSMv2's token file being rewritten by another
		 * process) is read again; one that lasts is said below, not taken for a
		 * token of another name. */
		CK_RV trv = p11g_token_info(slots[i], &ti);
		for (int tries = 0; trv != CKR_OK && tries < P11G_READ_RETRIES; tries++) {
			usleep(2000u << tries);
			trv = p11g_token_info(slots[i], &ti);
		}
		if (trv != CKR_OK) {
			p11g_complain("cannot read the token in slot %lu of %s: 0x%lx",
			              (unsigned long)slots[i], p11g_m.cfg.module, trv);
			unread = trv;
			continue;
		}
		label_of(&ti, label);
		if (h->token[0] && strcmp(h->token, label))
			continue;
		if (!(ti.flags & CKF_USER_PIN_INITIALIZED))
			continue;
		rv = login_slot(slots[i]);
		if (rv != CKR_OK) {
			p11g_complain("cannot log in to the token \"%s\" of %s: 0x%lx%s", label,
			              p11g_m.cfg.module, rv,
			              rv == CKR_PIN_INCORRECT ? " (the PIN file holds a wrong PIN)"
			                                      : "");
			pthread_mutex_unlock(&h->lock);
			return rv;
		}
		done++;
	}
	pthread_mutex_unlock(&h->lock);
	if (done == 0) {
		if (h->token[0])
			p11g_complain("no initialised token labelled \"%s\" in %s", h->token,
			              p11g_m.cfg.module);
		else
			p11g_complain("no initialised token in %s", p11g_m.cfg.module);
		return unread != CKR_OK ? unread : CKR_TOKEN_NOT_PRESENT;
	}
	return CKR_OK;
}

void p11g_host_forget(void)
{
	struct p11g_host *h = &p11g_m.host;

	pthread_mutex_lock(&h->lock);
	h->n_login = 0;
	pthread_mutex_unlock(&h->lock);
}

bool p11g_host_is_login_session(CK_SESSION_HANDLE s)
{
	struct p11g_host *h = &p11g_m.host;
	bool found = false;

	if (!h->on)
		return false;
	pthread_mutex_lock(&h->lock);
	for (size_t i = 0; i < h->n_login && !found; i++)
		found = h->login[i].session == s;
	pthread_mutex_unlock(&h->lock);
	return found;
}

/* Whether approvald logged in to the token of this slot. */
static bool slot_logged_in(CK_SLOT_ID slot)
{
	struct p11g_host *h = &p11g_m.host;
	bool found = false;

	pthread_mutex_lock(&h->lock);
	for (size_t i = 0; i < h->n_login && !found; i++)
		found = h->login[i].slot == slot;
	pthread_mutex_unlock(&h->lock);
	return found;
}

void p11g_host_relogin(CK_SLOT_ID slot)
{
	struct p11g_host *h = &p11g_m.host;
	size_t j = 0;
	bool had = false;
	CK_RV rv;

	pthread_mutex_lock(&h->lock);
	for (size_t i = 0; i < h->n_login; i++) {
		if (h->login[i].slot == slot)
			had = true;
		else
			h->login[j++] = h->login[i];
	}
	h->n_login = j;
	if (had && (rv = login_slot(slot)) != CKR_OK)
		p11g_complain("cannot log in again to slot %lu after C_CloseAllSessions: 0x%lx",
		              slot, rv);
	pthread_mutex_unlock(&h->lock);
}

/* ---- the hooks: forwarders unless hosted ------------------------------------ */

static CK_RV session_slot(CK_SESSION_HANDLE s, CK_SLOT_ID *ret)
{
	CK_SESSION_INFO si;
	CK_RV rv = p11g_m.real.C_GetSessionInfo(s, &si);

	if (rv == CKR_OK)
		*ret = si.slotID;
	return rv;
}

static CK_RV host_login(CK_SESSION_HANDLE s, CK_USER_TYPE type, const char *fn)
{
	CK_SLOT_ID slot;
	CK_RV rv;

	if ((rv = session_slot(s, &slot)) != CKR_OK)
		return rv;
	switch (type) {
	case CKU_USER:
		if (slot_logged_in(slot))
			return CKR_OK;
		p11g_refusal("%s refused: approvald holds no PIN for the token in slot %lu", fn,
		             slot);
		return CKR_FUNCTION_REJECTED;
	case CKU_CONTEXT_SPECIFIC:
		if (!slot_logged_in(slot))
			return CKR_USER_NOT_LOGGED_IN;
		/* A key with CKA_ALWAYS_AUTHENTICATE after C_SignInit: the gate
		 * already decided, approvald gives its PIN. */
		return p11g_m.real.C_Login(s, CKU_CONTEXT_SPECIFIC, hosted.pin, hosted.pin_len);
	case CKU_SO:
		p11g_refusal("%s refused: security-officer login is not served on approvald's "
		             "PKCS#11 socket",
		             fn);
		return CKR_FUNCTION_REJECTED;
	default:
		/* No user type at all: what the module would answer, and nothing refused. */
		return CKR_USER_TYPE_INVALID;
	}
}

CK_RV hook_C_Login(CK_SESSION_HANDLE hSession, CK_USER_TYPE userType, CK_UTF8CHAR_PTR pPin,
                   CK_ULONG ulPinLen)
{
	P11G_ENTER();
	if (!p11g_m.host.on)
		return p11g_m.real.C_Login(hSession, userType, pPin, ulPinLen);
	return host_login(hSession, userType, "C_Login");
}

CK_RV hook_C_LoginUser(CK_SESSION_HANDLE hSession, CK_USER_TYPE userType, CK_UTF8CHAR_PTR pPin,
                       CK_ULONG ulPinLen, CK_UTF8CHAR_PTR pUsername, CK_ULONG ulUsernameLen)
{
	P11G_ENTER();
	if (!p11g_m.host.on)
		return p11g_m.real.C_LoginUser(hSession, userType, pPin, ulPinLen, pUsername,
		                               ulUsernameLen);
	return host_login(hSession, userType, "C_LoginUser");
}

CK_RV hook_C_Logout(CK_SESSION_HANDLE hSession)
{
	P11G_ENTER();
	if (!p11g_m.host.on)
		return p11g_m.real.C_Logout(hSession);
	/* The login is approvald's; the session must exist all the same. */
	CK_SLOT_ID slot;
	return session_slot(hSession, &slot);
}

CK_RV hook_C_GetTokenInfo(CK_SLOT_ID slotID, CK_TOKEN_INFO_PTR pInfo)
{
	P11G_ENTER();
	CK_RV rv = p11g_m.real.C_GetTokenInfo(slotID, pInfo);
	if (rv == CKR_OK && p11g_m.host.on && slot_logged_in(slotID)) {
		/* No PIN to ask for: clients that log in anyway pass a NULL PIN. */
		pInfo->flags &= ~(CK_FLAGS)CKF_LOGIN_REQUIRED;
		pInfo->flags |= CKF_PROTECTED_AUTHENTICATION_PATH;
	}
	return rv;
}

#define HOST_REFUSE(fn)                                                                            \
	do {                                                                                       \
		p11g_refusal("%s refused: token administration is not served on approvald's "      \
		             "PKCS#11 socket",                                                     \
		             fn);                                                                  \
		return CKR_FUNCTION_REJECTED;                                                      \
	} while (0)

CK_RV hook_C_InitToken(CK_SLOT_ID slotID, CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen,
                       CK_UTF8CHAR_PTR pLabel)
{
	P11G_ENTER();
	if (p11g_m.host.on)
		HOST_REFUSE("C_InitToken");
	p11g_gate_cache_clear(false);
	return p11g_m.real.C_InitToken(slotID, pPin, ulPinLen, pLabel);
}

CK_RV hook_C_InitPIN(CK_SESSION_HANDLE hSession, CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen)
{
	P11G_ENTER();
	if (p11g_m.host.on)
		HOST_REFUSE("C_InitPIN");
	return p11g_m.real.C_InitPIN(hSession, pPin, ulPinLen);
}

CK_RV hook_C_SetPIN(CK_SESSION_HANDLE hSession, CK_UTF8CHAR_PTR pOldPin, CK_ULONG ulOldLen,
                    CK_UTF8CHAR_PTR pNewPin, CK_ULONG ulNewLen)
{
	P11G_ENTER();
	if (p11g_m.host.on)
		HOST_REFUSE("C_SetPIN");
	return p11g_m.real.C_SetPIN(hSession, pOldPin, ulOldLen, pNewPin, ulNewLen);
}

/* ---- token objects: approvald's pkcs11_object_admins ------------------------- */

/*
 * Hosted, every client of the socket shares the token: one that could
 * destroy a guarded key's public key and create its own under the same
 * label and id would have verifiers trust its key, and a decoy private key
 * named like a guarded one would sign under the real key's operation.  So
 * token objects are managed by the principals approvald names, and each
 * client keeps its own session objects.
 */

/* CKA_TOKEN of a template: true when it asks for a token object (or says it
 * in a way we cannot read: the module would refuse that anyway). */
static bool template_wants_token(const CK_ATTRIBUTE *tmpl, CK_ULONG n)
{
	for (CK_ULONG i = 0; tmpl && i < n; i++) {
		if (tmpl[i].type != CKA_TOKEN)
			continue;
		if (!tmpl[i].pValue || tmpl[i].ulValueLen != sizeof(CK_BBOOL) ||
		    *(const CK_BBOOL *)tmpl[i].pValue != CK_FALSE)
			return true;
	}
	return false;
}

static CK_RV refuse_object(const char *fn, const char *what)
{
	p11g_refusal("%s refused: %s; on approvald's PKCS#11 socket only principals in "
	             "pkcs11_object_admins manage token objects (session objects stay allowed)",
	             fn, what);
	return CKR_ACTION_PROHIBITED;
}

CK_RV p11g_object_admin_check(const char *fn, CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj,
                              CK_ATTRIBUTE_PTR tmpl, CK_ULONG n)
{
	if (!p11g_m.host.on || hosted.object_admin)
		return CKR_OK;
	if (template_wants_token(tmpl, n))
		return refuse_object(fn, "the template makes a token object (CKA_TOKEN true)");
	if (obj == CK_INVALID_HANDLE)
		return CKR_OK;
	CK_BBOOL on_token = CK_TRUE;
	CK_ATTRIBUTE a = {CKA_TOKEN, &on_token, sizeof(on_token)};
	CK_RV rv = p11g_m.real.C_GetAttributeValue(h, obj, &a, 1);
	if (rv == CKR_OBJECT_HANDLE_INVALID || rv == CKR_SESSION_HANDLE_INVALID ||
	    rv == CKR_SESSION_CLOSED || rv == CKR_CRYPTOKI_NOT_INITIALIZED)
		return rv;
	if (rv != CKR_OK || a.ulValueLen != sizeof(on_token)) {
		char why[96];
		snprintf(why, sizeof(why),
		         "whether object %lu is a token object cannot be read (0x%lx)", obj,
		         rv != CKR_OK ? rv : (CK_RV)CKR_ATTRIBUTE_VALUE_INVALID);
		return refuse_object(fn, why);
	}
	if (on_token != CK_FALSE) {
		char why[64];
		snprintf(why, sizeof(why), "object %lu is a token object", obj);
		return refuse_object(fn, why);
	}
	return CKR_OK;
}

CK_RV p11g_object_admin_after(const char *fn, CK_SESSION_HANDLE h, CK_RV rv,
                              CK_OBJECT_HANDLE_PTR *objs, size_t n)
{
	CK_RV bad = CKR_OK;

	if (rv != CKR_OK || !p11g_m.host.on || hosted.object_admin)
		return rv;
	for (size_t i = 0; i < n; i++) {
		if (!objs[i] || *objs[i] == CK_INVALID_HANDLE)
			continue;
		CK_BBOOL on_token = CK_TRUE;
		CK_ATTRIBUTE a = {CKA_TOKEN, &on_token, sizeof(on_token)};
		if (p11g_m.real.C_GetAttributeValue(h, *objs[i], &a, 1) == CKR_OK &&
		    a.ulValueLen == sizeof(on_token) && on_token == CK_FALSE)
			continue;
		bad = CKR_ACTION_PROHIBITED;
	}
	if (bad == CKR_OK)
		return CKR_OK;
	/* The module made a token object of a template that did not ask for one (its default),
	 * or cannot say what it made: undone, all of it. */
	char left[96] = "";
	size_t used = 0;
	for (size_t i = 0; i < n; i++)
		if (objs[i] && *objs[i] != CK_INVALID_HANDLE) {
			CK_RV drv = p11g_m.real.C_DestroyObject(h, *objs[i]);
			if (drv != CKR_OK && used < sizeof(left))
				used +=
				    (size_t)snprintf(left + used, sizeof(left) - used,
				                     " object %lu stays (C_DestroyObject 0x%lx);",
				                     (unsigned long)*objs[i], (unsigned long)drv);
			*objs[i] = CK_INVALID_HANDLE;
		}
	char why[192];
	snprintf(why, sizeof(why),
	         "the module made a token object (its default for a template without CKA_TOKEN), "
	         "or cannot say; %s",
	         left[0] ? left + 1 : "it was destroyed again");
	return refuse_object(fn, why);
}

CK_RV hook_C_CreateObject(CK_SESSION_HANDLE hSession, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount,
                          CK_OBJECT_HANDLE_PTR phObject)
{
	P11G_ENTER();
	CK_RV rv = p11g_object_admin_check("C_CreateObject", hSession, CK_INVALID_HANDLE, pTemplate,
	                                   ulCount);
	if (rv != CKR_OK)
		return rv;
	rv = p11g_m.real.C_CreateObject(hSession, pTemplate, ulCount, phObject);
	return p11g_object_admin_after("C_CreateObject", hSession, rv, &phObject, 1);
}

CK_RV hook_C_GenerateKey(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism,
                         CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount, CK_OBJECT_HANDLE_PTR phKey)
{
	P11G_ENTER();
	CK_RV rv = p11g_object_admin_check("C_GenerateKey", hSession, CK_INVALID_HANDLE, pTemplate,
	                                   ulCount);
	if (rv != CKR_OK)
		return rv;
	rv = p11g_m.real.C_GenerateKey(hSession, pMechanism, pTemplate, ulCount, phKey);
	return p11g_object_admin_after("C_GenerateKey", hSession, rv, &phKey, 1);
}

CK_RV hook_C_GenerateKeyPair(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism,
                             CK_ATTRIBUTE_PTR pPublicKeyTemplate,
                             CK_ULONG ulPublicKeyAttributeCount,
                             CK_ATTRIBUTE_PTR pPrivateKeyTemplate,
                             CK_ULONG ulPrivateKeyAttributeCount, CK_OBJECT_HANDLE_PTR phPublicKey,
                             CK_OBJECT_HANDLE_PTR phPrivateKey)
{
	P11G_ENTER();
	CK_RV rv;
	if ((rv = p11g_object_admin_check("C_GenerateKeyPair", hSession, CK_INVALID_HANDLE,
	                                  pPublicKeyTemplate, ulPublicKeyAttributeCount)) !=
	        CKR_OK ||
	    (rv = p11g_object_admin_check("C_GenerateKeyPair", hSession, CK_INVALID_HANDLE,
	                                  pPrivateKeyTemplate, ulPrivateKeyAttributeCount)) !=
	        CKR_OK)
		return rv;
	rv = p11g_m.real.C_GenerateKeyPair(hSession, pMechanism, pPublicKeyTemplate,
	                                   ulPublicKeyAttributeCount, pPrivateKeyTemplate,
	                                   ulPrivateKeyAttributeCount, phPublicKey, phPrivateKey);
	CK_OBJECT_HANDLE_PTR made[] = {phPublicKey, phPrivateKey};
	return p11g_object_admin_after("C_GenerateKeyPair", hSession, rv, made, 2);
}
