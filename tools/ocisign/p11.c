/* PKCS#11 keys by URI: dlopen a module, find one key, log in, sign in cosign's formats, export the
 * public key. */
#include <dlfcn.h>
#include <time.h>
#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

#include <openssl/err.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "cert.h"
#include "p11.h"
#include "sigcrypto.h"

#ifndef OCISIGN_DEFAULT_MODULE
#define OCISIGN_DEFAULT_MODULE "/usr/lib/x86_64-linux-gnu/pkcs11/p11gate.so"
#endif

#define PIN_MAX 256

struct oci_key {
	void *dl;
	CK_FUNCTION_LIST *f;
	bool initialized;
	CK_SESSION_HANDLE session;
	bool have_session;
	CK_OBJECT_HANDLE obj;
	CK_OBJECT_CLASS cls;
	CK_KEY_TYPE type;
	char uri[2048]; /* for messages, without the query */
	char module[1024];
	bool approved; /* an operation was approved for what is signed (--request) */
};

const char *oci_key_uri(const struct oci_key *k)
{
	return k->uri;
}

void oci_key_note_approved(struct oci_key *k)
{
	k->approved = true;
}

const char *oci_ckr_name(unsigned long rv)
{
	static const struct {
		unsigned long rv;
		const char *name;
	} names[] = {
	    {CKR_OK, "CKR_OK"},
	    {CKR_GENERAL_ERROR, "CKR_GENERAL_ERROR"},
	    {CKR_FUNCTION_FAILED, "CKR_FUNCTION_FAILED"},
	    {CKR_ARGUMENTS_BAD, "CKR_ARGUMENTS_BAD"},
	    {CKR_ATTRIBUTE_TYPE_INVALID, "CKR_ATTRIBUTE_TYPE_INVALID"},
	    {CKR_ATTRIBUTE_SENSITIVE, "CKR_ATTRIBUTE_SENSITIVE"},
	    {CKR_DEVICE_ERROR, "CKR_DEVICE_ERROR"},
	    {CKR_DEVICE_REMOVED, "CKR_DEVICE_REMOVED"},
	    {CKR_FUNCTION_REJECTED, "CKR_FUNCTION_REJECTED"},
	    {CKR_KEY_FUNCTION_NOT_PERMITTED, "CKR_KEY_FUNCTION_NOT_PERMITTED"},
	    {CKR_KEY_TYPE_INCONSISTENT, "CKR_KEY_TYPE_INCONSISTENT"},
	    {CKR_MECHANISM_INVALID, "CKR_MECHANISM_INVALID"},
	    {CKR_OPERATION_ACTIVE, "CKR_OPERATION_ACTIVE"},
	    {CKR_PIN_INCORRECT, "CKR_PIN_INCORRECT"},
	    {CKR_PIN_LOCKED, "CKR_PIN_LOCKED"},
	    {CKR_PIN_LEN_RANGE, "CKR_PIN_LEN_RANGE"},
	    {CKR_SESSION_HANDLE_INVALID, "CKR_SESSION_HANDLE_INVALID"},
	    {CKR_TOKEN_NOT_PRESENT, "CKR_TOKEN_NOT_PRESENT"},
	    {CKR_USER_NOT_LOGGED_IN, "CKR_USER_NOT_LOGGED_IN"},
	    {CKR_USER_ALREADY_LOGGED_IN, "CKR_USER_ALREADY_LOGGED_IN"},
	    {CKR_BUFFER_TOO_SMALL, "CKR_BUFFER_TOO_SMALL"},
	    {CKR_CRYPTOKI_NOT_INITIALIZED, "CKR_CRYPTOKI_NOT_INITIALIZED"},
	    {CKR_CRYPTOKI_ALREADY_INITIALIZED, "CKR_CRYPTOKI_ALREADY_INITIALIZED"},
	    {CKR_DATA_LEN_RANGE, "CKR_DATA_LEN_RANGE"},
	    {CKR_HOST_MEMORY, "CKR_HOST_MEMORY"},
	};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(names); i++)
		if (names[i].rv == rv)
			return names[i].name;
	return "CKR_0x?";
}

/* The code of a failed PKCS#11 call: a refused login or use, a token gone, a key that cannot do
 * what was asked; anything else the module should not have answered. */
static const char *ckr_code(CK_RV rv)
{
	switch (rv) {
	case CKR_PIN_INCORRECT:
	case CKR_PIN_LOCKED:
	case CKR_PIN_LEN_RANGE:
	case CKR_USER_NOT_LOGGED_IN:
	case CKR_FUNCTION_REJECTED:
	case CKR_KEY_FUNCTION_NOT_PERMITTED:
		return P11G_E_FORBIDDEN;
	case CKR_DEVICE_ERROR:
	case CKR_DEVICE_REMOVED:
	case CKR_TOKEN_NOT_PRESENT:
		return P11G_E_UNAVAILABLE;
	case CKR_MECHANISM_INVALID:
	case CKR_KEY_TYPE_INCONSISTENT:
		return P11G_E_BAD_REQUEST;
	default:
		return P11G_E_INTERNAL;
	}
}

