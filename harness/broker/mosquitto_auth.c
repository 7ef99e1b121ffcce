/*
 * hil-auth: the harness's mosquitto 2.0 plugin (plugin API v5). It enforces the run's identity
 * table, the same policy the embedded broker asks harness.broker.credentials.IdentityTable for:
 *
 * - CONNECT (MOSQ_EVT_BASIC_AUTH): the client id must be an identity of the table, the password
 *   that identity's, and the user name either the service identity's own, or a device's IoT Hub
 *   user name "{hub}/{device id}/?..." naming this hub and this device (no module), with an
 *   api-version parameter (its value and any other parameter may be anything). A device with a key
 *   instead of a password signs in as on IoT Hub: its password is a SAS token
 *   "SharedAccessSignature sr=<url-encoded {hub}/devices/{device id}>&sig=<url-encoded base64
 *   HMAC-SHA256(key, sr + "\n" + se)>&se=<expiry>", fields in any order, each once, no other field,
 *   not expired by this host's clock (harness/broker/sas.py applies the same rules in the same
 *   order, and logs the same reasons). A DPS registration signs in under the same client id as
 *   its device may: the user name "{id scope}/registrations/{registration id}/api-version=..."
 *   says it is the registration, whose token is for "{id scope}/registrations/{registration id}"
 *   and may carry "skn=registration". A device or registration with a thumbprint instead (X.509,
 *   IoT Hub's self-signed certificate authentication) signs in with a TLS client certificate whose
 *   SHA-1 or SHA-256 digest is that thumbprint (any issuer: nothing is verified but the digest);
 *   its password is not used; a registration's certificate must also name the registration id as
 *   its common name, as DPS identifies X.509 enrollments (harness/broker/x509.py: the same rules
 *   and reasons). mosquitto asks TLS clients for a certificate only when the companion library
 *   mosquitto_tls_client_cert.c is preloaded (see there). Anything else is refused before mosquitto looks for a
 *   session under that client id, so a refused login never disconnects or takes over anyone's
 *   session.
 * - Token expiry (MOSQ_EVT_TICK): a client signed in with a SAS token is disconnected when the token
 *   expires, as IoT Hub does (mosquitto_kick_client_by_clientid); it may sign in again with a fresh
 *   one.
 * - ACL (MOSQ_EVT_ACL_CHECK): publish (WRITE) only to the identity's publish filters; subscribe
 *   and receive (SUBSCRIBE, READ) only within its subscribe filters. A subscription's own '+' and
 *   '#' are taken literally, so a client cannot widen its reach with wildcards.
 * - Relay (MOSQ_EVT_MESSAGE, after the ACL check): IoT Hub's shared request and reply topics name
 *   no device, so a PUBLISH to "$iothub/..." or "$dps/..." is routed as
 *   "hil/hub/from/{client id}/{topic}" (only the hub's service may read that), and the service's
 *   PUBLISH to "hil/hub/to/{client id}/{topic}" is delivered to that one client as "{topic}"
 *   (mosquitto_broker_publish_copy with its client id; its READ access is still checked). The
 *   rules of harness/broker/relay.py.
 *
 * The table is the file named by "plugin_opt_identities", which the harness replaces atomically
 * (write a temporary file, rename it). The file is read again at every CONNECT, so when the
 * harness's add_device() returns, the next CONNECT sees the new identity: there is no reload to
 * race with. A file that cannot be read or parsed refuses that CONNECT (logged), and the table
 * read last stays in force for connected clients.
 *
 * File format (UTF-8 text, one "key value" per line, values percent-encoded: '%', spaces,
 * control characters and bytes outside printable ASCII as %XX; '#' starts a comment line):
 *
 *   hil-identities 3              (versions 1, no "key", and 2, no "thumbprint", are read too)
 *   hub <IoT Hub host name>
 *   scope <DPS ID scope>          (version 2; required before any registration)
 *   identity <client id>          starts an identity; the keys below belong to it
 *   device <device id>            a device identity (its user name is parsed), or
 *   username <user name>          a service identity (its user name is compared), or
 *   registration <device id>      a DPS registration (the client id is its registration id) that
 *                                 is assigned this device; it needs a key (version 2)
 *   password <secret>             or, for a device only (version 2):
 *   key <base64 symmetric key>    SAS tokens signed with this key, 16-64 bytes, or (version 3):
 *   thumbprint <hex digest>       a client certificate whose SHA-1 (40 hex digits) or SHA-256 (64) digest it is
 *   publish <topic filter>        any number of each
 *   subscribe <topic filter>
 *   end                           the last line: a file without it is incomplete
 *
 * Unknown keys refuse the whole file: a key is either enforced or an error (a newer harness adds
 * keys together with the code that enforces them, in this same source).
 */

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define FORMAT_LINE "hil-identities 3"
#define FORMAT_LINE_V2 "hil-identities 2"
#define FORMAT_LINE_V1 "hil-identities 1"
#define KEY_MIN 16
#define KEY_MAX 64
#define SAS_PREFIX "SharedAccessSignature "
#define SAS_MAX 2048
#define SAS_MAX_EXPIRY_DIGITS 12
#define SHA256_BYTES 32
/* the refusals, in the words of harness/broker/sas.py */
#define SAS_MALFORMED "malformed token"
#define SAS_WRONG_RESOURCE "token for another resource"
#define SAS_BAD_SIGNATURE "token not signed with this device's key"
#define SAS_EXPIRED "token expired"
/* the refusals of a client certificate, in the words of harness/broker/x509.py */
#define X509_NO_CERTIFICATE "no client certificate"
#define X509_WRONG_THUMBPRINT "client certificate's thumbprint is not this identity's"
#define X509_WRONG_COMMON_NAME "client certificate's common name is not the registration id"
#define X509_OUT_OF_DATE "client certificate expired or not yet valid"
#define SHA1_BYTES 20
#define DPS_KEY_NAME "registration"
#define RELAY_FROM "hil/hub/from/"
#define RELAY_TO "hil/hub/to/"
#define MAX_FILE (16 * 1024 * 1024)
#define LOG_PREFIX "hil-auth: "

