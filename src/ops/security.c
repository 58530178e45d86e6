/*  security.c - the server side: the allowlist, the ZAP handler thread and
    the hostile-peer socket options. See security.h. Key files and the
    client side are in curve.c (the gateway library links that alone).

    DESIGN
    - Fail closed: every CURVE server socket sets ZMQ_ZAP_ENFORCE_DOMAIN, so
      when no handler is bound to inproc://zeromq.zap.01 libzmq refuses the
      handshake instead of letting everyone in (its "Stonehouse" default).
      If libzmq does not accept that option, the socket is not opened.
    - The handler thread owns its REP socket, the allowlist and the file's
      last stat; main talks to it only through an inproc PAIR ("STOP").
    - The allow file is re-read when its (dev, inode, size, mtime) changes,
      checked at most once a second (and at least once a second while idle),
      by an fp_allow_watch_t (the ZeroMQ input keeps one of its own for the
      source bindings). A file that no longer parses, or has vanished, keeps
      the previous list and is logged: a bad edit cannot lock every producer
      out.
    - Refusals are logged at most once a second; the lines in between are
      counted in the next line's `suppressed`.
*/
#include "grow.h"
#include "clock.h"
#include "security.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "log.h"

#ifndef ZMQ_ZAP_ENFORCE_DOMAIN
/* Declared only under ZMQ_BUILD_DRAFT_API in libzmq 4.3's zmq.h, but
   accepted by the library; fp_security_server_socket checks the result. */
#define ZMQ_ZAP_ENFORCE_DOMAIN 93
#endif

#define S_NAME_MAX 64 /* bytes kept of a key's name in the allow file */

/* CURVE handshakes refused by any handler of this process. A metric only:
   relaxed adds by the handler thread, relaxed loads by readers (it orders
   nothing else). A process-wide counter so that the metrics exporter can
   read it without a handle on the handler. */
static _Atomic uint64_t s_refused;

uint64_t fp_security_refused(void)
{
    return atomic_load_explicit(&s_refused, memory_order_relaxed);
}

/* ---- what only libzmq's socket monitor sees ----

   Accept failures (EMFILE: out of file descriptors; ENOBUFS, ...) on every
   tcp/ipc server socket; with CURVE also handshakes that fail before any
   ZAP request (a plain client on a CURVE endpoint, a broken or foreign
   peer). fp_security_watch, on the socket's own thread, starts a monitor on
   an inproc endpoint of the socket's context and registers it here; the
   handler thread of that context (with plain endpoints it runs for this
   alone) connects a PAIR to it and logs and counts what it reports. The
   registry only grows (server sockets are made once, at start). */
#define S_WATCH_MAX 32
typedef struct {
    void *ctx;
    void *pair; /* connected here, before any event can be lost; then the handler's */
    char ep[48];
    char label[FP_ENDPOINT_MAX];       /* immutable once s_nwatch counts the entry */
    _Atomic uint64_t accept_failed;    /* a metric: relaxed adds (handler), relaxed loads */
    int64_t next_accept_log_ns;        /* the handler's: at most one line a second */
    uint64_t accept_suppressed;        /* the handler's */
} s_watch_t;
static pthread_mutex_t s_watch_mu = PTHREAD_MUTEX_INITIALIZER;
static s_watch_t s_watch[S_WATCH_MAX];
static int s_nwatch;
static _Atomic uint64_t s_hs_failed[3];
/* The contexts whose handler runs (under s_watch_mu): a socket of another
   context is not watched, so no monitor PAIR is left open for nobody to
   close (zmq_ctx_term would wait on it). */
#define S_HANDLERS_MAX 8
static void *s_handler_ctx[S_HANDLERS_MAX]; /* plain client, protocol, closed: metrics */

uint64_t fp_security_handshakes_failed(int which)
{
    return which >= 0 && which < 3 ? atomic_load_explicit(&s_hs_failed[which], memory_order_relaxed)
                                   : 0;
}

uint64_t fp_security_accept_failures(int i, const char **label)
{
    pthread_mutex_lock(&s_watch_mu);
    int n = s_nwatch;
    pthread_mutex_unlock(&s_watch_mu);
    if (i < 0 || i >= n)
        return UINT64_MAX;
    *label = s_watch[i].label;
    return atomic_load_explicit(&s_watch[i].accept_failed, memory_order_relaxed);
}

