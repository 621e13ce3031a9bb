/* Unit tests for key identity and key URI patterns (p11-kit matching, overlap, JSON) and the
 * mechanism table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "p11gate/keyid.h"
#include "p11gate/mech.h"
#include "p11gate/errors.h"

static P11KitUri *uri_new(const char *s)
{
	P11KitUri *u = p11_kit_uri_new();
	assert_non_null(u);
	assert_int_equal(p11_kit_uri_parse(s, P11_KIT_URI_FOR_OBJECT_ON_TOKEN, u), P11_KIT_URI_OK);
	return u;
}

static struct p11g_keyid key(const char *token, const char *label, const void *id, size_t id_len)
{
	struct p11g_keyid k = {.key_type = CKK_EC};
	snprintf(k.token_label, sizeof(k.token_label), "%s", token);
	snprintf(k.token_manufacturer, sizeof(k.token_manufacturer), "SoftHSM project");
	snprintf(k.token_model, sizeof(k.token_model), "SoftHSM v2");
	snprintf(k.token_serial, sizeof(k.token_serial), "0123456789abcdef");
	snprintf(k.label, sizeof(k.label), "%s", label);
	memcpy(k.id, id, id_len);
	k.id_len = id_len;
	return k;
}

/*
 * The behaviour p11g_keyid_matches works around: p11-kit compares only the
 * attributes present in the array it is given, so an attribute the caller
 * leaves out matches any value in the URI.
 */
static void test_p11kit_absent_attribute_matches(void **state)
{
	P11KitUri *u = uri_new("pkcs11:object=fw-signing");
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE only_class[] = {{CKA_CLASS, &cls, sizeof(cls)}};
	CK_ATTRIBUTE null_label[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_LABEL, NULL, 0}};
	CK_ATTRIBUTE empty_label[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_LABEL, "", 0}};

	assert_int_equal(p11_kit_uri_match_attributes(u, only_class, 1), 1);
	assert_int_equal(p11_kit_uri_match_attributes(u, null_label, 2), 0);
	assert_int_equal(p11_kit_uri_match_attributes(u, empty_label, 2), 0);
	p11_kit_uri_free(u);

	/* An empty object= in a URI: p11-kit refuses a NULL value even at length 0. */
	u = uri_new("pkcs11:object=");
	assert_int_equal(p11_kit_uri_match_attributes(u, null_label, 2), 0);
	assert_int_equal(p11_kit_uri_match_attributes(u, empty_label, 2), 1);
	p11_kit_uri_free(u);
}

static void test_match_label_absent(void **state)
{
	P11KitUri *u = uri_new("pkcs11:object=fw-signing");
	struct p11g_keyid unlabelled = key("prod", "", "\x01", 1);
	struct p11g_keyid labelled = key("prod", "fw-signing", "\x01", 1);
	struct p11g_keyid other = key("prod", "fw-signing2", "\x01", 1);

	assert_false(p11g_keyid_matches(&unlabelled, u));
	assert_true(p11g_keyid_matches(&labelled, u));
	assert_false(p11g_keyid_matches(&other, u));
	p11_kit_uri_free(u);

	/* "object=" names the empty label, which is what an unlabelled key has. */
	u = uri_new("pkcs11:object=");
	assert_true(p11g_keyid_matches(&unlabelled, u));
	assert_false(p11g_keyid_matches(&labelled, u));
	p11_kit_uri_free(u);
}

static void test_match_id_absent(void **state)
{
	P11KitUri *u = uri_new("pkcs11:id=%01%02");
	struct p11g_keyid no_id = key("prod", "a", "", 0);
	struct p11g_keyid same = key("prod", "a", "\x01\x02", 2);
	struct p11g_keyid prefix = key("prod", "a", "\x01", 1);

	assert_false(p11g_keyid_matches(&no_id, u));
	assert_true(p11g_keyid_matches(&same, u));
	assert_false(p11g_keyid_matches(&prefix, u));
	p11_kit_uri_free(u);
}

