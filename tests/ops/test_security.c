/*  test_security.c - key files, the allow file, and the ZAP handler over
    real tcp sockets: a listed key delivers, an unknown key delivers
    nothing and is counted, a changed allow file is picked up without a
    restart, and with no handler running connections fail closed. */
#include "producer.h"
#include "security.h"
#include "test.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

static char s_dir[64];
static char s_err[512];

static void s_write(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ASSERT(f);
    fputs(text, f);
    fclose(f);
}

static char *s_slurp(const char *path)
{
    static char buf[4096];
    FILE *f = fopen(path, "r");
    ASSERT(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void s_path(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", s_dir, name);
}

/* Asserts text is refused with every given fragment in the message. */
static void s_allow_refused(const char *text, const char *frag1, const char *frag2)
{
    s_err[0] = '\0';
    fp_allow_t *a = fp_allow_parse(text, "allow.txt", s_err, sizeof s_err);
    if (a)
        fprintf(stderr, "accepted: %s\n", text);
    ASSERT(a == NULL);
    if (!strstr(s_err, frag1) || (frag2 && !strstr(s_err, frag2))) {
        fprintf(stderr, "message '%s' lacks '%s' or '%s'\n", s_err, frag1, frag2 ? frag2 : "");
        ASSERT(0);
    }
}

TEST(test_allow_parse)
{
    fp_curve_keypair_t a, b, c;
    ASSERT_EQ(fp_curve_keygen(NULL, &a, s_err, sizeof s_err), 0);
    ASSERT_EQ(fp_curve_keygen("", &b, s_err, sizeof s_err), 0);
    ASSERT_EQ(fp_curve_keygen(NULL, &c, s_err, sizeof s_err), 0);
    ASSERT_EQ(strlen(a.public_z85), 40);
    ASSERT(strcmp(a.public_z85, b.public_z85) != 0);
    char text[1024];
    snprintf(text, sizeof text,
             "# producers of plant 1000\n"
             "\n"
             "   %s   press-line-3 gateway  \r\n"
             "%s\t# a trailing comment\n"
             "#%s\n"      /* a commented-out key: not listed */
             "%s again\n" /* repeated key: counted once */
             "   # indented comment\n",
             a.public_z85, b.public_z85, c.public_z85, a.public_z85);
    fp_allow_t *allow = fp_allow_parse(text, "allow.txt", s_err, sizeof s_err);
    ASSERT(allow);
    ASSERT_EQ(fp_allow_count(allow), 2);
    ASSERT(fp_allow_find(allow, a.public_z85) != NULL);
    ASSERT(strcmp(fp_allow_find(allow, a.public_z85), "press-line-3 gateway") == 0 ||
           strcmp(fp_allow_find(allow, a.public_z85), "again") == 0);
    ASSERT_STREQ(fp_allow_find(allow, b.public_z85), "a trailing comment");
    ASSERT(fp_allow_find(allow, c.public_z85) == NULL);
    ASSERT(fp_allow_find(allow, "short") == NULL);
    ASSERT(fp_allow_find(allow, NULL) == NULL);
    fp_allow_destroy(&allow);
    ASSERT(allow == NULL);
    fp_allow_destroy(&allow); /* safe twice */

    /* no Z85 key starts with '#': such a line is a comment, whatever follows */
    const char *hashkey = "#bcdefghij0123456789ABCDEFGHIJ.-:+=^!/*?";
    ASSERT_EQ(strlen(hashkey), 40);
    uint8_t raw[32];
    ASSERT(zmq_z85_decode(raw, hashkey) == NULL);
    snprintf(text, sizeof text, "%s lab\n", hashkey);
    allow = fp_allow_parse(text, NULL, s_err, sizeof s_err);
    ASSERT(allow);
    ASSERT_EQ(fp_allow_count(allow), 0);
    fp_allow_destroy(&allow);

    /* empty and comment-only files list no key (everyone is refused) */
    allow = fp_allow_parse("# nobody yet\n", NULL, s_err, sizeof s_err);
    ASSERT(allow);
    ASSERT_EQ(fp_allow_count(allow), 0);
    ASSERT(fp_allow_find(allow, a.public_z85) == NULL);
    fp_allow_destroy(&allow);

    /* errors name file:line */
    snprintf(text, sizeof text, "# ok\n%s\nnot-a-key\n", a.public_z85);
    s_allow_refused(text, "allow.txt:3:", "not-a-key");
    s_allow_refused("\n\n\n   abc def\n", "allow.txt:4:", "not a Z85 public key");
    snprintf(text, sizeof text, "%.39s\n", a.public_z85); /* 39 characters */
    s_allow_refused(text, "allow.txt:1:", "40 Z85");
    snprintf(text, sizeof text, "%sX\n", a.public_z85); /* 41 characters */
    s_allow_refused(text, "allow.txt:1:", NULL);
    snprintf(text, sizeof text, "%.39s~\n", a.public_z85); /* '~' is not Z85 */
    s_allow_refused(text, "allow.txt:1:", NULL);
    s_allow_refused("public = abc\n", "allow.txt:1:", NULL);
    /* no name: a placeholder */
    ASSERT(fp_allow_parse("x\n", NULL, s_err, sizeof s_err) == NULL);
    ASSERT(strncmp(s_err, "(allow):1:", 10) == 0);
    /* a file */
    char path[128];
    s_path(path, sizeof path, "missing.allow");
    ASSERT(fp_allow_load(path, s_err, sizeof s_err) == NULL);
    ASSERT(strstr(s_err, "missing.allow") && strstr(s_err, "cannot read"));
}

/* `cat x.pub >> allow.txt`: the lines of a .pub file as fp_curve_keygen
   (floorpost keygen) writes it are an allow-file entry; a .key file's
   secret line is refused, named. */
TEST(test_allow_takes_pub_files)
{
    char base[128], pub[160], key[160];
    snprintf(base, sizeof base, "%s/cat-%ld", s_dir, (long)getpid());
    fp_curve_keypair_t kp;
    ASSERT_EQ(fp_curve_keygen(base, &kp, s_err, sizeof s_err), 0);
    snprintf(pub, sizeof pub, "%s.pub", base);
    snprintf(key, sizeof key, "%s.key", base);
    char *pubtext = fp_curve_read_text(pub, s_err, sizeof s_err);
    char *keytext = fp_curve_read_text(key, s_err, sizeof s_err);
    ASSERT(pubtext && keytext);
    ASSERT(strncmp(pubtext, "public = ", 9) == 0); /* what keygen writes, read back */
    fp_curve_keypair_t other;
    ASSERT_EQ(fp_curve_keygen(NULL, &other, s_err, sizeof s_err), 0);
    char text[1024];
    /* an allow file with a bare key, then the .pub appended as cat does */
    snprintf(text, sizeof text, "%s line-2 gateway\n%s", other.public_z85, pubtext);
    fp_allow_t *allow = fp_allow_parse(text, "allow.txt", s_err, sizeof s_err);
    if (!allow)
        fprintf(stderr, "%s\n", s_err);
    ASSERT(allow);
    ASSERT_EQ(fp_allow_count(allow), 2);
    ASSERT(fp_allow_find(allow, kp.public_z85) != NULL);
    ASSERT(fp_allow_find(allow, other.public_z85) != NULL);
    fp_allow_destroy(&allow);
    snprintf(text, sizeof text, "public=%s  press 4\n", kp.public_z85); /* blanks optional */
    allow = fp_allow_parse(text, "allow.txt", s_err, sizeof s_err);
    ASSERT(allow);
    ASSERT_STREQ(fp_allow_find(allow, kp.public_z85), "press 4");
    fp_allow_destroy(&allow);
    /* the .key appended by mistake: refused, naming the line and why */
    snprintf(text, sizeof text, "%s%s", pubtext, keytext);
    s_allow_refused(text, "allow.txt:3:", "secret key");
    free(pubtext);
    free(keytext);
    unlink(pub);
    unlink(key);
}

TEST(test_keygen_files)
{
    char base[128], keyp[160], pubp[160];
    s_path(base, sizeof base, "server");
    snprintf(keyp, sizeof keyp, "%s.key", base);
    snprintf(pubp, sizeof pubp, "%s.pub", base);
    fp_curve_keypair_t made, loaded, pub;
    ASSERT_EQ(fp_curve_keygen(base, &made, s_err, sizeof s_err), 0);
    struct stat st;
    ASSERT_EQ(stat(keyp, &st), 0);
    ASSERT_EQ(st.st_mode & 0777, 0600);
    ASSERT_EQ(stat(pubp, &st), 0);
    ASSERT_EQ(st.st_mode & 0077 & ~0044, 0); /* 0644 minus the umask */
    char expect[128];
    snprintf(expect, sizeof expect, "public = %s\nsecret = %s\n", made.public_z85,
             made.secret_z85);
    ASSERT_STREQ(s_slurp(keyp), expect);
    snprintf(expect, sizeof expect, "public = %s\n", made.public_z85);
    ASSERT_STREQ(s_slurp(pubp), expect);
    /* the pair belongs together */
    char derived[41];
    ASSERT_EQ(zmq_curve_public(derived, made.secret_z85), 0);
    ASSERT_STREQ(derived, made.public_z85);

    ASSERT_EQ(fp_curve_key_load(keyp, true, &loaded, s_err, sizeof s_err), 0);
    ASSERT_STREQ(loaded.public_z85, made.public_z85);
    ASSERT_STREQ(loaded.secret_z85, made.secret_z85);
    ASSERT_EQ(fp_curve_key_load(pubp, false, &pub, s_err, sizeof s_err), 0);
    ASSERT_STREQ(pub.public_z85, made.public_z85);
    ASSERT_STREQ(pub.secret_z85, "");
    /* a .pub file is not a server key */
    ASSERT_EQ(fp_curve_key_load(pubp, true, &pub, s_err, sizeof s_err), -1);
    ASSERT(strstr(s_err, "server.pub") && strstr(s_err, "secret"));

    /* never overwrites a key */
    ASSERT_EQ(fp_curve_keygen(base, NULL, s_err, sizeof s_err), -1);
    ASSERT(strstr(s_err, "server.key") && strstr(s_err, "overwrite"));
    ASSERT_STREQ(s_slurp(pubp), expect); /* untouched */
    /* a directory that does not exist */
    ASSERT_EQ(fp_curve_keygen("/nonexistent/dir/k", NULL, s_err, sizeof s_err), -1);

    /* bad key files */
    char bad[160];
    s_path(bad, sizeof bad, "bad.key");
    s_write(bad, "public = short\n");
    ASSERT_EQ(fp_curve_key_load(bad, false, &pub, s_err, sizeof s_err), -1);
    ASSERT(strstr(s_err, "bad.key:1:") && strstr(s_err, "Z85"));
    s_write(bad, "# comment\nprivate = x\n");
    ASSERT_EQ(fp_curve_key_load(bad, false, &pub, s_err, sizeof s_err), -1);
    ASSERT(strstr(s_err, "bad.key:2:") && strstr(s_err, "private"));
    fp_curve_keypair_t other;
    ASSERT_EQ(fp_curve_keygen(NULL, &other, s_err, sizeof s_err), 0);
    snprintf(expect, sizeof expect, "public = %s\nsecret = %s\n", other.public_z85,
             made.secret_z85);
    s_write(bad, expect);
    ASSERT_EQ(fp_curve_key_load(bad, true, &pub, s_err, sizeof s_err), -1);
    ASSERT(strstr(s_err, "does not belong"));
    s_write(bad, "\n");
    ASSERT_EQ(fp_curve_key_load(bad, false, &pub, s_err, sizeof s_err), -1);
    ASSERT(strstr(s_err, "no 'public"));
}

/* The text parser under fp_curve_key_load (also what fuzz/fuzz_curve.c
   feeds): CRLF, blanks and comments; the input is not changed; messages
   name the given path or "(key)". */
TEST(test_key_parse_text)
{
    fp_curve_keypair_t made, kp;
    ASSERT_EQ(fp_curve_keygen(NULL, &made, s_err, sizeof s_err), 0);
    char text[256], copy[256];
    snprintf(text, sizeof text, "# server\r\n  public =\t%s  \r\n\r\nsecret = %s\r\n",
             made.public_z85, made.secret_z85);
    memcpy(copy, text, sizeof text);
    ASSERT_EQ(fp_curve_key_parse(text, "srv.key", true, &kp, s_err, sizeof s_err), 0);
    ASSERT_STREQ(kp.public_z85, made.public_z85);
    ASSERT_STREQ(kp.secret_z85, made.secret_z85);
    ASSERT(memcmp(text, copy, sizeof text) == 0);
    /* only the secret: the public key is derived */
    snprintf(text, sizeof text, "secret = %s", made.secret_z85);
    ASSERT_EQ(fp_curve_key_parse(text, NULL, false, &kp, s_err, sizeof s_err), 0);
    ASSERT_STREQ(kp.public_z85, made.public_z85);
    ASSERT_EQ(fp_curve_key_parse("", NULL, false, &kp, s_err, sizeof s_err), -1);
    ASSERT(strstr(s_err, "(key): no 'public"));
    ASSERT_EQ(fp_curve_key_parse("x\npublic\n", "k.pub", false, &kp, s_err, sizeof s_err), -1);
    ASSERT(strstr(s_err, "k.pub:1: line without '='"));
    static const fp_curve_keypair_t zero;
    ASSERT(memcmp(&kp, &zero, sizeof kp) == 0); /* a refusal leaves nothing */
}

/* ---- over real sockets ---- */

typedef struct {
    fp_config_t cfg;
    fp_curve_keypair_t server, allowed, unknown;
    char allow_path[200];
} fixture_t;

static void s_fixture(fixture_t *fx)
{
    fp_config_defaults(&fx->cfg);
    char base[100];
    /* Unique per case: each case is its own process (test.h) and starts
       with n = 0, and keygen never overwrites an earlier case's key. */
    static int n;
    snprintf(base, sizeof base, "%s/srv%ld-%d", s_dir, (long)getpid(), n++);
    ASSERT_EQ(fp_curve_keygen(base, &fx->server, s_err, sizeof s_err), 0);
    snprintf(fx->cfg.curve_secret_key_file, sizeof fx->cfg.curve_secret_key_file, "%s.key", base);
    snprintf(fx->allow_path, sizeof fx->allow_path, "%s.allow", base);
    snprintf(fx->cfg.curve_allow_file, sizeof fx->cfg.curve_allow_file, "%s", fx->allow_path);
    ASSERT_EQ(fp_curve_keygen(NULL, &fx->allowed, s_err, sizeof s_err), 0);
    ASSERT_EQ(fp_curve_keygen(NULL, &fx->unknown, s_err, sizeof s_err), 0);
    char text[128];
    snprintf(text, sizeof text, "%s producer-1\n", fx->allowed.public_z85);
    s_write(fx->allow_path, text);
}

/* A PULL bound on a free loopback port, prepared as floorpost's server
   sockets are. enforce < 0: as fp_security_server_socket leaves it. */
static void *s_server(void *ctx, const fp_config_t *cfg, int enforce, char *ep, size_t cap)
{
    void *s = zmq_socket(ctx, ZMQ_PULL);
    ASSERT(s);
    ASSERT_EQ(fp_security_server_socket(s, cfg, s_err, sizeof s_err), 0);
    if (enforce >= 0)
        ASSERT_EQ(zmq_setsockopt(s, 93 /* ZMQ_ZAP_ENFORCE_DOMAIN */, &enforce, sizeof enforce), 0);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    ASSERT_EQ(zmq_bind(s, "tcp://127.0.0.1:*"), 0);
    size_t len = cap;
    ASSERT_EQ(zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, ep, &len), 0);
    return s;
}

/* A CURVE client (PUSH) with key pair kp; queues one message at once. */
static void *s_client(void *ctx, const char *ep, const char *server_z85,
                      const fp_curve_keypair_t *kp)
{
    void *c = zmq_socket(ctx, ZMQ_PUSH);
    ASSERT(c);
    int linger = 0;
    zmq_setsockopt(c, ZMQ_LINGER, &linger, sizeof linger);
    if (kp)
        ASSERT_EQ(fp_curve_client_socket(c, server_z85, kp), 0);
    ASSERT_EQ(zmq_connect(c, ep), 0);
    ASSERT_EQ(zmq_send(c, "hello", 5, ZMQ_DONTWAIT), 5);
    return c;
}

/* true when server receives a message within ms. */
static bool s_receives(void *server, int ms)
{
    zmq_pollitem_t it = {server, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, ms) <= 0)
        return false;
    char buf[16];
    return zmq_recv(server, buf, sizeof buf, ZMQ_DONTWAIT) == 5;
}

