/*
 * hil-tls-client-cert: preloaded into the harness's mosquitto (LD_PRELOAD), it makes every TLS
 * listener ask each client for a certificate, take any certificate (or none) and leave the
 * decision to the harness's auth plugin (mosquitto_auth.c), which matches the certificate's
 * thumbprint for X.509 identities and ignores it for the others. This is what IoT Hub does on its
 * port 8883: it requests a client certificate in every TLS handshake, and SAS-token devices and
 * X.509 devices share the port.
 *
 * Why a preloaded library: mosquitto 2.0 either requires a certificate chaining to its cafile from
 * every TLS client (require_certificate true: SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT)
 * or asks none (SSL_VERIFY_NONE), and a plugin has no hook into the TLS setup. The listener's
 * SSL_CTX_set_verify call is the one place that decides it, so this library defines that
 * function: a server context set to SSL_VERIFY_NONE gets SSL_VERIFY_PEER (without FAIL_IF_NO_PEER_CERT)
 * and a verify callback that accepts any certificate (self-signed device certificates chain to
 * nothing; their thumbprint is their identity). The real function is then called (RTLD_NEXT).
 * mosquitto_client_certificate() then hands the plugin what the client showed. Contexts set to
 * anything else are passed through unchanged. The first change is announced on standard error
 * ("hil-tls-client-cert: ..."), which the harness waits for: if the interposition ever stops
 * working, the broker does not start instead of silently refusing every X.509 device.
 */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>

#include <openssl/ssl.h>

typedef void (*set_verify_fn)(SSL_CTX *, int, SSL_verify_cb);

static int accept_any(int preverify_ok, X509_STORE_CTX *ctx)
{
	(void)preverify_ok;
	(void)ctx;
	return 1;
}

void SSL_CTX_set_verify(SSL_CTX *ctx, int mode, SSL_verify_cb callback)
{
	static set_verify_fn real;
	static int announced;
	if(real == NULL) real = (set_verify_fn)dlsym(RTLD_NEXT, "SSL_CTX_set_verify");
	if(real == NULL){
		fprintf(stderr, "hil-tls-client-cert: cannot find OpenSSL's SSL_CTX_set_verify\n");
		return;
	}
	if(mode == SSL_VERIFY_NONE && ctx != NULL && SSL_CTX_get_ssl_method(ctx) != NULL
			&& SSL_CTX_get_ssl_method(ctx) != TLS_client_method()){
		mode = SSL_VERIFY_PEER;
		callback = accept_any;
		if(!announced){
			announced = 1;
			fprintf(stderr, "hil-tls-client-cert: TLS clients are asked for a certificate; any is taken\n");
			fflush(stderr);
		}
	}
	real(ctx, mode, callback);
}