static void test_match_token(void **state)
{
	struct p11g_keyid k = key("prod", "fw", "\x01", 1);
	static const struct {
		const char *uri;
		bool match;
	} cases[] = {
	    {"pkcs11:", true},
	    {"pkcs11:token=prod", true},
	    {"pkcs11:token=prod;object=fw", true},
	    {"pkcs11:token=prod;object=fw;id=%01;type=private", true},
	    {"pkcs11:token=dev;object=fw", false},
	    {"pkcs11:token=pro", false},
	    {"pkcs11:manufacturer=SoftHSM%20project;model=SoftHSM%20v2", true},
	    {"pkcs11:serial=0123456789abcdef", true},
	    {"pkcs11:serial=0123456789abcdee", false},
	    {"pkcs11:type=public", false},
	    {"pkcs11:type=cert", false},
	    {"pkcs11:token=prod;manufacturer=", false},
	};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(cases); i++) {
		P11KitUri *u = uri_new(cases[i].uri);
		if (p11g_keyid_matches(&k, u) != cases[i].match)
			fail_msg("%s: expected %d", cases[i].uri, cases[i].match);
		p11_kit_uri_free(u);
	}
}

static void test_set_token(void **state)
{
	CK_TOKEN_INFO ti;
	struct p11g_keyid k = {0};

	memset(&ti, ' ', sizeof(ti));
	memcpy(ti.label, "my token", 8);
	memcpy(ti.manufacturerID, "ACME", 4);
	memcpy(ti.model, "HSM 9000 with a ", 16);
	memcpy(ti.serialNumber, "42", 2);
	p11g_keyid_set_token(&k, &ti);
	assert_string_equal(k.token_label, "my token");
	assert_string_equal(k.token_manufacturer, "ACME");
	assert_string_equal(k.token_model, "HSM 9000 with a");
	assert_string_equal(k.token_serial, "42");

	memset(ti.label, 'x', sizeof(ti.label));
	p11g_keyid_set_token(&k, &ti);
	assert_int_equal(strlen(k.token_label), 32);
}

static P11KitUri *parse_ok(const char *s)
{
	P11KitUri *u = NULL;
	p11g_err err = {0};
	if (p11g_keyuri_parse(s, &u, &err) != 0)
		fail_msg("%s: %s", s, err.msg);
	return u;
}

static void test_uri_parse(void **state)
{
	P11KitUri *u;
	p11g_err err = {0};

	/* Request URIs copied from cosign carry a query: never parsed, kept or quoted. */
	u = parse_ok("pkcs11:object=a?module-path=/x.so&pin-value=1234");
	assert_null(p11_kit_uri_get_pin_value(u));
	assert_null(p11_kit_uri_get_module_path(u));
	p11_kit_uri_free(u);
	/* Not even a query p11-kit would refuse. */
	u = parse_ok("pkcs11:object=a?pin-value=%zz");
	p11_kit_uri_free(u);

	static const struct {
		const char *uri, *msg;
	} bad[] = {
	    /* NULL: the reason is p11-kit's wording, which varies by version. */
	    {"file:///x", NULL},
	    {"pkcs11:slot-id=1", "bad key URI \"pkcs11:slot-id=1\": an attribute is unknown, too "
	                         "long, or does not name a key on a token"},
	    {"pkcs11:token=0123456789012345678901234567890123456789", NULL},
	    {"pkcs11:type=cert", "bad key URI \"pkcs11:type=cert\": type must be \"private\" (a "
	                         "private key)"},
	    {"pkcs11:object=my key", "bad key URI \"pkcs11:object=my key\": write spaces as %20"},
	    {"pkcs11:object=a%00b", "bad key URI \"pkcs11:object=a%00b\": %00 in a value"},
	    {"pkcs11:object=a%zz", NULL},
	    /* the query stays out of the message */
	    {"pkcs11:object=a%zz?pin-value=1234", "bad key URI \"pkcs11:object=a%zz\": bad "
	                                          "percent-encoding"},
	};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(bad); i++) {
		err.code = NULL;
		u = NULL;
		if (p11g_keyuri_parse(bad[i].uri, &u, &err) != -1)
			fail_msg("accepted %s", bad[i].uri);
		assert_null(u);
		assert_string_equal(err.code, P11G_E_BAD_REQUEST);
		char prefix[128];
		snprintf(prefix, sizeof(prefix),
		         "bad key URI \"%.*s\": ", (int)strcspn(bad[i].uri, "?"), bad[i].uri);
		assert_true(strncmp(err.msg, prefix, strlen(prefix)) == 0);
		if (bad[i].msg)
			assert_string_equal(err.msg, bad[i].msg);
		assert_null(strstr(err.msg, "pin-value"));
	}

	/* Labels longer than a keyid keeps can never match, so they are refused. */
	char long_uri[400] = "pkcs11:object=";
	memset(long_uri + strlen(long_uri), 'a', 256);
	assert_int_equal(p11g_keyuri_parse(long_uri, &u, &err), -1);
	assert_string_equal(err.code, P11G_E_BAD_REQUEST);
	/* A long query is not part of the URI's length. */
	char long_query[4000] = "pkcs11:object=a?pin-value=";
	memset(long_query + strlen(long_query), '1', 3000);
	u = parse_ok(long_query);
	p11_kit_uri_free(u);
}

