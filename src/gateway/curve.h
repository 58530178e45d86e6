/*  curve.h - CURVE (RFC 26) key files and the client side of a CURVE
    socket: what a producer, a subscriber or a tool needs to talk to a
    floorpost endpoint that has [security] curve_secret_key_file set.

    Part of the gateway library (libfloorpost-gateway.a, see producer.h): it
    needs libzmq and libc only. The server side (server socket options, the
    allowlist, the ZAP handler thread) is security.h.

    Key files (written by fp_curve_keygen, `floorpost keygen`):
      NAME.key  mode 0600   "public = <Z85>\nsecret = <Z85>\n"
      NAME.pub  mode 0644   "public = <Z85>\n"
    '#' starts a comment, blank lines are ignored, any other line is an
    error naming FILE:LINE.

    Thread contract: no state; every function may run on any thread. A
    socket is set up by the thread that owns it. Key files are untrusted
    input: errors are returned, never asserted. Secrets are wiped from the
    buffers these functions used once they return.
*/
#ifndef FP_CURVE_H
#define FP_CURVE_H

#include <stdbool.h>
#include <stddef.h>

#define FP_CURVE_KEY_Z85 40         /* a CURVE key (32 bytes) in Z85: 40 characters */
#define FP_CURVE_FILE_MAX (4u << 20) /* largest key or allow file read, bytes */
#define FP_CURVE_PATH_MAX 256        /* longest key file base name, bytes */

/* A key pair, or just a public key (secret_z85 = ""), as NUL-terminated Z85. */
typedef struct {
    char public_z85[FP_CURVE_KEY_Z85 + 1];
    char secret_z85[FP_CURVE_KEY_Z85 + 1];
} fp_curve_keypair_t;

/* Makes a new key pair and writes it to the key files; basename NULL or ""
   writes nothing. *kp (may be NULL) gets the pair. Refuses to overwrite an
   existing file. 0, or -1 with err filled. */
int fp_curve_keygen(const char *basename, fp_curve_keypair_t *kp, char *err, size_t errlen);

/* Reads a key file. need_secret: the file must hold a secret key (a .key
   file), which must match its public key; otherwise only the public key is
   needed (a .pub or a .key file) and kp->secret_z85 may be "". 0, or -1
   with "PATH[:LINE]: ..." in err. */
int fp_curve_key_load(const char *path, bool need_secret, fp_curve_keypair_t *kp, char *err,
                      size_t errlen);

/* Parses the text of a key file (what fp_curve_key_load reads; path names
   it in messages, NULL = "(key)"), with fp_curve_key_load's checks and
   results. The secret is wiped from the parser's own copy. */
int fp_curve_key_parse(const char *text, const char *path, bool need_secret,
                       fp_curve_keypair_t *kp, char *err, size_t errlen);

/* Makes sock a CURVE client of the server whose public key is server_z85,
   with the client pair kp; before zmq_connect. 0 or -errno (-EINVAL for a
   malformed key). */
int fp_curve_client_socket(void *sock, const char *server_z85, const fp_curve_keypair_t *kp);

/* ---- text helpers shared with the allow-file parser (security.c) ---- */

/* true when s[0..len) is exactly FP_CURVE_KEY_Z85 valid Z85 characters. */
bool fp_curve_z85_valid(const char *s, size_t len);

/* Reads a whole text file of at most FP_CURVE_FILE_MAX bytes with no NUL
   into a new NUL-terminated buffer the caller frees. NULL with "PATH: ..."
   in err. */
char *fp_curve_read_text(const char *path, char *err, size_t errlen);

/* Cuts text at the next newline: returns the line (without "\r\n") and
   advances *pos past it; NULL at the end. */
char *fp_curve_next_line(char **pos);

/* Strips spaces and tabs at both ends, in place. */
char *fp_curve_trim(char *s);

#endif