/* A client with kp delivers to server (a fresh connection). */
static bool s_delivers(void *ctx, void *server, const char *ep, const fixture_t *fx,
                       const fp_curve_keypair_t *kp, int ms)
{
    void *c = s_client(ctx, ep, fx->server.public_z85, kp);
    bool got = s_receives(server, ms);
    zmq_close(c);
    return got;
}

TEST(test_fail_closed_without_handler)
{
    fixture_t fx;
    s_fixture(&fx);
    void *ctx = zmq_ctx_new();
    char ep[128];
    /* what floorpost's sockets get: no ZAP handler in ctx -> nobody gets in */
    void *srv = s_server(ctx, &fx.cfg, -1, ep, sizeof ep);
    ASSERT(!s_delivers(ctx, srv, ep, &fx, &fx.allowed, 700));
    ASSERT(!s_delivers(ctx, srv, ep, &fx, &fx.unknown, 300));
    /* the control: the same socket without ZAP_ENFORCE_DOMAIN lets any
       key in when no handler runs (libzmq's "Stonehouse" default) - the
       reason floorpost sets it */
    char ep2[128];
    void *open_srv = s_server(ctx, &fx.cfg, 0, ep2, sizeof ep2);
    ASSERT(s_delivers(ctx, open_srv, ep2, &fx, &fx.unknown, 3000));
    zmq_close(open_srv);
    zmq_close(srv);
    zmq_ctx_term(ctx);
}