/* What a pattern is written as: what it sets, absent and empty apart, no query. */
static void test_uri_format(void **state)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
	    {"pkcs11:", "pkcs11:"},
	    {"pkcs11:token=prod", "pkcs11:token=prod"},
	    {"pkcs11:token=prod;object=", "pkcs11:token=prod;object="},
	    {"pkcs11:id=", "pkcs11:id="},
	    {"pkcs11:serial=;token=", "pkcs11:token=;serial="},
	    {"pkcs11:object=a;token=prod;type=private?pin-value=1234",
	     "pkcs11:token=prod;object=a"},
	    {"pkcs11:object=%66w-rsa;id=%01%ab", "pkcs11:object=fw-rsa;id=%01%AB"},
	    {"pkcs11:model=v%202;manufacturer=ACME", "pkcs11:manufacturer=ACME;model=v%202"},
	};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(cases); i++) {
		P11KitUri *u = parse_ok(cases[i].in);
		char *s = p11g_keyuri_format(u);
		assert_non_null(s);
		if (strcmp(s, cases[i].out))
			fail_msg("%s: got %s, wanted %s", cases[i].in, s, cases[i].out);
		/* and it is the same pattern again */
		P11KitUri *back = parse_ok(s);
		char *s2 = p11g_keyuri_format(back);
		assert_string_equal(s2, s);
		free(s2);
		p11_kit_uri_free(back);
		free(s);
		p11_kit_uri_free(u);
	}
}

/* Could one key match both?  Only where no attribute set in both differs; an
 * absent attribute is never the empty one. */
static void test_uri_overlap(void **state)
{
	static const struct {
		const char *a, *b;
		bool overlap;
	} cases[] = {
	    {"pkcs11:token=prod", "pkcs11:token=prod;object=", true},
	    {"pkcs11:token=prod", "pkcs11:token=prod;object=fw-rsa", true},
	    {"pkcs11:token=prod;object=", "pkcs11:token=prod;object=fw-rsa", false},
	    {"pkcs11:token=prod;object=", "pkcs11:token=prod;object=", true},
	    {"pkcs11:object=fw", "pkcs11:id=%01", true},
	    {"pkcs11:object=fw;id=%01", "pkcs11:object=fw;id=%02", false},
	    {"pkcs11:id=", "pkcs11:id=%01", false},
	    {"pkcs11:", "pkcs11:id=", true},
	    {"pkcs11:token=prod", "pkcs11:token=dev", false},
	    {"pkcs11:token=", "pkcs11:token=prod", false},
	    {"pkcs11:token=", "pkcs11:object=a", true},
	    {"pkcs11:serial=1", "pkcs11:serial=2;object=a", false},
	    {"pkcs11:manufacturer=ACME", "pkcs11:model=x", true},
	    {"pkcs11:object=a;type=private", "pkcs11:object=a", true},
	};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(cases); i++) {
		P11KitUri *a = parse_ok(cases[i].a), *b = parse_ok(cases[i].b);
		if (p11g_keyuri_overlap(a, b) != cases[i].overlap ||
		    p11g_keyuri_overlap(b, a) != cases[i].overlap)
			fail_msg("%s and %s: wanted overlap %d", cases[i].a, cases[i].b,
			         cases[i].overlap);
		p11_kit_uri_free(a);
		p11_kit_uri_free(b);
	}

	/* Where patterns overlap, a key matches both; where they do not, none does. */
	struct p11g_keyid keys[] = {key("prod", "", "", 0), key("prod", "fw-rsa", "\x01", 1),
	                            key("prod", "fw", "\x02", 1), key("dev", "", "\x01", 1)};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(cases); i++) {
		P11KitUri *a = parse_ok(cases[i].a), *b = parse_ok(cases[i].b);
		for (size_t j = 0; j < P11G_ARRAY_SIZE(keys); j++)
			if (!cases[i].overlap && p11g_keyid_matches(&keys[j], a) &&
			    p11g_keyid_matches(&keys[j], b))
				fail_msg("key %zu matches %s and %s", j, cases[i].a, cases[i].b);
		p11_kit_uri_free(a);
		p11_kit_uri_free(b);
	}
}