static int ckr_fail(p11g_err *err, const char *what, CK_RV rv)
{
	const char *name = oci_ckr_name(rv);
	if (!strcmp(name, "CKR_0x?"))
		return p11g_err_set(err, ckr_code(rv), "%s failed (CKR 0x%lx)", what,
		                    (unsigned long)rv);
	return p11g_err_set(err, ckr_code(rv), "%s failed (%s)", what, name);
}

/* Copies the part of a key URI before its query into out. */
static int uri_without_query(const char *uri, char *out, size_t outlen)
{
	size_t n = strcspn(uri, "?");
	if (n >= outlen)
		return -1;
	memcpy(out, uri, n);
	out[n] = '\0';
	return 0;
}

int oci_key_request_uri(const char *uri, char **ret, p11g_err *err)
{
	char buf[2048];
	if (strncmp(uri, "pkcs11:", 7) || uri_without_query(uri, buf, sizeof(buf)) < 0)
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "bad key URI: expected pkcs11:token=...;object=... (RFC 7512)");
	*ret = strdup(buf);
	return *ret ? 0 : p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
}

static P11KitUri *parse_uri(const char *uri, p11g_err *err)
{
	P11KitUri *u = p11_kit_uri_new();
	if (!u) {
		p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
		return NULL;
	}
	if (strncmp(uri, "pkcs11:", 7)) {
		p11g_err_set(
		    err, P11G_E_BAD_REQUEST,
		    "bad key URI \"%.100s\": expected pkcs11:token=...;object=... (RFC 7512)", uri);
		goto fail;
	}
	int r = p11_kit_uri_parse(uri, P11_KIT_URI_FOR_OBJECT_ON_TOKEN_AND_MODULE, u);
	if (r != P11_KIT_URI_OK) {
		char shown[2048];
		uri_without_query(uri, shown, sizeof(shown));
		p11g_err_set(err, P11G_E_BAD_REQUEST, "bad key URI \"%s\": %s", shown,
		             p11_kit_uri_message(r));
		goto fail;
	}
	return u;
fail:
	p11_kit_uri_free(u);
	return NULL;
}

const char *oci_key_module_path(const struct oci_key_opts *o, p11g_err *err)
{
	static char path[1024];
	if (o->module)
		return o->module;
	P11KitUri *u = parse_uri(o->uri, err);
	if (!u)
		return NULL;
	const char *mp = p11_kit_uri_get_module_path(u);
	const char *mn = p11_kit_uri_get_module_name(u);
	const char *env = getenv("OCISIGN_MODULE");
	const char *res = OCISIGN_DEFAULT_MODULE;
	if (mp)
		res = mp;
	else if (mn) {
		p11g_err_set(
		    err, P11G_E_BAD_REQUEST,
		    "the key URI names module-name=%s; give module-path= or --module instead", mn);
		p11_kit_uri_free(u);
		return NULL;
	} else if (env && *env)
		res = env;
	snprintf(path, sizeof(path), "%s", res);
	p11_kit_uri_free(u);
	return path;
}

/* The PIN: the URI's pin-value, else --pin-file (first line), else $PKCS11_PIN. */
static int get_pin(const struct oci_key_opts *o, P11KitUri *u, char *pin, size_t pinlen,
                   bool *ret_have, p11g_err *err)
{
	const char *pv = p11_kit_uri_get_pin_value(u);
	const char *env = getenv("PKCS11_PIN");
	*ret_have = false;
	if (pv) {
		if (strlen(pv) >= pinlen)
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "the URI's pin-value is too long");
		snprintf(pin, pinlen, "%s", pv);
		*ret_have = true;
	} else if (o->pin_file) {
		struct oci_buf b;
		if (oci_read_file(o->pin_file, PIN_MAX, &b, "PIN file", err) < 0)
			return -1;
		size_t n = strcspn((const char *)b.data, "\r\n");
		memcpy(pin, b.data, n < pinlen - 1 ? n : pinlen - 1);
		pin[n < pinlen - 1 ? n : pinlen - 1] = '\0';
		explicit_bzero(b.data, b.len);
		oci_buf_free(&b);
		*ret_have = true;
	} else if (env) {
		if (strlen(env) >= pinlen)
			return p11g_err_set(err, P11G_E_BAD_REQUEST, "PKCS11_PIN is too long");
		snprintf(pin, pinlen, "%s", env);
		*ret_have = true;
	}
	return 0;
}