TEST(test_handler_allows_listed_refuses_unknown)
{
    fixture_t fx;
    s_fixture(&fx);
    void *ctx = zmq_ctx_new();
    fp_security_t *sec = fp_security_start(ctx, &fx.cfg, s_err, sizeof s_err);
    if (!sec)
        fprintf(stderr, "%s\n", s_err);
    ASSERT(sec);
    ASSERT(fp_security_curve(sec));
    /* a second handler in the same context cannot bind the ZAP endpoint */
    ASSERT(fp_security_start(ctx, &fx.cfg, s_err, sizeof s_err) == NULL);
    ASSERT(strstr(s_err, FP_ZAP_ENDPOINT));
    char ep[128];
    void *srv = s_server(ctx, &fx.cfg, -1, ep, sizeof ep);

    uint64_t refused0 = fp_security_refused();
    ASSERT(s_delivers(ctx, srv, ep, &fx, &fx.allowed, 3000));
    ASSERT_EQ(fp_security_refused(), refused0);

    ASSERT(!s_delivers(ctx, srv, ep, &fx, &fx.unknown, 700));
    ASSERT(fp_security_refused() > refused0);
    /* a plain (NULL mechanism) client gets nowhere either */
    ASSERT(!s_delivers(ctx, srv, ep, &fx, NULL, 500));
    /* a client that knows the wrong server key: the handshake fails */
    fp_curve_keypair_t imposter;
    ASSERT_EQ(fp_curve_keygen(NULL, &imposter, s_err, sizeof s_err), 0);
    void *c = s_client(ctx, ep, imposter.public_z85, &fx.allowed);
    ASSERT(!s_receives(srv, 500));
    zmq_close(c);

    /* floorpost's own in-process client key is always allowed */
    const char *server_z85;
    const fp_curve_keypair_t *internal;
    ASSERT(fp_security_internal_client(sec, &server_z85, &internal));
    ASSERT_STREQ(server_z85, fx.server.public_z85);
    c = s_client(ctx, ep, server_z85, internal);
    ASSERT(s_receives(srv, 3000));
    zmq_close(c);

    /* rotation: list the new key (a new file, renamed in place, as editors
       do) - picked up within about a second, no restart */
    char text[256], tmp[220];
    snprintf(text, sizeof text, "# rotated\n%s producer-1-new\n", fx.unknown.public_z85);
    snprintf(tmp, sizeof tmp, "%s.tmp", fx.allow_path);
    s_write(tmp, text);
    ASSERT_EQ(rename(tmp, fx.allow_path), 0);
    bool in = false;
    for (int i = 0; i < 30 && !in; i++)
        in = s_delivers(ctx, srv, ep, &fx, &fx.unknown, 200);
    ASSERT(in);
    /* the old key is out for new connections */
    ASSERT(!s_delivers(ctx, srv, ep, &fx, &fx.allowed, 500));
    /* a broken edit keeps the previous list */
    s_write(fx.allow_path, "garbage\n");
    usleep(1200 * 1000);
    ASSERT(s_delivers(ctx, srv, ep, &fx, &fx.unknown, 3000));

    /* ZAP outage: with the handler stopped, even listed keys fail closed */
    fp_security_stop(&sec);
    ASSERT(sec == NULL);
    fp_security_stop(&sec); /* safe twice */
    ASSERT(!s_delivers(ctx, srv, ep, &fx, &fx.unknown, 700));
    zmq_close(srv);
    zmq_ctx_term(ctx);
}

