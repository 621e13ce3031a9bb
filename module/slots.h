/* The table of every PKCS#11 function p11gate.so serves, each marked forward, hook or deny. */
#ifndef P11GATE_MODULE_SLOTS_H
#define P11GATE_MODULE_SLOTS_H

#include "p11gate/pkcs11_3.h"

/*
 * X(name, kind, version, (parameters), (arguments))
 *
 *   FORWARD  generated pass-through to the real module, return codes untouched
 *   HOOK     hook_<name> in p11gate.c or gate.c decides, then usually forwards
 *   DENY     refused with CKR_FUNCTION_NOT_SUPPORTED without asking the module
 *
 * version 2 slots are in both the 2.40 and the 3.0 list, version 3 slots only
 * in the 3.0 list.  Order follows CK_FUNCTION_LIST_3_0; p11gate.c checks at
 * compile time that the counts match the structures, so a missing or extra
 * line does not build, and test_module_slots checks that every slot that can
 * reach a private key is HOOK or DENY.
 *
 * Why each non-forward slot is what it is:
 *   C_Initialize .. C_GetFunctionList, C_GetInterface*: our own entry points.
 *   C_OpenSession, C_CloseSession, C_CloseAllSessions: the session table.
 *   C_SetOperationState: DENY; a restored state may hold a signing operation
 *     on a guarded key that this module never saw begin.
 *   C_CopyObject, C_SetAttributeValue: a copy or a relabelled key would
 *     escape the rule that names the key.
 *   C_EncryptInit, C_DecryptInit, C_VerifyRecoverInit, C_UnwrapKey,
 *   C_DeriveKey, C_MessageEncryptInit, C_MessageDecryptInit: private-key
 *     transforms (raw RSA is a signature) unless the rule's allow_raw.
 *   C_WrapKey: exporting a guarded key, never.
 *   C_Sign*, C_SignRecover*, C_*Message*Sign*: the gate itself.
 *   C_SignEncryptUpdate, C_DecryptVerifyUpdate: would feed a gated operation
 *     data behind the gate's back.
 *   C_SessionCancel, C_WaitForSlotEvent: the session's sign state, and a call
 *     that may block for ever must not hold up C_Finalize.
 *   C_DestroyObject: refused for a guarded key (CKR_ACTION_PROHIBITED); forgets
 *     the key identity cached for the handle.
 *   C_GetTokenInfo, C_InitToken, C_InitPIN, C_SetPIN, C_Login, C_LoginUser,
 *     C_Logout: forwarded, except when approvald hosts the gate (host.c):
 *     approvald holds the PIN and the login, the client never needs either.
 *   C_CreateObject, C_GenerateKey, C_GenerateKeyPair: forwarded, except when
 *     approvald hosts the gate (host.c): a token object is made only for a
 *     client in pkcs11_object_admins (a decoy key or public key under a
 *     guarded key's label and id).
 */
