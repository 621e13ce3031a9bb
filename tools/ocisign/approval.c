/* approvald client for ocisign: file an operation request pinned to the payload digests and wait
 * for it. */
#include <inttypes.h>

#include "p11gate/wire.h"

#include "approval.h"

#define CALL_TIMEOUT_MS 30000
#define WAIT_SLICE_S    600 /* one "wait" call at most; then ask again */

/* approvald's refusal keeps approvald's code. */
static int wire_fail(p11g_err *err, const char *what, const p11g_err *e)
{
	return p11g_err_set(err, e->code ? e->code : P11G_E_PROTOCOL, "%s: %s (%s)", what, e->msg,
	                    e->code ? e->code : "error");
}

/* The code for an operation that ended undecided or refused, as the module reports it. */
static const char *ended_code(const char *state)
{
	static const char *const codes[][2] = {{"rejected", P11G_E_REJECTED},
	                                       {"revoked", P11G_E_REVOKED},
	                                       {"expired", P11G_E_EXPIRED},
	                                       {"exhausted", P11G_E_EXHAUSTED}};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(codes); i++)
		if (!strcmp(state, codes[i][0]))
			return codes[i][1];
	return P11G_E_PROTOCOL;
}

int oci_approval_get(const struct oci_approval *a, p11g_err *err)
{
	const char *path = p11g_wire_socket_path(a->socket);
	p11g_err e = {0};
	json_t *res = NULL;

	json_t *digests = json_array(), *payloads = json_array(), *names = json_array();
	for (size_t i = 0; names && i < a->n_payloads; i++)
		json_array_append_new(names,
		                      json_string(a->payload_names ? a->payload_names[i] : ""));
	json_t *meta = a->meta ? json_object() : NULL, *oci = NULL;
	bool ok = !a->meta || meta;
	for (size_t i = 0; a->meta && a->meta[i]; i += 2)
		ok &= json_object_set_new(meta, a->meta[i], json_string(a->meta[i + 1])) == 0;
	for (size_t i = 0; i < a->n_payloads; i++) {
		json_array_append_new(digests, json_string(a->payload_digests[i]));
		if (!a->payloads)
			continue;
		char *b64 =
		    oci_b64_encode((const unsigned char *)a->payloads[i], a->payload_lens[i]);
		json_array_append_new(payloads, b64 ? json_string(b64) : NULL);
		free(b64);
	}
	if (a->registry)
		ok &= (oci = json_pack("{s:s, s:s, s:s, s:s}", "registry", a->registry,
		                       "repository", a->repository, "reference", a->reference,
		                       "digest", a->digest)) != NULL;
	json_t *req = NULL;
	if (ok && json_array_size(digests) == a->n_payloads &&
	    json_array_size(payloads) == (a->payloads ? a->n_payloads : 0) &&
	    json_array_size(names) == a->n_payloads)
		req = json_pack(
		    "{s:s, s:[{s:s, s:I}], s:s, s:o, s:O*, s:O*, s:o, s:s*, s:s*, s:O*}", "verb",
		    "request", "keys", "uri", a->key_uri, "uses", (json_int_t)a->n_payloads,
		    "description", a->description, "digests", digests, "payloads",
		    a->payloads ? payloads : NULL, "oci", oci, "payload_names", names, "name",
		    a->name, "id_token", a->id_token, "meta", meta);
	else {
		json_decref(digests);
		json_decref(names);
	}
	json_decref(payloads);
	json_decref(oci);
	json_decref(meta);
	if (!req)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	int r = p11g_wire_call_path(path, req, &res, CALL_TIMEOUT_MS, &e);
	json_decref(req);
	if (r < 0)
		return wire_fail(err, "approvald refused the request", &e);
	json_int_t id = json_integer_value(json_object_get(res, "id"));
	const char *jstate = json_string_value(json_object_get(res, "state"));
	char state[32];
	snprintf(state, sizeof(state), "%s", jstate ? jstate : "");
	json_decref(res);
	if (id <= 0 || !state[0])
		return p11g_err_set(err, P11G_E_PROTOCOL,
		                    "approvald's reply to the request has no operation id");
	if (strcmp(state, "pending"))
		fprintf(stderr,
		        "ocisign: approval request %" JSON_INTEGER_FORMAT
		        " filed for %s (%zu %s); approved by policy\n",
		        id, a->key_uri, a->n_payloads,
		        a->n_payloads == 1 ? "signature" : "signatures");
	else
		fprintf(stderr,
		        "ocisign: approval request %" JSON_INTEGER_FORMAT
		        " filed for %s (%zu %s); waiting for approval (approvald approve "
		        "%" JSON_INTEGER_FORMAT ")\n",
		        id, a->key_uri, a->n_payloads,
		        a->n_payloads == 1 ? "signature" : "signatures", id);
	fflush(stderr);

	int64_t deadline = p11g_mono_us() + (int64_t)a->timeout_s * 1000000;
	while (!strcmp(state, "pending")) {
		int64_t left = (deadline - p11g_mono_us()) / 1000000;
		if (left <= 0)
			return p11g_err_set(err, P11G_E_TIMEOUT,
			                    "operation %" JSON_INTEGER_FORMAT
			                    " is still pending after %lds",
			                    id, a->timeout_s);
		if (left > WAIT_SLICE_S)
			left = WAIT_SLICE_S;
		json_t *w = json_pack("{s:s, s:I, s:I}", "verb", "wait", "id", id, "timeout",
		                      (json_int_t)left);
		res = NULL;
		r = p11g_wire_call_path(path, w, &res, (int)(left + 30) * 1000, &e);
		json_decref(w);
		if (r < 0)
			return wire_fail(err, "waiting for approval", &e);
		const json_t *op = json_object_get(res, "operation");
		const char *jst = json_string_value(json_object_get(op, "state"));
		snprintf(state, sizeof(state), "%s", jst ? jst : "?");
		if (strcmp(state, "pending") && strcmp(state, "approved")) {
			const json_t *why = json_object_get(op, "rejection");
			if (!why)
				why = json_object_get(op, "revocation");
			const char *reason = json_string_value(json_object_get(why, "reason"));
			const char *by = json_string_value(json_object_get(why, "user"));
			p11g_err_set(err, ended_code(state),
			             "operation %" JSON_INTEGER_FORMAT " was %s%s%s%s%s", id, state,
			             by ? " by " : "", by ? by : "", reason ? ": " : "",
			             reason ? reason : "");
			json_decref(res);
			return -1;
		}
		json_decref(res);
	}
	fprintf(stderr, "ocisign: operation %" JSON_INTEGER_FORMAT " approved\n", id);
	return 0;
}
