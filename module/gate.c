/* The hooks: a guarded key signs only once approvald says yes; its other private paths close. */
#include "module/gate_host.h"
#include "module/module.h"
#include "module/ttl_cache.h"
#include "p11gate/log.h"
#include "p11gate/wire.h"

/* class_rv of a handle that names no object (never returned: see FORWARD_IF_NOTHING). */
#define NAMES_NOTHING (CKR_VENDOR_DEFINED | 0x6e6e6eUL)

#define R (p11g_m.real)

/* ---- key identity ---------------------------------------------------------- */

/*
 * One attribute's bytes (malloc'd; NULL with length 0 when empty or when the object has
 * no such attribute, CKR_ATTRIBUTE_TYPE_INVALID).  Any other answer is the module's
 * error: a failed read is never an absent value.  sensitive_ok: CKR_ATTRIBUTE_SENSITIVE
 * is a lasting answer ("not readable"), taken as absent.
 */
static CK_RV read_attr(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj, CK_ATTRIBUTE_TYPE type,
                       bool sensitive_ok, unsigned char **ret, size_t *ret_len)
{
	CK_ATTRIBUTE a = {type, NULL, 0};
	unsigned char *buf;
	CK_RV rv;

	*ret = NULL;
	*ret_len = 0;
	rv = R.C_GetAttributeValue(h, obj, &a, 1);
	if (rv == CKR_ATTRIBUTE_TYPE_INVALID || (sensitive_ok && rv == CKR_ATTRIBUTE_SENSITIVE))
		return CKR_OK;
	if (rv != CKR_OK)
		return rv;
	if (a.ulValueLen == CK_UNAVAILABLE_INFORMATION || a.ulValueLen > 64 * 1024)
		return CKR_FUNCTION_FAILED;
	if (a.ulValueLen == 0)
		return CKR_OK;
	buf = malloc(a.ulValueLen);
	if (!buf)
		return CKR_HOST_MEMORY;
	a.pValue = buf;
	rv = R.C_GetAttributeValue(h, obj, &a, 1);
	if (rv != CKR_OK || a.ulValueLen == CK_UNAVAILABLE_INFORMATION) {
		free(buf);
		return rv != CKR_OK ? rv : CKR_FUNCTION_FAILED;
	}
	*ret = buf;
	*ret_len = a.ulValueLen;
	return CKR_OK;
}

/*
 * The objects of class cls on the session's token that carry this label and this id (either
 * left out of the search when NULL): whether obj is one of them, another one
 * (CK_INVALID_HANDLE when none) and how many.
 * Searching the session's own token is what shows that a handle belongs to it (SoftHSMv2's
 * handles are global across tokens).  A session busy with the caller's own search is not
 * disturbed: the search then runs in a session of our own on the same slot.
 */
struct same_name {
	bool has_obj;
	CK_OBJECT_HANDLE other;
	size_t count;
};

static CK_RV find_same_name(CK_SESSION_HANDLE h, CK_SLOT_ID slot, CK_OBJECT_HANDLE obj,
                            CK_OBJECT_CLASS cls, const unsigned char *label, size_t label_len,
                            const unsigned char *id, size_t id_len, const CK_BBOOL *on_token,
                            struct same_name *ret)
{
	CK_ATTRIBUTE t[4] = {{CKA_CLASS, &cls, sizeof(cls)}};
	CK_ULONG nt = 1;
	CK_SESSION_HANDLE fs = h, own = CK_INVALID_HANDLE;
	CK_OBJECT_HANDLE found[32];
	CK_ULONG n;
	CK_RV rv;

	if (label)
		t[nt++] = (CK_ATTRIBUTE){CKA_LABEL, (void *)label, label_len};
	if (id)
		t[nt++] = (CK_ATTRIBUTE){CKA_ID, (void *)id, id_len};
	if (on_token)
		t[nt++] = (CK_ATTRIBUTE){CKA_TOKEN, (void *)on_token, sizeof(*on_token)};
	memset(ret, 0, sizeof(*ret));
	ret->other = CK_INVALID_HANDLE;
	rv = R.C_FindObjectsInit(fs, t, nt);
	if (rv == CKR_OPERATION_ACTIVE) {
		rv = R.C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &own);
		if (rv != CKR_OK)
			return rv;
		fs = own;
		rv = R.C_FindObjectsInit(fs, t, nt);
	}
	if (rv == CKR_OK) {
		do {
			rv = R.C_FindObjects(fs, found, P11G_ARRAY_SIZE(found), &n);
			for (CK_ULONG i = 0; rv == CKR_OK && i < n; i++) {
				ret->count++;
				if (found[i] == obj)
					ret->has_obj = true;
				else if (ret->other == CK_INVALID_HANDLE)
					ret->other = found[i];
			}
		} while (rv == CKR_OK && n > 0 && ret->count < 100000);
		CK_RV frv = R.C_FindObjectsFinal(fs);
		if (rv == CKR_OK)
			rv = frv;
	}
	if (own != CK_INVALID_HANDLE)
		R.C_CloseSession(own);
	return rv;
}

/* The fingerprint of obj's public key from its own attributes, or "" when they do not hold
 * it (SoftHSMv2's EC private keys keep no point). */
static CK_RV object_fingerprint(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj, char ret[65])
{
	_cleanup_free_ unsigned char *spki = NULL, *mod = NULL, *exp = NULL, *params = NULL,
	                             *point = NULL;
	struct p11g_pubkey_parts k = {0};
	CK_RV rv;

	ret[0] = '\0';
	/* What the key holds, in this order, read only until one kind is complete. */
	if ((rv = read_attr(h, obj, CKA_PUBLIC_KEY_INFO, true, &spki, &k.spki_len)) != CKR_OK)
		return rv;
	if (!k.spki_len &&
	    ((rv = read_attr(h, obj, CKA_MODULUS, true, &mod, &k.modulus_len)) != CKR_OK ||
	     (rv = read_attr(h, obj, CKA_PUBLIC_EXPONENT, true, &exp, &k.exponent_len)) != CKR_OK))
		return rv;
	if (!k.spki_len && !(k.modulus_len && k.exponent_len) &&
	    ((rv = read_attr(h, obj, CKA_EC_PARAMS, true, &params, &k.params_len)) != CKR_OK ||
	     (rv = read_attr(h, obj, CKA_EC_POINT, true, &point, &k.point_len)) != CKR_OK))
		return rv;
	k.spki = spki;
	k.modulus = mod;
	k.exponent = exp;
	k.params = params;
	k.point = point;
	int r = p11g_spki_fingerprint(&k, ret);
	if (r == -ENOMEM)
		return CKR_HOST_MEMORY;
	if (r < 0)
		ret[0] = '\0';
	return CKR_OK;
}

/*
 * Reads everything that names the private key obj of the session's token, into kid (token,
 * label, id, key type, fingerprint) and twin (another private key of that token with the
 * same non-empty label or the same non-empty id, or CK_INVALID_HANDLE).  Any failed read fails the
 * whole identity: a key is judged by all of its name or not at all.  CKR_OBJECT_HANDLE_INVALID when
 * obj is no object of the session's token.
 */
static bool blank(const CK_UTF8CHAR *field, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (field[i] != ' ' && field[i] != '\0')
			return false;
	return true;
}

