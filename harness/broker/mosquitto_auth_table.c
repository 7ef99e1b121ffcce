/*
 * hil-auth's identity table (see mosquitto_auth.c for the plugin): the file named by
 * "plugin_opt_identities", parsed into `current` at every CONNECT.
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
 * keys together with the code that enforces them, in these same sources).
 */

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>

#include "mosquitto_auth.h"

#define FORMAT_LINE "hil-identities 3"
#define FORMAT_LINE_V2 "hil-identities 2"
#define FORMAT_LINE_V1 "hil-identities 1"
#define KEY_MIN 16
#define KEY_MAX 64
#define MAX_FILE (16 * 1024 * 1024)

struct table current;

static void free_strings(char **list, size_t n)
{
	for(size_t i = 0; i < n; i++) free(list[i]);
	free(list);
}

void free_table(struct table *t)
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
const struct identity *find(const struct table *t, const char *client_id, bool registration)
{
	if(client_id == NULL) return NULL;
	for(size_t i = 0; i < t->n; i++){
		if(strcmp(t->ids[i].client_id, client_id) == 0 && (t->ids[i].registration != NULL) == registration){
			return &t->ids[i];
		}
	}
	return NULL;
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
bool percent_decode(char *s, bool strict)
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
long b64decode(const char *in, unsigned char *out, size_t size)
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

/* Read the identities file at `path` into `current`. On failure `current` is kept and false returned. */
bool reload(const char *path)
{
	char err[256] = "";
	FILE *f = fopen(path, "rb");
	if(f == NULL){
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "cannot open %s: %s", path, strerror(errno));
		return false;
	}
	char *text = malloc(MAX_FILE + 1);
	size_t len = text ? fread(text, 1, MAX_FILE + 1, f) : 0;
	bool bad_read = text == NULL || ferror(f) || len > MAX_FILE;
	fclose(f);
	if(bad_read){
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "cannot read %s (or over %d bytes)", path, MAX_FILE);
		free(text);
		return false;
	}
	text[len] = '\0';
	if(memchr(text, '\0', len) != NULL){
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "%s holds a NUL byte", path);
		free(text);
		return false;
	}
	struct table fresh;
	memset(&fresh, 0, sizeof(fresh));
	bool ok = parse(text, &fresh, err, sizeof(err));
	free(text);
	if(!ok){
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "%s: %s; connections are refused until it is fixed",
				path, err);
		free_table(&fresh);
		return false;
	}
	free_table(&current);
	current = fresh;
	return true;
}