TEST(test_start_errors_and_plain)
{
    void *ctx = zmq_ctx_new();
    fp_config_t cfg;
    fp_config_defaults(&cfg);
    /* plain: nothing to start, a warning, no internal client */
    fp_security_t *sec = fp_security_start(ctx, &cfg, s_err, sizeof s_err);
    ASSERT(sec);
    ASSERT(!fp_security_curve(sec));
    const char *sk;
    const fp_curve_keypair_t *kp;
    ASSERT(!fp_security_internal_client(sec, &sk, &kp));
    ASSERT_EQ(fp_security_check(&cfg, s_err, sizeof s_err), 0);
    fp_security_stop(&sec);
    /* plain server sockets still get the hostile-peer options */
    cfg.handshake_timeout_ms = 1234;
    cfg.heartbeat_ivl_ms = 567;
    cfg.heartbeat_timeout_ms = 8910;
    void *s = zmq_socket(ctx, ZMQ_ROUTER);
    ASSERT_EQ(fp_security_server_socket(s, &cfg, s_err, sizeof s_err), 0);
    int v = 0;
    size_t len = sizeof v;
    ASSERT_EQ(zmq_getsockopt(s, ZMQ_HANDSHAKE_IVL, &v, &len), 0);
    ASSERT_EQ(v, 1234);
    ASSERT_EQ(zmq_getsockopt(s, ZMQ_HEARTBEAT_IVL, &v, &len), 0);
    ASSERT_EQ(v, 567);
    ASSERT_EQ(zmq_getsockopt(s, ZMQ_HEARTBEAT_TIMEOUT, &v, &len), 0);
    ASSERT_EQ(v, 8910);
    ASSERT_EQ(zmq_getsockopt(s, ZMQ_MECHANISM, &v, &len), 0);
    ASSERT_EQ(v, ZMQ_NULL);
    zmq_close(s);

    /* CURVE: the server socket is a CURVE server in domain "floorpost" */
    fixture_t fx;
    s_fixture(&fx);
    s = zmq_socket(ctx, ZMQ_PUB);
    ASSERT_EQ(fp_security_server_socket(s, &fx.cfg, s_err, sizeof s_err), 0);
    ASSERT_EQ(zmq_getsockopt(s, ZMQ_MECHANISM, &v, &len), 0);
    ASSERT_EQ(v, ZMQ_CURVE);
    ASSERT_EQ(zmq_getsockopt(s, ZMQ_CURVE_SERVER, &v, &len), 0);
    ASSERT_EQ(v, 1);
    char dom[32];
    len = sizeof dom;
    ASSERT_EQ(zmq_getsockopt(s, ZMQ_ZAP_DOMAIN, dom, &len), 0);
    ASSERT_STREQ(dom, "floorpost");
    zmq_close(s);
    ASSERT_EQ(fp_security_check(&fx.cfg, s_err, sizeof s_err), 0);

    /* a bad allow file, a missing key file: refused at start and by check */
    s_write(fx.allow_path, "ok\n");
    ASSERT(fp_security_start(ctx, &fx.cfg, s_err, sizeof s_err) == NULL);
    ASSERT(strstr(s_err, ".allow:1:"));
    ASSERT_EQ(fp_security_check(&fx.cfg, s_err, sizeof s_err), -1);
    ASSERT(strstr(s_err, ".allow:1:"));
    snprintf(fx.cfg.curve_secret_key_file, sizeof fx.cfg.curve_secret_key_file, "%s/none.key",
             s_dir);
    ASSERT(fp_security_start(ctx, &fx.cfg, s_err, sizeof s_err) == NULL);
    ASSERT(strstr(s_err, "none.key"));
    s = zmq_socket(ctx, ZMQ_PUB);
    ASSERT_EQ(fp_security_server_socket(s, &fx.cfg, s_err, sizeof s_err), -1);
    ASSERT(strstr(s_err, "none.key"));
    zmq_close(s);
    /* client keys are checked */
    s = zmq_socket(ctx, ZMQ_PUSH);
    fp_curve_keypair_t bad = fx.allowed;
    bad.secret_z85[3] = '~';
    ASSERT_EQ(fp_curve_client_socket(s, fx.server.public_z85, &bad), -EINVAL);
    ASSERT_EQ(fp_curve_client_socket(s, "short", &fx.allowed), -EINVAL);
    ASSERT_EQ(fp_curve_client_socket(s, fx.server.public_z85, &fx.allowed), 0);
    zmq_close(s);
    zmq_ctx_term(ctx);
}