int fp_security_watch(void *zmq_ctx, void *sock, const char *label, bool handshakes)
{
    static _Atomic int seq;
    pthread_mutex_lock(&s_watch_mu);
    int rc = -1;
    bool handled = false;
    for (int i = 0; i < S_HANDLERS_MAX; i++)
        handled |= s_handler_ctx[i] == zmq_ctx;
    if (handled && s_nwatch < S_WATCH_MAX) {
        s_watch_t *w = &s_watch[s_nwatch];
        snprintf(w->ep, sizeof w->ep, "inproc://fp-monitor-%d", atomic_fetch_add(&seq, 1));
        snprintf(w->label, sizeof w->label, "%s", label);
        w->ctx = zmq_ctx;
        /* PROTOCOL: a mechanism mismatch or a broken handshake; NO_DETAIL:
           the peer closed mid-handshake (a plain client often sees the
           mismatch first and hangs up). AUTH is a ZAP denial, which the
           handler logs itself. */
        int events = ZMQ_EVENT_ACCEPT_FAILED;
        if (handshakes)
            events |= ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL;
        if (zmq_socket_monitor(sock, w->ep, events) == 0 &&
            (w->pair = zmq_socket(zmq_ctx, ZMQ_PAIR)) != NULL) {
            /* Connected on this thread, now: events before the handler
               looks are queued, not dropped. The handler takes the socket
               over (the mutex is the barrier libzmq asks for). */
            int linger = 0;
            zmq_setsockopt(w->pair, ZMQ_LINGER, &linger, sizeof linger);
            if (zmq_connect(w->pair, w->ep) == 0) {
                s_nwatch++;
                rc = 0;
            } else {
                zmq_close(w->pair);
                w->pair = NULL;
            }
        }
    }
    pthread_mutex_unlock(&s_watch_mu);
    return rc;
}


/* ---- the allowlist ---- */

typedef struct {
    char key[FP_CURVE_KEY_Z85 + 1];
    char name[S_NAME_MAX];
    bool bound; /* some line of the key has sources=: it may send only those */
} s_entry_t;

/* One range of source ids a bound key may send as (sources=). */
typedef struct {
    char key[FP_CURVE_KEY_Z85 + 1];
    uint64_t lo, hi; /* lo <= hi */
} s_range_t;

struct fp_allow {
    s_entry_t *entries; /* sorted by key, no duplicates */
    size_t count;
    s_range_t *ranges;  /* sorted by (key, lo), overlapping ones merged */
    size_t nranges;
};

static int s_entry_cmp(const void *a, const void *b)
{
    return strcmp(((const s_entry_t *)a)->key, ((const s_entry_t *)b)->key);
}

