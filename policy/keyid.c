/* Key identity: from request URIs, matched against policy URIs with p11-kit, to and from JSON. */
#include "p11gate/keyid.h"
#include "p11gate/errors.h"

/* Copies a space-padded CK_TOKEN_INFO field into a C string without the padding. */
static void trim_field(char *dst, size_t dstsize, const unsigned char *src, size_t srclen)
{
	size_t n = srclen;
	while (n > 0 && (src[n - 1] == ' ' || src[n - 1] == '\0'))
		n--;
	if (n >= dstsize)
		n = dstsize - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

static void pad_field(unsigned char *dst, size_t dstlen, const char *src)
{
	size_t n = strlen(src);
	if (n > dstlen)
		n = dstlen;
	memset(dst, ' ', dstlen);
	memcpy(dst, src, n);
}

void p11g_keyid_set_token(struct p11g_keyid *k, const CK_TOKEN_INFO *info)
{
	trim_field(k->token_label, sizeof(k->token_label), info->label, sizeof(info->label));
	trim_field(k->token_manufacturer, sizeof(k->token_manufacturer), info->manufacturerID,
	           sizeof(info->manufacturerID));
	trim_field(k->token_model, sizeof(k->token_model), info->model, sizeof(info->model));
	trim_field(k->token_serial, sizeof(k->token_serial), info->serialNumber,
	           sizeof(info->serialNumber));
}

/* Our own words, so messages do not change with the p11-kit version. */
static const char *uri_reason(int r)
{
	switch (r) {
	case P11_KIT_URI_BAD_SCHEME:
		return "not a pkcs11: URI";
	case P11_KIT_URI_BAD_ENCODING:
		return "bad percent-encoding";
	case P11_KIT_URI_BAD_SYNTAX:
		return "bad syntax (expected attribute=value pairs separated by ';')";
	case P11_KIT_URI_BAD_VERSION:
		return "bad library version";
	default:
		return "cannot parse";
	}
}

int p11g_keyuri_parse(const char *uri, P11KitUri **ret, p11g_err *err)
{
	char path[P11G_KEY_URI_MAX + 1];
	P11KitUri *u;
	CK_ATTRIBUTE *a;
	int r;

	if (!uri)
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "missing key URI");
	/* The query (pin-value=...) is never parsed, kept or quoted. */
	size_t len = strcspn(uri, "?");
	/* The whole text goes in messages; keep it bounded. */
	if (len > P11G_KEY_URI_MAX)
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "key URI longer than %d bytes",
		                    P11G_KEY_URI_MAX);
	memcpy(path, uri, len);
	path[len] = '\0';
	/* p11-kit decodes %00 into the value; a C-string identity cannot hold it. */
	if (strstr(path, "%00"))
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "bad key URI \"%s\": %%00 in a value",
		                    path);
	/* p11-kit silently drops whitespace, so "object=my key" would name "mykey". */
	if (strpbrk(path, " \t\r\n\v\f"))
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "bad key URI \"%s\": write spaces as %%20", path);
	u = p11_kit_uri_new();
	if (!u)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	r = p11_kit_uri_parse(path, P11_KIT_URI_FOR_OBJECT_ON_TOKEN, u);
	if (r != P11_KIT_URI_OK) {
		p11g_err_set(err, P11G_E_BAD_REQUEST, "bad key URI \"%s\": %s", path,
		             uri_reason(r));
		goto fail;
	}
	if (p11_kit_uri_any_unrecognized(u)) {
		p11g_err_set(err, P11G_E_BAD_REQUEST,
		             "bad key URI \"%s\": an attribute is unknown, too long, or does not "
		             "name a key on a token",
		             path);
		goto fail;
	}
	a = p11_kit_uri_get_attribute(u, CKA_CLASS);
	if (a && (a->ulValueLen != sizeof(CK_OBJECT_CLASS) || !a->pValue ||
	          *(CK_OBJECT_CLASS *)a->pValue != CKO_PRIVATE_KEY)) {
		p11g_err_set(err, P11G_E_BAD_REQUEST,
		             "bad key URI \"%s\": type must be \"private\" (a private key)", path);
		goto fail;
	}
	/* Longer than a key identity keeps: it could never match. */
	a = p11_kit_uri_get_attribute(u, CKA_LABEL);
	if (a && a->ulValueLen > P11G_LABEL_MAX) {
		p11g_err_set(err, P11G_E_BAD_REQUEST,
		             "bad key URI \"%s\": object label longer than %d bytes", path,
		             P11G_LABEL_MAX);
		goto fail;
	}
	a = p11_kit_uri_get_attribute(u, CKA_ID);
	if (a && a->ulValueLen > P11G_ID_MAX) {
		p11g_err_set(err, P11G_E_BAD_REQUEST, "bad key URI \"%s\": id longer than %d bytes",
		             path, P11G_ID_MAX);
		goto fail;
	}
	*ret = u;
	return 0;
