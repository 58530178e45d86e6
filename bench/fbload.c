/*  fbload.c - fpload's plant stream for a peer: Fluent Bit's forward input
    (make bench-peer, bench/peer.py). Its own process.

    The same records fpload sends floorpost (plantgen, bu_plant_for_keys:
    --keys K open keys over 8 lines, --rpo 200 quantity records per
    operation), each a Fluent Bit record of the Forward protocol
    ([tag, [[time, {...}], ...]], msgpack over TCP; one message of --batch
    records), with the fields floorpost's keys are made of: kind (1 part
    count, 2 material, 3 scrap, 4 operation started, 5 completed), plant,
    line, station, order_no, operation, material, lot, unit, reason ("" when
    absent) and quantity (an integer: parts, or thousandths of a unit).

    The whole stream is encoded before the clock starts (as fpload does by
    default), then written to one connection as fast as the peer reads it.
    It prints "SENDING" before the first byte and "SENT records=N" after
    the last (stdout, flushed), writes --json FILE and exits 0.

    Exactness (bench/peer.py checks it against the peer's output): the
    JSON's records, sum_quantity, and sum_quantity_hash = the sum over
    records of quantity x H(key) mod 2^64, H = FNV-1a 64 of
    "kind\x1forder_no\x1foperation\x1fmaterial\x1flot\x1freason" (kind in
    decimal); the peer's SUM(quantity) per group and window, folded the same
    way, must give the same sums, and its COUNT(*) the same records.

    Usage: fbload --port P [--host 127.0.0.1] [--records N] [--keys K]
                  [--batch B] [--tag TAG] [--json FILE]
*/
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench_util.h"

/* ---- a growing buffer and the msgpack subset the records need ---- */

typedef struct {
    uint8_t *p;
    size_t len, cap;
} s_out_t;

static int s_reserve(s_out_t *o, size_t n)
{
    if (o->len + n <= o->cap)
        return 0;
    size_t cap = o->cap ? o->cap : 1 << 20;
    while (cap < o->len + n)
        cap *= 2;
    uint8_t *p = realloc(o->p, cap);
    if (!p)
        return -1;
    o->p = p;
    o->cap = cap;
    return 0;
}

static void s_be(s_out_t *o, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--)
        o->p[o->len++] = (uint8_t)(v >> (8 * i));
}

/* Callers reserve first: at most 9 bytes for a number or a header. */
static void s_uint(s_out_t *o, uint64_t v)
{
    if (v < 128) {
        o->p[o->len++] = (uint8_t)v;
    } else if (v <= UINT32_MAX) {
        o->p[o->len++] = 0xce;
        s_be(o, v, 4);
    } else {
        o->p[o->len++] = 0xcf;
        s_be(o, v, 8);
    }
}

static void s_int(s_out_t *o, int64_t v)
{
    if (v >= 0) {
        s_uint(o, (uint64_t)v);
    } else {
        o->p[o->len++] = 0xd3;
        s_be(o, (uint64_t)v, 8);
    }
}

static int s_str(s_out_t *o, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n > 255 || s_reserve(o, n + 2) != 0)
        return -1;
    if (n < 32) {
        o->p[o->len++] = (uint8_t)(0xa0 | n);
    } else {
        o->p[o->len++] = 0xd9;
        o->p[o->len++] = (uint8_t)n;
    }
    memcpy(o->p + o->len, s ? s : "", n);
    o->len += n;
    return 0;
}

/* ---- the key hash the peer's output is folded with ---- */

static uint64_t s_fnv(uint64_t h, const char *s)
{
    for (; s && *s; s++) {
        h ^= (uint8_t)*s;
        h *= 0x100000001b3ULL;
    }
    return h;
}

static uint64_t s_key_hash(int kind, const fp_rec_in_t *r)
{
    char k[4];
    snprintf(k, sizeof k, "%d", kind);
    static const int fields[] = {FP_STR_ORDER, FP_STR_OPERATION, FP_STR_MATERIAL, FP_STR_LOT,
                                 FP_STR_REASON};
    uint64_t h = s_fnv(0xcbf29ce484222325ULL, k);
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        h = s_fnv(h, "\x1f");
        h = s_fnv(h, r->str[fields[i]]);
    }
    return h;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *tag = "plant", *json = NULL;
    int port = 0;
    uint64_t records = 1000000, keys = 10000;
    uint32_t batch = 256;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name) (strcmp(a, name) == 0 && v && ++i)
        if (OPT("--host"))
            host = v;
        else if (OPT("--port"))
            port = atoi(v);
        else if (OPT("--records"))
            records = strtoull(v, NULL, 10);
        else if (OPT("--keys"))
            keys = strtoull(v, NULL, 10);
        else if (OPT("--batch"))
            batch = (uint32_t)atoi(v);
        else if (OPT("--tag"))
            tag = v;
        else if (OPT("--json"))
            json = v;
        else
            port = -1;
