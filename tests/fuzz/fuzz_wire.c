/* libFuzzer target: approvald's frame payload decoder and the strict argument checks behind it. */
#include <stddef.h>
#include <stdint.h>

#include "p11gate/keyid.h"
#include "p11gate/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	p11g_err err = {0};
	json_t *obj = p11g_wire_decode((const char *)data, size, &err);
	if (!obj)
		return 0;
	/* Whatever decodes must encode again within the frame limit or be refused cleanly. */
	size_t len = 0;
	char *enc = p11g_wire_encode(obj, &len);
	if (enc && (len == 0 || len > P11G_FRAME_MAX))
		__builtin_trap();
	free(enc);
	/* The key identity is the one structured argument every use carries. */
	struct p11g_keyid k;
	if (p11g_keyid_from_json(json_object_get(obj, "key"), &k, &err) == 0) {
		char *uri = p11g_keyid_to_uri(&k);
		free(uri);
	}
	json_decref(obj);
	return 0;
}
