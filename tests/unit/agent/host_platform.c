/*
 * host_platform.c - the platform_* half of agent_port.h for running the security agent on the
 * host (as a shared library driven from Python with ctypes): it records publishes and console
 * lines and lets the test set the hub connection, the publish result and the random numbers.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "agent_port.h"

#define MAX_PUBLISHES 512
#define MAX_PAYLOAD   8192
#define MAX_LOGS      2048
#define LOG_LEN       240
#define MAX_RANDOM    16

struct publish {
    uint32_t time;
    int rc;
    uint32_t len;
    char topic[512];
    uint8_t payload[MAX_PAYLOAD];
};

static struct publish publishes[MAX_PUBLISHES];
static unsigned n_publishes;
static char logs[MAX_LOGS][LOG_LEN];
static unsigned n_logs;
static int connected;
static int publish_rc;
static uint32_t now;
static char device_id[256] = "hil-device-1";
static uint32_t randoms[MAX_RANDOM];
static unsigned n_randoms, next_random;

/* ---- control and read-out, for the test -------------------------------------------------- */

void host_set_connected(int on) { connected = on; }
void host_set_publish_rc(int rc) { publish_rc = rc; }
void host_set_device_id(const char *id) { snprintf(device_id, sizeof device_id, "%s", id); }
int host_push_random(uint32_t value)
{
    if (n_randoms == MAX_RANDOM) {
        return -1;
    }
    randoms[n_randoms++] = value;
    return 0;
}

void host_tick(uint32_t unix_time)
{
    now = unix_time;
    agent_tick(unix_time);
}

unsigned host_publish_count(void) { return n_publishes; }
uint32_t host_publish_time(unsigned i) { return i < n_publishes ? publishes[i].time : 0; }
int host_publish_rc(unsigned i) { return i < n_publishes ? publishes[i].rc : 0; }
const char *host_publish_topic(unsigned i) { return i < n_publishes ? publishes[i].topic : ""; }

const uint8_t *host_publish_payload(unsigned i, uint32_t *len)
{
    *len = i < n_publishes ? publishes[i].len : 0;
    return i < n_publishes ? publishes[i].payload : NULL;
}

unsigned host_log_count(void) { return n_logs; }
const char *host_log_line(unsigned i) { return i < n_logs ? logs[i] : ""; }

/* ---- agent_port.h ------------------------------------------------------------------------ */

int platform_hub_connected(void)
{
    return connected;
}

int platform_publish(const char *topic, const uint8_t *payload, uint32_t len)
{
    if (n_publishes < MAX_PUBLISHES && len <= MAX_PAYLOAD) {
        struct publish *p = &publishes[n_publishes++];
        p->time = now;
        p->rc = publish_rc;
        p->len = len;
        snprintf(p->topic, sizeof p->topic, "%s", topic);
        memcpy(p->payload, payload, len);
    }
    return publish_rc;
}

const char *platform_device_id(void)
{
    return device_id;
}

/* the pushed values in order, then a fixed value */
uint32_t platform_rand(void)
{
    return next_random < n_randoms ? randoms[next_random++] : 0x89abcdefu;
}

unsigned host_random_calls(void) { return next_random; }

void platform_log(const char *fmt, ...)
{
    if (n_logs == MAX_LOGS) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(logs[n_logs++], LOG_LEN, fmt, ap);
    va_end(ap);
}