/* A key identity comes only from a URI that names every attribute. */
static void test_keyid_from_uri(void **state)
{
	struct p11g_keyid k;
	p11g_err err = {0};

	assert_int_equal(p11g_keyid_from_uri("pkcs11:token=prod;manufacturer=;model=;serial=;"
	                                     "object=fw%20signing;id=%0a%ff",
	                                     &k, &err),
	                 0);
	assert_string_equal(k.token_label, "prod");
	assert_string_equal(k.token_manufacturer, "");
	assert_string_equal(k.label, "fw signing");
	assert_int_equal(k.id_len, 2);
	assert_memory_equal(k.id, "\x0a\xff", 2);
	assert_true(k.key_type == CK_UNAVAILABLE_INFORMATION);

	static const struct {
		const char *uri, *missing;
	} partial[] = {
	    {"pkcs11:token=prod;object=fw", "manufacturer"},
	    {"pkcs11:token=t;manufacturer=m;model=x;serial=s;id=%01", "object"},
	    {"pkcs11:token=t;manufacturer=m;model=x;serial=s;object=", "id"},
	    {"pkcs11:manufacturer=m;model=x;serial=s;object=;id=", "token"},
	};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(partial); i++) {
		char want[256];
		if (p11g_keyid_from_uri(partial[i].uri, &k, &err) != -1)
			fail_msg("accepted %s", partial[i].uri);
		assert_string_equal(err.code, P11G_E_BAD_REQUEST);
		snprintf(want, sizeof(want),
		         "bad key URI \"%s\": it names no single key (no \"%s\")", partial[i].uri,
		         partial[i].missing);
		assert_string_equal(err.msg, want);
	}
}

static void test_to_uri_round_trip(void **state)
{
	struct p11g_keyid k = key("my token;x", "fw/signing %é", "\x00\x01\xfe", 3), back;
	p11g_err err;
	char *s = p11g_keyid_to_uri(&k);

	assert_non_null(s);
	assert_string_equal(s, "pkcs11:token=my%20token%3Bx;manufacturer=SoftHSM%20project;"
	                       "model=SoftHSM%20v2;serial=0123456789abcdef;"
	                       "object=fw%2Fsigning%20%25%C3%A9;id=%00%01%FE");
	/* %00 is refused in request URIs, so compare through p11-kit directly. */
	P11KitUri *u = uri_new(s);
	assert_true(p11g_keyid_matches(&k, u));
	p11_kit_uri_free(u);
	free(s);

	struct p11g_keyid k2 = key("t", "l", "\x07", 1);
	s = p11g_keyid_to_uri(&k2);
	assert_int_equal(p11g_keyid_from_uri(s, &back, &err), 0);
	assert_string_equal(back.token_label, "t");
	assert_string_equal(back.label, "l");
	assert_int_equal(back.id_len, 1);
	free(s);

	/* An unlabelled key without an id: its URI says so, and names no labelled key. */
	struct p11g_keyid bare = key("t", "", "", 0), labelled = key("t", "l", "", 0);
	s = p11g_keyid_to_uri(&bare);
	assert_string_equal(s, "pkcs11:token=t;manufacturer=SoftHSM%20project;model=SoftHSM%20v2;"
	                       "serial=0123456789abcdef;object=;id=");
	u = uri_new(s);
	assert_true(p11g_keyid_matches(&bare, u));
	assert_false(p11g_keyid_matches(&labelled, u));
	p11_kit_uri_free(u);
	assert_int_equal(p11g_keyid_from_uri(s, &back, &err), 0);
	assert_string_equal(back.label, "");
	assert_int_equal(back.id_len, 0);
	free(s);

	struct p11g_keyid empty = {.key_type = CK_UNAVAILABLE_INFORMATION};
	s = p11g_keyid_to_uri(&empty);
	assert_string_equal(s, "pkcs11:token=;manufacturer=;model=;serial=;object=;id=");
	free(s);
}

