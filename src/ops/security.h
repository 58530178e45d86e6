/*  security.h - who may connect: CURVE keys, the allowlist, the ZAP handler,
    and the options that protect floorpost's tcp sockets from hostile peers.

    CURVE (RFC 26) encrypts and authenticates every tcp endpoint when
    [security] curve_secret_key_file is set. Each server socket (ingest
    ROUTER and PULL, both PUBs, the replay ROUTER) gets ZMQ_CURVE_SERVER, the server's secret
    key, ZMQ_ZAP_DOMAIN "floorpost" and ZMQ_ZAP_ENFORCE_DOMAIN, so libzmq
    asks the ZAP handler (RFC 27) about every client and, with no handler
    running, refuses every client: connections fail closed.

    The ZAP handler is one thread with a REP socket bound to
    inproc://zeromq.zap.01 in the process's context. It allows a CURVE
    client iff the client's public key is in curve_allow_file (or is the
    handler's own in-process client key, used by the demo plant and the
    printer). It re-reads the allow file when the file changes (stat checked
    at most once a second), so rotating a producer's key needs no restart.
    A key removed from the file is refused at its next handshake; a
    connection already established stays up until it disconnects.

    Key files and the client side: curve.h. Allow file: one Z85 public key (40 characters) per line, optionally
    followed by whitespace and a name; '#' starts a comment; blank lines are
    ignored. Any other line is an error naming FILE:LINE.

    Source bindings: the first word after the key may be sources=LIST, the
    source ids the key may send as: LIST is ID or ID-ID (inclusive),
    comma separated, decimal, no spaces (sources=100-199,250), or * (any
    source, the same as no sources= word). A key listed on several lines
    may send as the union of their lists; it is bound if any of its lines
    has a list (so appending its .pub line again does not unbind it). A key
    without a list may send as any source (as before bindings existed).
      Cb6PK0i6(...40 chars...) sources=100-199,250 press line 3 gateway
    The ZAP handler sets the connection's User-Id to the client's Z85 key
    ("floorpost-internal" for floorpost's own clients); the ZeroMQ input
    reads it on every frame (zmq_msg_gets "User-Id") and looks the frame's
    source up in its own copy of the allow file (fp_allow_watch), so a
    changed binding applies to connections already up within a second of
    the file's change. A key that is no longer listed keeps today's rule
    for its open connection (it may send; its next handshake is refused).

    Thread contract: fp_security_start/fp_security_stop are called by one
    controlling thread (main). fp_security_server_socket is called by the
    thread that owns the socket.
    fp_security_refused may be called from any thread. An fp_allow_t belongs
    to one thread. Keys, allow files and the handler's replies are
    untrusted input: errors are returned, never asserted.
*/
#ifndef FP_SECURITY_H
#define FP_SECURITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "curve.h"

#define FP_ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define FP_ZAP_DOMAIN "floorpost"

/* ---- the allowlist ---- */

typedef struct fp_allow fp_allow_t;

/* Parses allow-file text (name is used in messages; NULL = "(allow)"). NULL
   with "NAME:LINE: ..." in err on a bad line or out of memory. Free with
   fp_allow_destroy. */
fp_allow_t *fp_allow_parse(const char *text, const char *name, char *err, size_t errlen);

/* Reads and parses a file; NULL with err on error (unreadable file too). */
fp_allow_t *fp_allow_load(const char *path, char *err, size_t errlen);

/* The name given to key_z85 on its line ("" if none), or NULL if the key is
   not listed. The string lives as long as self. */
const char *fp_allow_find(const fp_allow_t *self, const char *key_z85);

/* Number of distinct keys listed. */
size_t fp_allow_count(const fp_allow_t *self);

/* Number of keys bound to a list of sources. */
size_t fp_allow_bound_count(const fp_allow_t *self);

/* Whether key_z85 is listed and bound to a list of sources. */
bool fp_allow_bound(const fp_allow_t *self, const char *key_z85);

/* Whether key_z85 may send as source_id: false only when the key is listed
   and bound and source_id is not in its list (an unlisted or unbound key,
   a NULL self: true). */
bool fp_allow_permits(const fp_allow_t *self, const char *key_z85, uint64_t source_id);

