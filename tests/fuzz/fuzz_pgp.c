/* libFuzzer target: the hashed data of an OpenPGP signature as approvald reads it from a
 * request's payload (pgp_payload.c): refused with a reason, or read into what approvers see
 * and the digest the gate binds the token's signature to. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "approvald/pgp_payload.h"

#define NOW 1700001000 /* the seeds' signatures are from shortly before */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool lower_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return s[n] == '\0';
}

static bool upper_hex40(const char *s)
{
	for (size_t i = 0; i < 40; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'F')))
			return false;
	return s[40] == '\0';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct p11g_pgp_payload pp;
	char why[200] = "";
	bool looks = p11g_pgp_payload_looks(data, size);

	if (p11g_pgp_payload_read(data, size, NOW, &pp, why, sizeof(why)) < 0) {
		if (!why[0] || pp.certification)
			abort(); /* a refusal always says why, and holds nothing to free */
		return 0;
	}
	if (!looks)
		abort(); /* read only what looks like hashed data */
	/* the digest the gate is given: "sha256:" or "sha384:" and its hex, lowercase */
	if (!strncmp(pp.use_digest, "sha256:", 7)) {
		if (!lower_hex(pp.use_digest + 7, 64))
			abort();
	} else if (!strncmp(pp.use_digest, "sha384:", 7)) {
		if (!lower_hex(pp.use_digest + 7, 96) || pp.hash != 9 || pp.algo == 22)
			abort();
	} else {
		abort();
	}
	if (pp.doc_len > size || !upper_hex40(pp.issuer) || (int64_t)pp.when > NOW + 600)
		abort();
	if (pp.algo != 1 && pp.algo != 19 && pp.algo != 22)
		abort();
	if (pp.type == 0x00) {
		if (pp.certification)
			abort();
	} else {
		/* a certification: {user_id, fingerprint, key, created}, its own key's */
		static const char *const keys[] = {"user_id", "fingerprint", "key", "created"};
		if (pp.type < 0x10 || pp.type > 0x13 || pp.doc_len != 0 ||
		    !json_is_object(pp.certification) || json_object_size(pp.certification) != 4)
			abort();
		for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
			if (!json_is_string(json_object_get(pp.certification, keys[i])))
				abort();
		if (strcmp(json_string_value(json_object_get(pp.certification, "fingerprint")),
		           pp.issuer))
			abort();
		const char *uid = json_string_value(json_object_get(pp.certification, "user_id"));
		size_t ul = json_string_length(json_object_get(pp.certification, "user_id"));
		if (ul == 0 || ul > 256 || strlen(uid) != ul)
			abort();
	}
	p11g_pgp_payload_clear(&pp);
	if (pp.certification)
		abort();
	return 0;
}
