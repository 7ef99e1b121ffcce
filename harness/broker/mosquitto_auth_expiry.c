/*
 * hil-auth's token expiry (see mosquitto_auth.c for the plugin): a client signed in with a SAS token is
 * disconnected when the token expires (MOSQ_EVT_TICK).
 */

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include "mosquitto_auth.h"

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

void expiring_set(const char *client_id, long long expiry)
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

int on_tick(int event, void *event_data, void *userdata)
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

/* Forget every client id (the plugin's cleanup). */
void expiring_clear(void)
{
	while(n_expiring) expiring_remove(n_expiring - 1);
	free(expiring);
	expiring = NULL;
}
