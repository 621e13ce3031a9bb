/* A mock PKCS#11 3.0 module: one token, one EC key pair, message signing; logs every call it gets.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

#include "p11gate/pkcs11_3.h"

#define EXPORT __attribute__((visibility("default")))

enum { PRIV = 1, PUB = 2 };
static CK_FUNCTION_LIST_3_0 list3;
static CK_FUNCTION_LIST list2;
static CK_INTERFACE ifaces[2];
static CK_ULONG found;

/* GATEMOCK_LOG=file: one function name a line, so tests see what reached the module. */
static void logcall(const char *name)
{
	const char *path = getenv("GATEMOCK_LOG");
	FILE *f;
	if (!path || !(f = fopen(path, "ae")))
		return;
	fprintf(f, "%s\n", name);
	fclose(f);
}

static CK_RV nosup(void)
{
	logcall("unsupported");
	return CKR_FUNCTION_NOT_SUPPORTED;
}

static void pad(CK_UTF8CHAR *dst, size_t n, const char *s)
{
	memset(dst, ' ', n);
	memcpy(dst, s, strlen(s) < n ? strlen(s) : n);
}

static CK_RV m_Initialize(CK_VOID_PTR a)
{
	logcall("C_Initialize");
	return CKR_OK;
}
static CK_RV m_Finalize(CK_VOID_PTR a)
{
	logcall("C_Finalize");
	return CKR_OK;
}
static CK_RV m_GetInfo(CK_INFO_PTR i)
{
	memset(i, 0, sizeof(*i));
	i->cryptokiVersion.major = 3;
	pad(i->manufacturerID, 32, "p11gate tests");
	pad(i->libraryDescription, 32, "mock 3.0");
	return CKR_OK;
}
static CK_RV m_GetSlotList(CK_BBOOL present, CK_SLOT_ID_PTR l, CK_ULONG_PTR n)
{
	if (l && *n < 1)
		return CKR_BUFFER_TOO_SMALL;
	if (l)
		l[0] = 1;
	*n = 1;
	return CKR_OK;
}
static CK_RV m_GetSlotInfo(CK_SLOT_ID s, CK_SLOT_INFO_PTR i)
{
	memset(i, 0, sizeof(*i));
	pad(i->slotDescription, 64, "mock slot");
	pad(i->manufacturerID, 32, "p11gate tests");
	i->flags = CKF_TOKEN_PRESENT;
	return CKR_OK;
}
static CK_RV m_GetTokenInfo(CK_SLOT_ID s, CK_TOKEN_INFO_PTR i)
{
	memset(i, 0, sizeof(*i));
	pad(i->label, 32, "mock");
	pad(i->manufacturerID, 32, "p11gate tests");
	pad(i->model, 16, "mock3");
	pad(i->serialNumber, 16, "0001");
	i->flags = CKF_TOKEN_INITIALIZED;
	return CKR_OK;
}
static CK_RV m_OpenSession(CK_SLOT_ID s, CK_FLAGS f, CK_VOID_PTR a, CK_NOTIFY n,
                           CK_SESSION_HANDLE_PTR h)
{
	*h = 7;
	return CKR_OK;
}
static CK_RV m_CloseSession(CK_SESSION_HANDLE h)
{
	return CKR_OK;
}
static CK_RV m_GetSessionInfo(CK_SESSION_HANDLE h, CK_SESSION_INFO_PTR i)
{
	memset(i, 0, sizeof(*i));
	i->slotID = 1;
	i->state = CKS_RW_USER_FUNCTIONS;
	i->flags = CKF_SERIAL_SESSION | CKF_RW_SESSION;
	return CKR_OK;
}
static CK_RV m_Login(CK_SESSION_HANDLE h, CK_USER_TYPE u, CK_UTF8CHAR_PTR p, CK_ULONG n)
{
	return CKR_OK;
}
static CK_RV m_FindObjectsInit(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG n)
{
	found = PRIV;
	for (CK_ULONG i = 0; i < n; i++)
		if (t[i].type == CKA_CLASS && *(CK_OBJECT_CLASS *)t[i].pValue == CKO_PUBLIC_KEY)
			found = PUB;
	return CKR_OK;
}
static CK_RV m_FindObjects(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE_PTR o, CK_ULONG max,
                           CK_ULONG_PTR n)
{
	*n = 0;
	if (found && max) {
		o[0] = found;
		*n = 1;
		found = 0;
	}
	return CKR_OK;
}
static CK_RV m_FindObjectsFinal(CK_SESSION_HANDLE h)
{
	return CKR_OK;
}
static CK_RV set(CK_ATTRIBUTE_PTR a, const void *v, CK_ULONG len)
{
	if (!a->pValue) {
		a->ulValueLen = len;
		return CKR_OK;
	}
	if (a->ulValueLen < len) {
		a->ulValueLen = CK_UNAVAILABLE_INFORMATION;
		return CKR_BUFFER_TOO_SMALL;
	}
	memcpy(a->pValue, v, len);
	a->ulValueLen = len;
	return CKR_OK;
}
static CK_RV m_GetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t,
                                 CK_ULONG n)
{
	CK_OBJECT_CLASS cls = o == PRIV ? CKO_PRIVATE_KEY : CKO_PUBLIC_KEY;
	CK_KEY_TYPE kt = CKK_EC;
	CK_BBOOL yes = CK_TRUE;
	CK_RV rv = CKR_OK;
	for (CK_ULONG i = 0; i < n; i++) {
		CK_RV r;
		switch (t[i].type) {
		case CKA_CLASS:
			/* GATEMOCK_CLASS_FAILS: the private key's class cannot be
			 * read, while signing with it works. */
			if (o == PRIV && getenv("GATEMOCK_CLASS_FAILS")) {
				r = CKR_DEVICE_ERROR;
				break;
			}
			r = set(&t[i], &cls, sizeof(cls));
			break;
		case CKA_KEY_TYPE:
			r = set(&t[i], &kt, sizeof(kt));
			break;
		case CKA_LABEL:
			r = set(&t[i], "mk", 2);
			break;
		case CKA_ID:
			r = set(&t[i], "\x01", 1);
			break;
		case CKA_SIGN:
		case CKA_TOKEN:
		case CKA_PRIVATE:
			r = set(&t[i], &yes, 1);
			break;
		default:
			t[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
			r = CKR_ATTRIBUTE_TYPE_INVALID;
		}
		if (r != CKR_OK)
			rv = r;
	}
	return rv;
}
static CK_RV m_SignInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k)
{
	logcall("C_SignInit");
	return CKR_OK;
}
static CK_RV m_Sign(CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG n, CK_BYTE_PTR s, CK_ULONG_PTR sn)
{
	logcall(s ? "C_Sign" : "C_Sign(length)");
	if (!s) {
		*sn = 64;
		return CKR_OK;
	}
	if (*sn < 64) {
		*sn = 64;
		return CKR_BUFFER_TOO_SMALL;
	}
	memset(s, 0x5a, 64);
	*sn = 64;
	return CKR_OK;
}
static CK_RV m_SignUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG n)
{
	logcall("C_SignUpdate");
	return CKR_OPERATION_NOT_INITIALIZED; /* single-part only: also ends the operation */
}
static CK_RV m_MessageSignInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k)
{
	logcall("C_MessageSignInit");
	return CKR_OK;
}
static CK_RV m_SessionCancel(CK_SESSION_HANDLE h, CK_FLAGS f)
{
	logcall("C_SessionCancel");
	return CKR_OK;
}

