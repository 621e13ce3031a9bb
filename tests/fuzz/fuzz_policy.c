/* libFuzzer target: the policy parser, and the rule snapshot round trip operations rely on. */
#include <stddef.h>
#include <stdint.h>

#include "policy/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct p11g_policy *p = NULL;
	p11g_err err = {0};
	if (p11g_policy_parse("fuzz.json", (const char *)data, size, &p, &err) < 0) {
		/* every refusal names a place: "fuzz.json:LINE:COLUMN: ..." (out of memory aside)
		 */
		if (!err.code ||
		    (strcmp(err.code, "internal") && strncmp(err.msg, "fuzz.json:", 10)))
			__builtin_trap();
		return 0;
	}
	for (size_t i = 0; i < p->n_rules; i++) {
		json_t *j = p11g_rule_to_json(&p->rules[i]);
		struct p11g_rule *back = NULL;
		p11g_err err = {0};
		/* an accepted rule must survive its own snapshot */
		if (!j || p11g_rule_from_json(j, &back, &err) < 0)
			__builtin_trap();
		p11g_rule_free(back);
		json_decref(j);
	}
	p11g_policy_free(p);
	return 0;
}