static int find_objects(struct oci_key *k, CK_SESSION_HANDLE s, CK_ATTRIBUTE *tmpl, CK_ULONG n,
                        CK_OBJECT_HANDLE *found, CK_ULONG max, CK_ULONG *ret_count, p11g_err *err)
{
	CK_RV rv = k->f->C_FindObjectsInit(s, tmpl, n);
	if (rv != CKR_OK)
		return ckr_fail(err, "C_FindObjectsInit", rv);
	rv = k->f->C_FindObjects(s, found, max, ret_count);
	k->f->C_FindObjectsFinal(s);
	if (rv != CKR_OK)
		return ckr_fail(err, "C_FindObjects", rv);
	return 0;
}

/* Template of CKA_CLASS plus the URI's CKA_LABEL / CKA_ID. */
static CK_ULONG key_template(P11KitUri *u, CK_OBJECT_CLASS *cls, CK_ATTRIBUTE *t)
{
	CK_ULONG n = 0;
	CK_ATTRIBUTE *a;
	t[n++] = (CK_ATTRIBUTE){CKA_CLASS, cls, sizeof(*cls)};
	if ((a = p11_kit_uri_get_attribute(u, CKA_LABEL)))
		t[n++] = *a;
	if ((a = p11_kit_uri_get_attribute(u, CKA_ID)))
		t[n++] = *a;
	return n;
}

