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
 * The file's format and its reading: mosquitto_auth_table.c; the policy: mosquitto_auth_policy.c;
 * token expiry: mosquitto_auth_expiry.c; what they share: mosquitto_auth.h.
 */

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include "mosquitto_auth.h"

/* the refusals of a client certificate, in the words of harness/broker/x509.py */
#define X509_NO_CERTIFICATE "no client certificate"
#define X509_WRONG_THUMBPRINT "client certificate's thumbprint is not this identity's"
#define X509_WRONG_COMMON_NAME "client certificate's common name is not the registration id"
#define X509_OUT_OF_DATE "client certificate expired or not yet valid"
#define DPS_KEY_NAME "registration"
#define RELAY_FROM "hil/hub/from/"
#define RELAY_TO "hil/hub/to/"

static mosquitto_plugin_id_t *plugin_id;
static char *identities_path;

/* ---- callbacks ------------------------------------------------------------------------------ */

/* A client's string for the log: at most 200 bytes, anything but printable ASCII as '?', so a
 * client cannot write lines of its own into the log. */
const char *shown(const char *s, char *buf, size_t size)
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

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	const char *client_id = mosquitto_client_id(ed->client);
	(void)event;
	(void)userdata;

	if(!reload(identities_path)) return refuse(client_id, ed->username, "the identities file is unusable");
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
		: allowed(id->subscribe, id->n_subscribe, ed->topic)
			|| (ed->access == MOSQ_ACL_SUBSCRIBE && allowed_as_own(id->subscribe, id->n_subscribe, ed->topic,
				mosquitto_client_id(ed->client)));
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
	if(!reload(identities_path)) return MOSQ_ERR_INVAL;
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
	expiring_clear();
	free_table(&current);
	free(identities_path);
	identities_path = NULL;
	return MOSQ_ERR_SUCCESS;
}
