/* Registry credentials: challenge parsing, docker config.json lookup, token replies. */
#include <jansson.h>

#include "auth.h"

static bool is_tchar(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Copies a parameter value into out (bounded); -1 when it does not fit. */
static int keep(char *out, size_t outlen, const char *v, size_t vlen)
{
	if (vlen >= outlen)
		return -1;
	memcpy(out, v, vlen);
	out[vlen] = '\0';
	return 0;
}

int oci_challenge_parse(const char *s, size_t len, struct oci_challenge *ret)
{
	struct oci_challenge best = {.scheme = OCI_AUTH_NONE}, cur;
	size_t i = 0;
	char val[1024];

	while (i < len) {
		/* scheme */
		while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == ','))
			i++;
		if (i >= len)
			break;
		size_t st = i;
		while (i < len && is_tchar(s[i]))
			i++;
		if (i == st)
			return -1;
		memset(&cur, 0, sizeof(cur));
		if (i - st == 6 && !strncasecmp(s + st, "bearer", 6))
			cur.scheme = OCI_AUTH_BEARER;
		else if (i - st == 5 && !strncasecmp(s + st, "basic", 5))
			cur.scheme = OCI_AUTH_BASIC;
		else
			cur.scheme = OCI_AUTH_NONE; /* another scheme: skip its parameters */
		/* parameters: name=value, until a token not followed by '=' starts the next
		 * challenge */
		for (;;) {
			size_t save = i;
			while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == ','))
				i++;
			size_t ns = i;
			while (i < len && is_tchar(s[i]))
				i++;
			size_t nlen = i - ns;
			while (i < len && (s[i] == ' ' || s[i] == '\t'))
				i++;
			if (nlen == 0 || i >= len || s[i] != '=') {
				/* end of this challenge (or a token68 we do not use) */
				if (nlen == 0) {
					if (i < len && s[i] != ',')
						return -1;
					break;
				}
				i = save;
				break;
			}
			i++; /* '=' */
			while (i < len && (s[i] == ' ' || s[i] == '\t'))
				i++;
			size_t vlen = 0;
			if (i < len && s[i] == '"') {
				i++;
				for (;;) {
					if (i >= len)
						return -1; /* unterminated quoted string */
					char c = s[i++];
					if (c == '"')
						break;
					if (c == '\\') {
						if (i >= len)
							return -1;
						c = s[i++];
					}
					if (vlen + 1 >= sizeof(val))
						return -1;
					val[vlen++] = c;
				}
			} else {
				size_t vs = i;
				while (i < len && is_tchar(s[i]))
					i++;
				if (i - vs >= sizeof(val))
					return -1;
				vlen = i - vs;
				memcpy(val, s + vs, vlen);
			}
			val[vlen] = '\0';
			int r = 0;
			if (nlen == 5 && !strncasecmp(s + ns, "realm", 5))
				r = keep(cur.realm, sizeof(cur.realm), val, vlen);
			else if (nlen == 7 && !strncasecmp(s + ns, "service", 7))
				r = keep(cur.service, sizeof(cur.service), val, vlen);
			else if (nlen == 5 && !strncasecmp(s + ns, "scope", 5))
				r = keep(cur.scope, sizeof(cur.scope), val, vlen);
			else if (nlen == 5 && !strncasecmp(s + ns, "error", 5))
				r = keep(cur.error, sizeof(cur.error), val, vlen);
			if (r < 0)
				return -1;
			while (i < len && (s[i] == ' ' || s[i] == '\t'))
				i++;
			if (i < len && s[i] != ',')
				return -1;
		}
		if (cur.scheme == OCI_AUTH_BEARER && !cur.realm[0])
			return -1;
		if (cur.scheme == OCI_AUTH_BEARER ||
		    (cur.scheme == OCI_AUTH_BASIC && best.scheme == OCI_AUTH_NONE))
			best = cur;
	}
	if (best.scheme == OCI_AUTH_NONE)
		return -1;
	*ret = best;
	return 0;
}

/* "https://host:port/v1/" -> "host:port" */
static void auth_key_host(const char *key, char *out, size_t outlen)
{
	const char *p = strstr(key, "://");
	p = p ? p + 3 : key;
	size_t n = strcspn(p, "/");
	snprintf(out, outlen, "%.*s", (int)n, p);
}

static bool host_matches(const char *registry, const char *host)
{
	if (!strcmp(registry, host))
		return true;
	/* Docker Hub goes by three names. */
	static const char *const hub[] = {"docker.io", "index.docker.io", "registry-1.docker.io"};
	bool a = false, b = false;
	for (size_t i = 0; i < P11G_ARRAY_SIZE(hub); i++) {
		a |= !strcmp(registry, hub[i]);
		b |= !strcmp(host, hub[i]);
	}
	return a && b;
}

