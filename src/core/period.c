/*  period.c - posting periods by the plant's zone (period.h).

    Local wall times are turned into instants with mktime (tm_isdst = -1:
    the zone's rules decide), instants into local dates with localtime_r.
    Dates are counted in days since 1970-01-01 (Howard Hinnant's civil-date
    algorithms), so date arithmetic never goes through struct tm.
*/
#include "period.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define S_NS 1000000000ll
#define S_T_MIN (-(1ll << 62)) /* event times are clamped to this range: 1824..2116 */
#define S_T_MAX ((1ll << 62) - 1)

int32_t fp_days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153u * (unsigned)(m > 2 ? m - 3 : m + 9) + 2) / 5 + (unsigned)d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return (int32_t)(era * 146097 + (int)doe - 719468);
}

void fp_civil_from_days(int32_t days, int *y, int *m, int *d)
{
    int z = days + 719468;
    int era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int yy = (int)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yy + (*m <= 2);
}

void fp_period_date_str(int32_t date, char *out)
{
    int y, m, d;
    fp_civil_from_days(date, &y, &m, &d);
    if (y < 0 || y > 9999)
        y = y < 0 ? 0 : 9999;
    snprintf(out, 11, "%04d-%02d-%02d", y, m, d);
}

int fp_period_parse_date(const char *text, int32_t *date)
{
    int y, m, d, n = 0;
    if (!text || strlen(text) != 10 || sscanf(text, "%4d-%2d-%2d%n", &y, &m, &d, &n) != 3 ||
        n != 10 || text[4] != '-' || text[7] != '-')
        return -1;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && (text[i] < '0' || text[i] > '9'))
            return -1;
    if (m < 1 || m > 12 || d < 1 || d > 31 || y < 1900)
        return -1;
    int32_t days = fp_days_from_civil(y, m, d);
    int yy, mm, dd;
    fp_civil_from_days(days, &yy, &mm, &dd);
    if (yy != y || mm != m || dd != d) /* 2026-02-30 */
        return -1;
    *date = days;
    return 0;
}

int fp_period_kind_parse(const char *name)
{
    if (strcmp(name, "day") == 0)
        return FP_PERIOD_DAY;
    if (strcmp(name, "shift") == 0)
        return FP_PERIOD_SHIFT;
    if (strcmp(name, "hour") == 0)
        return FP_PERIOD_HOUR;
    return -1;
}

/* Wraps of the calendar before shift k (0 or 1) and in all. */
static int s_wraps(const fp_period_cfg_t *cfg, int k)
{
    int w = 0;
    for (int i = 1; i <= k && i < cfg->nshifts; i++)
        w += cfg->shift_min[i] <= cfg->shift_min[i - 1];
    return w;
}

int fp_period_parse_shifts(const char *text, fp_period_cfg_t *cfg, char *err, size_t errlen)
{
    int16_t mins[FP_SHIFTS_MAX];
    int n = 0;
    const char *p = text;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        int h = 0, m = 0, used = 0;
        if (sscanf(p, "%2d:%2d%n", &h, &m, &used) != 2 || used != 5 || p[0] < '0' ||
            p[0] > '9' || h < 0 || h > 23 || m < 0 || m > 59) {
            snprintf(err, errlen, "'%.20s' is not a time HH:MM (00:00..23:59)", p);
            return -1;
        }
        if (n == FP_SHIFTS_MAX) {
            snprintf(err, errlen, "more than %d shifts", FP_SHIFTS_MAX);
            return -1;
        }
        mins[n++] = (int16_t)(h * 60 + m);
        p += used;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0')
            break;
        if (*p != ',') {
            snprintf(err, errlen, "'%.20s': times must be separated by commas", p);
            return -1;
        }
        p++;
    }
    /* One production day of at most 24 hours, in the listed order. */
    int wraps = 0;
    for (int i = 1; i < n; i++)
        if (mins[i] <= mins[i - 1])
            wraps++;
    if (wraps > 1 || (wraps == 1 && mins[n - 1] >= mins[0])) {
        snprintf(err, errlen, "the shifts do not fit one 24-hour day in the listed order");
        return -1;
    }
    cfg->nshifts = n;
    memcpy(cfg->shift_min, mins, (size_t)n * sizeof mins[0]);
    return 0;
}

/* The instant of local wall time `minute` (after midnight) on date days. */
static int64_t s_local(int32_t days, int minute)
{
    int y, m, d;
    fp_civil_from_days(days, &y, &m, &d);
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    tm.tm_year = y - 1900;
    tm.tm_mon = m - 1;
    tm.tm_mday = d;
    tm.tm_hour = minute / 60;
    tm.tm_min = minute % 60;
    tm.tm_isdst = -1;
    return (int64_t)mktime(&tm);
}