#undef OPT
    }
    if (port <= 0 || port > 65535 || records < 1 || batch < 1 || batch > 65536) {
        fprintf(stderr, "usage: fbload --port P [--host H] [--records N] [--keys K] "
                        "[--batch B] [--tag TAG] [--json FILE]\n");
        return 2;
    }
    plantgen_params_t pp;
    bu_plant_for_keys(&pp, keys, 8, 200, batch, 1, 1);
    plantgen_t *g = plantgen_new(&pp);
    s_out_t o = {0};
    if (!g) {
        fprintf(stderr, "fbload: bad plant parameters or out of memory\n");
        return 2;
    }
    /* the stream, encoded before the clock starts */
    int64_t t0 = bu_now_ns();
    uint64_t now_s = (uint64_t)(bu_wall_ns() / 1000000000);
    uint64_t sum_q = 0, sum_qh = 0;
    /* the record's strings in FP_STR_* order */
    static const char *names[] = {"plant", "line", "station", "order_no", "operation",
                                  "material", "lot", "unit", "reason"};
    _Static_assert(FP_STR_FIELDS == sizeof names / sizeof names[0], "a name per string field");
    for (uint64_t n = 0; n < records;) {
        uint32_t in_msg = records - n < batch ? (uint32_t)(records - n) : batch;
        if (s_reserve(&o, 64) != 0)
            goto oom;
        o.p[o.len++] = 0x92; /* [tag, entries] */
        if (s_str(&o, tag) != 0 || s_reserve(&o, 8) != 0)
            goto oom;
        o.p[o.len++] = 0xdd; /* array 32 */
        s_be(&o, in_msg, 4);
        for (uint32_t i = 0; i < in_msg; i++, n++) {
            uint64_t src, ep;
            fp_rec_in_t r;
            plantgen_next(g, &src, &ep, &r);
            if (s_reserve(&o, 64) != 0)
                goto oom;
            o.p[o.len++] = 0x92; /* [time, record] */
            s_uint(&o, now_s);
            o.p[o.len++] = 0x80 | 11; /* fixmap: kind, 9 strings, quantity */
            if (s_str(&o, "kind") != 0 || s_reserve(&o, 9) != 0)
                goto oom;
            s_uint(&o, r.kind);
            for (int f = 0; f < FP_STR_FIELDS; f++)
                if (s_str(&o, names[f]) != 0 || s_str(&o, r.str[f]) != 0)
                    goto oom;
            if (s_str(&o, "quantity") != 0 || s_reserve(&o, 9) != 0)
                goto oom;
            s_int(&o, r.quantity);
            sum_q += (uint64_t)r.quantity;
            sum_qh += (uint64_t)r.quantity * s_key_hash(r.kind, &r);
        }
    }
    plantgen_destroy(&g);
    double pregen_s = (double)(bu_now_ns() - t0) / 1e9;

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (fd < 0 || inet_pton(AF_INET, host, &sa.sin_addr) != 1 ||
        connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        fprintf(stderr, "fbload: connect %s:%d: %s\n", host, port, strerror(errno));
        return 2;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    printf("SENDING\n");
    fflush(stdout);
    int64_t start_wall = bu_wall_ns(), t1 = bu_now_ns();
    for (size_t off = 0; off < o.len;) {
        ssize_t w = write(fd, o.p + off, o.len - off < (1u << 20) ? o.len - off : 1u << 20);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            fprintf(stderr, "fbload: write: %s\n", strerror(errno));
            return 1;
        }
        off += (size_t)w;
    }
    double send_s = (double)(bu_now_ns() - t1) / 1e9;
    int64_t end_wall = bu_wall_ns();
    printf("SENT records=%" PRIu64 "\n", records);
    fflush(stdout);
    if (json) {
        FILE *f = fopen(json, "w");
        if (!f) {
            fprintf(stderr, "fbload: %s: %s\n", json, strerror(errno));
            return 1;
        }
        fprintf(f,
                "{\"records\": %" PRIu64 ", \"keys_nominal\": %" PRIu64 ", \"batch\": %u, "
                "\"bytes\": %zu, \"sum_quantity\": %" PRIu64 ", \"sum_quantity_hash\": %" PRIu64
                ", \"pregen_s\": %.3f, \"send_s\": %.3f, \"send_records_per_s\": %.0f, "
                "\"start_wall_ns\": %" PRId64 ", \"end_wall_ns\": %" PRId64 "}\n",
                records, keys, batch, o.len, sum_q, sum_qh, pregen_s, send_s,
                send_s > 0 ? (double)records / send_s : 0, start_wall, end_wall);
        fclose(f);
    }
    close(fd); /* what was written is delivered: the peer sends nothing back */
    free(o.p);
    return 0;
oom:
    fprintf(stderr, "fbload: out of memory or a string over 255 bytes\n");
    plantgen_destroy(&g);
    free(o.p);
    return 2;
}