struct identity {
	char *client_id;
	char *device_id; /* a device: the user name is parsed */
	char *username;  /* a service: the user name is compared */
	char *registration; /* a DPS registration (client id = registration id): the device it is assigned */
	char *password;
	unsigned char *key; /* a device signing in with SAS tokens */
	size_t key_len;
	unsigned char thumbprint[SHA256_BYTES]; /* an X.509 device: its certificate's digest */
	size_t thumbprint_len; /* 0, SHA1_BYTES or SHA256_BYTES */
	char **publish;
	size_t n_publish;
	char **subscribe;
	size_t n_subscribe;
};

struct table {
	char *hub;
	char *scope;
	struct identity *ids;
	size_t n;
};

static mosquitto_plugin_id_t *plugin_id;
static char *identities_path;
static struct table current;

/* ---- the table ------------------------------------------------------------------------------ */

static void free_strings(char **list, size_t n)
{
	for(size_t i = 0; i < n; i++) free(list[i]);
	free(list);
}

static void free_table(struct table *t)
{
	for(size_t i = 0; i < t->n; i++){
		struct identity *id = &t->ids[i];
		free(id->client_id);
		free(id->device_id);
		free(id->username);
		free(id->registration);
		free(id->password);
		if(id->key) OPENSSL_cleanse(id->key, id->key_len);
		free(id->key);
		free_strings(id->publish, id->n_publish);
		free_strings(id->subscribe, id->n_subscribe);
	}
	free(t->ids);
	free(t->hub);
	free(t->scope);
	memset(t, 0, sizeof(*t));
}

/* The identity with this client id: its DPS registration when `registration`, else its device or
 * service identity (a device and its registration may share a client id). */
static const struct identity *find(const struct table *t, const char *client_id, bool registration)
{
	if(client_id == NULL) return NULL;
	for(size_t i = 0; i < t->n; i++){
		if(strcmp(t->ids[i].client_id, client_id) == 0 && (t->ids[i].registration != NULL) == registration){
			return &t->ids[i];
		}
	}
	return NULL;
}

/* Does this user name sign in to DPS ("{scope}/registrations/...")? */
static bool dps_username(const struct table *t, const char *username)
{
	if(t->scope == NULL || username == NULL) return false;
	size_t sl = strlen(t->scope);
	return strncmp(username, t->scope, sl) == 0 && strncmp(username + sl, "/registrations/", 15) == 0;
}

static int hexval(char c)
{
	if(c >= '0' && c <= '9') return c - '0';
	if(c >= 'a' && c <= 'f') return c - 'a' + 10;
	if(c >= 'A' && c <= 'F') return c - 'A' + 10;
	return -1;
}

/* Decode %XX in place. strict: any other '%' is an error (the file); else kept as is (a user name,
 * as Python's urllib.parse.unquote does). Returns false on an error or a decoded NUL byte. */
static bool percent_decode(char *s, bool strict)
{
	char *out = s;
	for(char *in = s; *in; in++){
		if(*in == '%'){
			int hi = in[1] ? hexval(in[1]) : -1;
			int lo = hi >= 0 && in[2] ? hexval(in[2]) : -1;
			if(hi >= 0 && lo >= 0 && (hi | lo)){
				*out++ = (char)(hi * 16 + lo);
				in += 2;
				continue;
			}
			if(strict) return false;
		}
		*out++ = *in;
	}
	*out = '\0';
	return true;
}