fail:
	p11_kit_uri_free(u);
	return -1;
}

/* The attributes a key URI can set, in the order p11gate writes them. */
enum { A_TOKEN, A_MANUFACTURER, A_MODEL, A_SERIAL, A_OBJECT, A_ID, N_ATTRS };
static const char *const attr_names[N_ATTRS] = {"token",  "manufacturer", "model",
                                                "serial", "object",       "id"};

/* A pattern's values in a key identity, and which of them it sets. */
static void uri_fields(P11KitUri *u, struct p11g_keyid *k, bool set[N_ATTRS])
{
	CK_TOKEN_INFO *ti = p11_kit_uri_get_token_info(u);
	CK_ATTRIBUTE *label = p11_kit_uri_get_attribute(u, CKA_LABEL);
	CK_ATTRIBUTE *id = p11_kit_uri_get_attribute(u, CKA_ID);

	memset(k, 0, sizeof(*k));
	k->key_type = CK_UNAVAILABLE_INFORMATION;
	/* p11-kit marks a token field the URI does not set with a leading NUL. */
	set[A_TOKEN] = ti->label[0] != '\0';
	set[A_MANUFACTURER] = ti->manufacturerID[0] != '\0';
	set[A_MODEL] = ti->model[0] != '\0';
	set[A_SERIAL] = ti->serialNumber[0] != '\0';
	if (set[A_TOKEN])
		trim_field(k->token_label, sizeof(k->token_label), ti->label, sizeof(ti->label));
	if (set[A_MANUFACTURER])
		trim_field(k->token_manufacturer, sizeof(k->token_manufacturer), ti->manufacturerID,
		           sizeof(ti->manufacturerID));
	if (set[A_MODEL])
		trim_field(k->token_model, sizeof(k->token_model), ti->model, sizeof(ti->model));
	if (set[A_SERIAL])
		trim_field(k->token_serial, sizeof(k->token_serial), ti->serialNumber,
		           sizeof(ti->serialNumber));
	/* p11g_keyuri_parse refused values longer than these. */
	set[A_OBJECT] = label != NULL;
	if (label && label->ulValueLen <= P11G_LABEL_MAX) {
		memcpy(k->label, label->pValue, label->ulValueLen);
		k->label[label->ulValueLen] = '\0';
	}
	set[A_ID] = id != NULL;
	if (id && id->ulValueLen <= P11G_ID_MAX) {
		memcpy(k->id, id->pValue, id->ulValueLen);
		k->id_len = id->ulValueLen;
	}
}

static void term_of(char kind, const void *value, size_t len, char term[P11G_KEY_TERM_MAX])
{
	if (len > 64) {
		snprintf(term, P11G_KEY_TERM_MAX, "*"); /* longer than a key's: everything */
		return;
	}
	term[0] = kind;
	p11g_hex_encode(value, len, term + 1);
}

void p11g_keyuri_term(const char *uri, char term[P11G_KEY_TERM_MAX])
{
	struct p11g_keyid k;
	bool set[N_ATTRS];
	P11KitUri *u;

	snprintf(term, P11G_KEY_TERM_MAX, "*");
	if (p11g_keyuri_parse(uri, &u, NULL) < 0)
		return;
	uri_fields(u, &k, set);
	p11_kit_uri_free(u);
	if (set[A_OBJECT])
		term_of('o', k.label, strlen(k.label), term);
	else if (set[A_TOKEN])
		term_of('t', k.token_label, strlen(k.token_label), term);
}

