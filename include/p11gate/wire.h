/* The approvald wire protocol: framing, limits and verbs (its error codes: errors.h). */
#ifndef P11GATE_WIRE_H
#define P11GATE_WIRE_H

#include <jansson.h>

#include "p11gate/common.h"
#include "p11gate/errors.h"

/*
 * Framing
 * -------
 * Unix stream socket.  Every message, either way, is one frame:
 *
 *     uint32 length, big-endian    (1 .. P11G_FRAME_MAX)
 *     length bytes of UTF-8 JSON   (exactly one JSON object, nothing after it)
 *
 * The daemon reads the length first and refuses a zero or oversized length
 * before allocating anything; a bad frame (length, JSON, leftover bytes,
 * duplicate keys, not an object) closes that connection and nothing else.
 * A connection carries any number of request/reply pairs, strictly in turn.
 *
 * Requests
 * --------
 *     {"v": 1, "verb": "<verb>", ...arguments}
 *
 * Replies
 * -------
 *     {"v": 1, "ok": true,  "result": {...}}
 *     {"v": 1, "ok": false, "error": {"code": "<P11G_E_*>", "message": "<sentence>"}}
 *
 * Identity is never part of a request: the daemon takes uid, gid and pid from
 * SO_PEERCRED and the groups from the group database at the time of the call.
 *
 * Verbs (arguments; result)
 * -----
 * request   keys:[{uri, uses}] (1..16), valid: seconds, description, context?,
 *           digests?: ["sha256:<hex>"...], for?: principal, payloads?: [base64
 *           of a cosign simple-signing payload...] (1..64), oci?: {registry,
 *           repository, reference?, digest} (an image of the payloads)
 *           ; {id, state}
 *           A key URI is a pattern: it must not name keys of two rules, nor
 *           two entries one key; its query is dropped.  With payloads, the
 *           operation's digests are their sha256 (digests given must be among
 *           them); a key whose rule names registries needs them, each for an
 *           image in one of those registries, and signs only them.
 * list      all?: bool, state?: string, limit?, after?: id
 *           ; {operations: [op...], more: bool}
 *           (default: pending operations the caller may approve)
 * show      id ; {operation: op}
 * approve   id ; {operation: op}
 * reject    id, reason ; {operation: op}
 * withdraw  id ; {operation: op}
 * revoke    id, reason? ; {operation: op}
 * status    ; {pending, pending_for_you, approved, total, policy: {files, rules, loaded}}
 * audit     since?: seq, limit? ; {records: [record...], more: bool}
 * verify    ; {records: N, ok: true} or error audit_broken naming the record
 * key       key: keyid ; {guarded: bool, rule?: name, allow_raw: bool,
 *           mechanisms?: [names]}   (the module's "is this key guarded" query)
 * use       key: keyid, mechanism: "CKM_*", digest?: "<alg>:<hex>", raw?: bool,
 *           operation?: id ; {operation: id, remaining: N}
 *           Consumes one use durably before answering.
 * wait      id, timeout: seconds ; {operation: op} once it is no longer pending
 *           or the timeout passes (then with the pending op)
 *
 * An operation object:
 *     {id, state, orderer: {uid, user}, signer: principal, created, expires,
 *      description, context, digests: [...], keys: [{uri, rule, uses, used}],
 *      approvals: [{uid, user, time}], rejection?: {uid, user, time, reason},
 *      revocation?: {uid, user, time, reason}, needs: "sentence", oci?: {...},
 *      images?: [{reference, digest, payload_digest, annotations?}]}
 *
 * A keyid object (see keyid.h): {token: {label, manufacturer, model, serial},
 *      label, id: "<hex>", key_type?: "CKK_*"}
 */

#define P11G_WIRE_VERSION   1
#define P11G_FRAME_MAX      (64u * 1024u)
#define P11G_DEFAULT_SOCKET "/run/approvald/approvald.sock"

/*
 * Client side (blocking, used by the CLI, the module and ocisign).
 */

/* Connects to the daemon's socket (O_CLOEXEC).  Returns the fd, or -1 with
 * err = unavailable and a message naming the path and the reason. */
int p11g_wire_connect(const char *path, p11g_err *err);

/* Sends one frame holding len bytes of JSON.  0, or a negative errno
 * (-EMSGSIZE for len 0 or over P11G_FRAME_MAX, -EPIPE, ...). */
int p11g_wire_send(int fd, const char *json, size_t len);

/* Receives one frame, waiting at most timeout_ms (-1: forever) in total.
 * On success *ret_buf is a malloc'd NUL-terminated copy of the payload.
 * Errors: -ETIMEDOUT, -ECONNRESET (peer closed), -EMSGSIZE (bad length),
 * other negative errno. */
int p11g_wire_recv(int fd, char **ret_buf, size_t *ret_len, int timeout_ms);

/* Strictly decodes one frame payload: a JSON object, no duplicate keys, no
 * trailing bytes.  NULL with err = bad_request on failure. */
json_t *p11g_wire_decode(const char *buf, size_t len, p11g_err *err);

/* Encodes obj compactly; NULL if it would exceed P11G_FRAME_MAX. */
char *p11g_wire_encode(const json_t *obj, size_t *ret_len);

/* One request/reply exchange on fd.  req gets "v" added.  On ok:true returns
 * 0 and *ret_result (a new reference to the "result" object).  On ok:false
 * returns -1 with err filled from the reply's error object; on a transport
 * failure returns -1 with err = unavailable, protocol or timeout. */
int p11g_wire_call(int fd, json_t *req, json_t **ret_result, int timeout_ms, p11g_err *err);

/* Connect, call once, close. */
int p11g_wire_call_path(const char *path, json_t *req, json_t **ret_result, int timeout_ms,
                        p11g_err *err);

/* The socket path a client uses: explicit if non-NULL, else
 * $APPROVALD_SOCKET, else P11G_DEFAULT_SOCKET. */
const char *p11g_wire_socket_path(const char *explicit_path);

#endif