static bool push(char ***list, size_t *n, const char *value)
{
	char **grown = realloc(*list, (*n + 1) * sizeof(char *));
	if(grown == NULL) return false;
	*list = grown;
	grown[*n] = strdup(value);
	if(grown[*n] == NULL) return false;
	(*n)++;
	return true;
}

static bool set_once(char **field, const char *value)
{
	if(*field != NULL) return false;
	*field = strdup(value);
	return *field != NULL;
}

static int b64val(char c)
{
	if(c >= 'A' && c <= 'Z') return c - 'A';
	if(c >= 'a' && c <= 'z') return c - 'a' + 26;
	if(c >= '0' && c <= '9') return c - '0' + 52;
	if(c == '+') return 62;
	if(c == '/') return 63;
	return -1;
}

/* Standard base64, padded ('=' only at the end, at most two), as Python's
 * base64.b64decode(validate=True) takes it (unused low bits are ignored). Writes at most `size`
 * bytes; returns the count, or -1 when the text is not base64 or does not fit. */
static long b64decode(const char *in, unsigned char *out, size_t size)
{
	size_t len = strlen(in), pad = 0, n = 0;
	if(len == 0 || len % 4 != 0) return -1;
	while(pad < 2 && in[len - 1 - pad] == '=') pad++;
	unsigned long acc = 0;
	for(size_t i = 0; i < len - pad; i++){
		int v = b64val(in[i]);
		if(v < 0) return -1;
		acc = (acc << 6) | (unsigned long)v;
		if(i % 4 != 0){
			if(n >= size) return -1;
			out[n++] = (unsigned char)(acc >> (2 * (3 - i % 4)));
			acc &= (1UL << (2 * (3 - i % 4))) - 1;
		}
	}
	return (long)n;
}

static bool set_key(struct identity *id, const char *value)
{
	unsigned char buf[KEY_MAX];
	long n = id->key ? -1 : b64decode(value, buf, sizeof(buf));
	if(n < KEY_MIN) return false;
	id->key = malloc((size_t)n);
	if(id->key == NULL) return false;
	memcpy(id->key, buf, (size_t)n);
	id->key_len = (size_t)n;
	OPENSSL_cleanse(buf, sizeof(buf));
	return true;
}

/* A thumbprint: 40 or 64 hex digits, as harness.broker.identity_file writes it. */
static bool set_thumbprint(struct identity *id, const char *value)
{
	size_t len = strlen(value);
	if(id->thumbprint_len || (len != 2 * SHA1_BYTES && len != 2 * SHA256_BYTES)) return false;
	for(size_t i = 0; i < len; i += 2){
		int hi = hexval(value[i]), lo = hexval(value[i + 1]);
		if(hi < 0 || lo < 0) return false;
		id->thumbprint[i / 2] = (unsigned char)(hi * 16 + lo);
	}
	id->thumbprint_len = len / 2;
	return true;
}

