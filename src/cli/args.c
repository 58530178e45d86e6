/*  args.c - strict number options for the verbs. See cli.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

bool fp_cli_number(const char *verb, const char *option, const char *s, uint64_t min,
                   uint64_t max, uint64_t *out)
{
    const char *what = "is not a decimal number";
    if (!s) {
        fprintf(stderr, "floorpost %s: %s needs a value; allowed: %" PRIu64 "..%" PRIu64 "\n",
                verb, option, min, max);
        return false;
    }
    /* Digits only: strtoull alone takes blanks, a sign ("-1" wraps) and
       stops at junk. */
    bool digits = *s != '\0';
    for (const char *p = s; *p; p++)
        digits &= *p >= '0' && *p <= '9';
    if (digits) {
        errno = 0;
        char *end;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno == ERANGE || *end)
            what = "is too large";
        else if (v < min || v > max)
            what = "is out of range";
        else {
            *out = v;
            return true;
        }
    }
    fprintf(stderr, "floorpost %s: %s '%.40s' %s; allowed: %" PRIu64 "..%" PRIu64 "\n", verb,
            option, s, what, min, max);
    return false;
}