int oci_key_open(const struct oci_key_opts *o, bool for_signing, struct oci_key **ret,
                 p11g_err *err)
{
	struct oci_key *k = calloc(1, sizeof(*k));
	P11KitUri *u = NULL;
	CK_SLOT_ID *slots = NULL;
	char pin[PIN_MAX];
	bool have_pin = false;
	int res = -1;
	CK_RV rv;

	if (!k)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	if (!(u = parse_uri(o->uri, err)))
		goto out;
	/* (k->uri names the key in every message: one too long to name is refused) */
	if (uri_without_query(o->uri, k->uri, sizeof(k->uri)) < 0) {
		p11g_err_set(err, P11G_E_BAD_REQUEST,
		             "bad key URI: its part before '?' is %zu bytes or longer",
		             sizeof(k->uri));
		goto out;
	}
	CK_ATTRIBUTE *cattr = p11_kit_uri_get_attribute(u, CKA_CLASS);
	if (cattr && cattr->ulValueLen == sizeof(CK_OBJECT_CLASS) &&
	    *(CK_OBJECT_CLASS *)cattr->pValue != CKO_PRIVATE_KEY &&
	    *(CK_OBJECT_CLASS *)cattr->pValue != CKO_PUBLIC_KEY) {
		p11g_err_set(err, P11G_E_BAD_REQUEST,
		             "key URI %s: type= must be private (or public for pubkey)", k->uri);
		goto out;
	}
	if (!p11_kit_uri_get_attribute(u, CKA_LABEL) && !p11_kit_uri_get_attribute(u, CKA_ID)) {
		p11g_err_set(err, P11G_E_BAD_REQUEST,
		             "key URI %s names no key: add object=LABEL or id=%%HEX", k->uri);
		goto out;
	}
	if (get_pin(o, u, pin, sizeof(pin), &have_pin, err) < 0)
		goto out;
	const char *mod = oci_key_module_path(o, err);
	if (!mod)
		goto out;
	snprintf(k->module, sizeof(k->module), "%s", mod);
	k->dl = dlopen(k->module, RTLD_NOW | RTLD_LOCAL);
	if (!k->dl) {
		p11g_err_set(err, P11G_E_BAD_REQUEST, "cannot load PKCS#11 module %s: %s",
		             k->module, dlerror());
		goto out;
	}
	CK_C_GetFunctionList gfl = (CK_C_GetFunctionList)dlsym(k->dl, "C_GetFunctionList");
	if (!gfl || gfl(&k->f) != CKR_OK || !k->f) {
		p11g_err_set(err, P11G_E_BAD_REQUEST,
		             "%s is not a PKCS#11 module (no C_GetFunctionList)", k->module);
		goto out;
	}
	CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
	rv = k->f->C_Initialize(&args);
	if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		ckr_fail(err, "C_Initialize of the PKCS#11 module", rv);
		goto out;
	}
	k->initialized = rv == CKR_OK;

	CK_ULONG nslots = 0;
	if ((rv = k->f->C_GetSlotList(CK_TRUE, NULL, &nslots)) != CKR_OK) {
		ckr_fail(err, "C_GetSlotList", rv);
		goto out;
	}
	slots = calloc(nslots ? nslots : 1, sizeof(*slots));
	if (!slots || (rv = k->f->C_GetSlotList(CK_TRUE, slots, &nslots)) != CKR_OK) {
		ckr_fail(err, "C_GetSlotList", slots ? rv : CKR_HOST_MEMORY);
		goto out;
	}
	CK_SLOT_ID want_slot = p11_kit_uri_get_slot_id(u);
	unsigned matches = 0, tokens = 0;
	bool pin_would_help = false;
	/* The private key for signing; for pubkey the public key, else the private one's
	 * attributes. */
	CK_OBJECT_CLASS classes[2] = {for_signing ? CKO_PRIVATE_KEY : CKO_PUBLIC_KEY,
	                              CKO_PRIVATE_KEY};
	for (int pass = 0; pass < (for_signing ? 1 : 2) && matches == 0; pass++) {
		for (CK_ULONG i = 0; i < nslots; i++) {
			CK_TOKEN_INFO ti;
			CK_SESSION_HANDLE s;
			if (want_slot != (CK_SLOT_ID)-1 && slots[i] != want_slot)
				continue;
			if (k->f->C_GetTokenInfo(slots[i], &ti) != CKR_OK ||
			    !p11_kit_uri_match_token_info(u, &ti))
				continue;
			tokens++;
			rv = k->f->C_OpenSession(slots[i],
			                         CKF_SERIAL_SESSION | (o->rw ? CKF_RW_SESSION : 0),
			                         NULL, NULL, &s);
			if (rv != CKR_OK) {
				ckr_fail(err, "C_OpenSession", rv);
				goto out;
			}
			bool need_login = (ti.flags & CKF_LOGIN_REQUIRED) &&
			                  (for_signing || classes[pass] == CKO_PRIVATE_KEY);
			if (need_login && !have_pin) {
				k->f->C_CloseSession(s);
				if (!for_signing) {
					pin_would_help = true; /* the private half needs a login */
					continue;
				}
				char label[33];
				size_t ll = sizeof(ti.label);
				while (ll && ti.label[ll - 1] == ' ')
					ll--;
				memcpy(label, ti.label, ll);
				label[ll] = '\0';
				p11g_err_set(err, P11G_E_BAD_REQUEST,
				             "token \"%s\" needs a PIN: pin-value= in the key URI, "
				             "--pin-file FILE or PKCS11_PIN",
				             label);
				goto out;
			}
			if (need_login) {
				rv = k->f->C_Login(s, CKU_USER, (CK_UTF8CHAR *)pin, strlen(pin));
				if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
					k->f->C_CloseSession(s);
					ckr_fail(err, "logging in to the token", rv);
					goto out;
				}
			}
			CK_ATTRIBUTE t[3];
			CK_OBJECT_HANDLE found[2];
			CK_ULONG nfound = 0;
			CK_ULONG nt = key_template(u, &classes[pass], t);
			if (find_objects(k, s, t, nt, found, 2, &nfound, err) < 0) {
				k->f->C_CloseSession(s);
				goto out;
			}
			matches += (unsigned)nfound;
			if (nfound == 1 && !k->have_session) {
				k->session = s;
				k->have_session = true;
				k->obj = found[0];
				k->cls = classes[pass];
			} else {
				k->f->C_CloseSession(s);
			}
		}
	}
	if (tokens == 0) {
		p11g_err_set(err, P11G_E_NOT_FOUND, "no token of %s matches %s", k->module, k->uri);
		goto out;
	}
	if (matches == 0) {
		p11g_err_set(err, P11G_E_NOT_FOUND, "no %s key matches %s in %s%s",
		             for_signing ? "private" : "public", k->uri, k->module,
		             pin_would_help ? " (give the PIN to read it from the private key)"
		                            : "");
		goto out;
	}
	if (matches > 1) {
		p11g_err_set(err, P11G_E_BAD_REQUEST,
		             "%u keys match %s: narrow the URI with token=, object= or id=",
		             matches, k->uri);
		goto out;
	}
	CK_ATTRIBUTE ta = {CKA_KEY_TYPE, &k->type, sizeof(k->type)};
	if ((rv = k->f->C_GetAttributeValue(k->session, k->obj, &ta, 1)) != CKR_OK) {
		ckr_fail(err, "reading the key type", rv);
		goto out;
	}
	if (k->type != CKK_EC && k->type != CKK_RSA && k->type != CKK_EC_EDWARDS) {
		p11g_err_set(err, P11G_E_BAD_REQUEST,
		             "key %s is of type 0x%lx: ocisign signs with EC, RSA and Ed25519 keys",
		             k->uri, (unsigned long)k->type);
		goto out;
	}
	*ret = k;
	k = NULL;
	res = 0;