/* Parse the file's text (modified in place) into t; on failure say why in err. */
static bool parse(char *text, struct table *t, char *err, size_t errlen)
{
	struct identity *id = NULL;
	int lineno = 0;
	char *next = text;
	bool saw_format = false, saw_end = false, v1 = false, v2 = false;

	while(next != NULL && *next != '\0'){
		char *line = next;
		char *nl = strchr(line, '\n');
		next = nl ? nl + 1 : NULL;
		if(nl) *nl = '\0';
		lineno++;
		if(!saw_format){
			v1 = strcmp(line, FORMAT_LINE_V1) == 0;
			v2 = strcmp(line, FORMAT_LINE_V2) == 0;
			if(strcmp(line, FORMAT_LINE) != 0 && !v1 && !v2){
				snprintf(err, errlen, "line 1 is not '%s' (nor '%s' or '%s')", FORMAT_LINE, FORMAT_LINE_V2,
						FORMAT_LINE_V1);
				return false;
			}
			saw_format = true;
			continue;
		}
		if(line[0] == '\0' || line[0] == '#') continue;
		if(saw_end){
			snprintf(err, errlen, "line %d follows the 'end' line", lineno);
			return false;
		}
		if(strcmp(line, "end") == 0){
			saw_end = true;
			continue;
		}
		char *value = strchr(line, ' ');
		if(value == NULL){
			snprintf(err, errlen, "line %d has no value", lineno);
			return false;
		}
		*value++ = '\0';
		if(!percent_decode(value, true)){
			snprintf(err, errlen, "line %d: bad percent-encoding", lineno);
			return false;
		}
		const char *key = line;
		bool ok;
		if(strcmp(key, "hub") == 0){
			ok = set_once(&t->hub, value);
		}else if(strcmp(key, "scope") == 0 && !v1){
			ok = set_once(&t->scope, value);
		}else if(strcmp(key, "identity") == 0){
			struct identity *grown = realloc(t->ids, (t->n + 1) * sizeof(struct identity));
			ok = grown != NULL;
			if(ok){
				t->ids = grown;
				id = &t->ids[t->n++];
				memset(id, 0, sizeof(*id));
				id->client_id = strdup(value);
				ok = id->client_id != NULL;
			}
		}else if(id == NULL){
			snprintf(err, errlen, "line %d: '%s' before the first identity", lineno, key);
			return false;
		}else if(strcmp(key, "device") == 0){
			ok = set_once(&id->device_id, value);
		}else if(strcmp(key, "username") == 0){
			ok = set_once(&id->username, value);
		}else if(strcmp(key, "registration") == 0 && !v1){
			ok = set_once(&id->registration, value);
		}else if(strcmp(key, "password") == 0){
			ok = set_once(&id->password, value);
		}else if(strcmp(key, "key") == 0 && !v1){
			ok = set_key(id, value);
			if(!ok){
				snprintf(err, errlen, "line %d: key repeated, not base64 or not %d-%d bytes", lineno, KEY_MIN, KEY_MAX);
				return false;
			}
		}else if(strcmp(key, "thumbprint") == 0 && !v1 && !v2){
			ok = set_thumbprint(id, value);
			if(!ok){
				snprintf(err, errlen, "line %d: thumbprint repeated, or not 40 or 64 hex digits", lineno);
				return false;
			}
		}else if(strcmp(key, "publish") == 0){
			ok = push(&id->publish, &id->n_publish, value);
		}else if(strcmp(key, "subscribe") == 0){
			ok = push(&id->subscribe, &id->n_subscribe, value);
		}else{
			snprintf(err, errlen, "line %d: unknown key '%s'", lineno, key);
			return false;
		}
		if(!ok){
			snprintf(err, errlen, "line %d: '%s' repeated (or out of memory)", lineno, key);
			return false;
		}
	}
	if(!saw_format || !saw_end || t->hub == NULL){
		snprintf(err, errlen, "incomplete: no '%s' line, no hub or no 'end' line", FORMAT_LINE);
		return false;
	}
	for(size_t i = 0; i < t->n; i++){
		const struct identity *x = &t->ids[i];
		int kinds = (x->device_id != NULL) + (x->username != NULL) + (x->registration != NULL);
		int secrets = (x->password != NULL) + (x->key != NULL) + (x->thumbprint_len != 0);
		if(kinds != 1 || secrets != 1 || (x->password == NULL && x->username != NULL)
				|| (x->registration != NULL && (x->password != NULL || t->scope == NULL))){
			snprintf(err, errlen, "identity '%s' needs exactly one of device, username or registration, and "
					"exactly one of password, key or thumbprint (a key or thumbprint for a device or registration "
					"only; a registration needs one of them and a scope)", x->client_id);
			return false;
		}
		for(size_t j = 0; j < i; j++){
			if(strcmp(t->ids[j].client_id, x->client_id) == 0
					&& (t->ids[j].registration != NULL) == (x->registration != NULL)){
				snprintf(err, errlen, "client id '%s' twice", x->client_id);
				return false;
			}
		}
	}
	return true;
}

/* Read the identities file into `current`. On failure `current` is kept and false returned. */
static bool reload(void)
{
	char err[256] = "";
	FILE *f = fopen(identities_path, "rb");
	if(f == NULL){
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "cannot open %s: %s", identities_path, strerror(errno));
		return false;
	}
	char *text = malloc(MAX_FILE + 1);
	size_t len = text ? fread(text, 1, MAX_FILE + 1, f) : 0;
	bool bad_read = text == NULL || ferror(f) || len > MAX_FILE;
	fclose(f);
	if(bad_read){
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "cannot read %s (or over %d bytes)", identities_path, MAX_FILE);
		free(text);
		return false;
	}
	text[len] = '\0';
	if(memchr(text, '\0', len) != NULL){
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "%s holds a NUL byte", identities_path);
		free(text);
		return false;
	}
	struct table fresh;
	memset(&fresh, 0, sizeof(fresh));
	bool ok = parse(text, &fresh, err, sizeof(err));
	free(text);
	if(!ok){
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "%s: %s; connections are refused until it is fixed",
				identities_path, err);
		free_table(&fresh);
		return false;
	}
	free_table(&current);
	current = fresh;
	return true;
}

/* ---- the policy ----------------------------------------------------------------------------- */

