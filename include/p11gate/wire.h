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
 * list      all?: bool, state?: string, limit?, after?: id, newest_first?: bool (after is then
 *           the id the walk goes on below)
 *           ; {operations: [op...], more: bool, next?: id}
 *           (default: pending operations the caller may approve; one call reads
 *           a bounded number of operations: while more, pass next as after)
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
#define P11G_FRAME_HEADER   4 /* the length */
#define P11G_FRAME_MAX      (64u * 1024u)
#define P11G_DEFAULT_SOCKET "/run/approvald/approvald.sock"

/* Every length on approvald's sockets is big-endian: this frame header, and
 * p11-kit's RPC header that approvald's PKCS#11 host checks (host_frames.c). */
static inline uint32_t p11g_be32_get(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void p11g_be32_put(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

/*
 * The frame codec: the one place that knows the header and the limits.  The
 * daemon's non-blocking reader and the client's blocking one both feed bytes
 * to a p11g_frame_reader; replies and requests are both encoded here.
 */

/* Writes the header of a len-byte payload; -EMSGSIZE for len 0 or over P11G_FRAME_MAX. */
int p11g_frame_header_encode(unsigned char hdr[P11G_FRAME_HEADER], size_t len);

/* Encodes obj as a whole frame (header and compact JSON) in one malloc'd buffer;
 * NULL if obj is not an object, its payload would exceed P11G_FRAME_MAX, or
 * out of memory. */
char *p11g_frame_encode(const json_t *obj, size_t *ret_len);

/* Reads one frame at a time from bytes as they come.  Zero-initialised it is
 * ready; the fields are its own. */
struct p11g_frame_reader {
	unsigned char header[P11G_FRAME_HEADER];
	size_t header_got;
	uint32_t len; /* the payload's, once the header is complete */
	char *body;   /* len + 1 bytes, allocated once the length was checked */
	size_t body_got;
};

/* Where the next bytes go, and how many the frame still needs (at least 1).
 * It never asks past the end of the frame, so bytes of the next one stay in
 * the socket. */
void *p11g_frame_reader_next(struct p11g_frame_reader *r, size_t *ret_want);

/* n (1 .. *ret_want) bytes were stored where next said.  1 once the frame is
 * complete (p11g_frame_reader_take it), 0 while it is not, -EMSGSIZE for a
 * length of 0 or over P11G_FRAME_MAX (checked before allocating; r->len holds
 * it), -ENOMEM.  After an error only p11g_frame_reader_clear is valid. */
int p11g_frame_reader_add(struct p11g_frame_reader *r, size_t n);

/* Whether part of a frame has been read (a peer leaving now cut one short). */
bool p11g_frame_reader_started(const struct p11g_frame_reader *r);

/* The complete frame's payload, NUL-terminated, now the caller's; the reader
 * is ready for the next frame. */
char *p11g_frame_reader_take(struct p11g_frame_reader *r, size_t *ret_len);

/* Drops a partial frame; the reader is ready for the next one. */
void p11g_frame_reader_clear(struct p11g_frame_reader *r);

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

/* The daemon's side of the envelope. */

/* The verb of a decoded request, after checking its "v"; NULL with err =
 * bad_request saying what is missing or which version this side speaks. */
const char *p11g_wire_request_verb(const json_t *req, p11g_err *err);

/* {"v", "ok": true, "result"}: steals result (also on failure); NULL when out of memory. */
json_t *p11g_wire_reply_ok(json_t *result);

/* {"v", "ok": false, "error": {code, message}}, message cut back to valid
 * UTF-8 if a bounded copy split a sequence; NULL when out of memory. */
json_t *p11g_wire_reply_error(const char *code, const char *message);

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
