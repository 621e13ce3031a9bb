/* approvald-audit-signer: signs one audit checkpoint with the audit key on a token, or gives
 * its public key, in a process that holds nothing of approvald's. */
#include <dlfcn.h>
#include <limits.h>
#include <p11-kit/p11-kit.h>
#include <p11-kit/uri.h>
#include <signal.h>
#include <sys/prctl.h>

#if HAVE_VALGRIND_H
#include <valgrind/valgrind.h>
#endif

#include <openssl/ecdsa.h>
#include <openssl/evp.h>

#include "approvald/host_proto.h"
#include "approvald/host_sandbox.h"
#include "module/gate_host.h"
#include "module/module.h"
#include "p11gate/log.h"
#include "p11gate/wire.h"

/*
 * approvald (host.c) executes this program, fork and exec, for each checkpoint it signs with
 * `audit_key = pkcs11:...` (--sign) and once at start and for `audit --export-pubkey`
 * (--pubkey), as it executes approvald-pkcs11-host: stdin and stdout /dev/null, stderr
 * approvald's, the setup message on fd 5 (host_proto.h) with two more settings, "audit_key"
 * (the URI) and with --sign "text" (what to sign), and the write end of a pipe on fd 4 for the
 * answer: a byte 0 and the DER signature (ECDSA-Sig-Value for EC, PKCS#1 v1.5 for RSA, raw for
 * EdDSA) or the DER SubjectPublicKeyInfo, then EOF and exit 0; or a byte 1 and why not (text),
 * exit 1.  It becomes pkcs11_user and loads the seccomp filter before it loads the module.
 */
#define FD_ANSWER P11G_HOST_FD_LINK

/* The answer's first byte: what follows is the answer, or why there is none. */
#define ANSWER_OK    0
#define ANSWER_ERROR 1

static bool write_all(int fd, const void *p, size_t n)
{
	const unsigned char *b = p;
	while (n > 0) {
		ssize_t w = write(fd, b, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		b += w;
		n -= (size_t)w;
	}
	return true;
}

/* Why, to approvald (which makes it its one error line), or to stderr when it cannot be. */
static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	msg[0] = ANSWER_ERROR;
	vsnprintf(msg + 1, sizeof(msg) - 1, fmt, ap);
	va_end(ap);
	if (!write_all(FD_ANSWER, msg, strlen(msg + 1) + 1))
		p11g_error("audit_key: %s", msg + 1);
	_exit(1);
}

static const char *str_of(const json_t *j, const char *key)
{
	const json_t *v = json_object_get(j, key);
	if (json_is_null(v) || !v)
		return NULL;
	if (!json_is_string(v))
		die("setup message: \"%s\" is not a string", key);
	return json_string_value(v);
}

/* pkcs11_env's entries and nothing else; pkcs11_user; no new privileges, the filter. */
static void confine(const json_t *j)
{
	const json_t *v, *user = json_object_get(j, "user");
	const char *mode = str_of(j, "seccomp");
	gid_t groups[NGROUPS_MAX];
	size_t i, n = 0;
	p11g_err err = {0};

	if (clearenv() != 0)
		die("clearenv failed");
	json_array_foreach(json_object_get(j, "env"), i, v)
	{
		char *e = json_is_string(v) ? (char *)json_string_value(v) : NULL;
		if (!e || !strchr(e, '=') || putenv(e) != 0)
			die("setup message: a bad environment entry");
	}
	if (json_is_null(user) && p11g_sandbox_drop_capabilities(&err) < 0)
		die("%s", err.msg);
	if (!json_is_null(user)) {
		if (!json_is_integer(json_object_get(user, "uid")) ||
		    !json_is_integer(json_object_get(user, "gid")))
			die("setup message: a user without uid or gid");
		json_array_foreach(json_object_get(user, "groups"), i, v)
		{
			if (n == NGROUPS_MAX || !json_is_integer(v))
				die("setup message: bad group list");
			groups[n++] = (gid_t)json_integer_value(v);
		}
		if (p11g_sandbox_user((uid_t)json_integer_value(json_object_get(user, "uid")),
		                      (gid_t)json_integer_value(json_object_get(user, "gid")),
		                      groups, n, &err) < 0)
			die("%s", err.msg);
	}
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0 || prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
		die("prctl: %m");
	if (getppid() != (pid_t)json_integer_value(json_object_get(j, "parent")))
		_exit(1);
	enum p11g_seccomp_mode m;
	if (mode && !strcmp(mode, "kill"))
		m = P11G_SECCOMP_KILL;
	else if (mode && !strcmp(mode, "log"))
		m = P11G_SECCOMP_LOG;
	else if (mode && !strcmp(mode, "off"))
		m = P11G_SECCOMP_OFF;
	else
		die("setup message: bad \"seccomp\"");
#if HAVE_VALGRIND_H
	/* as in pkcs11_host.c: valgrind cannot run a process under a seccomp filter */
	if (RUNNING_ON_VALGRIND && m != P11G_SECCOMP_OFF) {
		p11g_warn("audit signer: under valgrind, which cannot run a seccomp filter: "
		          "pkcs11_seccomp is off in this process");
		m = P11G_SECCOMP_OFF;
	}
#endif
	if (p11g_sandbox_seccomp(m, &err) < 0)
		die("%s", err.msg);
}

