/*  sink_jsonl.c - `type = jsonl`: one JSON object per checkpoint (the
    fields of `floorpost tail --json` plus posting_date), into files in a
    directory, for plants whose ERP imports files (docs/sinks.md).

    Options
      directory   where the files go (required; must exist and be writable)
      prefix      file name prefix (default: the sink's name)
      max_bytes   rotate when the current file reaches this size,
                  4096..17179869184 (default 67108864)
      max_age_ms  rotate when the current file is this old, 100..86400000
                  (default 60000)

    DESIGN
    - Files are PREFIX-<first global_seq>-<last global_seq>.jsonl (20
      digits each, so names sort by position). The current file is
      .PREFIX-<first>.tmp; an event is accepted when written there
      (fp_sink_defer) and finished only when its file is fsynced and
      renamed into place: the position never passes an event that is not
      in a final file.
    - The sink's own durable position is .PREFIX.position, written
      (tmp + fsync + rename + fsync of the directory) BEFORE the rename of
      the data file, naming the file about to appear:
        "<position> <pending first> <pending last>\n"
      So the ERP's import job may move or delete the files it imported: the
      position does not depend on them. On open a pending rename whose
      .tmp is still there is completed; any other .tmp holds only events
      after the position and is removed (they are offered again).
    - A failed write (disk full, the directory gone) drops the current .tmp
      and asks for a reopen (the directory is opened again, so one that was
      removed and made again works): the reader offers its events again
      from the finished position after the back-off.
*/
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "decimal.h"
#include "log.h"
#include "sink.h"
#include "sink_jsonl.h"

typedef struct {
    char dir[FP_SINK_VALUE_MAX];
    char prefix[FP_SINK_NAME_MAX + 1];
    int64_t max_bytes, max_age_ms;
    /* the sink's thread */
    int fd, dirfd;
    uint64_t first, last; /* of the current .tmp (first 0: none) */
    uint64_t size;
    int64_t opened_ns;
    char *line;
    size_t line_cap;
    char *wbuf;
    size_t wlen;
    fp_sink_t *s; /* set at open, for cb_close */
    bool broken;  /* a rename failed after the position named it: reopen */
} jsonl_t;

#define S_WBUF (1u << 16)

static void *s_new(fp_sink_opts_t *o)
{
    jsonl_t *j = calloc(1, sizeof *j);
    if (!j) {
        fp_sink_opt_fail(o, NULL, "out of memory");
        return NULL;
    }
    j->fd = j->dirfd = -1;
    if (fp_sink_opt_str(o, "directory", "", j->dir, sizeof j->dir, "a writable directory") ||
        fp_sink_opt_str(o, "prefix", fp_sink_opts_name(o), j->prefix, sizeof j->prefix,
                        "1..48 of A-Z a-z 0-9 . _ -") ||
        fp_sink_opt_int(o, "max_bytes", 64 << 20, 4096, 17179869184LL, &j->max_bytes) ||
        fp_sink_opt_int(o, "max_age_ms", 60000, 100, 86400000, &j->max_age_ms))
        goto fail;
    if (!j->dir[0]) {
        fp_sink_opt_fail(o, NULL, "directory is required; allowed: a writable directory");
        goto fail;
    }
    size_t pl = strlen(j->prefix);
    if (pl == 0 || strspn(j->prefix, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                     "0123456789._-") != pl || j->prefix[0] == '.') {
        fp_sink_opt_fail(o, "prefix", "prefix = '%s': bad name; allowed: 1..48 of A-Z a-z 0-9 . _ "
                         "- not starting with .", j->prefix);
        goto fail;
    }
    struct stat st;
    if (stat(j->dir, &st) != 0 || !S_ISDIR(st.st_mode) || access(j->dir, W_OK | X_OK) != 0) {
        fp_sink_opt_fail(o, "directory", "directory = '%.200s': %s; allowed: an existing "
                         "directory floorpost's user may write", j->dir,
                         errno ? strerror(errno) : "not a directory");
        goto fail;
    }
    return j;
fail:
    free(j);
    return NULL;
}