static int s_range_cmp(const void *a, const void *b)
{
    const s_range_t *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* One decimal source id at *p (advanced past it). 0 or -1. */
static int s_parse_id(const char **p, uint64_t *v)
{
    if (**p < '0' || **p > '9')
        return -1;
    uint64_t x = 0;
    for (; **p >= '0' && **p <= '9'; (*p)++) {
        unsigned d = (unsigned)(**p - '0');
        if (x > (UINT64_MAX - d) / 10)
            return -1;
        x = x * 10 + d;
    }
    *v = x;
    return 0;
}

/* The binding after a key: "sources=LIST" (LIST: ID or ID-ID, comma
   separated, or "*": any source) as the first word of *rest, which is
   advanced past it; nothing when the word is not sources=. Appends the
   ranges to self for key e. 0, -1 (bad list, message in err) or -2 (out
   of memory). */
static int s_parse_sources(fp_allow_t *self, size_t *cap, s_entry_t *e, char **rest,
                           const char *name, int lineno, char *err, size_t errlen)
{
    static const char word[] = "sources=";
    if (strncmp(*rest, word, sizeof word - 1) != 0)
        return 0;
    const char *p = *rest + sizeof word - 1;
    size_t len = strcspn(p, " \t");
    char *after = (char *)p + len;
    if (len == 1 && *p == '*') { /* explicitly unbound */
        *rest = after;
        return 0;
    }
    e->bound = true;
    for (;;) {
        uint64_t lo, hi;
        if (s_parse_id(&p, &lo) != 0)
            goto bad;
        hi = lo;
        if (*p == '-' && (p++, s_parse_id(&p, &hi) != 0 || hi < lo))
            goto bad;
        if (fp_grow(&self->ranges, cap, self->nranges + 1, sizeof *self->ranges, 16) != 0)
            return -2;
        s_range_t *r = &self->ranges[self->nranges++];
        memcpy(r->key, e->key, sizeof r->key);
        r->lo = lo;
        r->hi = hi;
        if (p == after)
            break;
        if (*p++ != ',')
            goto bad;
    }
    *rest = after;
    return 0;
bad:
    snprintf(err, errlen, "%s:%d: '%.*s' is not a list of source ids; allowed: sources=ID or "
             "sources=ID-ID, comma separated (decimal, e.g. sources=100-199,250), or sources=*",
             name, lineno, (int)(len + sizeof word - 1 > 80 ? 80 : len + sizeof word - 1), *rest);
    return -1;
}

/* Sorts and merges the ranges, and marks every line of a bound key bound
   (a key listed twice is bound if any line binds it: appending its .pub
   line again does not unbind it). */
static void s_finish_ranges(fp_allow_t *self)
{
    if (self->nranges == 0)
        return;
    qsort(self->ranges, self->nranges, sizeof *self->ranges, s_range_cmp);
    size_t w = 1;
    for (size_t r = 1; r < self->nranges; r++) {
        s_range_t *last = &self->ranges[w - 1], *cur = &self->ranges[r];
        if (strcmp(last->key, cur->key) == 0 && (last->hi == UINT64_MAX || cur->lo <= last->hi + 1)) {
            if (cur->hi > last->hi)
                last->hi = cur->hi;
        } else {
            self->ranges[w++] = *cur;
        }
    }
    self->nranges = w;
}

fp_allow_t *fp_allow_parse(const char *text, const char *name, char *err, size_t errlen)
{
    if (!name)
        name = "(allow)";
    fp_allow_t *self = calloc(1, sizeof *self);
    char *copy = strdup(text);
    size_t cap = 0, rcap = 0;
    int lineno = 0;
    if (!self || !copy)
        goto nomem;
    char *pos = copy, *line;
    while ((line = fp_curve_next_line(&pos)) != NULL) {
        lineno++;
        line = fp_curve_trim(line);
        /* A Z85 key never starts with '#' (84 * 85^4 > 2^32 overflows the
           first group), so a line starting with '#' is always a comment. */
        if (!*line || *line == '#')
            continue;
        /* A .pub file's line as `floorpost keygen` writes it ("public =
           KEY"), so `cat x.pub >> allow.txt` works; a .key file's secret
           never belongs here. */
        char *eq = strchr(line, '=');
        if (eq) {
            size_t nl = (size_t)(eq - line);
            while (nl && (line[nl - 1] == ' ' || line[nl - 1] == '\t'))
                nl--;
            if (nl == 6 && memcmp(line, "secret", 6) == 0) {
                snprintf(err, errlen, "%s:%d: a secret key; allowed: public keys only (append "
                         "the client's .pub file, never its .key)", name, lineno);
                goto fail;
            }
            if (nl == 6 && memcmp(line, "public", 6) == 0)
                line = fp_curve_trim(eq + 1);
        }
        size_t klen = strcspn(line, " \t");
        if (!fp_curve_z85_valid(line, klen)) {
            snprintf(err, errlen, "%s:%d: '%.48s' is not a Z85 public key; allowed: 40 Z85 "
                     "characters (a .pub file's key) or a .pub file's 'public = KEY' line, then an "
                     "optional name, or a # comment",
                     name, lineno, line);
            goto fail;
        }
        if (fp_grow(&self->entries, &cap, self->count + 1, sizeof *self->entries, 16) != 0)
            goto nomem;
        s_entry_t *e = &self->entries[self->count++];
        memset(e, 0, sizeof *e); /* fp_grow does not zero: bound, the ranges */
        memcpy(e->key, line, FP_CURVE_KEY_Z85);
        e->key[FP_CURVE_KEY_Z85] = '\0';
        /* The name: what follows, without a leading '#', made safe to quote
           in a logfmt value. */
        char *rest = fp_curve_trim(line + klen);
        int brc = s_parse_sources(self, &rcap, e, &rest, name, lineno, err, errlen);
        if (brc == -2)
            goto nomem;
        if (brc != 0)
            goto fail;
        while (*rest == '#' || *rest == ' ' || *rest == '\t')
            rest++;
        snprintf(e->name, sizeof e->name, "%s", rest);
        for (char *p = e->name; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == '"' || *p == '\\' || *p == 0x7f)
                *p = '_';
    }
    if (self->count > 1) {
        qsort(self->entries, self->count, sizeof *self->entries, s_entry_cmp);
        size_t w = 1; /* drop repeated keys: the first name (in sort order) wins */
        for (size_t r = 1; r < self->count; r++)
            if (strcmp(self->entries[r].key, self->entries[w - 1].key) != 0)
                self->entries[w++] = self->entries[r];
            else
                self->entries[w - 1].bound |= self->entries[r].bound;
        self->count = w;
    }
    s_finish_ranges(self);
    free(copy);
    return self;
nomem:
    snprintf(err, errlen, "%s:%d: out of memory", name, lineno);
fail:
    free(copy);
    fp_allow_destroy(&self);
    return NULL;
}

fp_allow_t *fp_allow_load(const char *path, char *err, size_t errlen)
{
    char *text = fp_curve_read_text(path, err, errlen);
    if (!text)
        return NULL;
    fp_allow_t *self = fp_allow_parse(text, path, err, errlen);
    free(text);
    return self;
}



size_t fp_allow_count(const fp_allow_t *self)
{
    return self ? self->count : 0;
}

size_t fp_allow_bound_count(const fp_allow_t *self)
{
    size_t n = 0;
    for (size_t i = 0; self && i < self->count; i++)
        n += self->entries[i].bound;
    return n;
}

/* The entry of key_z85, or NULL. */
static const s_entry_t *s_entry_of(const fp_allow_t *self, const char *key_z85)
{
    if (!self || !key_z85 || strlen(key_z85) != FP_CURVE_KEY_Z85 || self->count == 0)
        return NULL;
    s_entry_t probe;
    memcpy(probe.key, key_z85, sizeof probe.key);
    return bsearch(&probe, self->entries, self->count, sizeof *self->entries, s_entry_cmp);
}

const char *fp_allow_find(const fp_allow_t *self, const char *key_z85)
{
    const s_entry_t *e = s_entry_of(self, key_z85);
    return e ? e->name : NULL;
}

bool fp_allow_bound(const fp_allow_t *self, const char *key_z85)
{
    const s_entry_t *e = s_entry_of(self, key_z85);
    return e && e->bound;
}

bool fp_allow_permits(const fp_allow_t *self, const char *key_z85, uint64_t source_id)
{
    if (!fp_allow_bound(self, key_z85))
        return true;
    /* The last range of the key with lo <= source_id. */
    size_t lo = 0, hi = self->nranges;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const s_range_t *r = &self->ranges[mid];
        int c = strcmp(r->key, key_z85);
        if (c < 0 || (c == 0 && r->lo <= source_id))
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return false;
    const s_range_t *r = &self->ranges[lo - 1];
    return strcmp(r->key, key_z85) == 0 && source_id <= r->hi;
}

void fp_allow_destroy(fp_allow_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free((*self_p)->entries);
    free((*self_p)->ranges);
    free(*self_p);
    *self_p = NULL;
}

/* ---- sockets ---- */

int fp_security_server_socket(void *sock, const fp_config_t *cfg, char *err, size_t errlen)
{
    /* 0 = off for all three, which is also what libzmq reads 0 as. */
    int hs = cfg->handshake_timeout_ms, ivl = cfg->heartbeat_ivl_ms,
        hbt = cfg->heartbeat_timeout_ms;
    if (zmq_setsockopt(sock, ZMQ_HANDSHAKE_IVL, &hs, sizeof hs) != 0 ||
        zmq_setsockopt(sock, ZMQ_HEARTBEAT_IVL, &ivl, sizeof ivl) != 0 ||
        zmq_setsockopt(sock, ZMQ_HEARTBEAT_TIMEOUT, &hbt, sizeof hbt) != 0) {
        snprintf(err, errlen, "heartbeat/handshake options: %s", zmq_strerror(zmq_errno()));
        return -1;
    }
    if (!cfg->curve_secret_key_file[0])
        return 0;
    fp_curve_keypair_t kp;
    if (fp_curve_key_load(cfg->curve_secret_key_file, true, &kp, err, errlen) != 0)
        return -1;
    int one = 1, rc = -1;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, kp.secret_z85, FP_CURVE_KEY_Z85) != 0 ||
        zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, FP_ZAP_DOMAIN, strlen(FP_ZAP_DOMAIN)) != 0)
        snprintf(err, errlen, "CURVE server options: %s", zmq_strerror(zmq_errno()));
    else if (zmq_setsockopt(sock, ZMQ_ZAP_ENFORCE_DOMAIN, &one, sizeof one) != 0)
        snprintf(err, errlen, "ZMQ_ZAP_ENFORCE_DOMAIN: %s (this libzmq cannot fail closed)",
                 zmq_strerror(zmq_errno()));
    else
        rc = 0;
    explicit_bzero(&kp, sizeof kp);
    return rc;
}