static bool same_secret(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	unsigned char diff = (unsigned char)(la != lb);
	for(size_t i = 0; i < la; i++) diff |= (unsigned char)(a[i] ^ b[i < lb ? i : 0]);
	return diff == 0;
}

/* "{hub}/{device}/?api-version=...&..." naming this hub and device, no module. */
static bool device_username_ok(const char *username, const char *hub, const char *device_id)
{
	const char *query = strstr(username, "/?");
	size_t hl = strlen(hub), dl = strlen(device_id);
	if(query == NULL || (size_t)(query - username) != hl + 1 + dl) return false;
	if(strncmp(username, hub, hl) != 0 || username[hl] != '/' || strncmp(username + hl + 1, device_id, dl) != 0){
		return false;
	}
	char *params = strdup(query + 2);
	if(params == NULL) return false;
	bool found = false;
	char *save = NULL;
	for(char *part = strtok_r(params, "&", &save); part && !found; part = strtok_r(NULL, "&", &save)){
		char *eq = strchr(part, '=');
		if(eq) *eq = '\0';
		found = percent_decode(part, false) && strcmp(part, "api-version") == 0;
	}
	free(params);
	return found;
}

/* Is `topic` (a topic, or a subscription filter whose own wildcards count literally) within
 * `pattern`? The same rule as harness.broker.credentials._filter_within. */
static bool within(const char *topic, const char *pattern)
{
	const char *t = topic, *p = pattern;
	for(;;){
		const char *pe = strchr(p, '/');
		size_t plen = pe ? (size_t)(pe - p) : strlen(p);
		if(plen == 1 && p[0] == '#') return true;
		if(t == NULL) return false;
		const char *te = strchr(t, '/');
		size_t tlen = te ? (size_t)(te - t) : strlen(t);
		if(!(plen == 1 && p[0] == '+') && (plen != tlen || strncmp(p, t, plen) != 0)) return false;
		if(pe == NULL) return te == NULL;
		p = pe + 1;
		t = te ? te + 1 : NULL;
	}
}

static bool allowed(char *const *filters, size_t n, const char *topic)
{
	for(size_t i = 0; i < n; i++){
		if(within(topic, filters[i])) return true;
	}
	return false;
}

/* A SAS token for `resource` under `key`, carrying no skn or skn=`key_name` (when not NULL): NULL
 * when it is good (and its expiry in *expiry), else why not (the order of
 * harness.broker.sas.verify_token: form, resource, signature, expiry). */
static const char *sas_refusal(const char *token, const unsigned char *key, size_t key_len, const char *resource,
		const char *key_name, long long *expiry)
{
	size_t plen = strlen(SAS_PREFIX), len = strlen(token);
	if(len > SAS_MAX || strncmp(token, SAS_PREFIX, plen) != 0) return SAS_MALFORMED;
	for(size_t i = 0; i < len; i++){
		if((unsigned char)token[i] > 0x7f) return SAS_MALFORMED;
	}
	char *fields = strdup(token + plen);
	if(fields == NULL) return SAS_MALFORMED;
	const char *sr = NULL, *sig = NULL, *se = NULL, *skn = NULL;
	const char *why = NULL;
	char *save = NULL;
	for(char *part = strtok_r(fields, "&", &save); part && !why; part = strtok_r(NULL, "&", &save)){
		char *eq = strchr(part, '=');
		if(eq == NULL || eq[1] == '\0'){
			why = SAS_MALFORMED;
			break;
		}
		*eq = '\0';
		const char **slot = strcmp(part, "sr") == 0 ? &sr : strcmp(part, "sig") == 0 ? &sig
			: strcmp(part, "se") == 0 ? &se : strcmp(part, "skn") == 0 ? &skn : NULL;
		if(slot == NULL || *slot != NULL) why = SAS_MALFORMED;
		else *slot = eq + 1;
	}
	/* strtok_r skips empty parts ("a&&b", a leading or trailing '&'): sas.py refuses them */
	if(!why && (strstr(token + plen, "&&") || token[plen] == '&' || token[len - 1] == '&')) why = SAS_MALFORMED;
	if(!why && skn != NULL && (key_name == NULL || strcmp(skn, key_name) != 0)) why = SAS_MALFORMED;
	if(!why && (sr == NULL || sig == NULL || se == NULL)) why = SAS_MALFORMED;
	size_t se_len = se ? strlen(se) : 0;
	if(!why && (se_len > SAS_MAX_EXPIRY_DIGITS || strspn(se, "0123456789") != se_len)) why = SAS_MALFORMED;
	unsigned char mac[SHA256_BYTES], want[SHA256_BYTES + 3];
	if(!why){
		char *sig_text = strdup(sig);
		long n = sig_text && percent_decode(sig_text, false) ? b64decode(sig_text, want, sizeof(want)) : -1;
		free(sig_text);
		if(n != SHA256_BYTES) why = SAS_MALFORMED;
	}
	if(!why){
		char *decoded = strdup(sr);
		bool same = decoded && percent_decode(decoded, false) && strcmp(decoded, resource) == 0;
		free(decoded);
		if(!same) why = SAS_WRONG_RESOURCE;
	}
	if(!why){
		size_t sr_len = strlen(sr);
		char *signed_text = malloc(sr_len + 1 + se_len + 1);
		unsigned int mac_len = 0;
		if(signed_text == NULL) why = SAS_BAD_SIGNATURE;
		else{
			memcpy(signed_text, sr, sr_len);
			signed_text[sr_len] = '\n';
			memcpy(signed_text + sr_len + 1, se, se_len + 1);
			if(HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)signed_text, sr_len + 1 + se_len,
					mac, &mac_len) == NULL || mac_len != SHA256_BYTES || CRYPTO_memcmp(mac, want, SHA256_BYTES) != 0){
				why = SAS_BAD_SIGNATURE;
			}
			free(signed_text);
		}
	}
	if(!why) *expiry = strtoll(se, NULL, 10);
	if(!why && *expiry <= (long long)time(NULL)) why = SAS_EXPIRED;
	free(fields);
	return why;
}