/* ---- an allow file kept current ---- */

typedef struct fp_allow_watch fp_allow_watch_t;

/* Loads path now. who names the owner in the log lines. NULL with err on
   a bad or unreadable file (or out of memory). path and who must outlive
   the watch. Free with fp_allow_watch_destroy. */
fp_allow_watch_t *fp_allow_watch_new(const char *path, const char *who, char *err, size_t errlen);

/* The current list: the file is re-read when its (dev, inode, size,
   mtime) changed, looked at most once a second. A file that no longer
   parses, or has vanished, keeps the previous list and is logged. The
   pointer stays valid until the next call. */
const fp_allow_t *fp_allow_watch_get(fp_allow_watch_t *self);

/* Frees *self_p and sets it to NULL; NULL-safe. */
void fp_allow_watch_destroy(fp_allow_watch_t **self_p);

/* Frees *self_p and sets it to NULL; NULL-safe. */
void fp_allow_destroy(fp_allow_t **self_p);

/* ---- sockets ---- */

/* Prepares a server (bind) socket facing the network, before zmq_bind:
   ZMQ_HANDSHAKE_IVL, ZMQ_HEARTBEAT_IVL/TIMEOUT from cfg and, when
   cfg->curve_secret_key_file is set, CURVE server with ZAP domain
   "floorpost" enforced (reads the key file). 0, or -1 with err filled. */
int fp_security_server_socket(void *sock, const fp_config_t *cfg, char *err, size_t errlen);

/* ---- the ZAP handler ---- */

typedef struct fp_security fp_security_t;

/* Validates the [security] files of cfg (what `run --check` does): the
   server key and the allow file when CURVE is on. 0, or -1 with err. */
int fp_security_check(const fp_config_t *cfg, char *err, size_t errlen);

/* Starts the ZAP handler on zmq_ctx when cfg configures CURVE (logs the key
   count); with plain endpoints starts nothing and logs the warning "plain,
   unauthenticated endpoints". Call before any server socket binds. NULL
   with err filled on a bad key/allow file, a handler already bound in
   zmq_ctx, or out of memory. cfg must outlive the handler. */
fp_security_t *fp_security_start(void *zmq_ctx, const fp_config_t *cfg, char *err, size_t errlen);

/* Stops and joins the handler (new CURVE handshakes then fail closed),
   frees *self_p and sets it to NULL; NULL-safe. Call before zmq_ctx_term. */
void fp_security_stop(fp_security_t **self_p);

/* true when CURVE is on (the handler runs). */
bool fp_security_curve(const fp_security_t *self);

/* For floorpost's own in-process clients (the demo plant, the printer)
   when CURVE is on: the server's public key and a key pair made at start
   that the handler always allows. false with plain endpoints. */
bool fp_security_internal_client(const fp_security_t *self, const char **server_z85,
                                 const fp_curve_keypair_t **kp);

/* CURVE handshakes the ZAP handlers of this process have refused since it
   started (a client retrying counts once per attempt). Any thread. */
uint64_t fp_security_refused(void);

/* Watches server socket sock (of zmq_ctx; call on its own thread, after
   the bind; not for inproc) for accept failures and, when handshakes (CURVE
   on), handshakes that fail before any ZAP request (a plain client on a
   CURVE endpoint, a broken peer); the handler thread of zmq_ctx (started by
   fp_security_start, CURVE or not) logs them (at most once a second, the
   rest counted as suppressed) and counts them. label names the endpoint in
   the log and the metrics. 0 or -1 (too many sockets, or libzmq refused the
   monitor). */
int fp_security_watch(void *zmq_ctx, void *sock, const char *label, bool handshakes);

/* Accept failures on the i-th watched endpoint (0..), with its label in
   *label (valid for the process's life); UINT64_MAX past the last. Any
   thread. */
uint64_t fp_security_accept_failures(int i, const char **label);

/* Handshakes failed so far in this process, by kind: 0 a plain client on a
   CURVE endpoint (mechanism mismatch), 1 another protocol failure, 2 the
   peer closed during the handshake. */
uint64_t fp_security_handshakes_failed(int which);

#endif
