/* libFuzzer target: a stored operation record (op.h).  Whatever decodes encodes to a record
 * that decodes to the same operation, and a copy encodes the same; what does not decode
 * leaves nothing behind (ASan's leak check). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "approvald/op.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static json_t *encoded(const struct p11g_op *op)
{
	json_t *j = p11g_op_encode(op);
	if (!j)
		__builtin_trap(); /* no allocation fails here */
	return j;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_error_t jerr;
	json_t *in = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
	struct p11g_op op, again, copy;
	p11g_err err = {0};

	if (!in)
		return 0;
	if (p11g_op_decode(in, &op, &err) < 0) {
		if (!err.code || !err.msg[0])
			__builtin_trap(); /* a refusal always says why */
		json_decref(in);
		return 0;
	}
	json_t *first = encoded(&op);
	if (p11g_op_decode(first, &again, &err) < 0)
		__builtin_trap(); /* what approvald writes, it reads back */
	json_t *second = encoded(&again);
	if (!json_equal(first, second))
		__builtin_trap();
	if (p11g_op_copy(&op, &copy) < 0)
		__builtin_trap();
	json_t *third = encoded(&copy);
	if (!json_equal(first, third) || p11g_op_uses_made(&copy) != p11g_op_uses_made(&op))
		__builtin_trap();
	json_decref(third);
	json_decref(second);
	json_decref(first);
	p11g_op_clear(&copy);
	p11g_op_clear(&again);
	p11g_op_clear(&op);
	json_decref(in);
	return 0;
}