void p11g_keyid_terms(const struct p11g_keyid *k, char terms[3][P11G_KEY_TERM_MAX])
{
	term_of('o', k->label, strnlen(k->label, sizeof(k->label)), terms[0]);
	term_of('t', k->token_label, strnlen(k->token_label, sizeof(k->token_label)), terms[1]);
	snprintf(terms[2], P11G_KEY_TERM_MAX, "*");
}

int p11g_keyid_from_uri(const char *uri, struct p11g_keyid *ret, p11g_err *err)
{
	struct p11g_keyid k;
	bool set[N_ATTRS];
	P11KitUri *u;

	if (p11g_keyuri_parse(uri, &u, err) < 0)
		return -1;
	uri_fields(u, &k, set);
	p11_kit_uri_free(u);
	for (size_t i = 0; i < N_ATTRS; i++)
		if (!set[i])
			return p11g_err_set(
			    err, P11G_E_BAD_REQUEST,
			    "bad key URI \"%.*s\": it names no single key (no \"%s\")",
			    (int)strcspn(uri, "?"), uri, attr_names[i]);
	*ret = k;
	return 0;
}

/* Two URIs can match one key unless some attribute both set differs: the
 * key that carries the union of their attributes matches both. */
bool p11g_keyuri_overlap(P11KitUri *a, P11KitUri *b)
{
	CK_TOKEN_INFO *ta = p11_kit_uri_get_token_info(a), *tb = p11_kit_uri_get_token_info(b);
	const struct {
		const unsigned char *x, *y;
		size_t len;
	} fields[] = {
	    {ta->label, tb->label, sizeof(ta->label)},
	    {ta->manufacturerID, tb->manufacturerID, sizeof(ta->manufacturerID)},
	    {ta->model, tb->model, sizeof(ta->model)},
	    {ta->serialNumber, tb->serialNumber, sizeof(ta->serialNumber)},
	};
	static const CK_ATTRIBUTE_TYPE types[] = {CKA_CLASS, CKA_LABEL, CKA_ID};

	for (size_t i = 0; i < P11G_ARRAY_SIZE(fields); i++)
		if (fields[i].x[0] && fields[i].y[0] &&
		    memcmp(fields[i].x, fields[i].y, fields[i].len))
			return false;
	for (size_t i = 0; i < P11G_ARRAY_SIZE(types); i++) {
		CK_ATTRIBUTE *x = p11_kit_uri_get_attribute(a, types[i]);
		CK_ATTRIBUTE *y = p11_kit_uri_get_attribute(b, types[i]);
		if (x && y &&
		    (x->ulValueLen != y->ulValueLen ||
		     (x->ulValueLen && memcmp(x->pValue, y->pValue, x->ulValueLen))))
			return false;
	}
	return true;
}

/*
 * p11_kit_uri_match_attributes only compares attributes present in both the
 * URI and the array it is given: an attribute missing from the array matches
 * anything.  So CKA_LABEL and CKA_ID are always passed, empty when the key
 * has none, and with a non-NULL pointer (p11-kit treats a NULL value as
 * different from every non-NULL one, even at length 0).  Then object=X never
 * matches an unlabelled key, and id=... never matches a key without CKA_ID.
 */
bool p11g_keyid_matches(const struct p11g_keyid *k, P11KitUri *uri)
{
	CK_TOKEN_INFO ti;
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	static const unsigned char empty_id[1];

	if (!k || !uri)
		return false;
	memset(&ti, 0, sizeof(ti));
	pad_field(ti.label, sizeof(ti.label), k->token_label);
	pad_field(ti.manufacturerID, sizeof(ti.manufacturerID), k->token_manufacturer);
	pad_field(ti.model, sizeof(ti.model), k->token_model);
	pad_field(ti.serialNumber, sizeof(ti.serialNumber), k->token_serial);

	CK_ATTRIBUTE attrs[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_LABEL, (void *)k->label, strnlen(k->label, sizeof(k->label))},
	    {CKA_ID, k->id_len ? (void *)k->id : (void *)empty_id,
	     k->id_len <= P11G_ID_MAX ? k->id_len : P11G_ID_MAX},
	};
	return p11_kit_uri_match_token_info(uri, &ti) == 1 &&
	       p11_kit_uri_match_attributes(uri, attrs, P11G_ARRAY_SIZE(attrs)) == 1;
}

/* Percent-encodes everything outside RFC 3986 unreserved; for a message, so a
 * valid URI that p11-kit parses back to the same value. */