CK_RV p11g_token_info(CK_SLOT_ID slot, CK_TOKEN_INFO *ti)
{
	CK_RV rv = R.C_GetTokenInfo(slot, ti);
	if (rv == CKR_OK && (ti->flags & CKF_TOKEN_INITIALIZED) &&
	    (blank(ti->label, sizeof(ti->label)) ||
	     blank(ti->serialNumber, sizeof(ti->serialNumber))))
		return CKR_DEVICE_ERROR;
	return rv;
}

static CK_RV read_identity(CK_SESSION_HANDLE h, CK_SLOT_ID slot, CK_OBJECT_HANDLE obj,
                           const CK_BBOOL *on_token, struct p11g_keyid *kid, CK_OBJECT_HANDLE *twin,
                           const char **what)
{
	_cleanup_free_ unsigned char *label = NULL, *id = NULL;
	size_t label_len, id_len;
	CK_KEY_TYPE kt = 0;
	CK_ATTRIBUTE ka = {CKA_KEY_TYPE, &kt, sizeof(kt)};
	CK_TOKEN_INFO ti;
	struct same_name priv, pub;
	CK_RV rv;

	memset(kid, 0, sizeof(*kid));
	*twin = CK_INVALID_HANDLE;
	*what = "C_GetTokenInfo (a blank label or serial number counts as a failed read)";
	if ((rv = p11g_token_info(slot, &ti)) != CKR_OK)
		return rv;
	/* A token that holds keys is initialised: an answer saying otherwise is no name. */
	if (!(ti.flags & CKF_TOKEN_INITIALIZED))
		return CKR_DEVICE_ERROR;
	p11g_keyid_set_token(kid, &ti);
	*what = "CKA_LABEL";
	if ((rv = read_attr(h, obj, CKA_LABEL, false, &label, &label_len)) != CKR_OK)
		return rv;
	*what = "CKA_ID";
	if ((rv = read_attr(h, obj, CKA_ID, false, &id, &id_len)) != CKR_OK)
		return rv;
	*what = "CKA_KEY_TYPE";
	if ((rv = R.C_GetAttributeValue(h, obj, &ka, 1)) != CKR_OK)
		return rv;
	if (ka.ulValueLen != sizeof(kt))
		return CKR_FUNCTION_FAILED;
	/* Longer than policy can name: the start of it still matches nothing shorter, and a
	 * guarded prefix stays guarded.  A label with a NUL in it ends there for policy as
	 * for URIs. */
	memcpy(kid->label, label ? (char *)label : "",
	       label_len < P11G_LABEL_MAX ? label_len : P11G_LABEL_MAX);
	kid->label[strnlen(kid->label, P11G_LABEL_MAX)] = '\0';
	kid->id_len = id_len < P11G_ID_MAX ? id_len : P11G_ID_MAX;
	if (id)
		memcpy(kid->id, id, kid->id_len);
	kid->key_type = kt;
	/* A search by its label finds it if it is an object of this token.  Another private key
	 * carrying its label or its id would answer to the URIs that name this one: a twin. */
	static const unsigned char none[1];
	*what = "a search of the session's token";
	if ((rv = find_same_name(h, slot, obj, CKO_PRIVATE_KEY, label ? label : none, label_len,
	                         NULL, 0, NULL, &priv)) != CKR_OK)
		return rv;
	if (!priv.has_obj)
		return CKR_OBJECT_HANDLE_INVALID;
	if (label_len)
		*twin = priv.other;
	if (id_len && *twin == CK_INVALID_HANDLE) {
		if ((rv = find_same_name(h, slot, obj, CKO_PRIVATE_KEY, NULL, 0, id, id_len, NULL,
		                         &priv)) != CKR_OK)
			return rv;
		*twin = priv.other;
	}
	*what = "the key's public key";
	if ((rv = object_fingerprint(h, obj, kid->fingerprint)) != CKR_OK)
		return rv;
	if (!kid->fingerprint[0] && on_token) {
		/* The public key object of the same name, when there is exactly one, and a token
		 * object for a token key: a client's session object of that name is no stand-in
		 * for the token's. */
		if ((rv = find_same_name(h, slot, CK_INVALID_HANDLE, CKO_PUBLIC_KEY,
		                         label ? label : none, label_len, id ? id : none, id_len,
		                         on_token, &pub)) != CKR_OK)
			return rv;
		if (pub.count == 1 &&
		    (rv = object_fingerprint(h, pub.other, kid->fingerprint)) != CKR_OK)
			return rv;
	}
	return CKR_OK;
}

/* "pkcs11:token=..;object=..;id=%01" for messages, in a caller's buffer. */
static const char *uri_of(const struct p11g_keyid *k, char *buf, size_t size)
{
	char *uri = p11g_keyid_to_uri(k);
	snprintf(buf, size, "%s", uri ? uri : "pkcs11:(unknown key)");
	free(uri);
	return buf;
}

/*
 * Key identities of token objects by (slot, handle), kept a second.  Reading
 * them costs the real module five calls per C_SignInit (SoftHSMv2's
 * C_GetTokenInfo alone is most of the unguarded path's overhead).  Only token
 * objects: a handle then names one object until C_DestroyObject (which
 * forgets it here) or another process deletes it (the handle becomes
 * invalid; a new object gets a new handle).  A relabelled key is forgotten
 * at C_SetAttributeValue; C_InitToken, C_Finalize and fork forget all.
 */
struct id_key {
	CK_SLOT_ID slot;
	CK_OBJECT_HANDLE obj;
};

static bool same_id(const void *a, const void *b)
{
	const struct id_key *x = a, *y = b;
	return x->slot == y->slot && x->obj == y->obj;
}

TTL_CACHE_DEFINE(id_cache, 64, struct id_key, struct p11g_keyid, same_id, 1000000)

/* obj in any slot: forgetting another slot's entry of the same handle costs one read. */
static bool id_of_obj(const void *key, const void *obj)
{
	return ((const struct id_key *)key)->obj == *(const CK_OBJECT_HANDLE *)obj;
}

void p11g_gate_cache_clear(bool after_fork)
{
	if (after_fork)
		ttl_cache_reset_after_fork(&id_cache);
	else
		ttl_cache_forget(&id_cache, NULL, NULL);
}

/* A module's answer that may not last (SoftHSMv2's file store, a network HSM's dropped
 * connection): worth reading again before failing closed. */
static bool transient(CK_RV rv)
{
	return rv == CKR_GENERAL_ERROR || rv == CKR_DEVICE_ERROR || rv == CKR_FUNCTION_FAILED;
}

/*
 * Whether obj is a private key, and if so its identity and who guards it.
 * false: not a private key (pol->class_rv CKR_OK), or it cannot be judged (pol->class_rv
 * says why, and the caller answers that): its class or any part of its identity could not
 * be read, it is no object of the session's token, or it is guarded and another private
 * key of its token carries the same name.  An object we cannot judge is never passed on as
 * if it were no key, nor judged by part of its name.
 */
