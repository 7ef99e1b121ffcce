/*
 * hil-auth's policy (see mosquitto_auth.c for the plugin): SAS tokens, user names and topic filters,
 * the rules of harness/broker/sas.py and harness.broker.credentials.
 */

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "mosquitto_auth.h"

#define SAS_PREFIX "SharedAccessSignature "
#define SAS_MAX 2048
#define SAS_MAX_EXPIRY_DIGITS 12
/* the refusals, in the words of harness/broker/sas.py */
#define SAS_MALFORMED "malformed token"
#define SAS_WRONG_RESOURCE "token for another resource"
#define SAS_BAD_SIGNATURE "token not signed with this device's key"
#define SAS_EXPIRED "token expired"

/* Does this user name sign in to DPS ("{scope}/registrations/...")? */
bool dps_username(const struct table *t, const char *username)
{
	if(t->scope == NULL || username == NULL) return false;
	size_t sl = strlen(t->scope);
	return strncmp(username, t->scope, sl) == 0 && strncmp(username + sl, "/registrations/", 15) == 0;
}

bool same_secret(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	unsigned char diff = (unsigned char)(la != lb);
	for(size_t i = 0; i < la; i++) diff |= (unsigned char)(a[i] ^ b[i < lb ? i : 0]);
	return diff == 0;
}

/* "{hub}/{device}/?api-version=...&..." naming this hub and device, no module. */
bool device_username_ok(const char *username, const char *hub, const char *device_id)
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

bool allowed(char *const *filters, size_t n, const char *topic)
{
	for(size_t i = 0; i < n; i++){
		if(within(topic, filters[i])) return true;
	}
	return false;
}

/* IoT Hub reads a device's subscription to devices/+/... as its own devices/{id}/... (the Embedded C
 * SDK, the middleware stock Azure RTOS images run, subscribes to devices/+/messages/devicebound/#);
 * what is delivered is still checked topic by topic (MOSQ_ACL_READ), so only the device's own comes. */
bool allowed_as_own(char *const *filters, size_t n, const char *topic, const char *client_id)
{
	static const char wild[] = "devices/+/";
	if(client_id == NULL || strncmp(topic, wild, sizeof wild - 1) != 0) return false;
	const char *rest = topic + sizeof wild - 1;
	size_t len = strlen("devices/") + strlen(client_id) + 1 + strlen(rest) + 1;
	char *own = malloc(len);
	if(own == NULL) return false;
	snprintf(own, len, "devices/%s/%s", client_id, rest);
	bool ok = allowed(filters, n, own);
	free(own);
	return ok;
}

/* A SAS token for `resource` under `key`, carrying no skn or skn=`key_name` (when not NULL): NULL
 * when it is good (and its expiry in *expiry), else why not (the order of
 * harness.broker.sas.verify_token: form, resource, signature, expiry). */
const char *sas_refusal(const char *token, const unsigned char *key, size_t key_len, const char *resource,
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
