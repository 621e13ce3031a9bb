/* Signed audit checkpoints: approvald signs (record, its hash, time) with a key of its own and
 * appends the signature to the chain and to syslog, so that a rewrite of the records before
 * it is detected by anyone holding the public key (checkpoint.c). */
#ifndef P11GATE_CHECKPOINT_H
#define P11GATE_CHECKPOINT_H

#include <jansson.h>
#include <openssl/evp.h>

#include "approvald/store.h"

/* The audit key: a private key file (PEM: Ed25519, EC or RSA) that must belong to approvald's
 * user and be readable by it alone.  NULL with err saying why. */
EVP_PKEY *p11g_checkpoint_key_load(const char *path, p11g_err *err);
/* A public key (PEM, or the public half of a private key PEM) from text.  NULL with err. */
EVP_PKEY *p11g_checkpoint_pubkey_parse(const char *pem, size_t len, p11g_err *err);
/* The public key as a verify request carries it: base64 of its DER SubjectPublicKeyInfo, at
 * most P11G_CHECKPOINT_PUBKEY_MAX bytes of DER. */
#define P11G_CHECKPOINT_PUBKEY_MAX 4096
EVP_PKEY *p11g_checkpoint_pubkey_b64(const char *b64, p11g_err *err);
char *p11g_checkpoint_pubkey_to_b64(EVP_PKEY *key);
/* "sha256:HEX" of the key's public half (DER SubjectPublicKeyInfo), into out (80 bytes). */
int p11g_checkpoint_key_id(EVP_PKEY *key, char out[80]);
/* The public half as PEM (malloc'd), or NULL. */
char *p11g_checkpoint_pubkey_pem(EVP_PKEY *key);

/* Signs text elsewhere (the audit key on a token): the raw signature, malloc'd; -1 with err. */
typedef int (*p11g_checkpoint_sign_fn)(void *arg, const char *text, unsigned char **sig,
                                       size_t *sig_len, p11g_err *err);

/* Appends a checkpoint over the chain's head if it has records after the last checkpoint:
 * {"event": "checkpoint", "through": N, "head": HEX, "signed": TIME, "key": ID, "sig":
 * BASE64} with the signature over p11g_checkpoint_text; logs it to syslog (LOG_AUTHPRIV) and
 * stderr.  key signs, or with sign it is the public key that each signature sign makes must
 * verify with before it is appended.  0 (*ret_through the record signed, 0 when nothing was
 * new), or -1 with err (nothing appended). */
int p11g_checkpoint_write(p11g_store *s, EVP_PKEY *key, p11g_checkpoint_sign_fn sign,
                          void *sign_arg, uint64_t *ret_through, p11g_err *err);

/* Whether sign signs with the private half of pub: a probe text signed and verified.  0, or
 * -1 with err. */
int p11g_checkpoint_probe(EVP_PKEY *pub, p11g_checkpoint_sign_fn sign, void *sign_arg,
                          p11g_err *err);

/* A public key from its DER SubjectPublicKeyInfo, or NULL. */
EVP_PKEY *p11g_checkpoint_pubkey_der(const unsigned char *der, size_t len);

/* The chain head's record number (0: empty log). */
int p11g_checkpoint_head(p11g_store *s, uint64_t *ret, p11g_err *err);

/* What a checkpoint signs. */
int p11g_checkpoint_text(char *out, size_t n, uint64_t through, const char *head_hex,
                         int64_t signed_time);

/* Whether last, the record at the head (seq), is a checkpoint of the record before it: then
 * there is nothing to sign.  A checkpoint that signed a record further back (checkpoint_job.h)
 * leaves the records after that one, and itself, to the next. */
bool p11g_checkpoint_covers_head(const json_t *last, uint64_t seq);

/* A checkpoint record checked with pub: 0 when its signature verifies, 1 when it does not
 * (or names another key, in *why), -1 when the record is malformed (in *why). */
int p11g_checkpoint_check(EVP_PKEY *pub, const json_t *rec, const char **why);

#endif