static void s_free(void *ctx)
{
    jsonl_t *j = ctx;
    if (!j)
        return;
    free(j->line);
    free(j->wbuf);
    free(j);
}

static void s_tmp_name(const jsonl_t *j, uint64_t first, char *out, size_t cap)
{
    snprintf(out, cap, ".%s-%020llu.tmp", j->prefix, (unsigned long long)first);
}

static void s_final_name(const jsonl_t *j, uint64_t first, uint64_t last, char *out, size_t cap)
{
    snprintf(out, cap, "%s-%020llu-%020llu.jsonl", j->prefix, (unsigned long long)first,
             (unsigned long long)last);
}

int fp_jsonl_parse_position(const char *text, size_t len, uint64_t *position, uint64_t *first,
                            uint64_t *last)
{
    if (!text)
        return -1;
    const char *p = text, *end = text + len;
    uint64_t v[3];
    for (int i = 0; i < 3; i++) {
        if ((i > 0 && fp_decimal_blanks(&p, end) != 0) || fp_decimal_u64(&p, end, &v[i]) != 0)
            return -1;
    }
    for (; p < end; p++)
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
            return -1;
    if (v[0] != v[2] || v[1] > v[2])
        return -1;
    *position = v[0];
    *first = v[1];
    *last = v[2];
    return 0;
}

/* Writes .PREFIX.position durably: "<position> <pending first> <last>". */
static int s_put_position(jsonl_t *j, fp_sink_t *s, uint64_t position, uint64_t pf, uint64_t pl)
{
    char tmp[128], fin[128], text[96];
    snprintf(tmp, sizeof tmp, ".%s.position.tmp", j->prefix);
    snprintf(fin, sizeof fin, ".%s.position", j->prefix);
    int n = snprintf(text, sizeof text, "%llu %llu %llu\n", (unsigned long long)position,
                     (unsigned long long)pf, (unsigned long long)pl);
    int fd = openat(j->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0)
        return fp_sink_fail(s, FP_SINK_ERR_io, "%s/%s: %s", j->dir, tmp, strerror(errno));
    int ok = write(fd, text, (size_t)n) == n && fsync(fd) == 0;
    int e = errno;
    close(fd);
    if (!ok || renameat(j->dirfd, tmp, j->dirfd, fin) != 0 || fsync(j->dirfd) != 0) {
        unlinkat(j->dirfd, tmp, 0);
        return fp_sink_fail(s, FP_SINK_ERR_io, "%s/%s: %s", j->dir, fin, strerror(ok ? errno : e));
    }
    return 0;
}

/* Drops the current .tmp (after a failure). */
static void s_drop(jsonl_t *j)
{
    if (j->fd >= 0) {
        char tmp[128];
        s_tmp_name(j, j->first, tmp, sizeof tmp);
        close(j->fd);
        unlinkat(j->dirfd, tmp, 0);
    }
    j->fd = -1;
    j->first = j->last = j->size = 0;
    j->wlen = 0;
}