static CK_FUNCTION_LIST *F;

static CK_FUNCTION_LIST *load(const char *path)
{
	void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	CK_C_GetFunctionList gfl;
	CK_FUNCTION_LIST *l = NULL;

	if (!dl)
		die("cannot load pkcs11_module %s: %s", path, dlerror());
	gfl = (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList");
	if (!gfl || gfl(&l) != CKR_OK || !l)
		die("pkcs11_module %s has no usable C_GetFunctionList", path);
	CK_RV rv = l->C_Initialize(NULL);
	if (rv != CKR_OK)
		die("pkcs11_module %s: C_Initialize: %s", path, p11_kit_strerror(rv));
	return l;
}

/* An attribute's value (malloc'd; NULL with *n 0 when the object has none). */
static unsigned char *attr(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type,
                           size_t *n)
{
	CK_ATTRIBUTE a = {type, NULL, 0};
	unsigned char *v;

	*n = 0;
	if (F->C_GetAttributeValue(h, o, &a, 1) != CKR_OK ||
	    a.ulValueLen == CK_UNAVAILABLE_INFORMATION || a.ulValueLen == 0)
		return NULL;
	if (!(v = malloc(a.ulValueLen)))
		die("out of memory");
	a.pValue = v;
	if (F->C_GetAttributeValue(h, o, &a, 1) != CKR_OK) {
		free(v);
		return NULL;
	}
	*n = a.ulValueLen;
	return v;
}

/* Up to max objects of tmpl in h, their count (at most max) in *ret_n. */
static void find(CK_SESSION_HANDLE h, CK_ATTRIBUTE *tmpl, CK_ULONG nt, CK_OBJECT_HANDLE *out,
                 CK_ULONG max, CK_ULONG *ret_n)
{
	CK_RV rv = F->C_FindObjectsInit(h, tmpl, nt);
	if (rv == CKR_OK)
		rv = F->C_FindObjects(h, out, max, ret_n);
	if (rv != CKR_OK)
		die("finding the key: %s", p11_kit_strerror(rv));
	F->C_FindObjectsFinal(h);
}

struct found {
	CK_SLOT_ID slot;
	CK_SESSION_HANDLE h;
	CK_OBJECT_HANDLE key;
	char token[33];
	unsigned count; /* private keys matching, all tokens */
};

static void trim_label(const CK_UTF8CHAR *label, char out[33])
{
	size_t n = 32;
	memcpy(out, label, 32);
	while (n > 0 && out[n - 1] == ' ')
		n--;
	out[n] = 0;
}

/* The private key the URI names: on each initialised token the URI and pkcs11_token admit,
 * logged in with the PIN; exactly one in all. */
static void find_key(const char *uri_text, const char *token, const unsigned char *pin,
                     size_t pin_len, struct found *f)
{
	P11KitUri *uri = p11_kit_uri_new();
	CK_ULONG nslots = 0, nattrs = 0, nt = 0;
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE t[3] = {{CKA_CLASS, &cls, sizeof(cls)}};
	_cleanup_free_ CK_SLOT_ID *slots = NULL;
	unsigned tokens = 0;

	if (!uri ||
	    p11_kit_uri_parse(uri_text, P11_KIT_URI_FOR_OBJECT_ON_TOKEN, uri) != P11_KIT_URI_OK)
		die("not a PKCS#11 URI of a key");
	CK_ATTRIBUTE *a = p11_kit_uri_get_attributes(uri, &nattrs);
	nt = 1;
	for (CK_ULONG i = 0; i < nattrs; i++)
		if (a[i].type == CKA_LABEL || a[i].type == CKA_ID)
			t[nt++] = a[i];
	CK_RV rv = F->C_GetSlotList(CK_TRUE, NULL, &nslots);
	if (rv == CKR_OK && nslots > 0 && !(slots = calloc(nslots, sizeof(*slots))))
		die("out of memory");
	if (rv == CKR_OK && nslots > 0)
		rv = F->C_GetSlotList(CK_TRUE, slots, &nslots);
	if (rv != CKR_OK)
		die("C_GetSlotList: %s", p11_kit_strerror(rv));
	memset(f, 0, sizeof(*f));
	for (CK_ULONG i = 0; i < nslots; i++) {
		CK_TOKEN_INFO ti;
		CK_SESSION_HANDLE h;
		CK_OBJECT_HANDLE keys[2];
		CK_ULONG n = 0;
		char label[33];

		if (F->C_GetTokenInfo(slots[i], &ti) != CKR_OK ||
		    !(ti.flags & CKF_TOKEN_INITIALIZED))
			continue;
		trim_label(ti.label, label);
		if (!p11_kit_uri_match_token_info(uri, &ti) || (token && strcmp(token, label)))
			continue;
		tokens++;
		if ((rv = F->C_OpenSession(slots[i], CKF_SERIAL_SESSION, NULL, NULL, &h)) != CKR_OK)
			die("token \"%s\": C_OpenSession: %s", label, p11_kit_strerror(rv));
		rv = F->C_Login(h, CKU_USER, (CK_UTF8CHAR *)pin, pin_len);
		if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
			die("token \"%s\": logging in with pin_file's PIN failed: %s", label,
			    p11_kit_strerror(rv));
		find(h, t, nt, keys, 2, &n);
		f->count += (unsigned)n;
		if (n > 0 && !f->key) {
			f->slot = slots[i];
			f->h = h;
			f->key = keys[0];
			memcpy(f->token, label, sizeof(label));
		}
	}
	if (tokens == 0)
		die("no initialised token matches it%s%s", token ? " and pkcs11_token " : "",
		    token ? token : "");
	if (f->count == 0)
		die("no private key matches it (on %u token%s)", tokens, tokens == 1 ? "" : "s");
	if (f->count > 1)
		die("more than one private key matches it: name one (object=, id=, token=)");
	p11_kit_uri_free(uri);
}

static CK_KEY_TYPE key_type(const struct found *f)
{
	size_t n;
	_cleanup_free_ unsigned char *v = attr(f->h, f->key, CKA_KEY_TYPE, &n);
	CK_KEY_TYPE t;
	if (!v || n != sizeof(t))
		die("the key has no CKA_KEY_TYPE");
	memcpy(&t, v, sizeof(t));
	if (t != CKK_EC && t != CKK_RSA && t != CKK_EC_EDWARDS)
		die("the key is of type 0x%lx: EC, RSA or EdDSA keys sign checkpoints",
		    (unsigned long)t);
	return t;
}

static void answer(const void *p, size_t n)
{
	unsigned char ok = ANSWER_OK;
	if (!write_all(FD_ANSWER, &ok, 1) || !write_all(FD_ANSWER, p, n)) {
		p11g_error("audit_key: writing the answer: %m");
		_exit(1);
	}
}

/* The public key: the private key's CKA_PUBLIC_KEY_INFO or RSA modulus and exponent, else the
 * public key object with its CKA_ID (and CKA_LABEL) on its token. */
static void pubkey(const struct found *f, CK_KEY_TYPE type)
{
	struct p11g_pubkey_parts k = {0};
	_cleanup_free_ unsigned char *spki = NULL, *mod = NULL, *exp = NULL, *params = NULL,
	                             *point = NULL, *id = NULL, *label = NULL;
	unsigned char *der = NULL;
	size_t der_len = 0, id_len, label_len;
	CK_OBJECT_HANDLE o = f->key;

	spki = attr(f->h, o, CKA_PUBLIC_KEY_INFO, &k.spki_len);
	if (!spki && type == CKK_RSA) {
		mod = attr(f->h, o, CKA_MODULUS, &k.modulus_len);
		exp = attr(f->h, o, CKA_PUBLIC_EXPONENT, &k.exponent_len);
	}
	if (!spki && !(mod && exp)) {
		CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
		CK_ATTRIBUTE t[3] = {{CKA_CLASS, &cls, sizeof(cls)}};
		CK_ULONG nt = 1, n = 0;
		CK_OBJECT_HANDLE pubs[2];
		id = attr(f->h, o, CKA_ID, &id_len);
		label = attr(f->h, o, CKA_LABEL, &label_len);
		if (id)
			t[nt++] = (CK_ATTRIBUTE){CKA_ID, id, id_len};
		if (label)
			t[nt++] = (CK_ATTRIBUTE){CKA_LABEL, label, label_len};
		if (nt == 1)
			die("the key has neither CKA_ID nor CKA_LABEL: its public key cannot be "
			    "found");
		find(f->h, t, nt, pubs, 2, &n);
		if (n != 1)
			die("%s public key with the private key's id and label on token \"%s\"",
			    n ? "more than one" : "no", f->token);
		o = pubs[0];
		spki = attr(f->h, o, CKA_PUBLIC_KEY_INFO, &k.spki_len);
		if (!spki && type == CKK_RSA) {
			mod = attr(f->h, o, CKA_MODULUS, &k.modulus_len);
			exp = attr(f->h, o, CKA_PUBLIC_EXPONENT, &k.exponent_len);
		} else if (!spki) {
			params = attr(f->h, o, CKA_EC_PARAMS, &k.params_len);
			point = attr(f->h, o, CKA_EC_POINT, &k.point_len);
		}
	}
	k.spki = spki;
	k.modulus = mod;
	k.exponent = exp;
	k.params = params;
	k.point = point;
	if (p11g_spki_der(&k, &der, &der_len) < 0)
		die("the public key's attributes on token \"%s\" do not make a key", f->token);
	answer(der, der_len);
	free(der);
}

static bool has_mechanism(CK_SLOT_ID slot, CK_MECHANISM_TYPE m)
{
	CK_MECHANISM_INFO info;
	return F->C_GetMechanismInfo(slot, m, &info) == CKR_OK && (info.flags & CKF_SIGN);
}

static void sign(const struct found *f, CK_KEY_TYPE type, const char *text)
{
	CK_MECHANISM mech = {CKM_SHA256_RSA_PKCS, NULL, 0};
	const unsigned char *data = (const unsigned char *)text;
	size_t len = strlen(text);
	unsigned char md[32], sig[1024];
	CK_ULONG siglen = sizeof(sig);
	CK_RV rv;

	if (type == CKK_EC) {
		mech.mechanism = CKM_ECDSA;
		if (!EVP_Digest(text, len, md, NULL, EVP_sha256(), NULL))
			die("cannot hash the checkpoint");
		data = md;
		len = sizeof(md);
	} else if (type == CKK_EC_EDWARDS) {
		mech.mechanism = CKM_EDDSA;
	}
	if (!has_mechanism(f->slot, mech.mechanism))
		die("token \"%s\" cannot sign with %s (the key's mechanism for checkpoints)",
		    f->token,
		    type == CKK_EC    ? "CKM_ECDSA"
		    : type == CKK_RSA ? "CKM_SHA256_RSA_PKCS"
		                      : "CKM_EDDSA");
	if ((rv = F->C_SignInit(f->h, &mech, f->key)) != CKR_OK ||
	    (rv = F->C_Sign(f->h, (CK_BYTE *)data, len, sig, &siglen)) != CKR_OK)
		die("signing on token \"%s\": %s", f->token, p11_kit_strerror(rv));
	if (type != CKK_EC) {
		answer(sig, siglen);
		return;
	}
	/* r || s, each half the length: DER ECDSA-Sig-Value, as OpenSSL verifies it */
	ECDSA_SIG *es = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(sig, (int)siglen / 2, NULL),
	       *s = BN_bin2bn(sig + siglen / 2, (int)siglen / 2, NULL);
	unsigned char *der = NULL;
	int n;
	if (siglen % 2 || !es || !r || !s || !ECDSA_SIG_set0(es, r, s))
		die("token \"%s\" gave a malformed ECDSA signature", f->token);
	if ((n = i2d_ECDSA_SIG(es, &der)) <= 0)
		die("cannot encode the ECDSA signature");
	answer(der, (size_t)n);
	OPENSSL_free(der);
	ECDSA_SIG_free(es);
}

int main(int argc, char **argv)
{
	unsigned char *pin = NULL;
	size_t pin_len = 0;
	bool signing = argc == 2 && !strcmp(argv[1], "--sign");
	struct found f;

	p11g_log_ident = "approvald";
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		die("prctl(PR_SET_DUMPABLE): %m");
	if (argc != 2 || (!signing && strcmp(argv[1], "--pubkey")))
		die("usage: %s --sign|--pubkey (approvald starts it; see audit_signer.c)", argv[0]);
	signal(SIGPIPE, SIG_IGN);
	/* kept to the end (the environment's strings are its), reachable from here */
	static json_t *j;
	p11g_err serr = {0};
	if (p11g_host_setup_read(&j, &pin, &pin_len, &serr) < 0)
		die("%s", serr.msg);
	const char *module = str_of(j, "module"), *uri = str_of(j, "audit_key"),
	           *text = str_of(j, "text");
	if (!module || !uri || (signing && !text))
		die("setup message: no module, audit_key or text");
	confine(j);
	F = load(module);
	find_key(uri, str_of(j, "token"), pin, pin_len, &f);
	p11g_secret_free(pin, P11G_HOST_PIN_MAX);
	CK_KEY_TYPE type = key_type(&f);
	if (signing)
		sign(&f, type, text);
	else
		pubkey(&f, type);
	close(FD_ANSWER);
	F->C_Finalize(NULL);
	_exit(0);
}
