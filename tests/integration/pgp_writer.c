/* pgp_writer KIND DIR: ocisign's OpenPGP writer (tools/ocisign/openpgp.c) with a software key
 * of KIND (rsa, ec, ec384, ed) made by OpenSSL, for test_openpgp_writer.py to check with GnuPG.
 * Writes DIR/key.asc (the key, user ID and self-certification) and signed messages
 * DIR/msg-*.gpg: a few plain ones and, for ECDSA and EdDSA, ones whose first or second
 * signature half starts with a zero byte (their MPIs are shorter than the half: the writer
 * must strip the zeros and GnuPG must still verify them), found by signing documents until
 * each case turns up.  Prints "DOC" lines, one per message, with what was signed. */
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <stdio.h>

#include "openpgp.h"

#define UID "Writer Test <writer@test.example>"

/* The raw signature the token would return (RSA s, ECDSA r||s, EdDSA R||S) of tbs. */
static size_t sign_raw(EVP_PKEY *pk, const struct oci_pgp_key *k, const struct oci_buf *tbs,
                       unsigned char *out)
{
	const EVP_MD *md = k->hash == P11G_PGP_SHA384 ? EVP_sha384() : EVP_sha256();
	unsigned char h[EVP_MAX_MD_SIZE], der[256];
	unsigned hl = 0;
	size_t n = 1024, dl = sizeof(der);

	if (!EVP_Digest(tbs->data, tbs->len, h, &hl, md, NULL))
		return 0;
	if (k->algo == P11G_PGP_EDDSA) {
		/* GnuPG's EdDSA signs the hash as its message */
		EVP_MD_CTX *m = EVP_MD_CTX_new();
		int ok = m && EVP_DigestSignInit(m, NULL, NULL, NULL, pk) == 1 &&
		         EVP_DigestSign(m, out, &n, h, hl) == 1;
		EVP_MD_CTX_free(m);
		return ok ? n : 0;
	}
	EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(pk, NULL);
	int ok = c && EVP_PKEY_sign_init(c) == 1;
	if (ok && k->algo == P11G_PGP_RSA)
		ok = EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING) == 1 &&
		     EVP_PKEY_CTX_set_signature_md(c, md) == 1 &&
		     EVP_PKEY_sign(c, out, &n, h, hl) == 1;
	else if (ok)
		ok = EVP_PKEY_sign(c, der, &dl, h, hl) == 1;
	EVP_PKEY_CTX_free(c);
	if (!ok)
		return 0;
	if (k->algo == P11G_PGP_RSA)
		return n;
	const unsigned char *p = der;
	ECDSA_SIG *s = d2i_ECDSA_SIG(NULL, &p, (long)dl);
	int half = k->hash == P11G_PGP_SHA384 ? 48 : 32;
	ok = s && BN_bn2binpad(ECDSA_SIG_get0_r(s), out, half) == half &&
	     BN_bn2binpad(ECDSA_SIG_get0_s(s), out + half, half) == half;
	ECDSA_SIG_free(s);
	return ok ? 2 * (size_t)half : 0;
}

static int write_file(const char *dir, const char *name, const void *p, size_t n)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	int ok = f && fwrite(p, 1, n, f) == n;
	if (f && fclose(f) != 0)
		ok = 0;
	return ok ? 0 : -1;
}

/* Signs doc as a binary document; 0, with the raw signature's halves' first bytes. */
static int sign_doc(EVP_PKEY *pk, const struct oci_pgp_key *k, const char *doc, struct oci_buf *msg,
                    unsigned char *first, unsigned char *second)
{
	struct oci_buf tbs, pkt;
	unsigned char sig[1024];
	size_t fields, sl;
	p11g_err err;

	if (oci_pgp_tbs(k, P11G_PGP_SIG_BINARY, k->created + 60, doc, strlen(doc), NULL, &tbs,
	                &fields, &err) < 0)
		return -1;
	sl = sign_raw(pk, k, &tbs, sig);
	oci_buf_init(&pkt, 1 << 16);
	int r = sl == 0 || oci_pgp_sig_packet(k, &tbs, fields, sig, sl, &pkt, &err) < 0 ||
	                oci_pgp_signed_message(k, doc, strlen(doc), &pkt, msg, &err) < 0
	            ? -1
	            : 0;
	*first = sig[0];
	*second = sig[sl / 2];
	oci_buf_free(&tbs);
	oci_buf_free(&pkt);
	return r;
}

int main(int argc, char **argv)
{
	EVP_PKEY *pk = NULL;
	struct oci_pgp_key k;
	struct oci_buf tbs, pkt;
	unsigned char sig[1024];
	size_t fields, sl;
	char *block = NULL;
	p11g_err err;

	if (argc != 3) {
		fprintf(stderr, "usage: pgp_writer rsa|ec|ec384|ed DIR\n");
		return 2;
	}
	if (!strcmp(argv[1], "ed"))
		pk = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	else if (!strcmp(argv[1], "ec"))
		pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	else if (!strcmp(argv[1], "ec384"))
		pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
	else if (!strcmp(argv[1], "rsa"))
		pk = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	if (!pk || oci_pgp_key_init(pk, 1700000000, &k, &err) < 0 ||
	    oci_pgp_tbs(&k, P11G_PGP_SIG_POSITIVE_CERT, 1700000030, NULL, 0, UID, &tbs, &fields,
	                &err) < 0) {
		fprintf(stderr, "pgp_writer: cannot make the key\n");
		return 1;
	}
	sl = sign_raw(pk, &k, &tbs, sig);
	oci_buf_init(&pkt, 1 << 16);
	if (sl == 0 || oci_pgp_sig_packet(&k, &tbs, fields, sig, sl, &pkt, &err) < 0 ||
	    oci_pgp_public_key_block(&k, UID, &pkt, &block, &err) < 0 ||
	    write_file(argv[2], "key.asc", block, strlen(block)) < 0) {
		fprintf(stderr, "pgp_writer: cannot write the key\n");
		return 1;
	}
	char fpr[OCI_PGP_FPR_HEX];
	p11g_pgp_fingerprint_hex(k.fpr, fpr);
	printf("FPR %s\n", fpr);
	/* 3 plain messages, then (not RSA) one with each half starting with a zero byte */
	bool want_first = k.algo != P11G_PGP_RSA, want_second = want_first;
	int written = 0;
	for (int i = 0; i < 20000 && (written < 3 || want_first || want_second); i++) {
		char doc[64], name[64];
		unsigned char a, b;
		struct oci_buf msg;
		snprintf(doc, sizeof(doc), "document %d", i);
		if (sign_doc(pk, &k, doc, &msg, &a, &b) < 0) {
			fprintf(stderr, "pgp_writer: cannot sign %s\n", doc);
			return 1;
		}
		bool keep = written < 3 || (want_first && a == 0) || (want_second && b == 0);
		if (keep) {
			snprintf(name, sizeof(name), "msg-%d.gpg", i);
			if (write_file(argv[2], name, msg.data, msg.len) < 0)
				return 1;
			printf("DOC %s %s%s%s\n", name, doc,
			       a == 0 ? " (first half starts with 0)" : "",
			       b == 0 ? " (second half starts with 0)" : "");
			written++;
			want_first &= a != 0;
			want_second &= b != 0;
		}
		oci_buf_free(&msg);
	}
	free(block);
	oci_buf_free(&tbs);
	oci_buf_free(&pkt);
	EVP_PKEY_free(pk);
	return want_first || want_second ? 1 : 0;
}