static int uri_append(char **s, size_t *len, size_t *cap, const char *attr, const unsigned char *v,
                      size_t vlen, bool all_hex)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t need = *len + 1 + strlen(attr) + 1 + 3 * vlen + 1;
	if (need > *cap) {
		size_t ncap = need * 2;
		char *n = realloc(*s, ncap);
		if (!n)
			return -1;
		*s = n;
		*cap = ncap;
	}
	char *p = *s + *len;
	if (*len > strlen("pkcs11:"))
		*p++ = ';';
	memcpy(p, attr, strlen(attr));
	p += strlen(attr);
	*p++ = '=';
	for (size_t i = 0; i < vlen; i++) {
		unsigned char c = v[i];
		bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		             (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
		if (plain && !all_hex) {
			*p++ = (char)c;
		} else {
			*p++ = '%';
			*p++ = hex[c >> 4];
			*p++ = hex[c & 15];
		}
	}
	*p = '\0';
	*len = (size_t)(p - *s);
	return 0;
}

/* The attributes of k that set[] marks, percent-encoded, in attr_names order. */
static char *format_uri(const struct p11g_keyid *k, const bool set[N_ATTRS])
{
	const char *const text[] = {k->token_label, k->token_manufacturer, k->token_model,
	                            k->token_serial, k->label};
	size_t cap = 64, len = strlen("pkcs11:");
	char *s = malloc(cap);
	if (!s)
		return NULL;
	memcpy(s, "pkcs11:", len + 1);
	for (size_t i = 0; i < P11G_ARRAY_SIZE(text); i++) {
		if (set[i] &&
		    uri_append(&s, &len, &cap, attr_names[i], (const unsigned char *)text[i],
		               strlen(text[i]), false) < 0)
			goto fail;
	}
	if (set[A_ID] && uri_append(&s, &len, &cap, attr_names[A_ID], k->id,
	                            k->id_len <= P11G_ID_MAX ? k->id_len : 0, true) < 0)
		goto fail;
	return s;
fail:
	free(s);
	return NULL;
}

char *p11g_keyuri_format(P11KitUri *u)
{
	struct p11g_keyid k;
	bool set[N_ATTRS];

	uri_fields(u, &k, set);
	return format_uri(&k, set);
}

char *p11g_keyid_to_uri(const struct p11g_keyid *k)
{
	static const bool all[N_ATTRS] = {true, true, true, true, true, true};
	return format_uri(k, all);
}

/* ---- JSON ---------------------------------------------------------------- */

static const struct {
	CK_KEY_TYPE type;
	const char *name;
} key_types[] = {
    {CKK_RSA, "CKK_RSA"},
    {CKK_DSA, "CKK_DSA"},
    {CKK_DH, "CKK_DH"},
    {CKK_EC, "CKK_EC"},
    {CKK_EC_EDWARDS, "CKK_EC_EDWARDS"},
#ifdef CKK_EC_MONTGOMERY
    {CKK_EC_MONTGOMERY, "CKK_EC_MONTGOMERY"},
#endif
    {CKK_GOSTR3410, "CKK_GOSTR3410"},
    {CKK_GENERIC_SECRET, "CKK_GENERIC_SECRET"},
    {CKK_AES, "CKK_AES"},
};

json_t *p11g_keyid_to_json(const struct p11g_keyid *k)
{
	char hex[2 * P11G_ID_MAX + 1];
	json_t *obj;

	p11g_hex_encode(k->id, k->id_len <= P11G_ID_MAX ? k->id_len : 0, hex);
	obj = json_pack("{s:{s:s, s:s, s:s, s:s}, s:s, s:s}", "token", "label", k->token_label,
	                "manufacturer", k->token_manufacturer, "model", k->token_model, "serial",
	                k->token_serial, "label", k->label, "id", hex);
	if (obj && k->fingerprint[0] &&
	    json_object_set_new(obj, "fingerprint", json_string(k->fingerprint)) < 0) {
		json_decref(obj);
		return NULL;
	}
	if (!obj || k->key_type == CK_UNAVAILABLE_INFORMATION)
		return obj;
	for (size_t i = 0; i < P11G_ARRAY_SIZE(key_types); i++) {
		if (key_types[i].type == k->key_type) {
			if (json_object_set_new(obj, "key_type", json_string(key_types[i].name)) <
			    0) {
				json_decref(obj);
				return NULL;
			}
			return obj;
		}
	}
	/* A type without a name here (vendor-defined) goes out as absent. */
	return obj;
}