/* The local calendar date of second s, and the local tm. */
static int32_t s_date_of(int64_t s, struct tm *tm)
{
    time_t t = (time_t)s;
    if (!localtime_r(&t, tm))
        return (int32_t)(s >= 0 ? s / 86400 : (s - 86399) / 86400);
    return fp_days_from_civil(tm->tm_year + 1900, tm->tm_mon + 1, tm->tm_mday);
}

static void s_day(int64_t s, fp_period_t *out)
{
    struct tm tm;
    int32_t date = s_date_of(s, &tm);
    int64_t start = s_local(date, 0), end = s_local(date + 1, 0);
    /* A zone whose day starts at a skipped or repeated midnight: step. */
    for (int i = 0; i < 2 && s < start; i++) {
        date--;
        end = start;
        start = s_local(date, 0);
    }
    for (int i = 0; i < 2 && s >= end; i++) {
        date++;
        start = end;
        end = s_local(date + 1, 0);
    }
    out->start_ns = start * S_NS;
    out->end_ns = end * S_NS;
    out->date = date;
    out->index = 0;
}

static void s_shift(const fp_period_cfg_t *cfg, int64_t s, fp_period_t *out)
{
    struct tm tm;
    int32_t c = s_date_of(s, &tm);
    int n = cfg->nshifts, w = s_wraps(cfg, n - 1);
    /* The boundaries of production days c-1 .. c+2, in time order (a
       non-increasing one, possible only around a DST gap, is skipped). */
    int64_t best = INT64_MIN, next = INT64_MAX;
    int32_t best_date = c;
    int best_k = 0;
    int64_t prev = INT64_MIN;
    for (int32_t D = c - 1; D <= c + 2; D++)
        for (int k = 0; k < n; k++) {
            int64_t b = s_local(D - w + s_wraps(cfg, k), cfg->shift_min[k]);
            if (b <= prev)
                continue;
            prev = b;
            if (b <= s) {
                best = b;
                best_date = D;
                best_k = k;
            } else if (b < next) {
                next = b;
            }
        }
    if (best == INT64_MIN || next == INT64_MAX) { /* never with a sane zone */
        s_day(s, out);
        return;
    }
    out->start_ns = best * S_NS;
    out->end_ns = next * S_NS;
    out->date = best_date;
    out->index = (uint8_t)(best_k + 1);
}

static void s_hour(int64_t s, fp_period_t *out)
{
    struct tm tm;
    int32_t date = s_date_of(s, &tm);
    int64_t start = s - tm.tm_min * 60 - tm.tm_sec;
    out->start_ns = start * S_NS;
    out->end_ns = (start + 3600) * S_NS;
    out->date = date;
    out->index = (uint8_t)tm.tm_hour;
}

void fp_period_of(const fp_period_cfg_t *cfg, int64_t t_ns, fp_period_t *out)
{
    memset(out, 0, sizeof *out);
    if (cfg->kind == FP_PERIOD_NONE || (cfg->kind == FP_PERIOD_SHIFT && cfg->nshifts < 1)) {
        out->start_ns = INT64_MIN;
        out->end_ns = INT64_MAX;
        return;
    }
    if (t_ns < S_T_MIN)
        t_ns = S_T_MIN;
    if (t_ns > S_T_MAX)
        t_ns = S_T_MAX;
    int64_t s = t_ns / S_NS - (t_ns % S_NS < 0); /* floor */
    switch (cfg->kind) {
    case FP_PERIOD_DAY:
        s_day(s, out);
        break;
    case FP_PERIOD_SHIFT:
        s_shift(cfg, s, out);
        break;
    default:
        s_hour(s, out);
        break;
    }
}

void fp_period_first_of_date(const fp_period_cfg_t *cfg, int32_t date, fp_period_t *out)
{
    fp_period_of(cfg, s_local(date, 0) * S_NS, out);
    for (int i = 0; i < 64 && cfg->kind != FP_PERIOD_NONE && out->date < date; i++)
        fp_period_of(cfg, out->end_ns, out);
}

void fp_period_name(const fp_period_cfg_t *cfg, const fp_period_t *p, char *out)
{
    switch (cfg->kind) {
    case FP_PERIOD_DAY:
        snprintf(out, 16, "day");
        break;
    case FP_PERIOD_SHIFT:
        snprintf(out, 16, "shift-%d", p->index);
        break;
    case FP_PERIOD_HOUR:
        snprintf(out, 16, "hour-%02d", p->index);
        break;
    default:
        out[0] = '\0';
    }
}