out:
	explicit_bzero(pin, sizeof(pin));
	free(slots);
	if (u)
		p11_kit_uri_free(u);
	oci_key_close(k);
	return res;
}

void oci_key_close(struct oci_key *k)
{
	if (!k)
		return;
	if (k->have_session)
		k->f->C_CloseSession(k->session);
	if (k->initialized)
		k->f->C_Finalize(NULL);
	/* Modules often leave threads or atexit handlers behind; unloading them is not safe. */
	free(k);
}

/* One C_SignInit and C_Sign (length, then signature) with mech: the raw signature. */
static int token_sign(struct oci_key *k, CK_MECHANISM_TYPE type, const void *in, size_t inlen,
                      unsigned char **ret, size_t *ret_len, p11g_err *err)
{
	CK_MECHANISM mech = {type, NULL, 0};
	CK_ULONG siglen = 0;
	unsigned char *sig = NULL;
	CK_RV rv;

	if ((rv = k->f->C_SignInit(k->session, &mech, k->obj)) != CKR_OK)
		return ckr_fail(err, "C_SignInit", rv);
	rv = k->f->C_Sign(k->session, (CK_BYTE *)in, inlen, NULL, &siglen);
	if (rv == CKR_OK && (siglen == 0 || siglen > 16384))
		rv = CKR_GENERAL_ERROR;
	if (rv == CKR_OK && !(sig = malloc(siglen)))
		rv = CKR_HOST_MEMORY;
	if (rv == CKR_OK)
		rv = k->f->C_Sign(k->session, (CK_BYTE *)in, inlen, sig, &siglen);
	if (rv != CKR_OK) {
		free(sig);
		if (rv == CKR_FUNCTION_REJECTED && k->approved)
			return p11g_err_set(
			    err, P11G_E_FORBIDDEN,
			    "the PKCS#11 module refused to sign with %s although the "
			    "operation was approved (CKR_FUNCTION_REJECTED): its reason "
			    "is on the line before",
			    k->uri);
		if (rv == CKR_FUNCTION_REJECTED)
			return p11g_err_set(
			    err, P11G_E_FORBIDDEN,
			    "the PKCS#11 module refused to sign with %s (CKR_FUNCTION_REJECTED): "
			    "approval needed; file a request with --request",
			    k->uri);
		/* a failed C_Sign ends the operation; nothing to clean up */
		return ckr_fail(err, "signing (C_Sign)", rv);
	}
	*ret = sig;
	*ret_len = siglen;
	return 0;
}

int oci_key_sign(struct oci_key *k, const void *data, size_t len, unsigned char **ret,
                 size_t *ret_len, p11g_err *err)
{
	unsigned char md[SHA256_DIGEST_LENGTH], *sig;
	size_t siglen;

	if (k->type == CKK_RSA)
		return token_sign(k, CKM_SHA256_RSA_PKCS, data, len, ret, ret_len, err);
	if (k->type != CKK_EC)
		return token_sign(k, CKM_EDDSA, data, len, ret, ret_len, err);
	/* CKM_ECDSA takes the hash: approvald pins the same SHA-256 of the payload. */
	SHA256(data, len, md);
	if (token_sign(k, CKM_ECDSA, md, sizeof(md), &sig, &siglen, err) < 0)
		return -1;
	int r = oci_ecdsa_raw_to_der(sig, siglen, ret, ret_len);
	free(sig);
	return r < 0
	           ? p11g_err_set(err, P11G_E_PROTOCOL,
	                          "the token returned a %zu-byte ECDSA signature, not r||s", siglen)
	           : 0;
}

int oci_key_sign_pgp(struct oci_key *k, bool sha384, const void *data, size_t len,
                     unsigned char **ret, size_t *ret_len, p11g_err *err)
{
	unsigned char md[SHA384_DIGEST_LENGTH];
	unsigned mdlen = 0;

	if (k->type == CKK_RSA)
		return token_sign(k, sha384 ? CKM_SHA384_RSA_PKCS : CKM_SHA256_RSA_PKCS, data, len,
		                  ret, ret_len, err);
	/* ECDSA signs the hash (CKM_ECDSA); GnuPG's EdDSA signs the hash as its message */
	EVP_Digest(data, len, md, &mdlen, sha384 ? EVP_sha384() : EVP_sha256(), NULL);
	return token_sign(k, k->type == CKK_EC ? CKM_ECDSA : CKM_EDDSA, md, mdlen, ret, ret_len,
	                  err);
}