#define P11G_SLOTS(X)                                                                              \
	X(C_Initialize, HOOK, 2, (CK_VOID_PTR pInitArgs), (pInitArgs))                             \
	X(C_Finalize, HOOK, 2, (CK_VOID_PTR pReserved), (pReserved))                               \
	X(C_GetInfo, FORWARD, 2, (CK_INFO_PTR pInfo), (pInfo))                                     \
	X(C_GetFunctionList, HOOK, 2, (CK_FUNCTION_LIST_PTR_PTR ppFunctionList), (ppFunctionList)) \
	X(C_GetSlotList, FORWARD, 2,                                                               \
	  (CK_BBOOL tokenPresent, CK_SLOT_ID_PTR pSlotList, CK_ULONG_PTR pulCount),                \
	  (tokenPresent, pSlotList, pulCount))                                                     \
	X(C_GetSlotInfo, FORWARD, 2, (CK_SLOT_ID slotID, CK_SLOT_INFO_PTR pInfo), (slotID, pInfo)) \
	X(C_GetTokenInfo, HOOK, 2, (CK_SLOT_ID slotID, CK_TOKEN_INFO_PTR pInfo), (slotID, pInfo))  \
	X(C_GetMechanismList, FORWARD, 2,                                                          \
	  (CK_SLOT_ID slotID, CK_MECHANISM_TYPE_PTR pMechanismList, CK_ULONG_PTR pulCount),        \
	  (slotID, pMechanismList, pulCount))                                                      \
	X(C_GetMechanismInfo, FORWARD, 2,                                                          \
	  (CK_SLOT_ID slotID, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO_PTR pInfo),                \
	  (slotID, type, pInfo))                                                                   \
	X(C_InitToken, HOOK, 2,                                                                    \
	  (CK_SLOT_ID slotID, CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen, CK_UTF8CHAR_PTR pLabel),    \
	  (slotID, pPin, ulPinLen, pLabel))                                                        \
	X(C_InitPIN, HOOK, 2,                                                                      \
	  (CK_SESSION_HANDLE hSession, CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen),                   \
	  (hSession, pPin, ulPinLen))                                                              \
	X(C_SetPIN, HOOK, 2,                                                                       \
	  (CK_SESSION_HANDLE hSession, CK_UTF8CHAR_PTR pOldPin, CK_ULONG ulOldLen,                 \
	   CK_UTF8CHAR_PTR pNewPin, CK_ULONG ulNewLen),                                            \
	  (hSession, pOldPin, ulOldLen, pNewPin, ulNewLen))                                        \
	X(C_OpenSession, HOOK, 2,                                                                  \
	  (CK_SLOT_ID slotID, CK_FLAGS flags, CK_VOID_PTR pApplication, CK_NOTIFY Notify,          \
	   CK_SESSION_HANDLE_PTR phSession),                                                       \
	  (slotID, flags, pApplication, Notify, phSession))                                        \
	X(C_CloseSession, HOOK, 2, (CK_SESSION_HANDLE hSession), (hSession))                       \
	X(C_CloseAllSessions, HOOK, 2, (CK_SLOT_ID slotID), (slotID))                              \
	X(C_GetSessionInfo, FORWARD, 2, (CK_SESSION_HANDLE hSession, CK_SESSION_INFO_PTR pInfo),   \
	  (hSession, pInfo))                                                                       \
	X(C_GetOperationState, FORWARD, 2,                                                         \
	  (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pOperationState,                                \
	   CK_ULONG_PTR pulOperationStateLen),                                                     \
	  (hSession, pOperationState, pulOperationStateLen))                                       \
	X(C_SetOperationState, DENY, 2,                                                            \
	  (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pOperationState, CK_ULONG ulOperationStateLen,  \
	   CK_OBJECT_HANDLE hEncryptionKey, CK_OBJECT_HANDLE hAuthenticationKey),                  \
	  (hSession, pOperationState, ulOperationStateLen, hEncryptionKey, hAuthenticationKey))    \
	X(C_Login, HOOK, 2,                                                                        \
	  (CK_SESSION_HANDLE hSession, CK_USER_TYPE userType, CK_UTF8CHAR_PTR pPin,                \
	   CK_ULONG ulPinLen),                                                                     \
	  (hSession, userType, pPin, ulPinLen))                                                    \
	X(C_Logout, HOOK, 2, (CK_SESSION_HANDLE hSession), (hSession))                             \
	X(C_CreateObject, HOOK, 2,                                                                 \
	  (CK_SESSION_HANDLE hSession, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount,               \
	   CK_OBJECT_HANDLE_PTR phObject),                                                         \
	  (hSession, pTemplate, ulCount, phObject))                                                \
	X(C_CopyObject, HOOK, 2,                                                                   \
	  (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject, CK_ATTRIBUTE_PTR pTemplate,       \
	   CK_ULONG ulCount, CK_OBJECT_HANDLE_PTR phNewObject),                                    \
	  (hSession, hObject, pTemplate, ulCount, phNewObject))                                    \
	X(C_DestroyObject, HOOK, 2, (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject),        \
	  (hSession, hObject))                                                                     \
	X(C_GetObjectSize, FORWARD, 2,                                                             \
	  (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject, CK_ULONG_PTR pulSize),            \
	  (hSession, hObject, pulSize))                                                            \
	X(C_GetAttributeValue, HOOK, 2,                                                            \
	  (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject, CK_ATTRIBUTE_PTR pTemplate,       \
	   CK_ULONG ulCount),                                                                      \
	  (hSession, hObject, pTemplate, ulCount))                                                 \
	X(C_SetAttributeValue, HOOK, 2,                                                            \
	  (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject, CK_ATTRIBUTE_PTR pTemplate,       \
	   CK_ULONG ulCount),                                                                      \
	  (hSession, hObject, pTemplate, ulCount))                                                 \
	X(C_FindObjectsInit, FORWARD, 2,                                                           \
	  (CK_SESSION_HANDLE hSession, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount),              \
	  (hSession, pTemplate, ulCount))                                                          \
	X(C_FindObjects, FORWARD, 2,                                                               \
	  (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE_PTR phObject, CK_ULONG ulMaxObjectCount,   \
	   CK_ULONG_PTR pulObjectCount),                                                           \
	  (hSession, phObject, ulMaxObjectCount, pulObjectCount))                                  \
	X(C_FindObjectsFinal, FORWARD, 2, (CK_SESSION_HANDLE hSession), (hSession))                \
	X(C_EncryptInit, HOOK, 2,                                                                  \
	  (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey),        \
	  (hSession, pMechanism, hKey))                                                            \
	X(C_Encrypt, FORWARD, 2,                                                                   \
	  (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen,                      \
	   CK_BYTE_PTR pEncryptedData, CK_ULONG_PTR pulEncryptedDataLen),                          \
	  (hSession, pData, ulDataLen, pEncryptedData, pulEncryptedDataLen))                       \
	X(C_EncryptUpdate, FORWARD, 2,                                                             \
	  (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen,                      \
	   CK_BYTE_PTR pEncryptedPart, CK_ULONG_PTR pulEncryptedPartLen),                          \
	  (hSession, pPart, ulPartLen, pEncryptedPart, pulEncryptedPartLen))                       \
	X(C_EncryptFinal, FORWARD, 2,                                                              \
	  (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pLastEncryptedPart,                             \
	   CK_ULONG_PTR pulLastEncryptedPartLen),                                                  \
	  (hSession, pLastEncryptedPart, pulLastEncryptedPartLen))                                 \
	X(C_DecryptInit, HOOK, 2,                                                                  \
	  (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey),        \
	  (hSession, pMechanism, hKey))                                                            \
	X(C_Decrypt, FORWARD, 2,                                                                   \
	  (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pEncryptedData, CK_ULONG ulEncryptedDataLen,    \
	   CK_BYTE_PTR pData, CK_ULONG_PTR pulDataLen),                                            \
	  (hSession, pEncryptedData, ulEncryptedDataLen, pData, pulDataLen))                       \
	X(C_DecryptUpdate, FORWARD, 2,                                                             \
	  (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pEncryptedPart, CK_ULONG ulEncryptedPartLen,    \
	   CK_BYTE_PTR pPart, CK_ULONG_PTR pulPartLen),                                            \
	  (hSession, pEncryptedPart, ulEncryptedPartLen, pPart, pulPartLen))                       \
	X(C_DecryptFinal, FORWARD, 2,                                                              \
	  (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pLastPart, CK_ULONG_PTR pulLastPartLen),        \
	  (hSession, pLastPart, pulLastPartLen))                                                   \
	X(C_DigestInit, FORWARD, 2, (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism),     \
	  (hSession, pMechanism))                                                                  \
	X(C_Digest, FORWARD, 2,                                                                    \
	  (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pDigest, \
	   CK_ULONG_PTR pulDigestLen),                                                             \
	  (hSession, pData, ulDataLen, pDigest, pulDigestLen))                                     \
	X(C_DigestUpdate, FORWARD, 2,                                                              \
	  (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen),                     \
	  (hSession, pPart, ulPartLen))                                                            \
	X(C_DigestKey, FORWARD, 2, (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hKey),            \
	  (hSession, hKey))                                                                        \
	X(C_DigestFinal, FORWARD, 2,                                                               \
	  (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pDigest, CK_ULONG_PTR pulDigestLen),            \
	  (hSession, pDigest, pulDigestLen))                                                       \
	X(C_SignInit, HOOK, 2,                                                                     \
	  (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey),        \
	  (hSession, pMechanism, hKey))                                                            \
	X(C_Sign, HOOK, 2,                                                                         \
	  (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen,                      \
	   CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen),                                  \
	  (hSession, pData, ulDataLen, pSignature, pulSignatureLen))                               \
	X(C_SignUpdate, HOOK, 2,                                                                   \
	  (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen),                     \
	  (hSession, pPart, ulPartLen))                                                            \
	X(C_SignFinal, HOOK, 2,                                                                    \
	  (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen),      \
	  (hSession, pSignature, pulSignatureLen))                                                 \
	X(C_SignRecoverInit, HOOK, 2,                                                              \
	  (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey),        \
	  (hSession, pMechanism, hKey))                                                            \
	X(C_SignRecover, HOOK, 2,                                                                  \
	  (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen,                      \
	   CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen),                                  \
	  (hSession, pData, ulDataLen, pSignature, pulSignatureLen))                               \
	X(C_VerifyInit, FORWARD, 2,                                                                \
	  (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey),        \
	  (hSession, pMechanism, hKey))                                                            \
	X(C_Verify, FORWARD, 2,                                                                    \
	  (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen,                      \
	   CK_BYTE_PTR pSignature, CK_ULONG ulSignatureLen),                                       \
	  (hSession, pData, ulDataLen, pSignature, ulSignatureLen))                                \
	X(C_VerifyUpdate, FORWARD, 2,                                                              \
	  (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen),                     \
	  (hSession, pPart, ulPartLen))                                                            \
	X(C_VerifyFinal, FORWARD, 2,                                                               \
	  (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSignature, CK_ULONG ulSignatureLen),           \
	  (hSession, pSignature, ulSignatureLen))                                                  \
	X(C_VerifyRecoverInit, HOOK, 2,                                                            \
	  (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey),        \
	  (hSession, pMechanism, hKey))                                                            \
	X(C_VerifyRecover, FORWARD, 2,                                                             \
	  (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSignature, CK_ULONG ulSignatureLen,            \
	   CK_BYTE_PTR pData, CK_ULONG_PTR pulDataLen),                                            \
	  (hSession, pSignature, ulSignatureLen, pData, pulDataLen))                               \
	X(C_DigestEncryptUpdate, FORWARD, 2,                                                       \
	  (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen,                      \
	   CK_BYTE_PTR pEncryptedPart, CK_ULONG_PTR pulEncryptedPartLen),                          \
	  (hSession, pPart, ulPartLen, pEncryptedPart, pulEncryptedPartLen))                       \
	X(C_DecryptDigestUpdate, FORWARD, 2,                                                       \
	  (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pEncryptedPart, CK_ULONG ulEncryptedPartLen,    \
	   CK_BYTE_PTR pPart, CK_ULONG_PTR pulPartLen),                                            \
	  (hSession, pEncryptedPart, ulEncryptedPartLen, pPart, pulPartLen))                       \
	X(C_SignEncryptUpdate, HOOK, 2,                                                            \
	  (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen,                      \
	   CK_BYTE_PTR pEncryptedPart, CK_ULONG_PTR pulEncryptedPartLen),                          \
	  (hSession, pPart, ulPartLen, pEncryptedPart, pulEncryptedPartLen))                       \
	X(C_DecryptVerifyUpdate, HOOK, 2,                                                          \
	  (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pEncryptedPart, CK_ULONG ulEncryptedPartLen,    \
	   CK_BYTE_PTR pPart, CK_ULONG_PTR pulPartLen),                                            \
	  (hSession, pEncryptedPart, ulEncryptedPartLen, pPart, pulPartLen))                       \
	X(C_GenerateKey, HOOK, 2,                                                                  \
	  (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_ATTRIBUTE_PTR pTemplate,    \
	   CK_ULONG ulCount, CK_OBJECT_HANDLE_PTR phKey),                                          \
	  (hSession, pMechanism, pTemplate, ulCount, phKey))                                       \
	X(C_GenerateKeyPair, HOOK, 2,                                                              \
	  (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism,                                \
	   CK_ATTRIBUTE_PTR pPublicKeyTemplate, CK_ULONG ulPublicKeyAttributeCount,                \
	   CK_ATTRIBUTE_PTR pPrivateKeyTemplate, CK_ULONG ulPrivateKeyAttributeCount,              \
	   CK_OBJECT_HANDLE_PTR phPublicKey, CK_OBJECT_HANDLE_PTR phPrivateKey),                   \
	  (hSession, pMechanism, pPublicKeyTemplate, ulPublicKeyAttributeCount,                    \
	   pPrivateKeyTemplate, ulPrivateKeyAttributeCount, phPublicKey, phPrivateKey))            \
	X(C_WrapKey, HOOK, 2,                                                                      \
	  (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hWrappingKey, \
	   CK_OBJECT_HANDLE hKey, CK_BYTE_PTR pWrappedKey, CK_ULONG_PTR pulWrappedKeyLen),         \
	  (hSession, pMechanism, hWrappingKey, hKey, pWrappedKey, pulWrappedKeyLen))               \
	X(C_UnwrapKey, HOOK, 2,                                                                    \
	  (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism,                                \
	   CK_OBJECT_HANDLE hUnwrappingKey, CK_BYTE_PTR pWrappedKey, CK_ULONG ulWrappedKeyLen,     \
	   CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulAttributeCount, CK_OBJECT_HANDLE_PTR phKey),     \
	  (hSession, pMechanism, hUnwrappingKey, pWrappedKey, ulWrappedKeyLen, pTemplate,          \
	   ulAttributeCount, phKey))                                                               \
	X(C_DeriveKey, HOOK, 2,                                                                    \
	  (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hBaseKey,     \
	   CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulAttributeCount, CK_OBJECT_HANDLE_PTR phKey),     \
	  (hSession, pMechanism, hBaseKey, pTemplate, ulAttributeCount, phKey))                    \
	X(C_SeedRandom, FORWARD, 2,                                                                \
	  (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSeed, CK_ULONG ulSeedLen),                     \
	  (hSession, pSeed, ulSeedLen))                                                            \
	X(C_GenerateRandom, FORWARD, 2,                                                            \
	  (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pRandomData, CK_ULONG ulRandomLen),             \
	  (hSession, pRandomData, ulRandomLen))                                                    \
	X(C_GetFunctionStatus, FORWARD, 2, (CK_SESSION_HANDLE hSession), (hSession))               \
	X(C_CancelFunction, FORWARD, 2, (CK_SESSION_HANDLE hSession), (hSession))                  \
	X(C_WaitForSlotEvent, HOOK, 2,                                                             \
	  (CK_FLAGS flags, CK_SLOT_ID_PTR pSlot, CK_VOID_PTR pReserved),                           \
	  (flags, pSlot, pReserved))                                                               \
	X(C_GetInterfaceList, HOOK, 3, (CK_INTERFACE_PTR pInterfacesList, CK_ULONG_PTR pulCount),  \
	  (pInterfacesList, pulCount))                                                             \
	X(C_GetInterface, HOOK, 3,                                                                 \
	  (CK_UTF8CHAR_PTR pInterfaceName, CK_VERSION_PTR pVersion,                                \
	   CK_INTERFACE_PTR_PTR ppInterface, CK_FLAGS flags),                                      \
	  (pInterfaceName, pVersion, ppInterface, flags))                                          \
	X(C_LoginUser, HOOK, 3,                                                                    \
	  (CK_SESSION_HANDLE hSession, CK_USER_TYPE userType, CK_UTF8CHAR_PTR pPin,                \
	   CK_ULONG ulPinLen, CK_UTF8CHAR_PTR pUsername, CK_ULONG ulUsernameLen),                  \
	  (hSession, userType, pPin, ulPinLen, pUsername, ulUsernameLen))                          \
	X(C_SessionCancel, HOOK, 3, (CK_SESSION_HANDLE hSession, CK_FLAGS flags),                  \
	  (hSession, flags))                                                                       \
	X(C_MessageEncryptInit, HOOK, 3,                                                           \
	  (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey),        \
	  (hSession, pMechanism, hKey))                                                            \
	X(C_EncryptMessage, FORWARD, 3,                                                            \
	  (CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen,            \
	   CK_BYTE_PTR pAssociatedData, CK_ULONG ulAssociatedDataLen, CK_BYTE_PTR pPlaintext,      \
	   CK_ULONG ulPlaintextLen, CK_BYTE_PTR pCiphertext, CK_ULONG_PTR pulCiphertextLen),       \
	  (hSession, pParameter, ulParameterLen, pAssociatedData, ulAssociatedDataLen, pPlaintext, \
	   ulPlaintextLen, pCiphertext, pulCiphertextLen))                                         \
	X(C_EncryptMessageBegin, FORWARD, 3,                                                       \
	  (CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen,            \
	   CK_BYTE_PTR pAssociatedData, CK_ULONG ulAssociatedDataLen),                             \
	  (hSession, pParameter, ulParameterLen, pAssociatedData, ulAssociatedDataLen))            \
	X(C_EncryptMessageNext, FORWARD, 3,                                                        \
	  (CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen,            \
	   CK_BYTE_PTR pPlaintextPart, CK_ULONG ulPlaintextPartLen, CK_BYTE_PTR pCiphertextPart,   \
	   CK_ULONG_PTR pulCiphertextPartLen, CK_FLAGS flags),                                     \
	  (hSession, pParameter, ulParameterLen, pPlaintextPart, ulPlaintextPartLen,               \
	   pCiphertextPart, pulCiphertextPartLen, flags))                                          \
	X(C_MessageEncryptFinal, FORWARD, 3, (CK_SESSION_HANDLE hSession), (hSession))             \
	X(C_MessageDecryptInit, HOOK, 3,                                                           \
	  (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey),        \
	  (hSession, pMechanism, hKey))                                                            \
	X(C_DecryptMessage, FORWARD, 3,                                                            \
	  (CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen,            \
	   CK_BYTE_PTR pAssociatedData, CK_ULONG ulAssociatedDataLen, CK_BYTE_PTR pCiphertext,     \
	   CK_ULONG ulCiphertextLen, CK_BYTE_PTR pPlaintext, CK_ULONG_PTR pulPlaintextLen),        \
	  (hSession, pParameter, ulParameterLen, pAssociatedData, ulAssociatedDataLen,             \
	   pCiphertext, ulCiphertextLen, pPlaintext, pulPlaintextLen))                             \
	X(C_DecryptMessageBegin, FORWARD, 3,                                                       \
	  (CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen,            \
	   CK_BYTE_PTR pAssociatedData, CK_ULONG ulAssociatedDataLen),                             \
	  (hSession, pParameter, ulParameterLen, pAssociatedData, ulAssociatedDataLen))            \
	X(C_DecryptMessageNext, FORWARD, 3,                                                        \
	  (CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen,            \
	   CK_BYTE_PTR pCiphertextPart, CK_ULONG ulCiphertextPartLen, CK_BYTE_PTR pPlaintextPart,  \
	   CK_ULONG_PTR pulPlaintextPartLen, CK_FLAGS flags),                                      \
	  (hSession, pParameter, ulParameterLen, pCiphertextPart, ulCiphertextPartLen,             \
	   pPlaintextPart, pulPlaintextPartLen, flags))                                            \
	X(C_MessageDecryptFinal, FORWARD, 3, (CK_SESSION_HANDLE hSession), (hSession))             \
	X(C_MessageSignInit, HOOK, 3,                                                              \
	  (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey),        \
	  (hSession, pMechanism, hKey))                                                            \
	X(C_SignMessage, HOOK, 3,                                                                  \
	  (CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen,            \
	   CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pSignature,                          \
	   CK_ULONG_PTR pulSignatureLen),                                                          \
	  (hSession, pParameter, ulParameterLen, pData, ulDataLen, pSignature, pulSignatureLen))   \
	X(C_SignMessageBegin, HOOK, 3,                                                             \
	  (CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen),           \
	  (hSession, pParameter, ulParameterLen))                                                  \
	X(C_SignMessageNext, HOOK, 3,                                                              \
	  (CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen,            \
	   CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pSignature,                          \
	   CK_ULONG_PTR pulSignatureLen),                                                          \
	  (hSession, pParameter, ulParameterLen, pData, ulDataLen, pSignature, pulSignatureLen))   \
	X(C_MessageSignFinal, HOOK, 3, (CK_SESSION_HANDLE hSession), (hSession))                   \
	X(C_MessageVerifyInit, FORWARD, 3,                                                         \
	  (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey),        \
	  (hSession, pMechanism, hKey))                                                            \
	X(C_VerifyMessage, FORWARD, 3,                                                             \
	  (CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen,            \
	   CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pSignature,                          \
	   CK_ULONG ulSignatureLen),                                                               \
	  (hSession, pParameter, ulParameterLen, pData, ulDataLen, pSignature, ulSignatureLen))    \
	X(C_VerifyMessageBegin, FORWARD, 3,                                                        \
	  (CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen),           \
	  (hSession, pParameter, ulParameterLen))                                                  \
	X(C_VerifyMessageNext, FORWARD, 3,                                                         \
	  (CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen,            \
	   CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pSignature,                          \
	   CK_ULONG ulSignatureLen),                                                               \
	  (hSession, pParameter, ulParameterLen, pData, ulDataLen, pSignature, ulSignatureLen))    \
	X(C_MessageVerifyFinal, FORWARD, 3, (CK_SESSION_HANDLE hSession), (hSession))

/* What a slot does; exported to the unit tests with the names. */
enum p11g_slot_kind { P11G_SLOT_FORWARD, P11G_SLOT_HOOK, P11G_SLOT_DENY };

struct p11g_slot_info {
	const char *name;
	enum p11g_slot_kind kind;
	int version; /* 2: in the 2.40 and 3.0 lists; 3: 3.0 only */
};

extern const struct p11g_slot_info p11g_slot_table[];
extern const size_t p11g_slot_count;

/* Our two function lists, as C_GetInterfaceList hands them out. */
extern CK_FUNCTION_LIST p11g_list_2_40;
extern CK_FUNCTION_LIST_3_0 p11g_list_3_0;

#endif
