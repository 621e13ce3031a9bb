/* Registry credentials: WWW-Authenticate challenges, docker config.json / --creds, bearer tokens.
 */
#ifndef OCISIGN_AUTH_H
#define OCISIGN_AUTH_H

#include "ocisign.h"

enum oci_auth_scheme { OCI_AUTH_NONE, OCI_AUTH_BASIC, OCI_AUTH_BEARER };

struct oci_challenge {
	enum oci_auth_scheme scheme;
	char realm[1024];
	char service[256];
	char scope[1024];
	char error[64]; /* "insufficient_scope", "invalid_token", or "" */
};

/* Parses a WWW-Authenticate value (RFC 7235: one or more challenges, each
 * a scheme and comma-separated name=token or name="quoted \" string"
 * parameters).  Picks Bearer when offered, else Basic.  Returns 0, or -1
 * for a header with neither, a syntax error, or a value too long to keep;
 * a Bearer challenge must name a realm. */
int oci_challenge_parse(const char *value, size_t len, struct oci_challenge *ret);

/* Finds the Basic credential for a registry: --creds USER:PASS (or an ECR
 * authorization token, base64 of AWS:PASSWORD, used as it is) first, then
 * $REGISTRY_AUTH_FILE, else $DOCKER_CONFIG/config.json, else
 * ~/.docker/config.json, in its "auths" (keys may carry a scheme or path;
 * Docker Hub's are docker.io, index.docker.io and
 * https://index.docker.io/v1/).  "auth" is base64("user:pass") and used as
 * it is (ECR's authorization tokens are exactly that); "username" and
 * "password" members work too.  *ret is the base64 credential, or NULL
 * when none is configured.  -1 for a file or entry that cannot be used. */
int oci_creds_lookup(const char *registry, const char *creds_opt, char **ret, p11g_err *err);

/* Reads a token endpoint's reply: "token" or "access_token", and its
 * lifetime ("expires_in", default 60 s as the token spec says). */
int oci_token_parse(const char *body, size_t len, char **ret_token, long *ret_expires_in,
                    p11g_err *err);

#endif