static bool private_key_policy(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj, struct p11g_keyid *kid,
                               struct p11g_key_policy *pol, CK_SLOT_ID *ret_slot)
{
	CK_OBJECT_CLASS cls = 0;
	CK_BBOOL on_token = CK_FALSE;
	CK_ATTRIBUTE ca[] = {{CKA_CLASS, &cls, sizeof(cls)},
	                     {CKA_TOKEN, &on_token, sizeof(on_token)}};
	CK_OBJECT_HANDLE twin;
	CK_SESSION_INFO si;
	const char *what;
	char uri[1024];
	CK_RV rv;

	memset(pol, 0, sizeof(*pol));
	/* The slot as recorded at C_OpenSession: SoftHSMv2's C_GetSessionInfo takes a lock
	 * its signing threads contend for (-15% at 4 signers).  A handle we do not know
	 * is asked of the module. */
	memset(&si, 0, sizeof(si));
	bool have_si = p11g_session_slot(h, &si.slotID);
	if (have_si && id_cache_get(&(struct id_key){si.slotID, obj}, kid)) {
		*ret_slot = si.slotID;
		p11g_client_key(kid, pol);
		return true;
	}
	/* CKA_TOKEN may be unreadable on some modules: then not cached.  A passing failure
	 * is read again, as the identity is (below). */
	for (int tries = 0;; tries++) {
		ca[1].ulValueLen = sizeof(on_token);
		if (R.C_GetAttributeValue(h, obj, ca, 2) == CKR_OK)
			break;
		/* CKA_TOKEN not known: ca[1] says so for everything below. */
		on_token = CK_FALSE;
		ca[1].ulValueLen = CK_UNAVAILABLE_INFORMATION;
		rv = R.C_GetAttributeValue(h, obj, ca, 1);
		if (rv == CKR_OK)
			break;
		if (tries == P11G_READ_RETRIES || !transient(rv)) {
			if (transient(rv))
				p11g_refusal("object handle %lu refused: reading its class failed "
				             "(0x%lx); p11gate fails closed",
				             (unsigned long)obj, (unsigned long)rv);
			pol->class_rv = rv == CKR_OBJECT_HANDLE_INVALID ? NAMES_NOTHING : rv;
			return false;
		}
		usleep(2000u << tries);
	}
	if (ca[0].ulValueLen != sizeof(cls)) {
		pol->class_rv = CKR_FUNCTION_FAILED;
		return false;
	}
	if (cls != CKO_PRIVATE_KEY)
		return false;
	if (!have_si && (rv = R.C_GetSessionInfo(h, &si)) != CKR_OK) {
		pol->class_rv = rv;
		return false;
	}
	*ret_slot = si.slotID;
	/* A module's passing failure (SoftHSMv2's file store fails C_GetTokenInfo now and then
	 * when processes start together) is read again, a few times, from the start: a complete
	 * identity read later is as good as one read now, and a failure that lasts refuses. */
	for (int tries = 0;; tries++) {
		rv = read_identity(h, si.slotID, obj,
		                   ca[1].ulValueLen == sizeof(on_token) ? &on_token : NULL, kid,
		                   &twin, &what);
		if (rv == CKR_OK || tries == P11G_READ_RETRIES || !transient(rv))
			break;
		p11g_debug("reading %s failed (0x%lx); reading the key's identity again", what,
		           (unsigned long)rv);
		usleep(2000u << tries);
	}
	if (rv == CKR_OBJECT_HANDLE_INVALID) {
		p11g_refusal("private key handle %lu refused: it is no object of the token in slot "
		             "%lu, the session's",
		             (unsigned long)obj, (unsigned long)si.slotID);
		pol->class_rv = rv;
		return false;
	}
	if (rv != CKR_OK) {
		p11g_refusal("private key handle %lu refused: reading %s failed (0x%lx), and a key "
		             "is judged by all of its name or not at all; p11gate fails closed",
		             (unsigned long)obj, what, (unsigned long)rv);
		pol->class_rv = rv;
		return false;
	}
	p11g_client_key(kid, pol);
	if (twin != CK_INVALID_HANDLE && pol->guard != P11G_UNGUARDED) {
		p11g_refusal(
		    "%s refused: two private keys of the token answer to its name (handles "
		    "%lu and %lu share its label or its id); p11gate uses neither until one "
		    "is removed or renamed through the real module",
		    uri_of(kid, uri, sizeof(uri)), (unsigned long)obj, (unsigned long)twin);
		pol->class_rv = CKR_KEY_FUNCTION_NOT_PERMITTED;
		return false;
	}
	if (on_token == CK_TRUE && ca[1].ulValueLen == sizeof(on_token) &&
	    twin == CK_INVALID_HANDLE)
		id_cache_put(&(struct id_key){si.slotID, obj}, kid);
	return true;
}

/* The refusal line of a closed path. */
static void refuse_path(const char *what, const struct p11g_keyid *k,
                        const struct p11g_key_policy *pol, const char *why)
{
	char uri[1024];

	if (pol->guard == P11G_GUARD_UNKNOWN)
		p11g_refusal("%s %s refused (%s): %s; p11gate fails closed", what,
		             uri_of(k, uri, sizeof(uri)),
		             pol->err.code ? pol->err.code : "unavailable", pol->err.msg);
	else
		p11g_refusal("%s %s refused (guarded): %s", what, uri_of(k, uri, sizeof(uri)), why);
}

/* A session's record, created if the session was opened before we knew of
 * it (cannot happen through our C_OpenSession, but costs nothing). */
static struct p11g_session *session_for(CK_SESSION_HANDLE h, CK_SLOT_ID slot)
{
	struct p11g_session *s = p11g_session_get(h);

	if (s || p11g_session_add(h, slot) < 0)
		return s;
	return p11g_session_get(h);
}

/* What a key-taking function answers for a key the gate refuses because it is no object of
 * the session's token. */
static CK_RV key_rv(CK_RV rv)
{
	return rv == CKR_OBJECT_HANDLE_INVALID ? CKR_KEY_HANDLE_INVALID : rv;
}

/* ---- handles that name nothing ---------------------------------------------------------- */

/*
 * A call whose key handle names no object is the module's to answer, with its own code
 * (CKR_OBJECT_HANDLE_INVALID, CKR_WRAPPING_KEY_HANDLE_INVALID, CKR_ARGUMENTS_BAD when it
 * checks its arguments first, CKR_FUNCTION_NOT_SUPPORTED...).  It is forwarded with
 * CK_INVALID_HANDLE in place of that handle: a handle that names nothing now may name a
 * guarded key by the time the module looks (SoftHSMv2 numbers objects as a search or a new
 * key first shows them, and another thread may search meanwhile), CK_INVALID_HANDLE never
 * does.  A module that accepts it anyway cannot be gated: whatever it began is ended with
 * the session, what it made is destroyed, and the call fails.
 */
static CK_RV nothing_answer(CK_SESSION_HANDLE h, CK_RV rv, const char *fn,
                            CK_OBJECT_HANDLE_PTR made)
{
	if (rv != CKR_OK)
		return rv;
	if (made && *made != CK_INVALID_HANDLE) {
		R.C_DestroyObject(h, *made);
		*made = CK_INVALID_HANDLE;
	}
	if (!p11g_host_is_login_session(h)) {
		R.C_CloseSession(h);
		p11g_session_remove(h);
	}
	p11g_refusal("%s refused: the module accepted CK_INVALID_HANDLE for a key; p11gate "
	             "cannot judge such a key and closed the session",
	             fn);
	return CKR_KEY_HANDLE_INVALID;
}