static CK_RV m_GetInterfaceList(CK_INTERFACE_PTR l, CK_ULONG_PTR n)
{
	if (l && *n < 2)
		return CKR_BUFFER_TOO_SMALL;
	if (l)
		memcpy(l, ifaces, sizeof(ifaces));
	*n = 2;
	return CKR_OK;
}
static CK_RV m_GetInterface(CK_UTF8CHAR_PTR name, CK_VERSION_PTR v, CK_INTERFACE_PTR_PTR i,
                            CK_FLAGS f)
{
	*i = v && v->major == 2 ? &ifaces[1] : &ifaces[0];
	return CKR_OK;
}
static CK_RV m_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR l);

static void setup(void)
{
	if (list3.C_Initialize)
		return;
	list3.version.major = 3;
	list3.C_Initialize = m_Initialize;
	list3.C_Finalize = m_Finalize;
	list3.C_GetInfo = m_GetInfo;
	list3.C_GetFunctionList = m_GetFunctionList;
	list3.C_GetSlotList = m_GetSlotList;
	list3.C_GetSlotInfo = m_GetSlotInfo;
	list3.C_GetTokenInfo = m_GetTokenInfo;
	list3.C_OpenSession = m_OpenSession;
	list3.C_CloseSession = m_CloseSession;
	list3.C_GetSessionInfo = m_GetSessionInfo;
	list3.C_Login = m_Login;
	list3.C_FindObjectsInit = m_FindObjectsInit;
	list3.C_FindObjects = m_FindObjects;
	list3.C_FindObjectsFinal = m_FindObjectsFinal;
	list3.C_GetAttributeValue = m_GetAttributeValue;
	list3.C_SignInit = m_SignInit;
	list3.C_Sign = m_Sign;
	list3.C_SignUpdate = m_SignUpdate;
	list3.C_MessageSignInit = m_MessageSignInit;
	list3.C_SessionCancel = m_SessionCancel;
	list3.C_GetInterfaceList = m_GetInterfaceList;
	list3.C_GetInterface = m_GetInterface;
	/* Every other slot answers CKR_FUNCTION_NOT_SUPPORTED (a mock may call through a
	 * generic signature: the x86-64 ABI makes the extra arguments harmless). */
	void (**slots)(void) = (void (**)(void)) & list3.C_Initialize;
	size_t n = (sizeof(list3) - offsetof(CK_FUNCTION_LIST_3_0, C_Initialize)) / sizeof(*slots);
	for (size_t i = 0; i < n; i++)
		if (!slots[i])
			slots[i] = (void (*)(void))nosup;
	memcpy(&list2, &list3, sizeof(list2));
	list2.version.major = 2;
	list2.version.minor = 40;
	ifaces[0] = (CK_INTERFACE){(CK_CHAR *)"PKCS 11", &list3, 0};
	ifaces[1] = (CK_INTERFACE){(CK_CHAR *)"PKCS 11", &list2, 0};
}

static CK_RV m_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR l)
{
	setup();
	*l = &list2;
	return CKR_OK;
}

EXPORT CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR l)
{
	return m_GetFunctionList(l);
}
EXPORT CK_RV C_GetInterfaceList(CK_INTERFACE_PTR l, CK_ULONG_PTR n)
{
	setup();
	return m_GetInterfaceList(l, n);
}
EXPORT CK_RV C_GetInterface(CK_UTF8CHAR_PTR name, CK_VERSION_PTR v, CK_INTERFACE_PTR_PTR i,
                            CK_FLAGS f)
{
	setup();
	return m_GetInterface(name, v, i, f);
}
