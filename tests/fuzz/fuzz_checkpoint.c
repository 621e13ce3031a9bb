/* libFuzzer target: what audit --verify reads of a checkpoint (checkpoint.h) and of an
 * operation's audited state (op.h).  The input is "PUBKEY\nJSON": the public key as a verify
 * request carries it (base64 DER) and a record.  Every refusal says why; the record is checked
 * against a fixed Ed25519 key and never verifies unless it was signed with it; comparing two
 * audited states finds a difference exactly when they are not equal. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "approvald/checkpoint.h"
#include "approvald/op.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static EVP_PKEY *fixed_key(void)
{
	static EVP_PKEY *key;
	if (!key) {
		EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
		if (!ctx || EVP_PKEY_keygen_init(ctx) != 1 || EVP_PKEY_keygen(ctx, &key) != 1)
			__builtin_trap();
		EVP_PKEY_CTX_free(ctx);
	}
	return key;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nl = memchr(data, '\n', size);
	size_t alen = nl ? (size_t)(nl - data) : size;
	char *a = malloc(alen + 1);
	p11g_err err = {0};
	json_error_t jerr;

	if (!a)
		return 0;
	memcpy(a, data, alen);
	a[alen] = '\0';
	EVP_PKEY *pub = strlen(a) == alen ? p11g_checkpoint_pubkey_b64(a, &err) : NULL;
	if (!pub && strlen(a) == alen && (!err.code || !err.msg[0]))
		__builtin_trap(); /* a refusal always says why */
	EVP_PKEY_free(pub);

	json_t *rec = nl ? json_loadb((const char *)nl + 1, size - alen - 1, 0, &jerr) : NULL;
	if (json_is_object(rec)) {
		const char *why = NULL;
		int r = p11g_checkpoint_check(fixed_key(), rec, &why);
		if (r < -1 || r > 1 || (r != 0 && !why))
			__builtin_trap();
		if (r == 0)
			__builtin_trap(); /* nobody but the key's holder signs */
	}
	json_t *other = json_loadb(a, alen, JSON_DECODE_ANY, &jerr);
	if (rec) {
		char what[128], sa[160], sb[160];
		if (p11g_op_audited_diff(rec, rec, what, sizeof(what), sa, sb, sizeof(sa)))
			__builtin_trap();
		if (other && p11g_op_audited_diff(rec, other, what, sizeof(what), sa, sb,
		                                  sizeof(sa)) == json_equal(rec, other))
			__builtin_trap();
	}
	json_decref(other);
	json_decref(rec);
	free(a);
	return 0;
}