/* In a hook: when rv says the key handle names nothing, the module answers call (made with
 * CK_INVALID_HANDLE in its place); made, when the call makes an object. */
#define FORWARD_IF_NOTHING(rv, h, fn, made, call)                                                  \
	do {                                                                                       \
		if ((rv) == NAMES_NOTHING)                                                         \
			return nothing_answer(h, (call), fn, made);                                \
	} while (0)

/* The answer of a function that reads or removes an object: the class read's own. */
static CK_RV object_rv(CK_RV rv)
{
	return rv == NAMES_NOTHING ? CKR_OBJECT_HANDLE_INVALID : rv;
}

/* Closed for guarded keys whatever the rule says, and closed when approvald cannot say.
 * CKR_OK lets the caller forward. */
static CK_RV gate_always(const char *what, CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj,
                         const char *why)
{
	struct p11g_keyid kid;
	struct p11g_key_policy pol;
	CK_SLOT_ID slot;

	if (!private_key_policy(h, obj, &kid, &pol, &slot))
		return pol.class_rv;
	if (pol.guard == P11G_UNGUARDED)
		return CKR_OK;
	refuse_path(what, &kid, &pol, why);
	return CKR_KEY_FUNCTION_NOT_PERMITTED;
}

/*
 * A private-key operation other than C_Sign/C_SignFinal (decrypt, unwrap, derive, raw
 * encrypt or verify-recover with a private key).  A raw RSA private-key operation *is* a
 * signature whatever function it comes through, and a padding-checked decryption leaks
 * one (Bleichenbacher), so none of them is open for a guarded key: allow_raw lets raw
 * mechanisms through C_Sign, one approved use each, never around it.
 */
static CK_RV gate_transform(const char *what, CK_SESSION_HANDLE h, CK_OBJECT_HANDLE key)
{
	return key_rv(gate_always(what, h, key,
	                          "a private-key operation on a guarded key is signed only through "
	                          "C_Sign or C_SignFinal, one approved use each"));
}

/* ---- ending a refused operation ------------------------------------------- */

/*
 * Ends the real module's active sign operation without a signature, so the
 * session stays usable after a refusal.  Tried in this order:
 *
 *  1. C_SessionCancel(h, CKF_SIGN): PKCS#11 3.0.  SoftHSMv2 2.6.1 is a 2.40
 *     module (no C_GetInterface, no C_SessionCancel).
 *  2. C_SignInit(h, NULL_PTR, 0): 3.0 semantics, so only for a 3.x module.
 *     SoftHSMv2 2.6.1 answers CKR_ARGUMENTS_BAD and keeps the operation
 *     (the next C_SignInit gets CKR_OPERATION_ACTIVE), and a 2.40 module
 *     need not even check the pointer.
 *  3. 2.40: an error from C_Sign/C_SignUpdate other than
 *     CKR_BUFFER_TOO_SMALL ends the operation.  NULL arguments do not do it
 *     in SoftHSMv2 (CKR_ARGUMENTS_BAD comes before it looks at the session,
 *     operation kept), an out-of-sequence call does: C_SignUpdate(h, "", 0)
 *     on a single-part mechanism (CKM_ECDSA, CKM_RSA_PKCS, CKM_RSA_PKCS_PSS,
 *     CKM_RSA_X_509) answers CKR_OPERATION_NOT_INITIALIZED and resets; on a
 *     multi-part one (CKM_SHA256_RSA_PKCS, ..._PSS) it succeeds, and C_Sign
 *     after an update (asked as a length query, so a module that tolerated
 *     it would only report a length) answers CKR_OPERATION_NOT_INITIALIZED
 *     and resets.  Found by trying every variant against SoftHSMv2 2.6.1
 *     with EC and RSA keys, confirmed by a C_SignInit succeeding afterwards.
 *
 * A last zero-length C_SignUpdate answering CKR_OPERATION_NOT_INITIALIZED
 * says nothing is left.  false when something may still be active: then the
 * caller keeps the gate's record, so the operation stays gated.
 */
static bool end_real_sign(CK_SESSION_HANDLE h)
{
	static CK_BYTE none[1];
	CK_ULONG len = 0;
	CK_RV rv;

	if (p11g_m.real_3_0 && R.C_SessionCancel(h, CKF_SIGN) == CKR_OK) {
		p11g_debug("refused sign operation ended with C_SessionCancel");
		return true;
	}
	if (p11g_m.real_3_0 && R.C_SignInit(h, NULL, 0) == CKR_OK) {
		p11g_debug("refused sign operation ended with C_SignInit(NULL)");
		return true;
	}
	if (R.C_SignUpdate(h, none, 0) == CKR_OK)
		R.C_Sign(h, none, 0, NULL, &len);
	rv = R.C_SignUpdate(h, none, 0);
	if (rv == CKR_OPERATION_NOT_INITIALIZED || rv == CKR_SESSION_HANDLE_INVALID ||
	    rv == CKR_SESSION_CLOSED) {
		p11g_debug("refused sign operation ended by an out-of-sequence C_Sign");
		return true;
	}
	p11g_debug("could not end the refused sign operation (0x%lx); it stays gated", rv);
	return false;
}

/* After the real module failed a step: per 2.40 the operation is over, but
 * SoftHSMv2 keeps it for some errors (CKR_ARGUMENTS_BAD), so make sure. */
static void settle_after_error(struct p11g_session *s, CK_RV rv)
{
	if (rv == CKR_OPERATION_NOT_INITIALIZED || end_real_sign(s->handle))
		p11g_sign_op_clear(&s->sign);
}

/* ---- signing ---------------------------------------------------------------- */

/* Whether the module may sign with mechanism (false only when it says it cannot: a mechanism
 * it does not know, or one without CKF_SIGN). */
static bool module_signs_with(CK_SLOT_ID slot, CK_MECHANISM_TYPE mechanism)
{
	CK_MECHANISM_INFO mi;
	CK_RV rv = R.C_GetMechanismInfo(slot, mechanism, &mi);
	return !(rv == CKR_MECHANISM_INVALID || (rv == CKR_OK && !(mi.flags & CKF_SIGN)));
}

