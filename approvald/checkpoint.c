/* Signed audit checkpoints (checkpoint.h). */
#include "approvald/checkpoint.h"

#include <fcntl.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <syslog.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "approvald/jbuild.h"
#include "approvald/store_internal.h"
#include "p11gate/log.h"
#include "p11gate/wire.h"

#define _cleanup_json_ __attribute__((cleanup(json_decrefp)))

EVP_PKEY *p11g_checkpoint_key_load(const char *path, p11g_err *err)
{
	struct stat st;
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0 || fstat(fd, &st) < 0) {
		p11g_err_set(err, P11G_E_BAD_REQUEST, "audit_key_file %s: %m", path);
		return NULL;
	}
	if (!S_ISREG(st.st_mode)) {
		p11g_err_set(err, P11G_E_BAD_REQUEST, "audit_key_file %s is not a regular file",
		             path);
		return NULL;
	}
	/* A key others can read signs nothing anyone should trust. */
	if (st.st_uid != geteuid() || (st.st_mode & 077)) {
		p11g_err_set(err, P11G_E_BAD_REQUEST,
		             "audit_key_file %s must belong to approvald's user (uid %u) and be "
		             "readable by it alone (chmod 0600); it is uid %u mode %04o",
		             path, (unsigned)geteuid(), (unsigned)st.st_uid,
		             (unsigned)(st.st_mode & 07777));
		return NULL;
	}
	FILE *f = fdopen(fd, "r");
	if (!f) {
		p11g_err_set(err, P11G_E_INTERNAL, "audit_key_file %s: %m", path);
		return NULL;
	}
	fd = -1;
	EVP_PKEY *key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (!key) {
		p11g_err_set(err, P11G_E_BAD_REQUEST,
		             "audit_key_file %s: not a private key in PEM (unencrypted Ed25519, EC "
		             "or RSA)",
		             path);
		return NULL;
	}
	return key;
}

EVP_PKEY *p11g_checkpoint_pubkey_parse(const char *pem, size_t len, p11g_err *err)
{
	BIO *b = BIO_new_mem_buf(pem, (int)len);
	EVP_PKEY *key = b ? PEM_read_bio_PUBKEY(b, NULL, NULL, NULL) : NULL;
	if (!key && b) {
		/* the private key file itself will do: its public half is used */
		BIO_free(b);
		b = BIO_new_mem_buf(pem, (int)len);
		key = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
	}
	BIO_free(b);
	if (!key)
		p11g_err_set(err, P11G_E_BAD_REQUEST, "not a public key in PEM");
	return key;
}

EVP_PKEY *p11g_checkpoint_pubkey_b64(const char *b64, p11g_err *err)
{
	size_t len = strlen(b64);
	unsigned char der[P11G_CHECKPOINT_PUBKEY_MAX];
	EVP_PKEY *key = NULL;
	if (len == 0 || len % 4 || len > 4 * (sizeof(der) / 3)) {
		p11g_err_set(err, P11G_E_BAD_REQUEST,
		             "\"pubkey\" is not a public key (base64 DER)");
		return NULL;
	}
	int n = EVP_DecodeBlock(der, (const unsigned char *)b64, (int)len);
	size_t pad = (b64[len - 1] == '=') + (len > 1 && b64[len - 2] == '=');
	const unsigned char *p = der;
	if (n > 0 && (size_t)n > pad)
		key = d2i_PUBKEY(NULL, &p, (long)((size_t)n - pad));
	if (!key)
		p11g_err_set(err, P11G_E_BAD_REQUEST,
		             "\"pubkey\" is not a public key (base64 DER)");
	return key;
}

char *p11g_checkpoint_pubkey_to_b64(EVP_PKEY *key)
{
	unsigned char *der = NULL;
	int n = i2d_PUBKEY(key, &der);
	char *out = n > 0 ? malloc(4 * (((size_t)n + 2) / 3) + 1) : NULL;
	if (out)
		EVP_EncodeBlock((unsigned char *)out, der, n);
	OPENSSL_free(der);
	return out;
}

int p11g_checkpoint_key_id(EVP_PKEY *key, char out[80])
{
	unsigned char *der = NULL, md[32];
	unsigned int mdlen = 0;
	int n = i2d_PUBKEY(key, &der);
	if (n <= 0)
		return -1;
	int ok = EVP_Digest(der, (size_t)n, md, &mdlen, EVP_sha256(), NULL) == 1;
	OPENSSL_free(der);
	if (!ok || mdlen != sizeof(md))
		return -1;
	memcpy(out, "sha256:", 7);
	p11g_hex_encode(md, sizeof(md), out + 7);
	return 0;
}

