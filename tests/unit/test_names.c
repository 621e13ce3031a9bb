/* Unit test for approvald's name-service lookups (names.c): needs the system's root user. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "approvald/names.h"

static void test_ident_resolve_root(void **state)
{
	struct p11g_ident id;

	assert_int_equal(p11g_ident_resolve(0, 0, 1, &id), 0);
	assert_int_equal(id.uid, 0);
	assert_int_equal(id.pid, 1);
	assert_string_equal(id.user, "root");
	bool root_group = false;
	for (size_t i = 0; i < id.n_groups; i++)
		root_group |= strcmp(id.groups[i], "root") == 0;
	assert_true(root_group);
	p11g_ident_clear(&id);
	assert_null(id.groups);

	/* A uid with no passwd entry: no user name, only the given gid's group. */
	assert_int_equal(p11g_ident_resolve(3999999999u, 0, 0, &id), 0);
	assert_string_equal(id.user, "");
	assert_int_equal(id.n_groups, 1);
	assert_string_equal(id.groups[0], "root");
	p11g_ident_clear(&id);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ident_resolve_root),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
