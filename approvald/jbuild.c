/* The sticky-failure JSON builder (jbuild.h). */
#include "approvald/jbuild.h"

#include "p11gate/wire.h"

json_t *p11g_jb_new(struct p11g_jb *b, json_t *v)
{
	if (!v)
		b->failed = true;
	return v;
}

void p11g_jb_set(struct p11g_jb *b, json_t *obj, const char *name, json_t *v)
{
	if (b->failed || !obj || !v || json_object_set_new(obj, name, v) < 0) {
		/* json_object_set_new takes v even when it fails; here v is released instead. */
		if (b->failed || !obj || !v)
			json_decref(v);
		b->failed = true;
	}
}

void p11g_jb_set_str(struct p11g_jb *b, json_t *obj, const char *name, const char *s)
{
	p11g_jb_set(b, obj, name, s ? json_string(s) : NULL);
}

void p11g_jb_set_int(struct p11g_jb *b, json_t *obj, const char *name, int64_t n)
{
	p11g_jb_set(b, obj, name, json_integer((json_int_t)n));
}

void p11g_jb_append(struct p11g_jb *b, json_t *arr, json_t *v)
{
	if (b->failed || !arr || !v || json_array_append_new(arr, v) < 0) {
		if (b->failed || !arr || !v)
			json_decref(v);
		b->failed = true;
	}
}

int p11g_jb_check(const struct p11g_jb *b, p11g_err *err)
{
	return b->failed ? p11g_err_set(err, P11G_E_INTERNAL, "out of memory") : 0;
}