/* Reads one attribute of obj into a malloc'd buffer (at most max bytes). */
static int get_obj_attr(struct oci_key *k, CK_OBJECT_HANDLE obj, CK_ATTRIBUTE_TYPE type, size_t max,
                        unsigned char **ret, size_t *ret_len)
{
	CK_ATTRIBUTE a = {type, NULL, 0};
	if (k->f->C_GetAttributeValue(k->session, obj, &a, 1) != CKR_OK ||
	    a.ulValueLen == (CK_ULONG)-1 || a.ulValueLen == 0 || a.ulValueLen > max)
		return -1;
	if (!(a.pValue = malloc(a.ulValueLen)))
		return -1;
	if (k->f->C_GetAttributeValue(k->session, obj, &a, 1) != CKR_OK) {
		free(a.pValue);
		return -1;
	}
	*ret = a.pValue;
	*ret_len = a.ulValueLen;
	return 0;
}

static int get_attr(struct oci_key *k, CK_ATTRIBUTE_TYPE type, unsigned char **ret, size_t *ret_len)
{
	return get_obj_attr(k, k->obj, type, 16384, ret, ret_len);
}

/* The public key object beside the private key: the same CKA_ID (what ties a key pair
 * together), or the same label for a key without an id.  1 found, 0 none (no id and no label,
 * no such object, or two), -1 when a read or the search failed: a failed read is no absent
 * value (the label could name another key's public half). */
static int find_public_half(struct oci_key *k, CK_OBJECT_HANDLE *ret)
{
	CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
	CK_ATTRIBUTE id = {CKA_ID, NULL, 0};
	CK_RV rv = k->f->C_GetAttributeValue(k->session, k->obj, &id, 1);
	if (rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID)
		return -1;
	bool has_id = rv == CKR_OK && id.ulValueLen != 0 && id.ulValueLen != (CK_ULONG)-1;
	if (!has_id) {
		CK_ATTRIBUTE label = {CKA_LABEL, NULL, 0};
		rv = k->f->C_GetAttributeValue(k->session, k->obj, &label, 1);
		if (rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID)
			return -1;
		if (rv != CKR_OK || label.ulValueLen == 0)
			return 0; /* nothing names its public half */
	}
	unsigned char *v = NULL;
	size_t vlen = 0;
	if (get_attr(k, has_id ? CKA_ID : CKA_LABEL, &v, &vlen) < 0)
		return -1;
	CK_ATTRIBUTE t[2] = {{CKA_CLASS, &cls, sizeof(cls)},
	                     {has_id ? CKA_ID : CKA_LABEL, v, vlen}};
	CK_OBJECT_HANDLE found[2];
	CK_ULONG n = 0;
	p11g_err ignored;
	int r = find_objects(k, k->session, t, 2, found, 2, &n, &ignored);
	free(v);
	if (r < 0)
		return -1;
	if (n != 1)
		return 0;
	*ret = found[0];
	return 1;
}

int oci_key_public(struct oci_key *k, EVP_PKEY **ret, p11g_err *err)
{
	unsigned char *a = NULL, *b = NULL;
	size_t alen = 0, blen = 0;
	EVP_PKEY *pk = NULL;
	CK_OBJECT_HANDLE pub, mine = k->obj;
	/* an RSA private key holds its modulus and exponent: read from the key itself */
	int other = k->cls == CKO_PRIVATE_KEY && k->type != CKK_RSA ? find_public_half(k, &pub) : 0;
	if (other < 0) {
		*ret = NULL;
		return p11g_err_set(err, P11G_E_PROTOCOL,
		                    "cannot look for the public key object of %s (a read failed)",
		                    k->uri);
	}

	/* read from the public half when there is one: a private EC key need not keep its point */
	if (other)
		k->obj = pub;

	if (k->type == CKK_RSA) {
		if (get_attr(k, CKA_MODULUS, &a, &alen) < 0 ||
		    get_attr(k, CKA_PUBLIC_EXPONENT, &b, &blen) < 0)
			p11g_err_set(err, P11G_E_NOT_FOUND,
			             "cannot read the RSA modulus and exponent of %s", k->uri);
		else
			pk = oci_pkey_from_rsa(a, alen, b, blen, err);
	} else {
		if (get_attr(k, CKA_EC_PARAMS, &a, &alen) < 0 ||
		    get_attr(k, CKA_EC_POINT, &b, &blen) < 0)
			p11g_err_set(err, P11G_E_NOT_FOUND,
			             "cannot read CKA_EC_PARAMS and CKA_EC_POINT of %s%s", k->uri,
			             k->cls == CKO_PRIVATE_KEY
			                 ? " (there is no public key object with its CKA_ID, or "
			                   "with its label for a key without one)"
			                 : "");
		else
			pk = oci_pkey_from_ec(a, alen, b, blen, err);
	}
	k->obj = mine;
	free(a);
	free(b);
	*ret = pk;
	return pk ? 0 : -1;
}