CK_RV hook_C_SignInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism,
                      CK_OBJECT_HANDLE hKey)
{
	P11G_ENTER();
	struct p11g_keyid kid;
	struct p11g_key_policy pol;
	struct p11g_session *s;
	const struct p11g_mech_info *mech;
	CK_SLOT_ID slot;
	CK_RV rv;
	char uri[1024];

	bool is_private = pMechanism && private_key_policy(hSession, hKey, &kid, &pol, &slot);
	if (pMechanism && !is_private)
		FORWARD_IF_NOTHING(pol.class_rv, hSession, "C_SignInit", NULL,
		                   R.C_SignInit(hSession, pMechanism, CK_INVALID_HANDLE));
	if (pMechanism && !is_private && pol.class_rv != CKR_OK)
		return key_rv(pol.class_rv);
	if (!is_private || pol.guard == P11G_UNGUARDED) {
		if (is_private)
			p11g_debug("C_SignInit: %s unguarded", uri_of(&kid, uri, sizeof(uri)));
		else
			p11g_debug("C_SignInit: handle %lu is no private key", (unsigned long)hKey);
		rv = R.C_SignInit(hSession, pMechanism, hKey);
		/* 3.0's C_SignInit(NULL) ends the operation; a module that lets a
		 * new init replace an active one ends it too. */
		if (rv == CKR_OK && (s = p11g_session_get(hSession))) {
			p11g_sign_op_clear(&s->sign);
			p11g_session_put(s);
		}
		return rv;
	}
	mech = p11g_mech_by_type(pMechanism->mechanism);
	if (!mech && !module_signs_with(slot, pMechanism->mechanism))
		return CKR_MECHANISM_INVALID; /* the module's own answer: nothing was refused */
	if (!mech) {
		p11g_refusal("signing with %s refused (%s): mechanism 0x%lx is not one p11gate can "
		             "bind to a digest",
		             uri_of(&kid, uri, sizeof(uri)), P11G_E_MECHANISM,
		             (unsigned long)pMechanism->mechanism);
		return CKR_MECHANISM_INVALID;
	}
	s = session_for(hSession, slot);
	if (!s)
		return CKR_HOST_MEMORY;
	rv = R.C_SignInit(hSession, pMechanism, hKey);
	if (rv == CKR_OK) {
		p11g_sign_op_clear(&s->sign);
		s->sign.key = kid;
		s->sign.key_known = pol.guard == P11G_GUARDED;
		s->sign.mechanism = mech->type;
		s->sign.mech = mech;
		if (p11g_digest_init(&s->sign.dctx, mech) < 0) {
			p11g_refusal("signing with %s refused (%s): no %s in OpenSSL",
			             uri_of(&kid, uri, sizeof(uri)), P11G_E_INTERNAL,
			             mech->hash ? mech->hash : "SHA256");
			if (end_real_sign(hSession))
				p11g_sign_op_clear(&s->sign);
			else
				s->sign.active = true;
			p11g_session_put(s);
			return CKR_GENERAL_ERROR;
		}
		s->sign.active = true;
		p11g_debug("C_SignInit: %s %s, %s", uri_of(&kid, uri, sizeof(uri)),
		           pol.guard == P11G_GUARDED ? "guarded" : "guard unknown", mech->name);
	}
	p11g_session_put(s);
	return rv;
}

/*
 * Asks for one use of the session's operation bound to d.  CKR_OK when
 * granted; otherwise the refusal is printed, the real operation ended and
 * CKR_FUNCTION_REJECTED returned.
 */
static CK_RV authorize(struct p11g_session *s, const struct p11g_use_digest *d)
{
	struct p11g_sign_op *op = &s->sign;
	p11g_err err = {0};
	char uri[1024];

	if (op->granted && !strcmp(op->granted_digest.text, d->text))
		return CKR_OK;
	if (!op->key_known) {
		/* approvald was not reachable at C_SignInit; it may be now. */
		struct p11g_key_policy pol;
		p11g_client_key(&op->key, &pol);
		if (pol.guard == P11G_UNGUARDED)
			return CKR_OK;
		if (pol.guard == P11G_GUARD_UNKNOWN) {
			err = pol.err;
			goto refused;
		}
		op->key_known = true;
	}
	if (p11g_client_authorize(&op->key, op->mech->name, d, p11g_m.cfg.wait, &err) == 0) {
		op->granted = true;
		op->granted_digest = *d;
		return CKR_OK;
	}
refused:
	p11g_refusal("signing with %s refused (%s): %s", uri_of(&op->key, uri, sizeof(uri)),
	             err.code ? err.code : P11G_E_INTERNAL, err.msg);
	if (end_real_sign(s->handle))
		p11g_sign_op_clear(op);
	return CKR_FUNCTION_REJECTED;
}

/*
 * The common tail of C_Sign and C_SignFinal.  real(sig, len) is the real
 * call; digest computes what the use is bound to.  The length is asked of
 * the real module first so that a length query or a short buffer consumes
 * no use and leaves the operation active, as PKCS#11 requires.
 */
struct sign_call {
	CK_SESSION_HANDLE h;
	CK_BYTE_PTR data; /* C_Sign */
	CK_ULONG data_len;
	bool final;
};

static CK_RV real_sign(const struct sign_call *c, CK_BYTE_PTR sig, CK_ULONG_PTR len)
{
	return c->final ? R.C_SignFinal(c->h, sig, len)
	                : R.C_Sign(c->h, c->data, c->data_len, sig, len);
}

static CK_RV gated_sign(struct p11g_session *s, const struct sign_call *c, CK_BYTE_PTR pSignature,
                        CK_ULONG_PTR pulSignatureLen)
{
	struct p11g_sign_op *op = &s->sign;
	struct p11g_use_digest d;
	CK_ULONG need = 0;
	CK_RV rv;
	char uri[1024];

	if (!pulSignatureLen) {
		rv = real_sign(c, pSignature, pulSignatureLen);
		if (rv != CKR_OK && rv != CKR_BUFFER_TOO_SMALL)
			settle_after_error(s, rv);
		return rv;
	}
	rv = real_sign(c, NULL, pSignature ? &need : pulSignatureLen);
	if (rv != CKR_OK) {
		if (rv != CKR_BUFFER_TOO_SMALL)
			settle_after_error(s, rv);
		return rv;
	}
	if (!pSignature)
		return CKR_OK;
	if (*pulSignatureLen < need) {
		*pulSignatureLen = need;
		return CKR_BUFFER_TOO_SMALL;
	}

	if (!c->final && op->multipart) {
		/* C_Sign after C_SignUpdate is a caller error the real module did
		 * not catch: it might sign more than the data we see. */
		p11g_refusal("signing with %s refused (%s): C_Sign after C_SignUpdate; finish "
		             "with C_SignFinal",
		             uri_of(&op->key, uri, sizeof(uri)), P11G_E_BAD_REQUEST);
		if (end_real_sign(s->handle))
			p11g_sign_op_clear(op);
		return CKR_FUNCTION_REJECTED;
	}
	if (c->final) {
		if (!op->final_done) {
			if (p11g_digest_final(&op->dctx, &op->final_digest) < 0)
				return CKR_HOST_MEMORY;
			op->final_done = true;
		}
		d = op->final_digest;
	} else if (p11g_digest_oneshot(op->mech, c->data, c->data_len, &d) < 0) {
		return CKR_HOST_MEMORY;
	}

	if ((rv = authorize(s, &d)) != CKR_OK)
		return rv;
	rv = real_sign(c, pSignature, pulSignatureLen);
	if (rv == CKR_BUFFER_TOO_SMALL)
		return rv; /* the grant waits for the caller's next try */
	if (rv == CKR_OK)
		p11g_sign_op_clear(op);
	else
		settle_after_error(s, rv);
	return rv;
}

CK_RV hook_C_Sign(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen,
                  CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen)
{
	P11G_ENTER();
	struct p11g_session *s = p11g_session_get(hSession);
	struct sign_call c = {hSession, pData, ulDataLen, false};
	CK_RV rv;

	if (!s || !s->sign.active) {
		p11g_session_put(s);
		return R.C_Sign(hSession, pData, ulDataLen, pSignature, pulSignatureLen);
	}
	if (!pData && ulDataLen) {
		p11g_session_put(s);
		return CKR_ARGUMENTS_BAD;
	}
	rv = gated_sign(s, &c, pSignature, pulSignatureLen);
	p11g_session_put(s);
	return rv;
}