/* ---- the ZAP handler ---- */

struct fp_security {
    void *zmq_ctx;
    const fp_config_t *cfg;
    bool curve;
    char server_z85[FP_CURVE_KEY_Z85 + 1];
    fp_curve_keypair_t internal; /* floorpost's own clients (demo, printer) */
    pthread_t thread;
    bool started;
    void *pipe; /* main's end of the control PAIR */
    char pipe_ep[64];
    /* Owned by the handler thread once it runs (pthread_create publishes
       the initial values; pthread_join hands them back to fp_security_stop). */
    fp_allow_watch_t *allow;
    int64_t next_log_ns;
    uint64_t suppressed;
    int64_t next_hs_log_ns[3]; /* handshake failures by kind: at most once a second each */
    uint64_t hs_suppressed[3];
};

static bool s_same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

struct fp_allow_watch {
    const char *path, *who;
    fp_allow_t *allow;
    struct stat st;
    bool st_ok;
    int64_t next_check_ns;
};

fp_allow_watch_t *fp_allow_watch_new(const char *path, const char *who, char *err, size_t errlen)
{
    fp_allow_watch_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    self->path = path;
    self->who = who;
    self->st_ok = stat(path, &self->st) == 0;
    self->allow = fp_allow_load(path, err, errlen);
    if (!self->allow) {
        free(self);
        return NULL;
    }
    self->next_check_ns = fp_now_ns() + 1000000000;
    return self;
}