int oci_key_public_pem(struct oci_key *k, char **ret, p11g_err *err)
{
	EVP_PKEY *pk = NULL;
	int res = oci_key_public(k, &pk, err);
	if (res == 0)
		res = oci_pkey_to_pem(pk, ret, err);
	EVP_PKEY_free(pk);
	return res;
}

#define CERTS_ON_TOKEN_MAX 16

/* The token's certificates with the key's CKA_ID: their handles (at most CERTS_ON_TOKEN_MAX). */
static int certs_of_key(struct oci_key *k, CK_OBJECT_HANDLE *found, CK_ULONG *ret_n, p11g_err *err)
{
	unsigned char *id = NULL;
	size_t idlen = 0;
	if (get_attr(k, CKA_ID, &id, &idlen) < 0)
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "key %s has no CKA_ID to tie a certificate to (give the key an "
		                    "id)",
		                    k->uri);
	CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
	CK_CERTIFICATE_TYPE ct = CKC_X_509;
	CK_ATTRIBUTE t[3] = {{CKA_CLASS, &cls, sizeof(cls)},
	                     {CKA_CERTIFICATE_TYPE, &ct, sizeof(ct)},
	                     {CKA_ID, id, idlen}};
	int r = find_objects(k, k->session, t, 3, found, CERTS_ON_TOKEN_MAX, ret_n, err);
	free(id);
	if (r == 0 && *ret_n == CERTS_ON_TOKEN_MAX)
		/* more may be there: a choice among some is no choice */
		return p11g_err_set(
		    err, P11G_E_BAD_REQUEST,
		    "the token holds %d or more certificates with the CKA_ID of %s: "
		    "remove the old ones",
		    CERTS_ON_TOKEN_MAX, k->uri);
	return r;
}

int oci_key_token_cert(struct oci_key *k, EVP_PKEY *pk, X509 **ret, p11g_err *err)
{
	CK_OBJECT_HANDLE found[CERTS_ON_TOKEN_MAX];
	CK_ULONG n = 0;
	X509 *best = NULL;

	*ret = NULL;
	if (certs_of_key(k, found, &n, err) < 0)
		return -1;
	for (CK_ULONG i = 0; i < n; i++) {
		unsigned char *der = NULL;
		size_t len = 0;
		if (get_obj_attr(k, found[i], CKA_VALUE, 1u << 20, &der, &len) < 0) {
			X509_free(best);
			/* a certificate that cannot be read is not taken for an absent one */
			return p11g_err_set(err, P11G_E_UNAVAILABLE,
			                    "cannot read a certificate of %s from the token",
			                    k->uri);
		}
		const unsigned char *p = der;
		X509 *x = d2i_X509(NULL, &p, (long)len);
		free(der);
		EVP_PKEY *cpk = x ? X509_get0_pubkey(x) : NULL;
		if (!cpk || EVP_PKEY_eq(cpk, pk) != 1) {
			X509_free(x);
			continue;
		}
		/* one valid now before any other; then the one valid longest */
		bool now = oci_cert_valid_now(x), best_now = best && oci_cert_valid_now(best);
		if (!best || (now && !best_now) ||
		    (now == best_now &&
		     ASN1_TIME_compare(X509_get0_notAfter(x), X509_get0_notAfter(best)) > 0)) {
			X509_free(best);
			best = x;
		} else {
			X509_free(x);
		}
	}
	ERR_clear_error();
	if (!best)
		return 1;
	*ret = best;
	return 0;
}