static int creds_from_file(const char *path, const char *registry, char **ret, p11g_err *err)
{
	_cleanup_buf_ struct oci_buf buf = {0};
	json_error_t jerr;
	char host[300];

	if (oci_read_file(path, OCI_SMALL_MAX, &buf, "registry auth file", err) < 0)
		return -1;
	json_t *root = json_loadb((const char *)buf.data, buf.len, 0, &jerr);
	if (!root)
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "%s:%d: not JSON: %s", path, jerr.line,
		                    jerr.text);
	const json_t *auths = json_object_get(root, "auths"), *entry, *found = NULL;
	const char *key;
	json_object_foreach((json_t *)auths, key, entry)
	{
		auth_key_host(key, host, sizeof(host));
		if (host_matches(registry, host)) {
			found = entry;
			if (!strcmp(key, registry))
				break; /* an exact key wins over a URL form */
		}
	}
	int r = 0;
	*ret = NULL;
	if (found) {
		const char *auth = json_string_value(json_object_get(found, "auth"));
		const char *user = json_string_value(json_object_get(found, "username"));
		const char *pass = json_string_value(json_object_get(found, "password"));
		unsigned char *dec = NULL;
		size_t dlen;
		if (auth && *auth) {
			if (oci_b64_decode(auth, strlen(auth), &dec, &dlen) < 0 ||
			    !memchr(dec, ':', dlen))
				r = p11g_err_set(
				    err, P11G_E_BAD_REQUEST,
				    "%s: the \"auth\" of %s is not base64 of USER:PASSWORD", path,
				    registry);
			else if (!(*ret = strdup(auth)))
				r = p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
			if (dec)
				p11g_freezero(dec, dlen);
		} else if (user && pass) {
			char *up = NULL;
			int n = asprintf(&up, "%s:%s", user, pass);
			if (n < 0 || !(*ret = oci_b64_encode((unsigned char *)up, (size_t)n)))
				r = p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
			if (n >= 0)
				p11g_freezero(up, (size_t)n);
		}
	}
	json_decref(root);
	return r;
}

int oci_creds_lookup(const char *registry, const char *creds_opt, char **ret, p11g_err *err)
{
	*ret = NULL;
	if (creds_opt) {
		unsigned char *dec = NULL;
		size_t dlen = 0;
		if (strchr(creds_opt, ':')) {
			*ret = oci_b64_encode((const unsigned char *)creds_opt, strlen(creds_opt));
			return *ret ? 0 : p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
		}
		/* An ECR authorization token is already base64("AWS:password"): used as it is. */
		bool token = oci_b64_decode(creds_opt, strlen(creds_opt), &dec, &dlen) == 0 &&
		             memchr(dec, ':', dlen);
		if (dec)
			p11g_freezero(dec, dlen);
		if (!token)
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "--creds takes USER:PASSWORD or a base64 USER:PASSWORD "
			                    "(an ECR authorization token)");
		*ret = strdup(creds_opt);
		return *ret ? 0 : p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	}
	const char *file = getenv("REGISTRY_AUTH_FILE");
	if (file && *file)
		return creds_from_file(file, registry, ret, err);
	char path[4096];
	const char *dir = getenv("DOCKER_CONFIG"), *home = getenv("HOME");
	if (dir && *dir)
		snprintf(path, sizeof(path), "%s/config.json", dir);
	else if (home && *home)
		snprintf(path, sizeof(path), "%s/.docker/config.json", home);
	else
		return 0;
	if (access(path, F_OK) < 0)
		return 0; /* no docker login yet: anonymous */
	return creds_from_file(path, registry, ret, err);
}

int oci_token_parse(const char *body, size_t len, char **ret_token, long *ret_expires_in,
                    p11g_err *err)
{
	json_error_t jerr;
	json_t *root = json_loadb(body, len, 0, &jerr);
	if (!root)
		return p11g_err_set(err, P11G_E_PROTOCOL, "the token service's reply is not JSON");
	const char *tok = json_string_value(json_object_get(root, "token"));
	if (!tok || !*tok)
		tok = json_string_value(json_object_get(root, "access_token"));
	json_t *exp = json_object_get(root, "expires_in");
	long expires = 60;
	if (json_is_integer(exp) && json_integer_value(exp) > 0 &&
	    json_integer_value(exp) < 7 * 86400)
		expires = (long)json_integer_value(exp);
	int r = 0;
	if (!tok || !*tok)
		r = p11g_err_set(err, P11G_E_PROTOCOL, "the token service's reply has no token");
	else if (strpbrk(tok, "\r\n"))
		r = p11g_err_set(err, P11G_E_PROTOCOL,
		                 "the token service's reply has a token with a line break");
	else if (!(*ret_token = strdup(tok)))
		r = p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	else
		*ret_expires_in = expires;
	json_decref(root);
	return r;
}