/* The producer's CURVE client side (producer_set_curve, producer_connect). */
TEST(test_producer_over_curve)
{
    fixture_t fx;
    s_fixture(&fx);
    void *ctx = zmq_ctx_new();
    fp_security_t *sec = fp_security_start(ctx, &fx.cfg, s_err, sizeof s_err);
    ASSERT(sec);
    char ep[128];
    void *srv = s_server(ctx, &fx.cfg, -1, ep, sizeof ep);
    producer_t *p = producer_new(ctx, NULL, PRODUCER_PUSH, 4);
    ASSERT(p);
    ASSERT_EQ(producer_set_curve(p, fx.server.public_z85, "short", fx.allowed.secret_z85),
              -EINVAL);
    ASSERT_EQ(producer_set_curve(p, NULL, fx.allowed.public_z85, fx.allowed.secret_z85),
              -EINVAL);
    ASSERT_EQ(producer_set_curve(p, fx.server.public_z85, fx.allowed.public_z85,
                                 fx.allowed.secret_z85), 0);
    ASSERT_EQ(producer_connect(p, NULL), -EINVAL);
    ASSERT_EQ(producer_connect(p, ep), 0);
    fp_rec_in_t rec = {.seq = 1, .quantity = 3, .kind = FP_KIND_PART_COUNT};
    ASSERT_EQ(producer_add(p, 42, 1, &rec), 0);
    ASSERT_EQ(producer_flush(p), 0);
    zmq_pollitem_t it = {srv, 0, ZMQ_POLLIN, 0};
    ASSERT_EQ(zmq_poll(&it, 1, 3000), 1);
    zmq_msg_t m;
    zmq_msg_init(&m);
    ASSERT(zmq_msg_recv(&m, srv, 0) > 12);
    ASSERT(memcmp((char *)zmq_msg_data(&m) + 4, "FPT1", 4) == 0);
    zmq_msg_close(&m);
    producer_destroy(&p);
    zmq_close(srv);
    fp_security_stop(&sec);
    zmq_ctx_term(ctx);
}