static void test_json_round_trip(void **state)
{
	struct p11g_keyid k = key("prod", "fw-signing", "\x01\xab", 2), back;
	p11g_err err;
	json_t *j = p11g_keyid_to_json(&k);

	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "id")), "01ab");
	assert_string_equal(json_string_value(json_object_get(j, "key_type")), "CKK_EC");
	assert_int_equal(p11g_keyid_from_json(j, &back, &err), 0);
	assert_memory_equal(&k, &back, sizeof(k));
	json_decref(j);

	k.key_type = CK_UNAVAILABLE_INFORMATION;
	k.id_len = 0;
	j = p11g_keyid_to_json(&k);
	assert_null(json_object_get(j, "key_type"));
	assert_int_equal(p11g_keyid_from_json(j, &back, &err), 0);
	assert_true(back.key_type == CK_UNAVAILABLE_INFORMATION);
	assert_int_equal(back.id_len, 0);
	json_decref(j);
}

static void test_json_strict(void **state)
{
	static const struct {
		const char *json, *msg;
	} bad[] = {
	    {"[]", "key must be an object"},
	    {"{\"token\":{\"label\":\"a\",\"manufacturer\":\"\",\"model\":\"\",\"serial\":\"\"},"
	     "\"label\":\"x\",\"id\":\"\",\"extra\":1}",
	     "key: unknown member \"extra\""},
	    {"{\"token\":{\"label\":\"a\",\"manufacturer\":\"\",\"model\":\"\",\"serial\":\"\","
	     "\"slot\":1},\"label\":\"x\",\"id\":\"\"}",
	     "key token: unknown member \"slot\""},
	    {"{\"token\":{\"label\":\"a\",\"manufacturer\":\"\",\"model\":\"\"},"
	     "\"label\":\"x\",\"id\":\"\"}",
	     "key: missing \"serial\""},
	    {"{\"label\":\"x\",\"id\":\"\"}", "key: \"token\" must be an object"},
	    {"{\"token\":{\"label\":1,\"manufacturer\":\"\",\"model\":\"\",\"serial\":\"\"},"
	     "\"label\":\"x\",\"id\":\"\"}",
	     "key: \"label\" must be a string"},
	    {"{\"token\":{\"label\":\"012345678901234567890123456789012\",\"manufacturer\":\"\","
	     "\"model\":\"\",\"serial\":\"\"},\"label\":\"x\",\"id\":\"\"}",
	     "key: \"label\" longer than 32 bytes"},
	    {"{\"token\":{\"label\":\"a\",\"manufacturer\":\"\",\"model\":\"\",\"serial\":\"\"},"
	     "\"label\":\"x\\u0000y\",\"id\":\"\"}",
	     "key: \"label\" contains a NUL byte"},
	    {"{\"token\":{\"label\":\"a\",\"manufacturer\":\"\",\"model\":\"\",\"serial\":\"\"},"
	     "\"label\":\"x\",\"id\":\"0g\"}",
	     "key: \"id\" must be hex of at most 128 bytes"},
	    {"{\"token\":{\"label\":\"a\",\"manufacturer\":\"\",\"model\":\"\",\"serial\":\"\"},"
	     "\"label\":\"x\",\"id\":\"abc\"}",
	     "key: \"id\" must be hex of at most 128 bytes"},
	    {"{\"token\":{\"label\":\"a\",\"manufacturer\":\"\",\"model\":\"\",\"serial\":\"\"},"
	     "\"label\":\"x\"}",
	     "key: \"id\" must be a hex string"},
	    {"{\"token\":{\"label\":\"a\",\"manufacturer\":\"\",\"model\":\"\",\"serial\":\"\"},"
	     "\"label\":\"x\",\"id\":\"\",\"key_type\":\"CKK_FOO\"}",
	     "key: unknown key_type \"CKK_FOO\""},
	};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(bad); i++) {
		json_error_t je;
		json_t *j = json_loads(bad[i].json, JSON_ALLOW_NUL, &je);
		struct p11g_keyid k;
		p11g_err err = {0};
		if (!j)
			fail_msg("test JSON %zu: %s", i, je.text);
		if (p11g_keyid_from_json(j, &k, &err) != -1)
			fail_msg("accepted %s", bad[i].json);
		assert_string_equal(err.code, P11G_E_BAD_REQUEST);
		assert_string_equal(err.msg, bad[i].msg);
		json_decref(j);
	}

	/* A 128-byte id is the limit; 129 is over it. */
	char hex[2 * 129 + 1];
	memset(hex, 'a', sizeof(hex) - 1);
	hex[2 * 128] = '\0';
	json_t *j = json_pack("{s:{s:s,s:s,s:s,s:s},s:s,s:s}", "token", "label", "", "manufacturer",
	                      "", "model", "", "serial", "", "label", "", "id", hex);
	struct p11g_keyid k;
	p11g_err err;
	assert_int_equal(p11g_keyid_from_json(j, &k, &err), 0);
	assert_int_equal(k.id_len, 128);
	hex[2 * 128] = 'a';
	hex[2 * 129] = '\0';
	json_object_set_new(j, "id", json_string(hex));
	assert_int_equal(p11g_keyid_from_json(j, &k, &err), -1);
	json_decref(j);
}

