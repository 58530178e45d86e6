/*  fuzz_curve.c - libFuzzer target for the CURVE text files: the allow
    file (fp_allow_parse, src/ops/security.c) and the key files
    (fp_curve_key_parse, src/gateway/curve.c; what fp_curve_key_load
    reads), both fed the same input.

    Invariants: allow: a refusal says "fuzz.allow:LINE: ..."; every key
    line of an accepted file is found by fp_allow_find, its name holds no
    control character, quote or backslash (it is quoted in logs), and the
    count is at most the number of key lines. Key file: an acceptance
    gives a valid Z85 public key (and with need_secret a secret whose
    public key it is); a refusal says "fuzz.key..." and leaves the pair
    zeroed.

    Seeds: fuzz/seeds/curve/ (a .key, a .pub and an allow file).
*/
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "curve.h"
#include "fuzz.h"
#include "security.h"

static void s_allow(const char *text)
{
    char err[256] = "";
    fp_allow_t *a = fp_allow_parse(text, "fuzz.allow", err, sizeof err);
    if (!a) {
        FUZZ_CHECK(strncmp(err, "fuzz.allow:", 11) == 0);
        return;
    }
    /* Walk the lines again, as the file's format says. */
    char *copy = strdup(text), *pos = copy, *line;
    FUZZ_CHECK(copy != NULL);
    size_t keys = 0;
    while ((line = fp_curve_next_line(&pos)) != NULL) {
        line = fp_curve_trim(line);
        if (!*line || *line == '#')
            continue;
        /* a .pub file's "public = KEY" line (security.c reads it so) */
        char *eq = strchr(line, '=');
        if (eq) {
            size_t nl = (size_t)(eq - line);
            while (nl && (line[nl - 1] == ' ' || line[nl - 1] == '\t'))
                nl--;
            FUZZ_CHECK(!(nl == 6 && memcmp(line, "secret", 6) == 0)); /* refused */
            if (nl == 6 && memcmp(line, "public", 6) == 0)
                line = fp_curve_trim(eq + 1);
        }
        size_t klen = strcspn(line, " \t");
        FUZZ_CHECK(fp_curve_z85_valid(line, klen)); /* or the parse had refused */
        keys++;
        line[klen] = '\0';
        const char *name = fp_allow_find(a, line);
        FUZZ_CHECK(name != NULL);
        for (const char *p = name; *p; p++)
            FUZZ_CHECK((unsigned char)*p >= 0x20 && *p != '"' && *p != '\\' && *p != 0x7f);
    }
    FUZZ_CHECK(fp_allow_count(a) <= keys);
    FUZZ_CHECK(fp_allow_find(a, "short") == NULL);
    free(copy);
    fp_allow_destroy(&a);
    FUZZ_CHECK(a == NULL);
}

static void s_key(const char *text, bool need_secret)
{
    fp_curve_keypair_t kp;
    char err[256] = "";
    int rc = fp_curve_key_parse(text, "fuzz.key", need_secret, &kp, err, sizeof err);
    if (rc != 0) {
        FUZZ_CHECK(rc == -1);
        FUZZ_CHECK(strncmp(err, "fuzz.key", 8) == 0);
        static const fp_curve_keypair_t zero;
        FUZZ_CHECK(memcmp(&kp, &zero, sizeof kp) == 0);
        return;
    }
    FUZZ_CHECK(fp_curve_z85_valid(kp.public_z85, strlen(kp.public_z85)));
    if (need_secret || kp.secret_z85[0]) {
        FUZZ_CHECK(fp_curve_z85_valid(kp.secret_z85, strlen(kp.secret_z85)));
        char derived[FP_CURVE_KEY_Z85 + 1];
        FUZZ_CHECK(zmq_curve_public(derived, kp.secret_z85) == 0);
        FUZZ_CHECK(strcmp(derived, kp.public_z85) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        abort();
    memcpy(text, data, size);
    text[size] = '\0'; /* the files' reader refuses a NUL byte */
    s_allow(text);
    s_key(text, false);
    s_key(text, true);
    free(text);
    return 0;
}
