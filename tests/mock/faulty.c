/* A fault-injecting PKCS#11 module: forwards to a real one and fails the calls a test names. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

/*
 * Environment:
 *   P11G_FAULT_MODULE  the real module (required)
 *   P11G_FAULT         comma-separated faults, each failing once with CKR_DEVICE_ERROR:
 *                        C_GetTokenInfo          the next C_GetTokenInfo
 *                        CKA_LABEL, CKA_ID, CKA_KEY_TYPE, CKA_EC_PARAMS
 *                                                the next C_GetAttributeValue asking for it
 *                        C_FindObjectsInit       the next one
 *                        TOKEN_BLANK_LABEL, TOKEN_BLANK_SERIAL
 *                                                the next C_GetTokenInfo answers CKR_OK with
 *                                                a blank label (serial number): what
 *                                                SoftHSMv2 answers when it cannot read its
 *                                                token file (Token::getTokenInfo)
 *                        CLASS_NOTHING           the next C_GetAttributeValue asking for
 *                                                CKA_CLASS answers CKR_OBJECT_HANDLE_INVALID
 *                                                while every other call sees the object: a
 *                                                module that contradicts itself
 *                        ZERO_IS_KEY             the next C_SignInit given CK_INVALID_HANDLE
 *                                                signs with the key the last C_FindObjects
 *                                                found: a module that accepts a handle that
 *                                                names nothing
 *                      "NAME%P" instead fails each such call with probability P percent,
 *                      for as long as the process lives.
 *   P11G_FAULT_ARM     "find" (default): faults arm after the process's first
 *                      C_FindObjectsFinal, so the client's own lookup of its key goes
 *                      through and the gate's reads at C_SignInit meet the fault;
 *                      "now": armed from the start.
 *   P11G_FAULT_LOG     file: one line per fault injected ("NAME pid").
 *   P11G_FAULT_TOKEN_DEFAULT=1
 *                      C_CreateObject and C_GenerateKeyPair make token objects of templates
 *                      that do not say (a module whose default is CKA_TOKEN true).
 */

#define EXPORT __attribute__((visibility("default")))

struct fault {
	char name[32];
	CK_ATTRIBUTE_TYPE attr; /* for attribute faults; -1 otherwise */
	int percent;            /* 0: once */
	bool spent;
};

static CK_FUNCTION_LIST_PTR real;
static CK_FUNCTION_LIST list;
static struct fault faults[16];
static size_t nfaults;
static bool armed;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned seed;

static const struct {
	const char *name;
	CK_ATTRIBUTE_TYPE type;
} attrs[] = {{"CKA_LABEL", CKA_LABEL},
             {"CKA_ID", CKA_ID},
             {"CKA_KEY_TYPE", CKA_KEY_TYPE},
             {"CKA_EC_PARAMS", CKA_EC_PARAMS},
             {"CKA_CLASS", CKA_CLASS}};

static void parse(void)
{
	const char *spec = getenv("P11G_FAULT");
	const char *arm = getenv("P11G_FAULT_ARM");
	char buf[512], *save = NULL;

	armed = arm && !strcmp(arm, "now");
	seed = (unsigned)getpid() ^ (unsigned)time(NULL);
	if (!spec)
		return;
	snprintf(buf, sizeof(buf), "%s", spec);
	for (char *t = strtok_r(buf, ",", &save); t && nfaults < 16;
	     t = strtok_r(NULL, ",", &save)) {
		struct fault *f = &faults[nfaults++];
		char *pct = strchr(t, '%');
		if (pct) {
			*pct = '\0';
			f->percent = atoi(pct + 1);
		}
		snprintf(f->name, sizeof(f->name), "%s", t);
		f->attr = (CK_ATTRIBUTE_TYPE)-1;
		for (size_t i = 0; i < sizeof(attrs) / sizeof(attrs[0]); i++)
			if (!strcmp(t, attrs[i].name))
				f->attr = attrs[i].type;
	}
}

static void logfault(const char *name)
{
	const char *path = getenv("P11G_FAULT_LOG");
	FILE *f;
	if (!path || !(f = fopen(path, "ae")))
		return;
	fprintf(f, "%s %d\n", name, (int)getpid());
	fclose(f);
}

/* Whether this call fails: a fault named name (or asking for attribute attr) is due. */
static bool due(const char *name, CK_ATTRIBUTE_TYPE attr)
{
	bool hit = false;

	pthread_mutex_lock(&lock);
	for (size_t i = 0; armed && i < nfaults && !hit; i++) {
		struct fault *f = &faults[i];
		bool match = name ? !strcmp(f->name, name) : f->attr == attr;
		if (!match || (f->spent && !f->percent))
			continue;
		if (f->percent ? (int)(rand_r(&seed) % 100) < f->percent : true) {
			f->spent = true;
			hit = true;
			logfault(f->name);
		}
	}
	pthread_mutex_unlock(&lock);
	return hit;
}