CK_RV hook_C_SignUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen)
{
	P11G_ENTER();
	struct p11g_session *s = p11g_session_get(hSession);
	CK_RV rv;

	if (!s || !s->sign.active) {
		p11g_session_put(s);
		return R.C_SignUpdate(hSession, pPart, ulPartLen);
	}
	if (!pPart && ulPartLen) {
		p11g_session_put(s);
		return CKR_ARGUMENTS_BAD;
	}
	rv = R.C_SignUpdate(hSession, pPart, ulPartLen);
	if (rv == CKR_OK) {
		s->sign.multipart = true;
		if (s->sign.final_done || p11g_digest_update(&s->sign.dctx, pPart, ulPartLen) < 0) {
			/* The side hash cannot follow: this operation cannot be
			 * bound to a digest any more. */
			if (end_real_sign(hSession))
				p11g_sign_op_clear(&s->sign);
			rv = CKR_GENERAL_ERROR;
		}
	} else {
		settle_after_error(s, rv);
	}
	p11g_session_put(s);
	return rv;
}

CK_RV hook_C_SignFinal(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSignature,
                       CK_ULONG_PTR pulSignatureLen)
{
	P11G_ENTER();
	struct p11g_session *s = p11g_session_get(hSession);
	struct sign_call c = {hSession, NULL, 0, true};
	CK_RV rv;

	if (!s || !s->sign.active) {
		p11g_session_put(s);
		return R.C_SignFinal(hSession, pSignature, pulSignatureLen);
	}
	rv = gated_sign(s, &c, pSignature, pulSignatureLen);
	p11g_session_put(s);
	return rv;
}

CK_RV hook_C_SignRecoverInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism,
                             CK_OBJECT_HANDLE hKey)
{
	P11G_ENTER();
	struct p11g_session *s;
	CK_RV rv;

	if (pMechanism &&
	    (rv = gate_always("signing with recovery with", hSession, hKey,
	                      "recoverable signatures bypass approvals; use C_Sign")) != CKR_OK) {
		FORWARD_IF_NOTHING(rv, hSession, "C_SignRecoverInit", NULL,
		                   R.C_SignRecoverInit(hSession, pMechanism, CK_INVALID_HANDLE));
		return rv;
	}
	rv = R.C_SignRecoverInit(hSession, pMechanism, hKey);
	if (rv == CKR_OK && (s = p11g_session_get(hSession))) {
		s->recover_ok = pMechanism != NULL;
		p11g_session_put(s);
	}
	return rv;
}

CK_RV hook_C_SignRecover(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen,
                         CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen)
{
	P11G_ENTER();
	struct p11g_session *s = p11g_session_get(hSession);
	CK_RV rv;

	/* Only an operation that began at our C_SignRecoverInit; no other way
	 * in (C_SetOperationState is denied) should exist, but if one did it
	 * would skip the gate. */
	if (!s || !s->recover_ok) {
		p11g_session_put(s);
		return CKR_OPERATION_NOT_INITIALIZED;
	}
	rv = R.C_SignRecover(hSession, pData, ulDataLen, pSignature, pulSignatureLen);
	if (rv != CKR_BUFFER_TOO_SMALL && !(rv == CKR_OK && !pSignature))
		s->recover_ok = false;
	p11g_session_put(s);
	return rv;
}

/* Dual-function calls would feed the gated operation behind its digest. */
static CK_RV refuse_dual(CK_SESSION_HANDLE hSession, const char *name)
{
	struct p11g_session *s = p11g_session_get(hSession);
	bool gated = s && s->sign.active;
	char uri[1024];

	if (gated)
		p11g_refusal("%s with %s refused (guarded): a guarded signature takes C_Sign or "
		             "C_SignUpdate/C_SignFinal",
		             name, uri_of(&s->sign.key, uri, sizeof(uri)));
	p11g_session_put(s);
	return gated ? CKR_FUNCTION_REJECTED : CKR_OK;
}

CK_RV hook_C_SignEncryptUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen,
                               CK_BYTE_PTR pEncryptedPart, CK_ULONG_PTR pulEncryptedPartLen)
{
	P11G_ENTER();
	CK_RV rv = refuse_dual(hSession, "C_SignEncryptUpdate");
	if (rv != CKR_OK)
		return rv;
	return R.C_SignEncryptUpdate(hSession, pPart, ulPartLen, pEncryptedPart,
	                             pulEncryptedPartLen);
}

CK_RV hook_C_DecryptVerifyUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pEncryptedPart,
                                 CK_ULONG ulEncryptedPartLen, CK_BYTE_PTR pPart,
                                 CK_ULONG_PTR pulPartLen)
{
	P11G_ENTER();
	CK_RV rv = refuse_dual(hSession, "C_DecryptVerifyUpdate");
	if (rv != CKR_OK)
		return rv;
	return R.C_DecryptVerifyUpdate(hSession, pEncryptedPart, ulEncryptedPartLen, pPart,
	                               pulPartLen);
}

/* ---- other private-key paths ------------------------------------------------ */

/* An init whose key must not be a guarded private key: the gate, then the real module.
 * is_3_0: a call a 2.x module lacks, answered before the gate reads the key. */
static CK_RV gated_key_init(const char *what, CK_C_EncryptInit real, bool is_3_0,
                            CK_SESSION_HANDLE h, CK_MECHANISM_PTR mechanism, CK_OBJECT_HANDLE key)
{
	CK_RV rv;
	if (is_3_0 && !p11g_m.real_3_0)
		return CKR_FUNCTION_NOT_SUPPORTED;
	/* No mechanism ends an operation: nothing to gate. */
	if (mechanism && (rv = gate_transform(what, h, key)) != CKR_OK) {
		FORWARD_IF_NOTHING(rv, h, what, NULL, real(h, mechanism, CK_INVALID_HANDLE));
		return rv;
	}
	return real(h, mechanism, key);
}

/* The hooks that only gate their key, one line each. */
#define GATED_KEY_INIT(name, what, is_3_0)                                                         \
	CK_RV hook_##name(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism,                 \
	                  CK_OBJECT_HANDLE hKey)                                                   \
	{                                                                                          \
		P11G_ENTER();                                                                      \
		return gated_key_init(what, R.name, is_3_0, hSession, pMechanism, hKey);           \
	}

/* Raw RSA decryption of chosen input is a signature. */
GATED_KEY_INIT(C_DecryptInit, "decrypting with", false)
/* Encryption takes a public or secret key; a module that accepted a
 * private one would compute a raw signature. */
GATED_KEY_INIT(C_EncryptInit, "encrypting with", false)
GATED_KEY_INIT(C_VerifyRecoverInit, "verify-recovering with", false)
GATED_KEY_INIT(C_MessageEncryptInit, "encrypting with", true)
GATED_KEY_INIT(C_MessageDecryptInit, "decrypting with", true)

/* A call that makes a key with another one (unwrap, derive): the key it uses is gated as a
 * private-key operation, and the key it makes as an object the client may make. */
