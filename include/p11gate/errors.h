/* The stable error codes a p11g_err carries, on the wire and between components. */
#ifndef P11GATE_ERRORS_H
#define P11GATE_ERRORS_H

/*
 * Stable: the CLI, the module, ocisign and the tests rely on them.  Kept out
 * of wire.h so code that returns them (policy, key identity) need not know
 * the protocol that carries them.
 */
#define P11G_E_BAD_REQUEST      "bad_request" /* malformed or wrong-typed argument */
#define P11G_E_UNKNOWN_VERB     "unknown_verb"
#define P11G_E_NOT_FOUND        "not_found"        /* no such operation (or not visible) */
#define P11G_E_FORBIDDEN        "forbidden"        /* caller may not do this */
#define P11G_E_SELF_APPROVAL    "self_approval"    /* orderer tried to approve/reject */
#define P11G_E_NOT_APPROVER     "not_approver"     /* caller is in no approver set */
#define P11G_E_NOT_ORDERER      "not_orderer"      /* caller may not order this key */
#define P11G_E_ALREADY_APPROVED "already_approved" /* same person approving twice */
#define P11G_E_ALREADY_DECIDED  "already_decided"  /* not pending any more */
#define P11G_E_ALREADY_USED     "already_used"     /* withdraw after a use */
#define P11G_E_LIMIT            "limit_exceeded" /* uses/validity over the rule's ceiling, quotas */
#define P11G_E_NO_RULE          "no_rule"        /* request for a key no rule covers */
#define P11G_E_REGISTRY         "registry_not_allowed" /* OCI payload for another registry */
/* Refusals of a use (the module prints them). */
#define P11G_E_NO_OPERATION    "no_operation"
#define P11G_E_PENDING         "pending"
#define P11G_E_EXPIRED         "expired"
#define P11G_E_EXHAUSTED       "exhausted"
#define P11G_E_REVOKED         "revoked"
#define P11G_E_REJECTED        "rejected"
#define P11G_E_DIGEST_MISMATCH "digest_mismatch"
#define P11G_E_MECHANISM       "mechanism_not_allowed"
#define P11G_E_RAW             "raw_not_allowed"
#define P11G_E_NOT_SIGNER      "not_signer"
#define P11G_E_DENIED_DEFAULT  "denied_by_default"
/* Pipeline identity (approvald/idtoken.h): a rule asks for an ID token the request lacks, the
 * token does not verify, or its claims are not the ones the rule asks for. */
#define P11G_E_TOKEN_REQUIRED  "token_required"
#define P11G_E_TOKEN_INVALID   "token_invalid"
#define P11G_E_CLAIMS_MISMATCH "claims_mismatch"
/* Infrastructure. */
#define P11G_E_AUDIT_BROKEN "audit_broken"
#define P11G_E_STORE        "store_error" /* disk or map full, I/O: nothing was recorded */
#define P11G_E_INTERNAL     "internal"
#define P11G_E_UNAVAILABLE  "unavailable" /* client side: daemon not reachable */
#define P11G_E_PROTOCOL     "protocol"    /* client side: bad reply */
#define P11G_E_TIMEOUT      "timeout"
/* ocisign verify: no attached signature verifies with the key (or the one that does signs
 * another image).  Client side only: approvald never answers it, so wire.c does not list it. */
#define P11G_E_BAD_SIGNATURE "bad_signature"

#endif