/* ---- callbacks ------------------------------------------------------------------------------ */

/* A client's string for the log: at most 200 bytes, anything but printable ASCII as '?', so a
 * client cannot write lines of its own into the log. */
static const char *shown(const char *s, char *buf, size_t size)
{
	size_t i = 0;
	for(; s != NULL && s[i] != '\0' && i + 1 < size; i++){
		buf[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	}
	buf[i] = '\0';
	return buf;
}

static int refuse(const char *client_id, const char *username, const char *why)
{
	char cid[201], user[201];
	mosquitto_log_printf(MOSQ_LOG_NOTICE, LOG_PREFIX "refused client id '%s' user '%s': %s",
			shown(client_id, cid, sizeof(cid)), shown(username, user, sizeof(user)), why);
	return MOSQ_ERR_AUTH;
}

/* NULL when the client's TLS certificate has the identity's thumbprint, is within its validity
 * period (nothing else of it is verified: a self-signed device certificate chains to nothing) and,
 * for a DPS registration, names the registration id as its common name (the last CN, as UTF-8);
 * else why not, in that order. */
static const char *certificate_refusal(struct mosquitto *client, const struct identity *id)
{
	X509 *cert = mosquitto_client_certificate(client);
	if(cert == NULL) return X509_NO_CERTIFICATE;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	const char *why = NULL;
	if(X509_digest(cert, id->thumbprint_len == SHA1_BYTES ? EVP_sha1() : EVP_sha256(), md, &md_len) != 1
			|| md_len != id->thumbprint_len || CRYPTO_memcmp(md, id->thumbprint, md_len) != 0){
		why = X509_WRONG_THUMBPRINT;
	}
	if(why == NULL && (X509_cmp_current_time(X509_get0_notBefore(cert)) >= 0
			|| X509_cmp_current_time(X509_get0_notAfter(cert)) <= 0)){
		why = X509_OUT_OF_DATE;
	}
	if(why == NULL && id->registration != NULL){
		X509_NAME *subject = X509_get_subject_name(cert);
		int last = -1;
		for(int i = -1; (i = X509_NAME_get_index_by_NID(subject, NID_commonName, i)) >= 0;) last = i;
		unsigned char *cn = NULL;
		int cn_len = last < 0 ? -1
			: ASN1_STRING_to_UTF8(&cn, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, last)));
		if(cn_len < 0 || (size_t)cn_len != strlen(id->client_id) || memcmp(cn, id->client_id, (size_t)cn_len) != 0){
			why = X509_WRONG_COMMON_NAME;
		}
		OPENSSL_free(cn);
	}
	X509_free(cert);
	return why;
}

/* A DPS registration: a token for "{scope}/registrations/{registration id}" (skn=registration
 * allowed; an X.509 registration's certificate was checked instead) and the user name
 * "{that resource}/api-version=...". */
static int dps_sign_in(const struct identity *id, const char *username, const char *password, long long *expiry)
{
	char *resource = malloc(strlen(current.scope) + strlen(id->client_id) + 16);
	if(resource == NULL) return refuse(id->client_id, username, "out of memory");
	sprintf(resource, "%s/registrations/%s", current.scope, id->client_id);
	const char *why = id->key ? sas_refusal(password, id->key, id->key_len, resource, DPS_KEY_NAME, expiry) : NULL;
	size_t rl = strlen(resource);
	if(why == NULL && (strncmp(username, resource, rl) != 0 || strncmp(username + rl, "/api-version=", 13) != 0)){
		why = "the user name is not this identity's";
	}
	free(resource);
	return why == NULL ? MOSQ_ERR_SUCCESS : refuse(id->client_id, username, why);
}