void fp_allow_watch_destroy(fp_allow_watch_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    fp_allow_destroy(&(*self_p)->allow);
    free(*self_p);
    *self_p = NULL;
}

const fp_allow_t *fp_allow_watch_get(fp_allow_watch_t *self)
{
    int64_t now = fp_now_ns();
    if (now < self->next_check_ns)
        return self->allow;
    self->next_check_ns = now + 1000000000;
    struct stat st;
    if (stat(self->path, &st) != 0) {
        if (self->st_ok)
            fp_log(FP_LOG_ERROR, self->who, "allow file unreadable, keeping the previous keys",
                   "file=%s error=\"%s\" keys=%zu", self->path, strerror(errno),
                   fp_allow_count(self->allow));
        self->st_ok = false;
        return self->allow;
    }
    if (self->st_ok && s_same_file(&st, &self->st))
        return self->allow;
    self->st = st;
    self->st_ok = true;
    char err[512];
    fp_allow_t *fresh = fp_allow_load(self->path, err, sizeof err);
    if (!fresh) {
        fp_log(FP_LOG_ERROR, self->who, "allow file not reloaded, keeping the previous keys",
               "error=\"%s\" keys=%zu", err, fp_allow_count(self->allow));
        return self->allow;
    }
    fp_allow_destroy(&self->allow);
    self->allow = fresh;
    fp_log(FP_LOG_INFO, self->who, "allow file reloaded", "file=%s keys=%zu bound_keys=%zu",
           self->path, fp_allow_count(fresh), fp_allow_bound_count(fresh));
    return fresh;
}

static bool s_frame_is(zmq_msg_t *m, const char *s)
{
    size_t n = strlen(s);
    return zmq_msg_size(m) == n && memcmp(zmq_msg_data(m), s, n) == 0;
}

/* Answers one ZAP request (RFC 27). The request comes from libzmq, but the
   client key in it is the peer's: treat the frames as untrusted. */
