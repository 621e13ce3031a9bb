/* Key identity: what names a private key on a token, as the module sees it and as policy matches
 * it. */
#ifndef P11GATE_KEYID_H
#define P11GATE_KEYID_H

#include <jansson.h>
#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

#include "p11gate/common.h"

#define P11G_LABEL_MAX   255  /* bytes of CKA_LABEL kept */
#define P11G_ID_MAX      128  /* bytes of CKA_ID kept */
#define P11G_KEY_URI_MAX 2048 /* bytes of a key URI before its query */

/*
 * One key, as it is: token fields are the CK_TOKEN_INFO strings with their
 * space padding removed; label and id are the key's CKA_LABEL and CKA_ID.
 * Every field has a value: an empty string or id_len 0 is the empty value (a
 * key without CKA_LABEL or CKA_ID has that too), which "object=" or "id="
 * match and "object=fw" does not.  A URI that leaves an attribute out is no
 * key but a pattern (p11g_keyuri_parse).
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

/*
 * Key URIs (RFC 7512) are patterns: a key matches when every attribute the
 * URI sets equals the key's.  An attribute the URI leaves out matches any
 * value; one it sets to nothing ("object=", "id=", "serial=") matches only
 * the empty value.  The two are never the same (p11-kit keeps them apart:
 * p11_kit_uri_get_attribute gives NULL for an absent attribute, and a token
 * field a URI does not set starts with NUL).
 */

/* Parses the part of a key URI before its query: query attributes (pin-value,
 * module-path, ...) are dropped unread, and messages quote the URI without
 * them.  *ret is the parsed pattern (p11_kit_uri_free).  Errors: bad_request
 * for a string that is not a pkcs11: URI, is longer than 2048 bytes, holds %00
 * or unencoded whitespace, has unrecognised attributes, names a type other
 * than a private key, or a label or id longer than a key identity keeps. */
int p11g_keyuri_parse(const char *uri, P11KitUri **ret, p11g_err *err);

/* True when some key could match both: every attribute set in both has equal
 * values (an attribute set in one only constrains nothing in the other). */
bool p11g_keyuri_overlap(P11KitUri *a, P11KitUri *b);

/* The pattern as text: the attributes it sets, in a fixed order (token,
 * manufacturer, model, serial, object, id; empty ones as "object="), never a
 * query, and no type (key URIs name private keys only).  p11g_keyuri_parse of
 * it gives the same pattern.  malloc'd; NULL when out of memory. */
char *p11g_keyuri_format(P11KitUri *u);

/* The key a URI names completely: it must set every attribute a key has
 * (token, manufacturer, model, serial, object and id; p11g_keyid_to_uri writes
 * them all).  Errors: those of p11g_keyuri_parse, and bad_request for a URI
 * that leaves one out, since that names keys with any value there, not one
 * key. */
int p11g_keyid_from_uri(const char *uri, struct p11g_keyid *ret, p11g_err *err);

/*
 * Index terms, so that the operations that could name a key are found without looking at
 * the others: a pattern that sets object= is filed under "o" and its label in hex, else one
 * that sets token= under "t" and its token label in hex, else under "*".  A key is found
 * under the three terms it could be filed under (p11g_keyid_terms); every pattern that
 * matches it is filed under one of them.  A URI that does not parse is filed under "*".
 */
#define P11G_KEY_TERM_MAX (2 + 2 * 64 + 1)
void p11g_keyuri_term(const char *uri, char term[P11G_KEY_TERM_MAX]);
void p11g_keyid_terms(const struct p11g_keyid *k, char terms[3][P11G_KEY_TERM_MAX]);

/* Fills the token fields from a CK_TOKEN_INFO (trims the padding). */
void p11g_keyid_set_token(struct p11g_keyid *k, const CK_TOKEN_INFO *info);

/* True when every attribute the URI sets equals the key's (p11-kit's match
 * functions over the key's token info and CKA_LABEL/CKA_ID/CKA_CLASS). */
bool p11g_keyid_matches(const struct p11g_keyid *k, P11KitUri *uri);

/* The URI that names exactly this key: every attribute written, empty ones as
 * "object=" or "id=" (leaving one out would name keys with any value there).
 * For messages and for requests filed on a key's behalf (malloc'd). */
char *p11g_keyid_to_uri(const struct p11g_keyid *k);

/* JSON form used on the wire: {token:{label,manufacturer,model,serial}, label, id:hex, key_type?,
 * fingerprint?}.
 */
json_t *p11g_keyid_to_json(const struct p11g_keyid *k);
/* Strict: unknown members, wrong types or over-long strings are bad_request. */
int p11g_keyid_from_json(const json_t *obj, struct p11g_keyid *ret, p11g_err *err);

#endif