/* A device or service identity: its token (the expiry in *expiry), password or certificate (checked
 * before), and its user name. */
static int hub_sign_in(const struct identity *id, const char *username, const char *password, long long *expiry)
{
	if(id->key != NULL){
		char *resource = malloc(strlen(current.hub) + strlen(id->device_id) + 10);
		if(resource == NULL) return refuse(id->client_id, username, "out of memory");
		sprintf(resource, "%s/devices/%s", current.hub, id->device_id);
		const char *why = sas_refusal(password, id->key, id->key_len, resource, NULL, expiry);
		free(resource);
		if(why != NULL) return refuse(id->client_id, username, why);
	}else if(id->password != NULL && !same_secret(id->password, password)){
		return refuse(id->client_id, username, "wrong password");
	}
	bool user_ok = id->device_id
		? device_username_ok(username, current.hub, id->device_id)
		: strcmp(id->username, username) == 0;
	if(!user_ok) return refuse(id->client_id, username, "the user name is not this identity's");
	return MOSQ_ERR_SUCCESS;
}

/* ---- token expiry ---------------------------------------------------------------------------- */

/* IoT Hub ends a connection signed in with a SAS token when the token expires. The client ids
 * signed in with a token and when it expires; the tick callback kicks them then. An entry is
 * replaced by its client id's next sign-in (a fresh token, or none: removed), never removed when a
 * client disconnects: a client taken over by a new connection of its own client id disconnects
 * after the new one signed in. Kicking a client id no one uses is harmless. */
struct expiring {
	char *client_id;
	long long expiry;
};
static struct expiring *expiring;
static size_t n_expiring;

static void expiring_remove(size_t i)
{
	free(expiring[i].client_id);
	expiring[i] = expiring[--n_expiring];
}

static void expiring_set(const char *client_id, long long expiry)
{
	for(size_t i = 0; i < n_expiring; i++){
		if(strcmp(expiring[i].client_id, client_id) == 0){
			expiring_remove(i);
			break;
		}
	}
	if(expiry == 0) return;
	struct expiring *grown = realloc(expiring, (n_expiring + 1) * sizeof(*expiring));
	char *copy = strdup(client_id);
	if(grown == NULL || copy == NULL){
		if(grown != NULL) expiring = grown;
		free(copy);
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "out of memory: client '%s' is not disconnected when its "
				"token expires", client_id);
		return;
	}
	expiring = grown;
	expiring[n_expiring++] = (struct expiring){copy, expiry};
}

static int on_tick(int event, void *event_data, void *userdata)
{
	(void)event;
	(void)event_data;
	(void)userdata;
	long long now = (long long)time(NULL);
	for(size_t i = 0; i < n_expiring;){
		if(expiring[i].expiry > now){
			i++;
			continue;
		}
		char shown_id[201];
		mosquitto_log_printf(MOSQ_LOG_NOTICE, LOG_PREFIX "client '%s' disconnected: its token expired",
				shown(expiring[i].client_id, shown_id, sizeof(shown_id)));
		mosquitto_kick_client_by_clientid(expiring[i].client_id, false);
		expiring_remove(i);
	}
	return MOSQ_ERR_SUCCESS;
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	const char *client_id = mosquitto_client_id(ed->client);
	(void)event;
	(void)userdata;

	if(!reload()) return refuse(client_id, ed->username, "the identities file is unusable");
	bool dps = dps_username(&current, ed->username);
	const struct identity *id = find(&current, client_id, dps);
	if(id == NULL) return refuse(client_id, ed->username, "no identity has this client id");
	if(ed->username == NULL || (ed->password == NULL && !id->thumbprint_len)){
		return refuse(client_id, ed->username, "no user name or password");
	}
	if(id->thumbprint_len){
		const char *why = certificate_refusal(ed->client, id);
		if(why != NULL) return refuse(client_id, ed->username, why);
	}
	long long expiry = 0;
	int rc = dps ? dps_sign_in(id, ed->username, ed->password, &expiry)
		: hub_sign_in(id, ed->username, ed->password, &expiry);
	if(rc == MOSQ_ERR_SUCCESS) expiring_set(client_id, expiry);
	return rc;
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	(void)event;
	(void)userdata;

	if(ed->access == MOSQ_ACL_UNSUBSCRIBE) return MOSQ_ERR_SUCCESS;
	const struct identity *id = find(&current, mosquitto_client_id(ed->client),
			dps_username(&current, mosquitto_client_username(ed->client)));
	if(id == NULL || ed->topic == NULL) return MOSQ_ERR_ACL_DENIED;
	bool ok = ed->access == MOSQ_ACL_WRITE
		? allowed(id->publish, id->n_publish, ed->topic)
		: allowed(id->subscribe, id->n_subscribe, ed->topic);
	return ok ? MOSQ_ERR_SUCCESS : MOSQ_ERR_ACL_DENIED;
}

