/* cosign's .sig layout: build the signature manifest (append, skip duplicates) and push it. */
#include <jansson.h>

#include "attach.h"

#define CREATED_ZERO "0001-01-01T00:00:00Z" /* what go-containerregistry writes for "no time" */

void oci_sig_tag(const char *digest, char out[80])
{
	snprintf(out, 80, "sha256-%s.sig", digest + 7);
}

static char *dump(const json_t *j, size_t *ret_len)
{
	char *s = json_dumps(j, JSON_COMPACT);
	if (s && ret_len)
		*ret_len = strlen(s);
	return s;
}

static bool same_text(const char *a, const char *b)
{
	return a == b || (a && b && !strcmp(a, b));
}

int oci_sig_manifest_add(const unsigned char *existing, size_t elen, const char *payload_digest,
                         size_t payload_size, const char *sig_b64, const char *cert_pem,
                         const char *chain_pem, char **ret_manifest, size_t *ret_mlen,
                         char **ret_config, size_t *ret_clen, p11g_err *err)
{
	json_t *layers = json_array(), *old = NULL, *l;
	json_t *diff_ids = json_array(), *history = json_array();
	json_t *cfg = NULL, *man = NULL;
	size_t i;
	int res = -1;

	if (existing) {
		json_error_t jerr;
		old = json_loadb((const char *)existing, elen, JSON_REJECT_DUPLICATES, &jerr);
		const json_t *ol = json_object_get(old, "layers");
		const char *mt = json_string_value(json_object_get(old, "mediaType"));
		if (!old || !json_is_array(ol) || (mt && strcmp(mt, OCI_MT_OCI_MANIFEST))) {
			p11g_err_set(
			    err, P11G_E_PROTOCOL,
			    "the existing signature manifest is not an OCI image manifest");
			goto out;
		}
		if (json_array_size(ol) >= OCI_SIG_LAYERS_MAX) {
			p11g_err_set(
			    err, P11G_E_PROTOCOL,
			    "the existing signature manifest has %zu layers, the most ocisign "
			    "adds to",
			    json_array_size(ol));
			goto out;
		}
		json_array_foreach(ol, i, l)
		{
			const char *d = json_string_value(json_object_get(l, "digest"));
			const char *s = json_string_value(
			    json_object_get(json_object_get(l, "annotations"), OCI_ANN_SIGNATURE));
			if (!d || !oci_digest_valid(d)) {
				p11g_err_set(err, P11G_E_PROTOCOL,
				             "layer %zu of the existing signature manifest has no "
				             "sha256 digest",
				             i);
				goto out;
			}
			if (!strcmp(d, payload_digest) && s && !strcmp(s, sig_b64)) {
				/* RSA and Ed25519 sign the same payload alike: the same signature
				 * with another certificate (a renewal) replaces the layer */
				const json_t *ann = json_object_get(l, "annotations");
				const char *c = json_string_value(
				               json_object_get(ann, OCI_ANN_CERTIFICATE)),
				           *ch = json_string_value(
				               json_object_get(ann, OCI_ANN_CHAIN));
				if (same_text(c, cert_pem) &&
				    same_text(ch, cert_pem ? (chain_pem ? chain_pem : "") : NULL)) {
					res = 1;
					goto out;
				}
				continue;
			}
			json_array_append(layers, l);
		}
	}
	/* cosign's annotations, in the order Go writes a map's keys (sorted) */
	json_t *layer = json_pack("{s:s, s:I, s:s, s:{s:s}}", "mediaType", OCI_MT_SIMPLESIGNING,
	                          "size", (json_int_t)payload_size, "digest", payload_digest,
	                          "annotations", OCI_ANN_SIGNATURE, sig_b64);
	json_t *sig_ann = json_object_get(layer, "annotations");
	/* layers owns the layer from here, even when the append fails */
	if (!layer || json_array_append_new(layers, layer) < 0 ||
	    (cert_pem &&
	     (json_object_set_new(sig_ann, OCI_ANN_CERTIFICATE, json_string(cert_pem)) < 0 ||
	      json_object_set_new(sig_ann, OCI_ANN_CHAIN, json_string(chain_pem ? chain_pem : "")) <
	          0))) {
		p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
		goto out;
	}
	json_array_foreach(layers, i, l)
	{
		/* payload layers are uncompressed: the diff id is the digest */
		json_array_append(diff_ids, json_object_get(l, "digest"));
		json_array_append_new(history, json_pack("{s:s}", "created", CREATED_ZERO));
	}
	cfg = json_pack("{s:s, s:s, s:O, s:s, s:{s:s, s:O}, s:{}}", "architecture", "", "created",
	                CREATED_ZERO, "history", history, "os", "", "rootfs", "type", "layers",
	                "diff_ids", diff_ids, "config");
	size_t clen = 0;
	char *config = cfg ? dump(cfg, &clen) : NULL;
	char cdigest[OCI_DIGEST_LEN + 1];
	if (!config) {
		p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
		goto out;
	}
	oci_sha256_digest(config, clen, cdigest);
	man = json_pack("{s:i, s:s, s:{s:s, s:I, s:s}, s:O}", "schemaVersion", 2, "mediaType",
	                OCI_MT_OCI_MANIFEST, "config", "mediaType", OCI_MT_OCI_CONFIG, "size",
	                (json_int_t)clen, "digest", cdigest, "layers", layers);
	const json_t *ann = json_object_get(old, "annotations");
	if (man && json_is_object(ann))
		json_object_set(man, "annotations", (json_t *)ann);
	char *manifest = man ? dump(man, ret_mlen) : NULL;
	if (!manifest) {
		free(config);
		p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
		goto out;
	}
	*ret_manifest = manifest;
	*ret_config = config;
	*ret_clen = clen;
	res = 0;
out:
	json_decref(old);
	json_decref(layers);
	json_decref(diff_ids);
	json_decref(history);
	json_decref(cfg);
	json_decref(man);
	return res;
}

int oci_attach(struct oci_reg *r, const char *image_digest, const void *payload, size_t plen,
               const char *sig_b64, const char *cert_pem, const char *chain_pem, bool *ret_skipped,
               p11g_err *err)
{
	char tag[80], pdigest[OCI_DIGEST_LEN + 1];
	struct oci_manifest old = {0};
	char *manifest = NULL, *config = NULL;
	size_t mlen = 0, clen = 0;
	int res = -1;

	oci_sig_tag(image_digest, tag);
	oci_sha256_digest(payload, plen, pdigest);
	int got = oci_reg_get_manifest(r, tag, true, &old, err);
	if (got < 0)
		return -1;
	int b = oci_sig_manifest_add(got == 0 ? old.body.data : NULL, old.body.len, pdigest, plen,
	                             sig_b64, cert_pem, chain_pem, &manifest, &mlen, &config, &clen,
	                             err);
	if (b < 0)
		goto out;
	*ret_skipped = b == 1;
	if (b == 1) {
		res = 0;
		goto out;
	}
	if (oci_reg_put_blob(r, payload, plen, err) < 0 ||
	    oci_reg_put_blob(r, config, clen, err) < 0 ||
	    oci_reg_put_manifest(r, tag, OCI_MT_OCI_MANIFEST, manifest, mlen, err) < 0)
		goto out;
	res = 0;
out:
	oci_manifest_free(&old);
	free(manifest);
	free(config);
	return res;
}
