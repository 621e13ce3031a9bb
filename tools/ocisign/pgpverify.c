/* OpenPGP verification through GPGME (pgpverify.h): GnuPG reads OpenPGP, not we. */
#include <ftw.h>
#include <gpgme.h>
#include <strings.h>

#include "pgpverify.h"

#define KEYS_MAX 64

struct oci_pgp_verifier {
	gpgme_ctx_t ctx;
	char home[256];
	char *fprs[KEYS_MAX];
	size_t n;
};

static int remove_entry(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st, (void)flag, (void)f;
	remove(p);
	return 0;
}

void oci_pgp_verifier_close(struct oci_pgp_verifier *v)
{
	if (!v)
		return;
	if (v->ctx)
		gpgme_release(v->ctx);
	/* the GnuPG home holds only the imported public keys, and goes */
	if (v->home[0])
		nftw(v->home, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	for (size_t i = 0; i < v->n; i++)
		free(v->fprs[i]);
	free(v);
}

/* Calls fn for each primary key GnuPG lists in the home (stops when fn returns true). */
static bool each_key(struct oci_pgp_verifier *v, bool (*fn)(gpgme_subkey_t, void *), void *ud)
{
	gpgme_key_t key;
	bool stop = false;
	if (gpgme_op_keylist_start(v->ctx, NULL, 0))
		return false;
	while (!gpgme_op_keylist_next(v->ctx, &key)) {
		if (!stop && key->subkeys)
			stop = fn(key->subkeys, ud);
		gpgme_key_unref(key);
	}
	gpgme_op_keylist_end(v->ctx);
	return stop;
}

struct find_fpr {
	const char *fpr;
	uint32_t created;
};

static bool is_fpr(gpgme_subkey_t k, void *ud)
{
	struct find_fpr *f = ud;
	if (!k->fpr || strcasecmp(k->fpr, f->fpr) || k->timestamp <= 0)
		return false;
	f->created = (uint32_t)k->timestamp;
	return true;
}

bool oci_pgp_verifier_has(struct oci_pgp_verifier *v, const char *fpr, uint32_t *created)
{
	struct find_fpr f = {fpr, 0};
	if (!each_key(v, is_fpr, &f))
		return false;
	*created = f.created;
	return true;
}

struct times {
	uint32_t *t;
	size_t n, max;
};

static bool add_time(gpgme_subkey_t k, void *ud)
{
	struct times *t = ud;
	if (k->timestamp > 0 && t->n < t->max)
		t->t[t->n++] = (uint32_t)k->timestamp;
	return false;
}

size_t oci_pgp_verifier_times(struct oci_pgp_verifier *v, uint32_t *times, size_t max)
{
	struct times t = {times, 0, max};
	each_key(v, add_time, &t);
	return t.n;
}

size_t oci_pgp_verifier_keys(const struct oci_pgp_verifier *v)
{
	return v->n;
}

int oci_pgp_verifier_open(const char *keyring_file, struct oci_pgp_verifier **ret, p11g_err *err)
{
	_cleanup_buf_ struct oci_buf kr = {0};
	struct oci_pgp_verifier *v = calloc(1, sizeof(*v));
	gpgme_data_t d = NULL;
	gpgme_error_t ge;
	const char *tmp = getenv("TMPDIR");

	*ret = NULL;
	if (!v)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	if (oci_read_file(keyring_file, OCI_SMALL_MAX, &kr, "keyring", err) < 0)
		goto fail;
	gpgme_check_version(NULL);
	snprintf(v->home, sizeof(v->home), "%s/ocisign-gnupg-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(v->home)) {
		p11g_err_set(err, P11G_E_INTERNAL, "cannot create a GnuPG home in %s: %s",
		             tmp && *tmp ? tmp : "/tmp", strerror(errno));
		v->home[0] = '\0';
		goto fail;
	}
	if ((ge = gpgme_new(&v->ctx)) ||
	    (ge = gpgme_set_protocol(v->ctx, GPGME_PROTOCOL_OpenPGP)) ||
	    (ge = gpgme_ctx_set_engine_info(v->ctx, GPGME_PROTOCOL_OpenPGP, NULL, v->home)) ||
	    (ge = gpgme_data_new_from_mem(&d, (const char *)kr.data, kr.len, 0))) {
		p11g_err_set(err, P11G_E_INTERNAL, "GPGME: %s (is gnupg installed?)",
		             gpgme_strerror(ge));
		goto fail;
	}
	ge = gpgme_op_import(v->ctx, d);
	gpgme_data_release(d);
	gpgme_import_result_t res = ge ? NULL : gpgme_op_import_result(v->ctx);
	for (gpgme_import_status_t s = res ? res->imports : NULL; s; s = s->next) {
		bool dup = false;
		if (s->result || !s->fpr)
			continue;
		for (size_t i = 0; i < v->n; i++)
			dup |= !strcasecmp(v->fprs[i], s->fpr);
		if (!dup && v->n < KEYS_MAX && !(v->fprs[v->n++] = strdup(s->fpr))) {
			v->n--;
			p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
			goto fail;
		}
	}
	if (v->n == 0) {
		p11g_err_set(err, P11G_E_BAD_REQUEST,
		             "%s holds no OpenPGP public key GnuPG imports%s%s", keyring_file,
		             ge ? ": " : "", ge ? gpgme_strerror(ge) : "");
		goto fail;
	}
	*ret = v;
	return 0;
fail:
	oci_pgp_verifier_close(v);
	return -1;
}

int oci_pgp_verify(struct oci_pgp_verifier *v, const void *msg, size_t len, struct oci_buf *ret,
                   char fpr[64], p11g_err *err)
{
	gpgme_data_t sig = NULL, plain = NULL;
	gpgme_error_t ge;
	int res = -1;

	if ((ge = gpgme_data_new_from_mem(&sig, msg, len, 0)) || (ge = gpgme_data_new(&plain)))
		goto gpgme_failed;
	if ((ge = gpgme_op_verify(v->ctx, sig, NULL, plain))) {
		p11g_err_set(err, P11G_E_BAD_SIGNATURE, "not an OpenPGP signed message (%s)",
		             gpgme_strerror(ge));
		goto out;
	}
	gpgme_verify_result_t vr = gpgme_op_verify_result(v->ctx);
	gpgme_signature_t s = vr ? vr->signatures : NULL;
	if (!s || s->next) {
		p11g_err_set(err, P11G_E_BAD_SIGNATURE, "%s",
		             s ? "more than one signature" : "no signature");
		goto out;
	}
	if (s->status) {
		p11g_err_set(err, P11G_E_BAD_SIGNATURE, "%s (key %.64s)", gpgme_strerror(s->status),
		             s->fpr ? s->fpr : "?");
		goto out;
	}
	/* as containers/image: valid but for trust, which the keyring given stands for */
	if (s->validity == GPGME_VALIDITY_NEVER || s->validity_reason || s->wrong_key_usage ||
	    (s->summary & (GPGME_SIGSUM_KEY_REVOKED | GPGME_SIGSUM_KEY_EXPIRED |
	                   GPGME_SIGSUM_SIG_EXPIRED | GPGME_SIGSUM_RED))) {
		p11g_err_set(err, P11G_E_BAD_SIGNATURE,
		             "the signature by %.64s is not valid (revoked, expired or not a "
		             "signing key)",
		             s->fpr ? s->fpr : "?");
		goto out;
	}
	bool ours = false;
	for (size_t i = 0; s->fpr && i < v->n; i++)
		ours |= !strcasecmp(v->fprs[i], s->fpr);
	if (!ours) {
		p11g_err_set(err, P11G_E_BAD_SIGNATURE, "signed by %.64s, not a key of the keyring",
		             s->fpr ? s->fpr : "?");
		goto out;
	}
	size_t plen = 0;
	char *p = gpgme_data_release_and_get_mem(plain, &plen);
	plain = NULL;
	oci_buf_init(ret, OCI_SMALL_MAX);
	if (!p || oci_buf_append(ret, p, plen) < 0) {
		gpgme_free(p);
		oci_buf_free(ret);
		p11g_err_set(err, P11G_E_BAD_SIGNATURE, "the signed data is missing or too large");
		goto out;
	}
	gpgme_free(p);
	snprintf(fpr, 64, "%s", s->fpr);
	res = 0;
	goto out;
gpgme_failed:
	p11g_err_set(err, P11G_E_INTERNAL, "GPGME: %s", gpgme_strerror(ge));
out:
	gpgme_data_release(sig);
	gpgme_data_release(plain);
	return res;
}