/* The relay of harness/broker/relay.py; runs after the publisher's ACL check. */
static int on_message(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_message *ed = event_data;
	const char *client_id = mosquitto_client_id(ed->client);
	(void)event;
	(void)userdata;

	if(ed->topic == NULL || client_id == NULL) return MOSQ_ERR_SUCCESS;
	if(strncmp(ed->topic, "$iothub/", 8) == 0 || strncmp(ed->topic, "$dps/", 5) == 0){
		char *routed = mosquitto_malloc(strlen(RELAY_FROM) + strlen(client_id) + 1 + strlen(ed->topic) + 1);
		if(routed == NULL) return MOSQ_ERR_NOMEM;
		sprintf(routed, "%s%s/%s", RELAY_FROM, client_id, ed->topic);
		mosquitto_free(ed->topic);
		ed->topic = routed;
		ed->retain = false; /* a request is for now: never kept for the service's next subscription */
		return MOSQ_ERR_SUCCESS;
	}
	if(strncmp(ed->topic, RELAY_TO, strlen(RELAY_TO)) == 0){
		const char *target = ed->topic + strlen(RELAY_TO);
		const char *slash = strchr(target, '/');
		if(slash == NULL || slash == target || slash[1] == '\0') return MOSQ_ERR_SUCCESS;
		char *to = strndup(target, (size_t)(slash - target));
		if(to == NULL) return MOSQ_ERR_NOMEM;
		const char *topic = slash + 1;
		/* mosquitto checks no READ access of a message sent to one client: check it here, against the
		 * identity the topic is for (a DPS reply goes to the registration) */
		const struct identity *id = find(&current, to, strncmp(topic, "$dps/", 5) == 0);
		char shown_to[201];
		if(id == NULL || !allowed(id->subscribe, id->n_subscribe, topic)){
			mosquitto_log_printf(MOSQ_LOG_NOTICE, LOG_PREFIX "relay to client '%s' dropped: it may not read that topic",
					shown(to, shown_to, sizeof(shown_to)));
		}else{
			int rc = mosquitto_broker_publish_copy(to, topic, (int)ed->payloadlen, ed->payload, ed->qos, false, NULL);
			if(rc != MOSQ_ERR_SUCCESS){
				mosquitto_log_printf(MOSQ_LOG_WARNING, LOG_PREFIX "relay to client '%s' failed (%d)",
						shown(to, shown_to, sizeof(shown_to)), rc);
			}
		}
		free(to);
	}
	return MOSQ_ERR_SUCCESS;
}

/* ---- plugin entry points -------------------------------------------------------------------- */

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *options,
		int option_count)
{
	(void)userdata;
	plugin_id = identifier;
	for(int i = 0; i < option_count; i++){
		if(strcmp(options[i].key, "identities") == 0){
			identities_path = strdup(options[i].value);
		}else{
			mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "unknown option plugin_opt_%s", options[i].key);
			return MOSQ_ERR_INVAL;
		}
	}
	if(identities_path == NULL){
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "plugin_opt_identities is missing");
		return MOSQ_ERR_INVAL;
	}
	if(!reload()) return MOSQ_ERR_INVAL;
	if(mosquitto_callback_register(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL) != MOSQ_ERR_SUCCESS
			|| mosquitto_callback_register(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, NULL) != MOSQ_ERR_SUCCESS
			|| mosquitto_callback_register(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL, NULL) != MOSQ_ERR_SUCCESS
			|| mosquitto_callback_register(plugin_id, MOSQ_EVT_TICK, on_tick, NULL, NULL) != MOSQ_ERR_SUCCESS){
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "cannot register callbacks");
		return MOSQ_ERR_UNKNOWN;
	}
	mosquitto_log_printf(MOSQ_LOG_INFO, LOG_PREFIX "enforcing %zu identities from %s", current.n, identities_path);
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_TICK, on_tick, NULL);
	while(n_expiring) expiring_remove(n_expiring - 1);
	free(expiring);
	expiring = NULL;
	free_table(&current);
	free(identities_path);
	identities_path = NULL;
	return MOSQ_ERR_SUCCESS;
}
