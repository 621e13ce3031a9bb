/* Asking approvald for an operation pinned to payload digests, and waiting for the decision. */
#ifndef OCISIGN_APPROVAL_H
#define OCISIGN_APPROVAL_H

#include "ocisign.h"

struct oci_approval {
	const char *socket;   /* --socket, or NULL: $APPROVALD_SOCKET, else the default */
	const char *key_uri;  /* without query */
	const char *registry; /* the "oci" object approvers see (NULL: not an image) */
	const char *repository;
	const char *reference;
	const char *digest;
	const char *const *payloads; /* each payload to sign, payload_lens[i] bytes (NULL: the
	                              * digests alone, for what approvald cannot read) */
	const size_t *payload_lens;
	const char *const *payload_digests; /* "sha256:<hex>" of each payload */
	size_t n_payloads;                  /* also the number of uses asked for */
	const char *description;
	const char *name;                 /* the request's title */
	const char *const *payload_names; /* what each payload signs (its manifest) */
	const char *id_token;             /* the pipeline's ID token, or NULL */
	const char *const *meta;          /* KEY, VALUE, ..., NULL: the request's metadata */
	long timeout_s;                   /* how long to wait for the decision */
};

/* Files the request (one use per payload, every payload digest pinned, the
 * payloads themselves for approvald to read: a rule with registries signs
 * nothing else),
 * prints its id on stderr, and waits until approvers decide.  0 when
 * approved; -1 when refused (approvald's message and code, e.g.
 * registry_not_allowed), rejected, expired, revoked, unreachable or still
 * pending after timeout_s. */
int oci_approval_get(const struct oci_approval *a, p11g_err *err);

#endif