char *p11g_checkpoint_pubkey_pem(EVP_PKEY *key)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data = NULL, *out = NULL;
	if (b && PEM_write_bio_PUBKEY(b, key) == 1) {
		long n = BIO_get_mem_data(b, &data);
		if (n > 0 && (out = malloc((size_t)n + 1))) {
			memcpy(out, data, (size_t)n);
			out[n] = '\0';
		}
	}
	BIO_free(b);
	return out;
}

int p11g_checkpoint_text(char *out, size_t n, uint64_t through, const char *head_hex,
                         int64_t signed_time)
{
	int r = snprintf(
	    out, n, "p11gate audit checkpoint v1\nthrough=%" PRIu64 "\nhead=%s\ntime=%" PRId64 "\n",
	    through, head_hex, signed_time);
	return r > 0 && (size_t)r < n ? r : -1;
}

/* Ed25519 signs the message itself; the others SHA-256 of it. */
static const EVP_MD *md_for(EVP_PKEY *key)
{
	return EVP_PKEY_get_id(key) == EVP_PKEY_ED25519 || EVP_PKEY_get_id(key) == EVP_PKEY_ED448
	           ? NULL
	           : EVP_sha256();
}

static char *sign_b64(EVP_PKEY *key, const char *msg, size_t len)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char *sig = NULL;
	char *b64 = NULL;
	size_t siglen = 0;
	if (ctx && EVP_DigestSignInit(ctx, NULL, md_for(key), NULL, key) == 1 &&
	    EVP_DigestSign(ctx, NULL, &siglen, (const unsigned char *)msg, len) == 1 &&
	    (sig = malloc(siglen)) &&
	    EVP_DigestSign(ctx, sig, &siglen, (const unsigned char *)msg, len) == 1 &&
	    (b64 = malloc(4 * ((siglen + 2) / 3) + 1)))
		EVP_EncodeBlock((unsigned char *)b64, sig, (int)siglen);
	free(sig);
	EVP_MD_CTX_free(ctx);
	return b64;
}

static int head_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct p11g_audit_head head;
	if (p11g_store_audit_head(t, &head, err) < 0)
		return -1;
	*(uint64_t *)arg = head.seq;
	return 0;
}

int p11g_checkpoint_head(p11g_store *s, uint64_t *ret, p11g_err *err)
{
	return p11g_store_read(s, head_body, ret, err);
}

/* 1 when sig over msg verifies with pub. */
static bool verify_raw(EVP_PKEY *pub, const unsigned char *sig, size_t siglen, const char *msg,
                       size_t len)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	bool ok = ctx && EVP_DigestVerifyInit(ctx, NULL, md_for(pub), NULL, pub) == 1 &&
	          EVP_DigestVerify(ctx, sig, siglen, (const unsigned char *)msg, len) == 1;
	EVP_MD_CTX_free(ctx);
	return ok;
}

EVP_PKEY *p11g_checkpoint_pubkey_der(const unsigned char *der, size_t len)
{
	const unsigned char *p = der;
	EVP_PKEY *k = len < P11G_CHECKPOINT_PUBKEY_MAX ? d2i_PUBKEY(NULL, &p, (long)len) : NULL;
	if (k && p != der + len) {
		EVP_PKEY_free(k);
		k = NULL;
	}
	return k;
}

/* The signature the token made, checked with the public key approvald holds. */
static char *sign_elsewhere(EVP_PKEY *pub, p11g_checkpoint_sign_fn sign, void *arg,
                            const char *text, size_t len, p11g_err *err)
{
	_cleanup_free_ unsigned char *sig = NULL;
	size_t siglen = 0;
	char *b64;

	if (sign(arg, text, &sig, &siglen, err) < 0)
		return NULL;
	if (!verify_raw(pub, sig, siglen, text, len)) {
		p11g_err_set(
		    err, P11G_E_INTERNAL,
		    "a signature by the audit key does not verify with the public key found "
		    "for it (do the token's private and public key objects match?)");
		return NULL;
	}
	if (!(b64 = malloc(4 * ((siglen + 2) / 3) + 1))) {
		p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
		return NULL;
	}
	EVP_EncodeBlock((unsigned char *)b64, sig, (int)siglen);
	return b64;
}

int p11g_checkpoint_probe(EVP_PKEY *pub, p11g_checkpoint_sign_fn sign, void *sign_arg,
                          p11g_err *err)
{
	static const char probe[] = "p11gate audit key probe v1\n";
	char *b64 = sign_elsewhere(pub, sign, sign_arg, probe, sizeof(probe) - 1, err);
	free(b64);
	return b64 ? 0 : -1;
}

struct write_ctx {
	EVP_PKEY *key;
	p11g_checkpoint_sign_fn sign;
	void *sign_arg;
	uint64_t through;
	char line[600];
};