static void test_mech_table(void **state)
{
	static const struct {
		const char *name;
		CK_MECHANISM_TYPE type;
		enum p11g_mech_family family;
		const char *hash;
	} want[] = {
	    {"CKM_RSA_PKCS", 0x1, P11G_MECH_RSA_PKCS, NULL},
	    {"CKM_RSA_X_509", 0x3, P11G_MECH_RAW, NULL},
	    {"CKM_RSA_9796", 0x2, P11G_MECH_RAW, NULL},
	    {"CKM_RSA_PKCS_PSS", 0xd, P11G_MECH_PREHASHED, NULL},
	    {"CKM_SHA256_RSA_PKCS", 0x40, P11G_MECH_HASH_SIGN, "SHA256"},
	    {"CKM_SHA224_RSA_PKCS_PSS", 0x47, P11G_MECH_HASH_SIGN, "SHA224"},
	    {"CKM_SHA1_RSA_PKCS_PSS", 0xe, P11G_MECH_HASH_SIGN, "SHA1"},
	    {"CKM_ECDSA", 0x1041, P11G_MECH_PREHASHED, NULL},
	    {"CKM_ECDSA_SHA1", 0x1042, P11G_MECH_HASH_SIGN, "SHA1"},
	    {"CKM_ECDSA_SHA224", 0x1043, P11G_MECH_HASH_SIGN, "SHA224"},
	    {"CKM_ECDSA_SHA256", 0x1044, P11G_MECH_HASH_SIGN, "SHA256"},
	    {"CKM_ECDSA_SHA384", 0x1045, P11G_MECH_HASH_SIGN, "SHA384"},
	    {"CKM_ECDSA_SHA512", 0x1046, P11G_MECH_HASH_SIGN, "SHA512"},
	    {"CKM_EDDSA", 0x1057, P11G_MECH_EDDSA, NULL},
	    {"CKM_DSA", 0x11, P11G_MECH_PREHASHED, NULL},
	    {"CKM_DSA_SHA256", 0x14, P11G_MECH_HASH_SIGN, "SHA256"},
	};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(want); i++) {
		const struct p11g_mech_info *m = p11g_mech_by_name(want[i].name);
		assert_non_null(m);
		assert_true(m == p11g_mech_by_type(want[i].type));
		assert_string_equal(m->name, want[i].name);
		assert_int_equal(m->family, want[i].family);
		if (want[i].hash)
			assert_string_equal(m->hash, want[i].hash);
		else
			assert_null(m->hash);
	}
	assert_null(p11g_mech_by_name("CKM_AES_CBC"));
	assert_null(p11g_mech_by_name("ckm_ecdsa"));
	assert_null(p11g_mech_by_name(NULL));
	assert_null(p11g_mech_by_type(CKM_AES_CBC));
	assert_null(p11g_mech_by_type(CKM_SHA256));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_p11kit_absent_attribute_matches),
	    cmocka_unit_test(test_match_label_absent),
	    cmocka_unit_test(test_match_id_absent),
	    cmocka_unit_test(test_match_token),
	    cmocka_unit_test(test_set_token),
	    cmocka_unit_test(test_uri_parse),
	    cmocka_unit_test(test_uri_format),
	    cmocka_unit_test(test_uri_overlap),
	    cmocka_unit_test(test_keyid_from_uri),
	    cmocka_unit_test(test_to_uri_round_trip),
	    cmocka_unit_test(test_json_round_trip),
	    cmocka_unit_test(test_json_strict),
	    cmocka_unit_test(test_mech_table),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