/* sources=: ranges and lists, the union of a key's lines, * and no word
   (unbound: any source), an unlisted key (any source), and bad lists
   named by file:line. */
TEST(test_allow_sources)
{
    fp_curve_keypair_t a, b, c;
    ASSERT_EQ(fp_curve_keygen(NULL, &a, s_err, sizeof s_err), 0);
    ASSERT_EQ(fp_curve_keygen(NULL, &b, s_err, sizeof s_err), 0);
    ASSERT_EQ(fp_curve_keygen(NULL, &c, s_err, sizeof s_err), 0);
    char text[1024];
    snprintf(text, sizeof text,
             "%s sources=100-199,250 press line 3\n"
             "public = %s sources=*\n"
             "%s sources=7\n"
             "%s sources=300-300,18446744073709551615 # a second line: the union\n",
             a.public_z85, b.public_z85, c.public_z85, c.public_z85);
    fp_allow_t *al = fp_allow_parse(text, "allow.txt", s_err, sizeof s_err);
    ASSERT(al);
    ASSERT_EQ(fp_allow_count(al), 3);
    ASSERT_EQ(fp_allow_bound_count(al), 2);
    ASSERT(fp_allow_bound(al, a.public_z85));
    ASSERT(!fp_allow_bound(al, b.public_z85));
    ASSERT(fp_allow_bound(al, c.public_z85));
    ASSERT(fp_allow_permits(al, a.public_z85, 100));
    ASSERT(fp_allow_permits(al, a.public_z85, 150));
    ASSERT(fp_allow_permits(al, a.public_z85, 199));
    ASSERT(fp_allow_permits(al, a.public_z85, 250));
    ASSERT(!fp_allow_permits(al, a.public_z85, 99));
    ASSERT(!fp_allow_permits(al, a.public_z85, 200));
    ASSERT(!fp_allow_permits(al, a.public_z85, 249));
    ASSERT(!fp_allow_permits(al, a.public_z85, 7));
    ASSERT(fp_allow_permits(al, b.public_z85, 7));   /* sources=*: any */
    ASSERT(fp_allow_permits(al, b.public_z85, 150));
    ASSERT(fp_allow_permits(al, c.public_z85, 7));
    ASSERT(fp_allow_permits(al, c.public_z85, 300));
    ASSERT(fp_allow_permits(al, c.public_z85, UINT64_MAX));
    ASSERT(!fp_allow_permits(al, c.public_z85, 8));
    ASSERT(!fp_allow_permits(al, c.public_z85, 150));
    /* not listed: today's rule (the ZAP handler refuses it; any source) */
    ASSERT(fp_allow_permits(al, "0000000000000000000000000000000000000000", 7));
    ASSERT(fp_allow_permits(NULL, a.public_z85, 7));
    fp_allow_destroy(&al);

    /* appending a key's unbound line again does not unbind it */
    snprintf(text, sizeof text, "%s sources=5\n%s\n", a.public_z85, a.public_z85);
    al = fp_allow_parse(text, "allow.txt", s_err, sizeof s_err);
    ASSERT(al);
    ASSERT(fp_allow_bound(al, a.public_z85));
    ASSERT(!fp_allow_permits(al, a.public_z85, 6));
    fp_allow_destroy(&al);

    static const char *bad[] = {"sources=", "sources=1-", "sources=-5", "sources=5-4",
                                "sources=1,,2", "sources=1,", "sources=a", "sources=1;2",
                                "sources=18446744073709551616", "sources=1-2x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(text, sizeof text, "# line 1\n%s %s\n", a.public_z85, bad[i]);
        s_allow_refused(text, "allow.txt:2: ", "is not a list of source ids");
    }
}

int main(int argc, char **argv)
{
    test_init(argc, argv);
    snprintf(s_dir, sizeof s_dir, "/tmp/fp-test-security-XXXXXX");
    ASSERT(mkdtemp(s_dir));
    RUN(test_allow_parse);
    RUN(test_allow_sources);
    RUN(test_allow_takes_pub_files);
    RUN(test_keygen_files);
    RUN(test_key_parse_text);
    RUN(test_fail_closed_without_handler);
    RUN(test_handler_allows_listed_refuses_unknown);
    RUN(test_start_errors_and_plain);
    RUN(test_producer_over_curve);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", s_dir);
    ASSERT_EQ(system(cmd), 0);
    return test_done();
}