int oci_key_import_cert(struct oci_key *k, X509 *x, unsigned *ret_replaced, p11g_err *err)
{
	CK_OBJECT_HANDLE old[CERTS_ON_TOKEN_MAX], made = CK_INVALID_HANDLE;
	CK_ULONG nold = 0;
	unsigned char *id = NULL, *label = NULL, *der = NULL, *subj = NULL, *issuer = NULL,
	              *serial = NULL;
	size_t idlen = 0, labellen = 0;
	int res = -1, derlen, subjlen, issuerlen, seriallen;
	CK_RV rv;

	*ret_replaced = 0;
	if (certs_of_key(k, old, &nold, err) < 0)
		return -1;
	if (get_attr(k, CKA_ID, &id, &idlen) < 0 || get_attr(k, CKA_LABEL, &label, &labellen) < 0) {
		p11g_err_set(err, P11G_E_BAD_REQUEST, "cannot read the CKA_ID and CKA_LABEL of %s",
		             k->uri);
		goto out;
	}
	derlen = i2d_X509(x, &der);
	subjlen = i2d_X509_NAME(X509_get_subject_name(x), &subj);
	issuerlen = i2d_X509_NAME(X509_get_issuer_name(x), &issuer);
	seriallen = i2d_ASN1_INTEGER(X509_get_serialNumber(x), &serial);
	if (derlen <= 0 || subjlen <= 0 || issuerlen <= 0 || seriallen <= 0) {
		p11g_err_set(err, P11G_E_INTERNAL, "cannot encode the certificate");
		goto out;
	}
	CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
	CK_CERTIFICATE_TYPE ct = CKC_X_509;
	CK_ULONG category = 1; /* CK_CERTIFICATE_CATEGORY_TOKEN_USER: the key's own */
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ATTRIBUTE t[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_CERTIFICATE_TYPE, &ct, sizeof(ct)},
	    {CKA_TOKEN, &yes, sizeof(yes)},
	    {CKA_PRIVATE, &no, sizeof(no)},
	    {CKA_ID, id, idlen},
	    {CKA_LABEL, label, labellen},
	    {CKA_SUBJECT, subj, (CK_ULONG)subjlen},
	    {CKA_ISSUER, issuer, (CK_ULONG)issuerlen},
	    {CKA_SERIAL_NUMBER, serial, (CK_ULONG)seriallen},
	    {CKA_CERTIFICATE_CATEGORY, &category, sizeof(category)},
	    {CKA_VALUE, der, (CK_ULONG)derlen},
	};
	rv = k->f->C_CreateObject(k->session, t, P11G_ARRAY_SIZE(t), &made);
	if (rv != CKR_OK) {
		ckr_fail(err, "storing the certificate on the token (C_CreateObject)", rv);
		goto out;
	}
	/* the new one is in place: the ones it replaces go */
	for (CK_ULONG i = 0; i < nold; i++) {
		if (old[i] == made)
			continue;
		if ((rv = k->f->C_DestroyObject(k->session, old[i])) != CKR_OK) {
			ckr_fail(err,
			         "the new certificate is stored, but removing the one it replaces "
			         "(C_DestroyObject)",
			         rv);
			goto out;
		}
		(*ret_replaced)++;
	}
	res = 0;
out:
	ERR_clear_error();
	free(id);
	free(label);
	OPENSSL_free(der);
	OPENSSL_free(subj);
	OPENSSL_free(issuer);
	OPENSSL_free(serial);
	return res;
}

int oci_key_start_date(struct oci_key *k, uint32_t *ret, p11g_err *err)
{
	CK_DATE d;
	CK_ATTRIBUTE a = {CKA_START_DATE, &d, sizeof(d)};
	CK_OBJECT_HANDLE obj = k->obj, pub;
	/* the public key's date: SoftHSMv2 does not give a private (CKA_PRIVATE) key's */
	int half = k->cls == CKO_PRIVATE_KEY ? find_public_half(k, &pub) : 0;
	if (half < 0)
		return p11g_err_set(err, P11G_E_PROTOCOL,
		                    "cannot look for the public key object of %s (a read failed)",
		                    k->uri);
	if (half == 1)
		obj = pub;
	CK_RV rv = k->f->C_GetAttributeValue(k->session, obj, &a, 1);
	char s[9];
	struct tm tm = {0};

	if (rv == CKR_ATTRIBUTE_TYPE_INVALID || (rv == CKR_OK && a.ulValueLen == 0))
		return 1;
	/* a failed read is not an absent date: the fingerprint would change with it */
	if (rv != CKR_OK || a.ulValueLen != sizeof(d))
		return p11g_err_set(err, P11G_E_PROTOCOL, "cannot read CKA_START_DATE of %s (%s)",
		                    k->uri, rv != CKR_OK ? oci_ckr_name(rv) : "not a CK_DATE");
	memcpy(s, d.year, 4);
	memcpy(s + 4, d.month, 2);
	memcpy(s + 6, d.day, 2);
	s[8] = '\0';
	if (strspn(s, "0 ") == 8) /* some tokens keep an unset date as zeros or blanks */
		return 1;
	if (strspn(s, "0123456789") != 8 ||
	    sscanf(s, "%4d%2d%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday) != 3 ||
	    tm.tm_year < 1971 || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 ||
	    tm.tm_mday > 31)
		return p11g_err_set(err, P11G_E_PROTOCOL, "CKA_START_DATE of %s is not a date: %s",
		                    k->uri, s);
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	time_t t = timegm(&tm);
	if (t <= 0 || (uint64_t)t > UINT32_MAX)
		return p11g_err_set(err, P11G_E_PROTOCOL, "CKA_START_DATE of %s is out of range",
		                    k->uri);
	*ret = (uint32_t)t;
	return 0;
}