static void s_handle(fp_security_t *self, void *rep)
{
    enum { MAXF = 8 };
    zmq_msg_t f[MAXF];
    int n = 0;
    for (bool more = true; more;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, rep, 0) < 0) {
            zmq_msg_close(&m);
            break;
        }
        more = zmq_msg_more(&m);
        if (n < MAXF)
            f[n++] = m;
        else
            zmq_msg_close(&m);
    }
    if (n == 0)
        return; /* nothing received (context ending): nothing to answer */
    const char *status = "500", *text = "malformed ZAP request";
    char user[S_NAME_MAX + FP_CURVE_KEY_Z85 + 8] = "", key[FP_CURVE_KEY_Z85 + 1] = "-";
    char address[64] = "-";
    bool curve = false;
    if (n >= 6 && s_frame_is(&f[0], "1.0")) {
        size_t al = zmq_msg_size(&f[3]);
        if (al >= sizeof address)
            al = sizeof address - 1;
        if (al) {
            memcpy(address, zmq_msg_data(&f[3]), al);
            address[al] = '\0';
            for (char *p = address; *p; p++)
                if ((unsigned char)*p <= 0x20 || *p == '"' || *p == '\\' || *p == 0x7f)
                    *p = '_';
        }
        curve = s_frame_is(&f[5], "CURVE") && n >= 7 && zmq_msg_size(&f[6]) == 32;
        if (curve)
            zmq_z85_encode(key, zmq_msg_data(&f[6]), 32);
        const char *name = curve ? fp_allow_find(fp_allow_watch_get(self->allow), key) : NULL;
        status = "400";
        if (!s_frame_is(&f[2], FP_ZAP_DOMAIN))
            text = "wrong ZAP domain";
        else if (!curve)
            text = "mechanism not allowed (CURVE required)";
        else if (strcmp(key, self->internal.public_z85) == 0) {
            status = "200";
            text = "OK";
            snprintf(user, sizeof user, "floorpost-internal");
        } else if (name) {
            status = "200";
            text = "OK";
            /* The key itself: the input looks its source binding up by it. */
            snprintf(user, sizeof user, "%s", key);
        } else {
            text = "client key not allowed";
        }
    }
    if (strcmp(status, "200") == 0) {
        fp_log(FP_LOG_DEBUG, "security", "client allowed", "key=%s user=\"%s\" address=%s", key,
               user, address);
    } else {
        uint64_t total = atomic_fetch_add_explicit(&s_refused, 1, memory_order_relaxed) + 1;
        int64_t now = fp_now_ns();
        if (now >= self->next_log_ns) {
            fp_log(FP_LOG_WARN, "security", "client refused",
                   "reason=\"%s\" key=%s address=%s refused_total=%llu suppressed=%llu", text, key,
                   address, (unsigned long long)total, (unsigned long long)self->suppressed);
            self->suppressed = 0;
            self->next_log_ns = now + 1000000000;
        } else {
            self->suppressed++;
        }
    }
    /* Reply: version, request id, status code, status text, user id, metadata. */
    zmq_send(rep, "1.0", 3, ZMQ_SNDMORE);
    if (n >= 2)
        zmq_send(rep, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ZMQ_SNDMORE);
    else
        zmq_send(rep, "", 0, ZMQ_SNDMORE);
    zmq_send(rep, status, 3, ZMQ_SNDMORE);
    zmq_send(rep, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(rep, user, strlen(user), ZMQ_SNDMORE);
    zmq_send(rep, "", 0, 0);
    for (int i = 0; i < n; i++)
        zmq_msg_close(&f[i]);
}

/* One monitor event: [u16 event, u32 value][endpoint]. */
static void s_monitor_event(fp_security_t *self, void *mon, s_watch_t *w)
{
    const char *label = w->label;
    zmq_msg_t a, b;
    zmq_msg_init(&a);
    zmq_msg_init(&b);
    if (zmq_msg_recv(&a, mon, ZMQ_DONTWAIT) < 0 || !zmq_msg_more(&a) ||
        zmq_msg_recv(&b, mon, 0) < 0 || zmq_msg_size(&a) < 6) {
        zmq_msg_close(&a);
        zmq_msg_close(&b);
        return;
    }
    uint16_t ev;
    uint32_t value;
    memcpy(&ev, zmq_msg_data(&a), 2);
    memcpy(&value, (char *)zmq_msg_data(&a) + 2, 4);
    zmq_msg_close(&a);
    zmq_msg_close(&b);
    if (ev == ZMQ_EVENT_ACCEPT_FAILED) {
        /* value: the errno of accept(2). libzmq retries at once, so a
           lasting EMFILE repeats this many times a second. */
        uint64_t total = atomic_fetch_add_explicit(&w->accept_failed, 1, memory_order_relaxed) + 1;
        int64_t now = fp_now_ns();
        if (now >= w->next_accept_log_ns) {
            fp_log(FP_LOG_ERROR, "security", "accept failed: a connection was refused",
                   "endpoint=%s error=\"%s\" total=%llu suppressed=%llu%s", label,
                   strerror((int)value), (unsigned long long)total,
                   (unsigned long long)w->accept_suppressed,
                   value == EMFILE || value == ENFILE
                       ? " hint=\"out of file descriptors: raise RLIMIT_NOFILE (LimitNOFILE=) "
                         "or limit the connections\""
                       : "");
            w->accept_suppressed = 0;
            w->next_accept_log_ns = now + 1000000000;
        } else {
            w->accept_suppressed++;
        }
        return;
    }
    if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL && (value >> 28) == 2)
        return; /* ZAP_*: the handler's own refusal, logged there */
    int k = ev == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL                 ? 2
            : value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH ? 0
                                                                   : 1;
    uint64_t total = atomic_fetch_add_explicit(&s_hs_failed[k], 1, memory_order_relaxed) + 1;
    int64_t now = fp_now_ns();
    if (now >= self->next_hs_log_ns[k]) {
        fp_log(FP_LOG_WARN, "security", "handshake refused",
               "reason=\"%s\" endpoint=%s protocol_error=0x%x total=%llu suppressed=%llu",
               k == 0   ? "a plain (non-CURVE) client on a CURVE endpoint"
               : k == 2 ? "the peer closed during the handshake (a plain client on a CURVE "
                          "endpoint, or a client with a wrong server key)"
                        : "ZMTP/CURVE handshake failed (a foreign or broken peer)",
               label, value, (unsigned long long)total, (unsigned long long)self->hs_suppressed[k]);
        self->hs_suppressed[k] = 0;
        self->next_hs_log_ns[k] = now + 1000000000;
    } else {
        self->hs_suppressed[k]++;
    }
}