static CK_RV gate_key_making(const char *what, const char *fn, CK_SESSION_HANDLE h,
                             CK_OBJECT_HANDLE key, CK_ATTRIBUTE_PTR tmpl, CK_ULONG n)
{
	CK_RV rv = gate_transform(what, h, key);
	if (rv != CKR_OK && rv != NAMES_NOTHING)
		return rv;
	CK_RV made = p11g_object_admin_check(fn, h, CK_INVALID_HANDLE, tmpl, n);
	return made == CKR_OK ? rv : made;
}

CK_RV hook_C_UnwrapKey(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism,
                       CK_OBJECT_HANDLE hUnwrappingKey, CK_BYTE_PTR pWrappedKey,
                       CK_ULONG ulWrappedKeyLen, CK_ATTRIBUTE_PTR pTemplate,
                       CK_ULONG ulAttributeCount, CK_OBJECT_HANDLE_PTR phKey)
{
	P11G_ENTER();
	CK_RV rv = gate_key_making("unwrapping with", "C_UnwrapKey", hSession, hUnwrappingKey,
	                           pTemplate, ulAttributeCount);
	FORWARD_IF_NOTHING(rv, hSession, "C_UnwrapKey", phKey,
	                   R.C_UnwrapKey(hSession, pMechanism, CK_INVALID_HANDLE, pWrappedKey,
	                                 ulWrappedKeyLen, pTemplate, ulAttributeCount, phKey));
	if (rv != CKR_OK)
		return rv;
	rv = R.C_UnwrapKey(hSession, pMechanism, hUnwrappingKey, pWrappedKey, ulWrappedKeyLen,
	                   pTemplate, ulAttributeCount, phKey);
	return p11g_object_admin_after("C_UnwrapKey", hSession, rv, &phKey, 1);
}

CK_RV hook_C_DeriveKey(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism,
                       CK_OBJECT_HANDLE hBaseKey, CK_ATTRIBUTE_PTR pTemplate,
                       CK_ULONG ulAttributeCount, CK_OBJECT_HANDLE_PTR phKey)
{
	P11G_ENTER();
	CK_RV rv = gate_key_making("deriving from", "C_DeriveKey", hSession, hBaseKey, pTemplate,
	                           ulAttributeCount);
	FORWARD_IF_NOTHING(rv, hSession, "C_DeriveKey", phKey,
	                   R.C_DeriveKey(hSession, pMechanism, CK_INVALID_HANDLE, pTemplate,
	                                 ulAttributeCount, phKey));
	if (rv != CKR_OK)
		return rv;
	rv = R.C_DeriveKey(hSession, pMechanism, hBaseKey, pTemplate, ulAttributeCount, phKey);
	return p11g_object_admin_after("C_DeriveKey", hSession, rv, &phKey, 1);
}

CK_RV hook_C_WrapKey(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism,
                     CK_OBJECT_HANDLE hWrappingKey, CK_OBJECT_HANDLE hKey, CK_BYTE_PTR pWrappedKey,
                     CK_ULONG_PTR pulWrappedKeyLen)
{
	P11G_ENTER();
	CK_RV rk = key_rv(gate_always("wrapping (exporting)", hSession, hKey,
	                              "a guarded key never leaves the token"));
	if (rk != CKR_OK && rk != NAMES_NOTHING)
		return rk;
	CK_RV rw = gate_transform("wrapping with", hSession, hWrappingKey);
	if (rw != CKR_OK && rw != NAMES_NOTHING)
		return rw;
	if (rk == NAMES_NOTHING || rw == NAMES_NOTHING) {
		CK_RV rv = R.C_WrapKey(
		    hSession, pMechanism, rw == NAMES_NOTHING ? CK_INVALID_HANDLE : hWrappingKey,
		    rk == NAMES_NOTHING ? CK_INVALID_HANDLE : hKey, pWrappedKey, pulWrappedKeyLen);
		/* A module that wrapped nothing: its output is not handed out. */
		if (rv == CKR_OK && pWrappedKey && pulWrappedKeyLen)
			explicit_bzero(pWrappedKey, *pulWrappedKeyLen);
		return nothing_answer(hSession, rv, "C_WrapKey", NULL);
	}
	return R.C_WrapKey(hSession, pMechanism, hWrappingKey, hKey, pWrappedKey, pulWrappedKeyLen);
}

/* The attributes that hold a private key's secret (and vendor-defined ones, which may). */
static bool secret_attr(CK_ATTRIBUTE_TYPE t)
{
	switch (t) {
	case CKA_VALUE:
	case CKA_PRIVATE_EXPONENT:
	case CKA_PRIME_1:
	case CKA_PRIME_2:
	case CKA_EXPONENT_1:
	case CKA_EXPONENT_2:
	case CKA_COEFFICIENT:
		return true;
	default:
		return t >= CKA_VENDOR_DEFINED;
	}
}

/*
 * A guarded key's secret is never handed out, whatever the module's CKA_SENSITIVE says: a
 * key made with CKA_SENSITIVE false (or CKA_EXTRACTABLE true, then changed) would give any
 * client its private value, and signatures without number.  The other attributes of the
 * template are answered as the module answers them; the secret ones are unavailable
 * (CKR_ATTRIBUTE_SENSITIVE), and their buffers are never given to the module.  Templates
 * without such attributes, and objects that are no private key, pass straight through.
 */
