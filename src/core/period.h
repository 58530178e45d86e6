/*  period.h - posting periods: which day, shift or hour of the plant an
    event time belongs to, by the plant's time zone.

    An ERP posts by date and closes periods, so every checkpoint belongs to
    exactly one posting period (docs/schema.md "Posting periods"):
      day    local midnight to local midnight; the posting date is the date
      shift  a shift calendar, e.g. "06:00,14:00,22:00": local start times
             listed in the order of the production day. The production day
             starts with the first listed shift; a time not later than the
             one before it is on the next calendar day ("22:00,06:00,14:00":
             the day starts at 22:00 the evening before). The posting date of
             every shift is the production day's date: the calendar date of
             its last listed shift's start. Shift N is the N-th listed.
      hour   local clock hours; a fall-back day has the repeated hour twice
             (two periods, the same name, different start times)
    The zone is the process's local zone (TZ): cmd_run.c sets it from
    [aggregate] time_zone before any thread starts. Boundaries are local
    wall times resolved with mktime, so daylight-saving days follow the
    tz database: a spring-forward day is 23 hours long, a fall-back day 25;
    a boundary at a local time that does not exist (inside the spring-forward
    gap) moves forward with the clock, one that exists twice is taken as
    mktime resolves it.

    FP_PERIOD_NONE is "no periods": one period covering every time, with no
    posting fields on checkpoints (the aggregation without a zone, as unit
    tests and tools use it).

    Thread contract: pure functions over the caller's data; they call
    localtime_r and mktime, which read the process's zone (do not change TZ
    while stages run).
*/
#ifndef FP_PERIOD_H
#define FP_PERIOD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    FP_PERIOD_NONE = 0,
    FP_PERIOD_DAY = 1,
    FP_PERIOD_SHIFT = 2,
    FP_PERIOD_HOUR = 3,
} fp_period_kind_t;

#define FP_SHIFTS_MAX 12

typedef struct {
    int kind;                       /* fp_period_kind_t */
    int nshifts;                    /* FP_PERIOD_SHIFT: 1..FP_SHIFTS_MAX */
    int16_t shift_min[FP_SHIFTS_MAX]; /* local start, minutes after midnight, listed order */
} fp_period_cfg_t;

/* One posting period: [start_ns, end_ns), ns since the Unix epoch, UTC. */
typedef struct {
    int64_t start_ns, end_ns;
    int32_t date;  /* posting date: days since 1970-01-01 of the local (production) date */
    uint8_t index; /* shift: 1..nshifts; hour: the local hour 0..23; day: 0 */
} fp_period_t;

/* Parses a shift calendar "HH:MM,HH:MM,..." (1..FP_SHIFTS_MAX times, each
   00:00..23:59, blanks allowed around commas; the times must fit in one
   24-hour day in the listed order, wrapping past midnight at most once) into
   cfg->shift_min / nshifts. 0, or -1 with a one-line reason in err. */
int fp_period_parse_shifts(const char *text, fp_period_cfg_t *cfg, char *err, size_t errlen);

/* The period of cfg that holds t_ns (any value; far times are clamped to
   +-1000 years around 1970). FP_PERIOD_NONE: start INT64_MIN, end
   INT64_MAX, date 0. */
void fp_period_of(const fp_period_cfg_t *cfg, int64_t t_ns, fp_period_t *out);

/* The first period that starts at or after local midnight of `date` (days
   since 1970-01-01): the first period whose posting date is >= date. */
void fp_period_first_of_date(const fp_period_cfg_t *cfg, int32_t date, fp_period_t *out);

/* Days since 1970-01-01 of a civil date, and back (proleptic Gregorian). */
int32_t fp_days_from_civil(int y, int m, int d);
void fp_civil_from_days(int32_t days, int *y, int *m, int *d);

/* "YYYY-MM-DD" of a date (out: at least 11 bytes). */
void fp_period_date_str(int32_t date, char *out);

/* Parses "YYYY-MM-DD" (a real date) into days since 1970-01-01; 0 or -1. */
int fp_period_parse_date(const char *text, int32_t *date);

/* The period's name (out: at least 16 bytes): "day", "shift-N", "hour-HH";
   "" for FP_PERIOD_NONE. */
void fp_period_name(const fp_period_cfg_t *cfg, const fp_period_t *p, char *out);

/* The kind from its config name ("day", "shift", "hour"); -1 if none. */
int fp_period_kind_parse(const char *name);

#endif