static int write_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct write_ctx *c = arg;
	struct p11g_audit_head head;
	_cleanup_json_ json_t *last = NULL;
	char hex[2 * P11G_AUDIT_HASH_LEN + 1], id[80], text[300];

	c->through = 0;
	if (p11g_store_audit_head(t, &head, err) < 0)
		return -1;
	if (!head.present)
		return 0;
	/* nothing new since the last checkpoint: nothing to sign */
	if (p11g_txn_audit_get(t, head.seq, &last, err) < 0)
		return -1;
	if (p11g_checkpoint_covers_head(last, head.seq))
		return 0;
	p11g_hex_encode(head.hash, sizeof(head.hash), hex);
	int64_t now = p11g_now();
	int len = p11g_checkpoint_text(text, sizeof(text), head.seq, hex, now);
	if (len < 0 || p11g_checkpoint_key_id(c->key, id) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "cannot sign an audit checkpoint");
	_cleanup_free_ char *sig = NULL;
	if (c->sign) {
		if (!(sig = sign_elsewhere(c->key, c->sign, c->sign_arg, text, (size_t)len, err)))
			return -1;
	} else if (!(sig = sign_b64(c->key, text, (size_t)len))) {
		return p11g_err_set(err, P11G_E_INTERNAL,
		                    "cannot sign an audit checkpoint with the audit key");
	}
	_cleanup_json_ json_t *rec = json_pack(
	    "{s:s, s:I, s:s, s:I, s:s, s:s}", "event", "checkpoint", "through",
	    (json_int_t)head.seq, "head", hex, "signed", (json_int_t)now, "key", id, "sig", sig);
	if (!rec)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	if (p11g_txn_audit_append(t, rec, NULL, err) < 0)
		return -1;
	c->through = head.seq;
	snprintf(c->line, sizeof(c->line),
	         "audit checkpoint through=%" PRIu64 " head=%s time=%" PRId64 " key=%s sig=%s",
	         head.seq, hex, now, id, sig);
	return 0;
}

int p11g_checkpoint_write(p11g_store *s, EVP_PKEY *key, p11g_checkpoint_sign_fn sign,
                          void *sign_arg, uint64_t *ret_through, p11g_err *err)
{
	struct write_ctx c = {.key = key, .sign = sign, .sign_arg = sign_arg};
	if (p11g_store_write(s, write_body, &c, err) < 0)
		return -1;
	*ret_through = c.through;
	if (c.through) {
		/* a copy outside the store: syslog, and approvald's log */
		syslog(LOG_AUTHPRIV | LOG_NOTICE, "%s", c.line);
		p11g_info("%s", c.line);
	}
	return 0;
}

bool p11g_checkpoint_covers_head(const json_t *last, uint64_t seq)
{
	const char *ev = json_string_value(json_object_get(last, "event"));
	json_int_t through = json_integer_value(json_object_get(last, "through"));
	return ev && !strcmp(ev, "checkpoint") && seq > 0 && through == (json_int_t)(seq - 1);
}

int p11g_checkpoint_check(EVP_PKEY *pub, const json_t *rec, const char **why)
{
	const char *head = json_string_value(json_object_get(rec, "head")),
	           *key = json_string_value(json_object_get(rec, "key")),
	           *sig = json_string_value(json_object_get(rec, "sig"));
	const json_t *through = json_object_get(rec, "through"),
	             *signed_time = json_object_get(rec, "signed");
	char text[300], id[80];
	unsigned char raw[1024];

	if (!head || !key || !sig || !json_is_integer(through) || !json_is_integer(signed_time) ||
	    strlen(sig) > 4 * (sizeof(raw) / 3) || strlen(sig) % 4) {
		*why = "malformed checkpoint";
		return -1;
	}
	int len = p11g_checkpoint_text(text, sizeof(text), (uint64_t)json_integer_value(through),
	                               head, (int64_t)json_integer_value(signed_time));
	if (len < 0 || p11g_checkpoint_key_id(pub, id) < 0) {
		*why = "malformed checkpoint";
		return -1;
	}
	if (strcmp(id, key) != 0) {
		*why = "signed by another key";
		return 1;
	}
	int n = EVP_DecodeBlock(raw, (const unsigned char *)sig, (int)strlen(sig));
	size_t pad =
	    strlen(sig) >= 2 ? (sig[strlen(sig) - 1] == '=') + (sig[strlen(sig) - 2] == '=') : 0;
	if (n < 0 || (size_t)n < pad) {
		*why = "malformed signature";
		return -1;
	}
	if (!verify_raw(pub, raw, (size_t)n - pad, text, (size_t)len)) {
		*why = "signature does not verify";
		return 1;
	}
	return 0;
}