static void *s_handler(void *arg)
{
    fp_security_t *self = arg;
    void *pipe = zmq_socket(self->zmq_ctx, ZMQ_PAIR);
    if (!pipe || zmq_connect(pipe, self->pipe_ep) != 0) {
        if (pipe)
            zmq_close(pipe); /* fp_security_start's receive times out */
        return NULL;
    }
    int linger = 0, status = 0;
    void *rep = NULL; /* the ZAP handler: CURVE only (plain: the monitors alone) */
    if (self->curve && (!(rep = zmq_socket(self->zmq_ctx, ZMQ_REP)) ||
                        zmq_setsockopt(rep, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
                        zmq_bind(rep, FP_ZAP_ENDPOINT) != 0))
        status = zmq_errno() ? zmq_errno() : ENOMEM;
    if (status == 0) {
        pthread_mutex_lock(&s_watch_mu);
        for (int i = 0; i < S_HANDLERS_MAX; i++)
            if (!s_handler_ctx[i]) {
                s_handler_ctx[i] = self->zmq_ctx;
                break;
            }
        pthread_mutex_unlock(&s_watch_mu);
    }
    zmq_send(pipe, &status, sizeof status, 0);
    void *mon[S_WATCH_MAX];
    s_watch_t *mwatch[S_WATCH_MAX];
    int nmon = 0, seen = 0;
    while (status == 0) {
        /* New monitors of this context (the stages bind after we start). */
        pthread_mutex_lock(&s_watch_mu);
        for (; seen < s_nwatch; seen++) {
            if (s_watch[seen].ctx != self->zmq_ctx || !s_watch[seen].pair)
                continue;
            mwatch[nmon] = &s_watch[seen];
            mon[nmon++] = s_watch[seen].pair;
            s_watch[seen].pair = NULL; /* ours now */
        }
        pthread_mutex_unlock(&s_watch_mu);
        /* items: the pipe, the monitors, then the REP (CURVE) */
        zmq_pollitem_t items[2 + S_WATCH_MAX] = {{pipe, 0, ZMQ_POLLIN, 0}};
        for (int i = 0; i < nmon; i++)
            items[1 + i] = (zmq_pollitem_t){mon[i], 0, ZMQ_POLLIN, 0};
        if (rep)
            items[1 + nmon] = (zmq_pollitem_t){rep, 0, ZMQ_POLLIN, 0};
        /* Wakes at least once a second to look at the allow file (and the
           new monitors). */
        int rc = zmq_poll(items, 1 + nmon + (rep ? 1 : 0), 1000);
        if (rc < 0 && zmq_errno() != EINTR)
            break;
        if (items[0].revents & ZMQ_POLLIN)
            break; /* "STOP" */
        if (rep) {
            fp_allow_watch_get(self->allow); /* looks at the file at least once a second */
            if (items[1 + nmon].revents & ZMQ_POLLIN)
                s_handle(self, rep);
        }
        for (int i = 0; i < nmon; i++)
            if (items[1 + i].revents & ZMQ_POLLIN)
                s_monitor_event(self, mon[i], mwatch[i]);
    }
    for (int i = 0; i < nmon; i++)
        zmq_close(mon[i]);
    /* Monitors registered since the last look are ours to close too, or
       their PAIRs would keep zmq_ctx_term waiting (the owner registers
       them before it stops us, so none comes later). */
    pthread_mutex_lock(&s_watch_mu);
    for (; seen < s_nwatch; seen++) {
        if (s_watch[seen].ctx == self->zmq_ctx && s_watch[seen].pair) {
            zmq_close(s_watch[seen].pair);
            s_watch[seen].pair = NULL;
        }
    }
    for (int i = 0; i < S_HANDLERS_MAX; i++)
        if (s_handler_ctx[i] == self->zmq_ctx)
            s_handler_ctx[i] = NULL; /* no more watches of this context */
    pthread_mutex_unlock(&s_watch_mu);
    if (rep)
        zmq_close(rep);
    zmq_close(pipe);
    return NULL;
}

int fp_security_check(const fp_config_t *cfg, char *err, size_t errlen)
{
    if (!cfg->curve_secret_key_file[0])
        return 0;
    fp_curve_keypair_t kp;
    if (fp_curve_key_load(cfg->curve_secret_key_file, true, &kp, err, errlen) != 0)
        return -1;
    explicit_bzero(&kp, sizeof kp);
    fp_allow_t *allow = fp_allow_load(cfg->curve_allow_file, err, errlen);
    if (!allow)
        return -1;
    fp_allow_destroy(&allow);
    return 0;
}

fp_security_t *fp_security_start(void *zmq_ctx, const fp_config_t *cfg, char *err, size_t errlen)
{
    fp_security_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    self->zmq_ctx = zmq_ctx;
    self->cfg = cfg;
    if (!cfg->curve_secret_key_file[0]) {
        static _Atomic int warned; /* once per process: replay's context starts one too */
        if (!atomic_exchange(&warned, 1))
            fp_log(FP_LOG_WARN, "security", "plain, unauthenticated endpoints",
                   "hint=\"anyone who reaches the tcp ports may send and subscribe; set "
                   "[security] curve_secret_key_file and curve_allow_file\"%s",
                   cfg->curve_allow_file[0] ? " curve_allow_file=ignored" : "");
        goto thread; /* for the monitors (accept failures) */
    }
    self->curve = true;
    fp_curve_keypair_t server;
    if (fp_curve_key_load(cfg->curve_secret_key_file, true, &server, err, errlen) != 0)
        goto fail;
    memcpy(self->server_z85, server.public_z85, sizeof self->server_z85);
    explicit_bzero(&server, sizeof server);
    struct stat st;
    if (stat(cfg->curve_secret_key_file, &st) == 0 && (st.st_mode & S_IROTH))
        fp_log(FP_LOG_WARN, "security", "secret key file is readable by every user",
               "file=%s hint=\"chmod 0600 (or 0640 with the service's group)\"",
               cfg->curve_secret_key_file);
    self->allow = fp_allow_watch_new(cfg->curve_allow_file, "security", err, errlen);
    if (!self->allow)
        goto fail;
    if (zmq_curve_keypair(self->internal.public_z85, self->internal.secret_z85) != 0) {
        snprintf(err, errlen, "zmq_curve_keypair: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
thread:
    /* A unique control endpoint per handler: a closed inproc endpoint is
       unregistered asynchronously. */
    snprintf(self->pipe_ep, sizeof self->pipe_ep, "inproc://fp-zap-ctl-%p", (void *)self);
    self->pipe = zmq_socket(zmq_ctx, ZMQ_PAIR);
    int timeout = 10000, linger = 0;
    if (!self->pipe || zmq_setsockopt(self->pipe, ZMQ_RCVTIMEO, &timeout, sizeof timeout) != 0 ||
        zmq_setsockopt(self->pipe, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_bind(self->pipe, self->pipe_ep) != 0) {
        snprintf(err, errlen, "ZAP control pipe: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (pthread_create(&self->thread, NULL, s_handler, self) != 0) {
        snprintf(err, errlen, "cannot start the ZAP handler thread");
        goto fail;
    }
    self->started = true;
    int status = -1;
    if (zmq_recv(self->pipe, &status, sizeof status, 0) != (int)sizeof status || status != 0) {
        snprintf(err, errlen, "ZAP handler: bind %s: %s", FP_ZAP_ENDPOINT,
                 status > 0 ? zmq_strerror(status) : "no report");
        goto fail;
    }
    if (!self->curve)
        return self;
    fp_log(FP_LOG_INFO, "security", "CURVE on, ZAP handler running",
           "server_key=%s allow_file=%s keys=%zu bound_keys=%zu", self->server_z85,
           cfg->curve_allow_file, fp_allow_count(fp_allow_watch_get(self->allow)),
           fp_allow_bound_count(fp_allow_watch_get(self->allow)));
    return self;
fail:
    fp_security_stop(&self);
    return NULL;
}

void fp_security_stop(fp_security_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    fp_security_t *self = *self_p;
    if (self->started) {
        zmq_send(self->pipe, "STOP", 4, ZMQ_DONTWAIT);
        pthread_join(self->thread, NULL);
    }
    if (self->pipe)
        zmq_close(self->pipe);
    fp_allow_watch_destroy(&self->allow);
    explicit_bzero(&self->internal, sizeof self->internal);
    free(self);
    *self_p = NULL;
}

bool fp_security_curve(const fp_security_t *self)
{
    return self && self->curve;
}

bool fp_security_internal_client(const fp_security_t *self, const char **server_z85,
                                 const fp_curve_keypair_t **kp)
{
    if (!self || !self->curve)
        return false;
    *server_z85 = self->server_z85;
    *kp = &self->internal;
    return true;
}