static CK_RV f_GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info)
{
	if (due("C_GetTokenInfo", 0))
		return CKR_DEVICE_ERROR;
	CK_RV rv = real->C_GetTokenInfo(slot, info);
	if (rv == CKR_OK && due("TOKEN_BLANK_LABEL", 0))
		memset(info->label, ' ', sizeof(info->label));
	if (rv == CKR_OK && due("TOKEN_BLANK_SERIAL", 0))
		memset(info->serialNumber, ' ', sizeof(info->serialNumber));
	return rv;
}

static CK_RV f_GetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t,
                                 CK_ULONG n)
{
	for (CK_ULONG i = 0; t && i < n; i++) {
		if (due(NULL, t[i].type))
			return CKR_DEVICE_ERROR;
		if (t[i].type == CKA_CLASS && due("CLASS_NOTHING", 0))
			return CKR_OBJECT_HANDLE_INVALID;
	}
	return real->C_GetAttributeValue(h, o, t, n);
}

static CK_RV f_FindObjectsInit(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG n)
{
	if (due("C_FindObjectsInit", 0))
		return CKR_DEVICE_ERROR;
	return real->C_FindObjectsInit(h, t, n);
}

static CK_OBJECT_HANDLE last_found = CK_INVALID_HANDLE;

static CK_RV f_FindObjects(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE_PTR objs, CK_ULONG max,
                           CK_ULONG_PTR n)
{
	CK_RV rv = real->C_FindObjects(h, objs, max, n);
	if (rv == CKR_OK && objs && n && *n > 0) {
		pthread_mutex_lock(&lock);
		last_found = objs[0];
		pthread_mutex_unlock(&lock);
	}
	return rv;
}

static CK_RV f_SignInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE key)
{
	if (key == CK_INVALID_HANDLE && due("ZERO_IS_KEY", 0)) {
		pthread_mutex_lock(&lock);
		key = last_found;
		pthread_mutex_unlock(&lock);
	}
	return real->C_SignInit(h, m, key);
}

static CK_RV f_FindObjectsFinal(CK_SESSION_HANDLE h)
{
	CK_RV rv = real->C_FindObjectsFinal(h);
	pthread_mutex_lock(&lock);
	armed = true;
	pthread_mutex_unlock(&lock);
	return rv;
}

/* A template with CKA_TOKEN true added when it does not set CKA_TOKEN (malloc'd, or tmpl). */
static CK_ATTRIBUTE_PTR with_token(CK_ATTRIBUTE_PTR tmpl, CK_ULONG *n)
{
	static CK_BBOOL yes = CK_TRUE;
	const char *on = getenv("P11G_FAULT_TOKEN_DEFAULT");
	CK_ATTRIBUTE_PTR t;

	if (!on || strcmp(on, "1"))
		return tmpl;
	for (CK_ULONG i = 0; tmpl && i < *n; i++)
		if (tmpl[i].type == CKA_TOKEN)
			return tmpl;
	if (!(t = calloc(*n + 1, sizeof(*t))))
		return tmpl;
	if (*n)
		memcpy(t, tmpl, *n * sizeof(*t));
	t[(*n)++] = (CK_ATTRIBUTE){CKA_TOKEN, &yes, sizeof(yes)};
	return t;
}

static CK_RV f_CreateObject(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR tmpl, CK_ULONG n,
                            CK_OBJECT_HANDLE_PTR obj)
{
	CK_ATTRIBUTE_PTR t = with_token(tmpl, &n);
	CK_RV rv = real->C_CreateObject(h, t, n, obj);
	if (t != tmpl)
		free(t);
	return rv;
}

static CK_RV f_GenerateKeyPair(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR pub,
                               CK_ULONG npub, CK_ATTRIBUTE_PTR priv, CK_ULONG npriv,
                               CK_OBJECT_HANDLE_PTR hpub, CK_OBJECT_HANDLE_PTR hpriv)
{
	CK_ATTRIBUTE_PTR tp = with_token(pub, &npub), tq = with_token(priv, &npriv);
	CK_RV rv = real->C_GenerateKeyPair(h, m, tp, npub, tq, npriv, hpub, hpriv);
	if (tp != pub)
		free(tp);
	if (tq != priv)
		free(tq);
	return rv;
}

EXPORT CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR ret)
{
	const char *path = getenv("P11G_FAULT_MODULE");
	CK_C_GetFunctionList get;
	void *dl;

	if (!ret)
		return CKR_ARGUMENTS_BAD;
	if (!real) {
		if (!path || !(dl = dlopen(path, RTLD_NOW | RTLD_LOCAL)) ||
		    !(get = (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList")) ||
		    get(&real) != CKR_OK)
			return CKR_GENERAL_ERROR;
		list = *real;
		list.C_GetFunctionList = C_GetFunctionList;
		list.C_GetTokenInfo = f_GetTokenInfo;
		list.C_GetAttributeValue = f_GetAttributeValue;
		list.C_FindObjectsInit = f_FindObjectsInit;
		list.C_FindObjectsFinal = f_FindObjectsFinal;
		list.C_FindObjects = f_FindObjects;
		list.C_SignInit = f_SignInit;
		list.C_CreateObject = f_CreateObject;
		list.C_GenerateKeyPair = f_GenerateKeyPair;
		parse();
	}
	*ret = &list;
	return CKR_OK;
}
