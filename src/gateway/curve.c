/*  curve.c - CURVE key files and the client side of a CURVE socket. See
    curve.h. Part of the gateway library: needs only libzmq and libc, no log,
    no config, no thread (the server side and the ZAP handler are in
    security.c).
*/
#include "curve.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

/* true when s is exactly FP_CURVE_KEY_Z85 valid Z85 characters. */
bool fp_curve_z85_valid(const char *s, size_t len)
{
    if (len != FP_CURVE_KEY_Z85)
        return false;
    char key[FP_CURVE_KEY_Z85 + 1];
    uint8_t raw[32];
    memcpy(key, s, len);
    key[len] = '\0';
    return zmq_z85_decode(raw, key) != NULL;
}

/* Reads a whole small text file into a new NUL-terminated buffer (caller
   frees). NULL with "PATH: ..." in err. */
char *fp_curve_read_text(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(FP_CURVE_FILE_MAX + 1);
    size_t n = buf ? fread(buf, 1, FP_CURVE_FILE_MAX + 1, f) : 0;
    if (!buf)
        snprintf(err, errlen, "%s: out of memory", path);
    else if (ferror(f))
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
    else if (n > FP_CURVE_FILE_MAX)
        snprintf(err, errlen, "%s: larger than %u bytes", path, FP_CURVE_FILE_MAX);
    else if (memchr(buf, '\0', n))
        snprintf(err, errlen, "%s: contains a NUL byte; allowed: a text file", path);
    else {
        buf[n] = '\0';
        fclose(f);
        return buf;
    }
    free(buf);
    fclose(f);
    return NULL;
}

/* Cuts text at the next newline: returns the line (without "\r\n"), and
   advances *pos past it; NULL at the end. */
char *fp_curve_next_line(char **pos)
{
    char *line = *pos;
    if (!line || !*line)
        return NULL;
    char *nl = strchr(line, '\n');
    if (nl) {
        *nl = '\0';
        *pos = nl + 1;
    } else {
        *pos = line + strlen(line);
    }
    size_t len = strlen(line);
    if (len && line[len - 1] == '\r')
        line[len - 1] = '\0';
    return line;
}

char *fp_curve_trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    return s;
}

/* ---- key files ---- */

static int s_write_new(const char *path, const char *text, mode_t mode, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot create: %s%s", path, strerror(errno),
                 errno == EEXIST ? " (refusing to overwrite a key)" : "");
        return -1;
    }
    size_t len = strlen(text), done = 0;
    while (done < len) {
        ssize_t w = write(fd, text + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            snprintf(err, errlen, "%s: cannot write: %s", path, strerror(errno));
            close(fd);
            unlink(path);
            return -1;
        }
        done += (size_t)w;
    }
    if (close(fd) != 0) {
        snprintf(err, errlen, "%s: cannot write: %s", path, strerror(errno));
        unlink(path);
        return -1;
    }
    return 0;
}

int fp_curve_keygen(const char *basename, fp_curve_keypair_t *kp, char *err, size_t errlen)
{
    fp_curve_keypair_t pair;
    if (zmq_curve_keypair(pair.public_z85, pair.secret_z85) != 0) {
        snprintf(err, errlen, "zmq_curve_keypair: %s", zmq_strerror(zmq_errno()));
        return -1;
    }
    int rc = 0;
    if (basename && *basename) {
        char keypath[FP_CURVE_PATH_MAX + 8], pubpath[FP_CURVE_PATH_MAX + 8], text[128];
        if (strlen(basename) > FP_CURVE_PATH_MAX) {
            snprintf(err, errlen, "%.64s...: name too long; allowed: at most %d bytes", basename,
                     FP_CURVE_PATH_MAX);
            rc = -1;
            goto done;
        }
        snprintf(keypath, sizeof keypath, "%s.key", basename);
        snprintf(pubpath, sizeof pubpath, "%s.pub", basename);
        snprintf(text, sizeof text, "public = %s\nsecret = %s\n", pair.public_z85, pair.secret_z85);
        rc = s_write_new(keypath, text, 0600, err, errlen);
        snprintf(text, sizeof text, "public = %s\n", pair.public_z85);
        if (rc == 0 && (rc = s_write_new(pubpath, text, 0644, err, errlen)) != 0)
            unlink(keypath);
        explicit_bzero(text, sizeof text);
    }
done:
    if (rc == 0 && kp)
        *kp = pair;
    explicit_bzero(&pair, sizeof pair);
    return rc;
}