static int s_flush(jsonl_t *j, fp_sink_t *s)
{
    size_t off = 0;
    while (off < j->wlen) {
        ssize_t w = write(j->fd, j->wbuf + off, j->wlen - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return fp_sink_fail(s, FP_SINK_ERR_io, "%s: write: %s", j->dir,
                                w < 0 ? strerror(errno) : "short write");
        off += (size_t)w;
    }
    j->wlen = 0;
    return 0;
}

/* Closes the current file into place: fsync, position (pending), rename,
   fsync of the directory; then the events are finished. */
static int s_rotate(jsonl_t *j, fp_sink_t *s)
{
    if (j->fd < 0)
        return 0;
    char tmp[128], fin[160];
    s_tmp_name(j, j->first, tmp, sizeof tmp);
    s_final_name(j, j->first, j->last, fin, sizeof fin);
    if (s_flush(j, s) != 0 || (fsync(j->fd) != 0 &&
                               fp_sink_fail(s, FP_SINK_ERR_io, "%s/%s: fsync: %s", j->dir, tmp,
                                            strerror(errno))) ||
        s_put_position(j, s, j->last, j->first, j->last) != 0) {
        s_drop(j);
        return -1;
    }
    close(j->fd);
    j->fd = -1;
    if (renameat(j->dirfd, tmp, j->dirfd, fin) != 0 || fsync(j->dirfd) != 0) {
        /* The position already names it: the next open completes it
           (until then no new .tmp may take its name). */
        fp_sink_fail(s, FP_SINK_ERR_io, "%s/%s: rename: %s", j->dir, fin, strerror(errno));
        j->first = j->last = j->size = 0;
        j->broken = true;
        return FP_READER_REOPEN;
    }
    fp_sink_count_writes(s, 1);
    fp_sink_finished(s, j->last);
    j->first = j->last = j->size = 0;
    return 0;
}

static int s_open(void *ctx, fp_sink_t *s)
{
    jsonl_t *j = ctx;
    j->s = s;
    j->broken = false;
    fp_sink_defer(s);
    if (!j->wbuf && !(j->wbuf = malloc(S_WBUF)))
        return fp_sink_fail(s, FP_SINK_ERR_io, "out of memory");
    if (j->dirfd < 0) {
        j->dirfd = open(j->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (j->dirfd < 0)
            return fp_sink_fail(s, FP_SINK_ERR_io, "%s: %s", j->dir, strerror(errno));
    }
    /* Our own position, and a rename that did not happen. */
    char pos_name[128];
    snprintf(pos_name, sizeof pos_name, ".%s.position", j->prefix);
    int pfd = openat(j->dirfd, pos_name, O_RDONLY | O_CLOEXEC);
    uint64_t pos = 0, pf = 0, pl = 0;
    bool have = false;
    if (pfd >= 0) {
        char text[128]; /* the sink writes at most 63 bytes; a longer file is damaged */
        ssize_t n = read(pfd, text, sizeof text);
        int e = errno;
        close(pfd);
        if (n < 0)
            return fp_sink_fail(s, FP_SINK_ERR_io, "%s/%s: %s", j->dir, pos_name, strerror(e));
        if ((size_t)n == sizeof text ||
            fp_jsonl_parse_position(text, (size_t)n, &pos, &pf, &pl) != 0)
            return fp_sink_fail(s, FP_SINK_ERR_io, "%s/%s: damaged (expected \"POSITION FIRST "
                                "LAST\"); fix or remove it by hand", j->dir, pos_name);
        have = true;
    } else if (errno != ENOENT) {
        return fp_sink_fail(s, FP_SINK_ERR_io, "%s/%s: %s", j->dir, pos_name, strerror(errno));
    }
    char pend_tmp[128] = "";
    if (have && pf)
        s_tmp_name(j, pf, pend_tmp, sizeof pend_tmp);
    DIR *d = fdopendir(dup(j->dirfd));
    if (!d)
        return fp_sink_fail(s, FP_SINK_ERR_io, "%s: %s", j->dir, strerror(errno));
    char want[FP_SINK_NAME_MAX + 3];
    snprintf(want, sizeof want, ".%s-", j->prefix);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (strncmp(e->d_name, want, strlen(want)) != 0 || l < 4 ||
            strcmp(e->d_name + l - 4, ".tmp") != 0)
            continue;
        if (pend_tmp[0] && strcmp(e->d_name, pend_tmp) == 0) {
            char fin[160];
            s_final_name(j, pf, pl, fin, sizeof fin);
            if (renameat(j->dirfd, e->d_name, j->dirfd, fin) == 0) {
                fsync(j->dirfd);
                fp_log(FP_LOG_INFO, "sink-jsonl", "completed a file left by a crash", "file=%s/%s",
                       j->dir, fin);
            }
        } else {
            unlinkat(j->dirfd, e->d_name, 0); /* only events after the position */
        }
    }
    closedir(d);
    if (have)
        fp_sink_rewind(s, pos);
    return 0;
}

static int s_deliver(void *ctx, fp_sink_t *s, const fp_sink_event_t *evs, size_t n)
{
    jsonl_t *j = ctx;
    if (j->broken)
        return FP_READER_REOPEN;
    for (size_t i = 0; i < n; i++) {
        uint64_t g = evs[i].raw->global_seq;
        if (j->fd < 0) {
            char tmp[128];
            s_tmp_name(j, g, tmp, sizeof tmp);
            j->fd = openat(j->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
            if (j->fd < 0) {
                fp_sink_fail(s, FP_SINK_ERR_io, "%s/%s: %s", j->dir, tmp, strerror(errno));
                return FP_READER_REOPEN;
            }
            j->first = g;
            j->size = 0;
            j->opened_ns = fp_now_ns();
        }
        size_t need = evs[i].raw->evlen * 4 + 4096;
        if (j->line_cap < need) {
            char *nl = realloc(j->line, need);
            if (!nl) {
                fp_sink_fail(s, FP_SINK_ERR_io, "out of memory");
                s_drop(j);
                return FP_READER_REOPEN;
            }
            j->line = nl;
            j->line_cap = need;
        }
        int len = fp_sink_event_json(&evs[i], j->line, j->line_cap - 1);
        if (len < 0) {
            fp_sink_fail(s, FP_SINK_ERR_protocol, "event %llu: cannot be written as JSON",
                         (unsigned long long)g);
            s_drop(j);
            return FP_READER_REOPEN;
        }
        j->line[len++] = '\n';
        if (j->wlen + (size_t)len > S_WBUF && s_flush(j, s) != 0) {
            s_drop(j);
            return FP_READER_REOPEN;
        }
        if ((size_t)len > S_WBUF) {
            /* larger than the buffer: straight through */
            ssize_t w = write(j->fd, j->line, (size_t)len);
            if (w != len) {
                fp_sink_fail(s, FP_SINK_ERR_io, "%s: write: %s", j->dir, strerror(errno));
                s_drop(j);
                return FP_READER_REOPEN;
            }
        } else {
            memcpy(j->wbuf + j->wlen, j->line, (size_t)len);
            j->wlen += (size_t)len;
        }
        j->last = g;
        j->size += (uint64_t)len;
        if (j->size >= (uint64_t)j->max_bytes) {
            int rc = s_rotate(j, s);
            if (rc != 0)
                return rc; /* the reader offers again from the finished position */
        }
    }
    if (j->fd >= 0 && s_flush(j, s) != 0) {
        s_drop(j);
        return FP_READER_REOPEN;
    }
    return (int)n;
}

static void s_idle(void *ctx, fp_sink_t *s)
{
    jsonl_t *j = ctx;
    if (j->fd >= 0 && fp_now_ns() - j->opened_ns >= j->max_age_ms * 1000000 &&
        s_rotate(j, s) != 0)
        fp_sink_redo(s); /* its events are offered again (the .tmp is gone) */
}

static void s_close(void *ctx)
{
    jsonl_t *j = ctx;
    /* After a REOPEN and at exit (drain): what is written goes into place.
       At exit the position's report may not reach emit any more;
       .PREFIX.position has it. */
    if (j->fd >= 0 && j->s)
        s_rotate(j, j->s);
    if (j->dirfd >= 0)
        close(j->dirfd);
    j->dirfd = -1;
}

const fp_sink_type_t fp_sink_jsonl = {"jsonl", s_new, s_open, s_deliver, s_idle, s_close, s_free};