/* A string member without NUL bytes and at most max bytes into dst. */
static int get_string(const json_t *obj, const char *name, char *dst, size_t max, p11g_err *err)
{
	const json_t *v = json_object_get(obj, name);
	if (!v)
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "key: missing \"%s\"", name);
	if (!json_is_string(v))
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "key: \"%s\" must be a string", name);
	size_t len = json_string_length(v);
	if (len > max)
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "key: \"%s\" longer than %zu bytes",
		                    name, max);
	if (strlen(json_string_value(v)) != len)
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "key: \"%s\" contains a NUL byte",
		                    name);
	memcpy(dst, json_string_value(v), len + 1);
	return 0;
}

static int only_members(const json_t *obj, const char *const *names, size_t n, const char *what,
                        p11g_err *err)
{
	const char *key;
	json_t *v;
	json_object_foreach((json_t *)obj, key, v)
	{
		size_t i;
		for (i = 0; i < n; i++)
			if (strcmp(key, names[i]) == 0)
				break;
		if (i == n)
			return p11g_err_set(err, P11G_E_BAD_REQUEST, "%s: unknown member \"%s\"",
			                    what, key);
	}
	return 0;
}

int p11g_keyid_from_json(const json_t *obj, struct p11g_keyid *ret, p11g_err *err)
{
	static const char *const top[] = {"token", "label", "id", "key_type", "fingerprint"};
	static const char *const tok[] = {"label", "manufacturer", "model", "serial"};
	struct p11g_keyid k = {.key_type = CK_UNAVAILABLE_INFORMATION};
	const json_t *token, *id, *kt, *fp;
	ssize_t n;

	if (!json_is_object(obj))
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "key must be an object");
	if (only_members(obj, top, P11G_ARRAY_SIZE(top), "key", err) < 0)
		return -1;
	token = json_object_get(obj, "token");
	if (!json_is_object(token))
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "key: \"token\" must be an object");
	if (only_members(token, tok, P11G_ARRAY_SIZE(tok), "key token", err) < 0 ||
	    get_string(token, "label", k.token_label, sizeof(k.token_label) - 1, err) < 0 ||
	    get_string(token, "manufacturer", k.token_manufacturer,
	               sizeof(k.token_manufacturer) - 1, err) < 0 ||
	    get_string(token, "model", k.token_model, sizeof(k.token_model) - 1, err) < 0 ||
	    get_string(token, "serial", k.token_serial, sizeof(k.token_serial) - 1, err) < 0 ||
	    get_string(obj, "label", k.label, sizeof(k.label) - 1, err) < 0)
		return -1;
	id = json_object_get(obj, "id");
	if (!json_is_string(id))
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "key: \"id\" must be a hex string");
	n = p11g_hex_decode(json_string_value(id), json_string_length(id), k.id, sizeof(k.id));
	if (n < 0)
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "key: \"id\" must be hex of at most %d bytes", P11G_ID_MAX);
	k.id_len = (size_t)n;
	fp = json_object_get(obj, "fingerprint");
	if (fp) {
		const char *v = json_string_value(fp);
		bool ok = v && json_string_length(fp) == 64;
		for (size_t i = 0; ok && i < 64; i++)
			ok = (v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f');
		if (!ok)
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "key: \"fingerprint\" must be 64 lowercase hex digits");
		memcpy(k.fingerprint, v, 65);
	}
	kt = json_object_get(obj, "key_type");
	if (kt) {
		size_t i;
		if (!json_is_string(kt))
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "key: \"key_type\" must be a string");
		for (i = 0; i < P11G_ARRAY_SIZE(key_types); i++)
			if (strlen(json_string_value(kt)) == json_string_length(kt) &&
			    strcmp(json_string_value(kt), key_types[i].name) == 0)
				break;
		if (i == P11G_ARRAY_SIZE(key_types))
			return p11g_err_set(err, P11G_E_BAD_REQUEST, "key: unknown key_type \"%s\"",
			                    json_string_value(kt));
		k.key_type = key_types[i].type;
	}
	*ret = k;
	return 0;
}