int fp_curve_key_load(const char *path, bool need_secret, fp_curve_keypair_t *kp, char *err,
                      size_t errlen)
{
    memset(kp, 0, sizeof *kp);
    char *text = fp_curve_read_text(path, err, errlen);
    if (!text)
        return -1;
    int rc = fp_curve_key_parse(text, path, need_secret, kp, err, errlen);
    explicit_bzero(text, strlen(text));
    free(text);
    return rc;
}

int fp_curve_key_parse(const char *key_text, const char *path, bool need_secret,
                       fp_curve_keypair_t *kp, char *err, size_t errlen)
{
    memset(kp, 0, sizeof *kp);
    if (!path)
        path = "(key)";
    size_t tlen = strlen(key_text);
    char *text = strdup(key_text);
    if (!text) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    int rc = -1, lineno = 0;
    char *pos = text, *line;
    while ((line = fp_curve_next_line(&pos)) != NULL) {
        lineno++;
        line = fp_curve_trim(line);
        if (!*line || *line == '#')
            continue;
        char *eq = strchr(line, '=');
        if (!eq) {
            snprintf(err, errlen, "%s:%d: line without '='; allowed: public = <Z85> or "
                     "secret = <Z85>", path, lineno);
            goto done;
        }
        *eq = '\0';
        char *name = fp_curve_trim(line), *value = fp_curve_trim(eq + 1);
        char *dst = strcmp(name, "public") == 0   ? kp->public_z85
                    : strcmp(name, "secret") == 0 ? kp->secret_z85
                                                  : NULL;
        if (!dst) {
            snprintf(err, errlen, "%s:%d: unknown name '%.32s'; allowed: public, secret", path,
                     lineno, name);
            goto done;
        }
        if (!fp_curve_z85_valid(value, strlen(value))) {
            snprintf(err, errlen, "%s:%d: %s is not a Z85 key; allowed: 40 Z85 characters "
                     "(floorpost keygen)", path, lineno, name);
            goto done;
        }
        memcpy(dst, value, FP_CURVE_KEY_Z85 + 1);
    }
    if (need_secret && !kp->secret_z85[0]) {
        snprintf(err, errlen, "%s: no 'secret = ' line; allowed: a .key file written by "
                 "floorpost keygen", path);
        goto done;
    }
    if (kp->secret_z85[0]) {
        char derived[FP_CURVE_KEY_Z85 + 1];
        if (zmq_curve_public(derived, kp->secret_z85) != 0) {
            snprintf(err, errlen, "%s: cannot derive the public key: %s", path,
                     zmq_strerror(zmq_errno()));
            goto done;
        }
        if (kp->public_z85[0] && strcmp(derived, kp->public_z85) != 0) {
            snprintf(err, errlen, "%s: the public key does not belong to the secret key", path);
            goto done;
        }
        memcpy(kp->public_z85, derived, sizeof derived);
    }
    if (!kp->public_z85[0]) {
        snprintf(err, errlen, "%s: no 'public = ' line; allowed: a .pub or .key file written "
                 "by floorpost keygen", path);
        goto done;
    }
    rc = 0;
done:
    /* All of it: the line cutting left NULs, strlen would stop at the first. */
    explicit_bzero(text, tlen);
    free(text);
    if (rc != 0)
        explicit_bzero(kp, sizeof *kp);
    return rc;
}

int fp_curve_client_socket(void *sock, const char *server_z85, const fp_curve_keypair_t *kp)
{
    if (!server_z85 || !kp || !fp_curve_z85_valid(server_z85, strlen(server_z85)) ||
        !fp_curve_z85_valid(kp->public_z85, strlen(kp->public_z85)) ||
        !fp_curve_z85_valid(kp->secret_z85, strlen(kp->secret_z85)))
        return -EINVAL;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server_z85, FP_CURVE_KEY_Z85) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, kp->public_z85, FP_CURVE_KEY_Z85) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, kp->secret_z85, FP_CURVE_KEY_Z85) != 0)
        return -zmq_errno();
    return 0;
}
