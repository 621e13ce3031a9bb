/* Key identity: what names a private key on a token, as the module sees it and as policy matches
 * it. */
#ifndef P11GATE_KEYID_H
#define P11GATE_KEYID_H

#include <jansson.h>
#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

#include "p11gate/common.h"

#define P11G_LABEL_MAX 255 /* bytes of CKA_LABEL kept */
#define P11G_ID_MAX    128 /* bytes of CKA_ID kept */

/*
 * Token fields are the CK_TOKEN_INFO strings with their space padding
 * removed; label and id are the key's CKA_LABEL and CKA_ID.  An empty string
 * or id_len 0 means "absent".
 */
struct p11g_keyid {
	char token_label[33];
	char token_manufacturer[33];
	char token_model[17];
	char token_serial[17];
	char label[P11G_LABEL_MAX + 1];
	unsigned char id[P11G_ID_MAX];
	size_t id_len;
	CK_KEY_TYPE key_type; /* CKK_*, or CK_UNAVAILABLE_INFORMATION */
	/* SHA-256 of the key's SubjectPublicKeyInfo, lowercase hex; "" when not known
	 * (request URIs).  Audit records of uses carry it, so records of two different
	 * keys under one name never look the same. */
	char fingerprint[65];
};

/* Builds the identity a request URI names (token and object attributes the
 * URI sets; the rest stays absent).  Errors: bad_request for a string that is
 * not a pkcs11: URI, has unrecognised attributes, or names a non-key type. */
int p11g_keyid_from_uri(const char *uri, struct p11g_keyid *ret, p11g_err *err);

/* Fills the token fields from a CK_TOKEN_INFO (trims the padding). */
void p11g_keyid_set_token(struct p11g_keyid *k, const CK_TOKEN_INFO *info);

/* True when every attribute the URI sets equals the key's (p11-kit's match
 * functions over the key's token info and CKA_LABEL/CKA_ID/CKA_CLASS). */
bool p11g_keyid_matches(const struct p11g_keyid *k, P11KitUri *uri);

/* Canonical URI for messages: pkcs11:token=..;object=..;id=.. (malloc'd). */
char *p11g_keyid_to_uri(const struct p11g_keyid *k);

/* JSON form used on the wire: {token:{label,manufacturer,model,serial}, label, id:hex, key_type?,
 * fingerprint?}.
 */
json_t *p11g_keyid_to_json(const struct p11g_keyid *k);
/* Strict: unknown members, wrong types or over-long strings are bad_request. */
int p11g_keyid_from_json(const json_t *obj, struct p11g_keyid *ret, p11g_err *err);

#endif
