/*
 * hil-auth's private header: what the plugin's files share. The plugin (callbacks and entry points) is
 * mosquitto_auth.c; the identity table it reads, mosquitto_auth_table.c; the policy it applies (SAS
 * tokens, user names, topic filters), mosquitto_auth_policy.c; the disconnection of clients whose
 * token expired, mosquitto_auth_expiry.c. plugin_build.py compiles them together into one shared
 * object, which exports only mosquitto_plugin_version, _init and _cleanup: everything declared here
 * is hidden.
 */

#ifndef HIL_MOSQUITTO_AUTH_H
#define HIL_MOSQUITTO_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#define SHA1_BYTES 20
#define SHA256_BYTES 32
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

#pragma GCC visibility push(hidden)

/* mosquitto_auth_table.c: the table read last (see reload), and the decoding its file and the
 * policy share */
extern struct table current;
void free_table(struct table *t);
const struct identity *find(const struct table *t, const char *client_id, bool registration);
bool percent_decode(char *s, bool strict);
long b64decode(const char *in, unsigned char *out, size_t size);
bool reload(const char *path);

/* mosquitto_auth_policy.c */
bool dps_username(const struct table *t, const char *username);
bool same_secret(const char *a, const char *b);
bool device_username_ok(const char *username, const char *hub, const char *device_id);
bool allowed(char *const *filters, size_t n, const char *topic);
/* a subscription to devices/+/... read as the client's own devices/{client_id}/... (IoT Hub's rule) */
bool allowed_as_own(char *const *filters, size_t n, const char *topic, const char *client_id);
const char *sas_refusal(const char *token, const unsigned char *key, size_t key_len, const char *resource,
		const char *key_name, long long *expiry);

/* mosquitto_auth_expiry.c */
void expiring_set(const char *client_id, long long expiry);
void expiring_clear(void);
int on_tick(int event, void *event_data, void *userdata);

/* mosquitto_auth.c */
const char *shown(const char *s, char *buf, size_t size);

#pragma GCC visibility pop

#endif