CK_RV hook_C_GetAttributeValue(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject,
                               CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount)
{
	P11G_ENTER();
	struct p11g_keyid kid;
	struct p11g_key_policy pol;
	CK_SLOT_ID slot;
	CK_ULONG i, m = 0;
	bool any = false;

	for (i = 0; pTemplate && i < ulCount && !any; i++)
		any = secret_attr(pTemplate[i].type);
	if (!any)
		return R.C_GetAttributeValue(hSession, hObject, pTemplate, ulCount);
	if (!private_key_policy(hSession, hObject, &kid, &pol, &slot)) {
		if (pol.class_rv != CKR_OK)
			return object_rv(pol.class_rv);
		return R.C_GetAttributeValue(hSession, hObject, pTemplate, ulCount);
	}
	if (pol.guard == P11G_UNGUARDED)
		return R.C_GetAttributeValue(hSession, hObject, pTemplate, ulCount);

	_cleanup_free_ CK_ATTRIBUTE *rest = calloc(ulCount, sizeof(*rest));
	_cleanup_free_ CK_ULONG *at = calloc(ulCount, sizeof(*at));
	if (!rest || !at)
		return CKR_HOST_MEMORY;
	for (i = 0; i < ulCount; i++) {
		if (secret_attr(pTemplate[i].type)) {
			pTemplate[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
			continue;
		}
		at[m] = i;
		rest[m++] = pTemplate[i];
	}
	CK_RV rv = m ? R.C_GetAttributeValue(hSession, hObject, rest, m) : CKR_OK;
	for (i = 0; i < m; i++)
		pTemplate[at[i]].ulValueLen = rest[i].ulValueLen;
	refuse_path("reading the private value of", &kid, &pol,
	            "a guarded key's secret never leaves the token");
	return rv == CKR_OK ? CKR_ATTRIBUTE_SENSITIVE : rv;
}

CK_RV hook_C_SetAttributeValue(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject,
                               CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount)
{
	P11G_ENTER();
	CK_RV rv = gate_always("changing attributes of", hSession, hObject,
	                       "a new label or id would take the key out of its rule");
	FORWARD_IF_NOTHING(rv, hSession, "C_SetAttributeValue", NULL,
	                   R.C_SetAttributeValue(hSession, CK_INVALID_HANDLE, pTemplate, ulCount));
	if (rv == CKR_OK)
		rv = p11g_object_admin_check("C_SetAttributeValue", hSession, hObject, pTemplate,
		                             ulCount);
	if (rv != CKR_OK)
		return rv;
	rv = R.C_SetAttributeValue(hSession, hObject, pTemplate, ulCount);
	ttl_cache_forget(&id_cache, id_of_obj, &hObject);
	return rv;
}

CK_RV hook_C_DestroyObject(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject)
{
	P11G_ENTER();
	struct p11g_keyid kid;
	struct p11g_key_policy pol;
	CK_SLOT_ID slot;
	CK_RV rv = p11g_object_admin_check("C_DestroyObject", hSession, hObject, NULL, 0);

	if (rv != CKR_OK)
		return rv;
	/* Deleting a guarded key is not a signature, but with approvald
	 * holding the token (where every client may connect) it would be
	 * anyone's to do: administer guarded keys through the real module. */
	bool is_private = private_key_policy(hSession, hObject, &kid, &pol, &slot);
	if (!is_private && pol.class_rv != CKR_OK)
		return object_rv(pol.class_rv);
	if (is_private && pol.guard != P11G_UNGUARDED) {
		refuse_path(
		    "destroying", &kid, &pol,
		    "a guarded key is deleted through the real module, not through the gate");
		return CKR_ACTION_PROHIBITED;
	}
	rv = R.C_DestroyObject(hSession, hObject);
	ttl_cache_forget(&id_cache, id_of_obj, &hObject);
	return rv;
}

CK_RV hook_C_CopyObject(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject,
                        CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount,
                        CK_OBJECT_HANDLE_PTR phNewObject)
{
	P11G_ENTER();
	CK_RV rv =
	    gate_always("copying", hSession, hObject, "a copy would be a key outside its rule");
	FORWARD_IF_NOTHING(
	    rv, hSession, "C_CopyObject", phNewObject,
	    R.C_CopyObject(hSession, CK_INVALID_HANDLE, pTemplate, ulCount, phNewObject));
	if (rv == CKR_OK)
		rv = p11g_object_admin_check("C_CopyObject", hSession, hObject, pTemplate, ulCount);
	if (rv != CKR_OK)
		return rv;
	rv = R.C_CopyObject(hSession, hObject, pTemplate, ulCount, phNewObject);
	return p11g_object_admin_after("C_CopyObject", hSession, rv, &phNewObject, 1);
}

/* ---- PKCS#11 3.0 -------------------------------------------------------------- */

CK_RV hook_C_SessionCancel(CK_SESSION_HANDLE hSession, CK_FLAGS flags)
{
	P11G_ENTER();
	struct p11g_session *s;
	CK_RV rv;

	if (!p11g_m.real_3_0)
		return CKR_FUNCTION_NOT_SUPPORTED;
	rv = R.C_SessionCancel(hSession, flags);
	if (rv == CKR_OK && (s = p11g_session_get(hSession))) {
		if (flags & CKF_SIGN)
			p11g_sign_op_clear(&s->sign);
		if (flags & CKF_SIGN_RECOVER)
			s->recover_ok = false;
		if (flags & CKF_MESSAGE_SIGN)
			s->msgsign_ok = false;
		p11g_session_put(s);
	}
	return rv;
}

CK_RV hook_C_MessageSignInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism,
                             CK_OBJECT_HANDLE hKey)
{
	P11G_ENTER();
	struct p11g_keyid kid;
	struct p11g_key_policy pol;
	struct p11g_session *s;
	CK_SLOT_ID slot = 0;
	CK_RV rv;

	if (!p11g_m.real_3_0)
		return CKR_FUNCTION_NOT_SUPPORTED;
	bool is_private = pMechanism && private_key_policy(hSession, hKey, &kid, &pol, &slot);
	if (pMechanism && !is_private)
		FORWARD_IF_NOTHING(pol.class_rv, hSession, "C_MessageSignInit", NULL,
		                   R.C_MessageSignInit(hSession, pMechanism, CK_INVALID_HANDLE));
	if (pMechanism && !is_private && pol.class_rv != CKR_OK)
		return key_rv(pol.class_rv);
	if (is_private && pol.guard != P11G_UNGUARDED) {
		refuse_path("message signing with", &kid, &pol,
		            "3.0 message signing bypasses approvals; use C_Sign");
		return CKR_KEY_FUNCTION_NOT_PERMITTED;
	}
	rv = R.C_MessageSignInit(hSession, pMechanism, hKey);
	if (rv == CKR_OK && (s = session_for(hSession, slot))) {
		s->msgsign_ok = pMechanism != NULL;
		p11g_session_put(s);
	}
	return rv;
}

/* The message-signing calls run only on a 3.0 module and only after our
 * C_MessageSignInit let the key through. */
static CK_RV msgsign_allowed(CK_SESSION_HANDLE hSession)
{
	if (!p11g_m.real_3_0)
		return CKR_FUNCTION_NOT_SUPPORTED;
	struct p11g_session *s = p11g_session_get(hSession);
	bool ok = s && s->msgsign_ok;

	p11g_session_put(s);
	return ok ? CKR_OK : CKR_OPERATION_NOT_INITIALIZED;
}

CK_RV hook_C_SignMessage(CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter,
                         CK_ULONG ulParameterLen, CK_BYTE_PTR pData, CK_ULONG ulDataLen,
                         CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen)
{
	P11G_ENTER();
	CK_RV rv;
	if ((rv = msgsign_allowed(hSession)) != CKR_OK)
		return rv;
	return R.C_SignMessage(hSession, pParameter, ulParameterLen, pData, ulDataLen, pSignature,
	                       pulSignatureLen);
}

CK_RV hook_C_SignMessageBegin(CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter,
                              CK_ULONG ulParameterLen)
{
	P11G_ENTER();
	CK_RV rv;
	if ((rv = msgsign_allowed(hSession)) != CKR_OK)
		return rv;
	return R.C_SignMessageBegin(hSession, pParameter, ulParameterLen);
}

CK_RV hook_C_SignMessageNext(CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter,
                             CK_ULONG ulParameterLen, CK_BYTE_PTR pData, CK_ULONG ulDataLen,
                             CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen)
{
	P11G_ENTER();
	CK_RV rv;
	if ((rv = msgsign_allowed(hSession)) != CKR_OK)
		return rv;
	return R.C_SignMessageNext(hSession, pParameter, ulParameterLen, pData, ulDataLen,
	                           pSignature, pulSignatureLen);
}

CK_RV hook_C_MessageSignFinal(CK_SESSION_HANDLE hSession)
{
	P11G_ENTER();
	struct p11g_session *s;
	CK_RV rv;

	if (!p11g_m.real_3_0)
		return CKR_FUNCTION_NOT_SUPPORTED;
	rv = R.C_MessageSignFinal(hSession);
	if (rv == CKR_OK && (s = p11g_session_get(hSession))) {
		s->msgsign_ok = false;
		p11g_session_put(s);
	}
	return rv;
}
