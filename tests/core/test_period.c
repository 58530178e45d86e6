/*  test_period.c - posting periods (period.h): days, shift calendars and
    hours by the zone's rules, on ordinary days and on the daylight-saving
    days of Europe/Berlin and America/Chicago (tz database, package tzdata);
    the civil-date arithmetic; shift calendar parsing. Every expected
    instant below is written out by hand in UTC. */
#include "period.h"

#include <stdlib.h>
#include <time.h>

#include "test.h"

#define NS 1000000000ll

static void s_zone(const char *tz)
{
    ASSERT_EQ(setenv("TZ", tz, 1), 0);
    tzset();
}

/* ns of a UTC civil time */
static int64_t s_utc(int y, int mo, int d, int h, int mi)
{
    return ((int64_t)fp_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60) * NS;
}

static void s_expect(const fp_period_cfg_t *cfg, int64_t t, int64_t start, int64_t end,
                     const char *date, int index)
{
    fp_period_t p;
    fp_period_of(cfg, t, &p);
    char ds[11];
    fp_period_date_str(p.date, ds);
    if (p.start_ns != start || p.end_ns != end || strcmp(ds, date) != 0 || p.index != index)
        fprintf(stderr, "t=%lld: got [%lld, %lld) %s #%d, want [%lld, %lld) %s #%d\n",
                (long long)t, (long long)p.start_ns, (long long)p.end_ns, ds, p.index,
                (long long)start, (long long)end, date, index);
    ASSERT_EQ(p.start_ns, start);
    ASSERT_EQ(p.end_ns, end);
    ASSERT_STREQ(ds, date);
    ASSERT_EQ(p.index, index);
    /* every instant of the period maps to it */
    fp_period_t q;
    fp_period_of(cfg, start, &q);
    ASSERT_EQ(q.start_ns, start);
    fp_period_of(cfg, end - 1, &q);
    ASSERT_EQ(q.start_ns, start);
    fp_period_of(cfg, end, &q);
    ASSERT_EQ(q.start_ns, end);
}

TEST(test_civil_dates)
{
    ASSERT_EQ(fp_days_from_civil(1970, 1, 1), 0);
    ASSERT_EQ(fp_days_from_civil(1969, 12, 31), -1);
    ASSERT_EQ(fp_days_from_civil(2000, 3, 1), 11017);
    ASSERT_EQ(fp_days_from_civil(2026, 3, 29), 20541);
    for (int32_t d = -800000; d < 800000; d += 37) {
        int y, m, dd;
        fp_civil_from_days(d, &y, &m, &dd);
        ASSERT_EQ(fp_days_from_civil(y, m, dd), d);
    }
    char s[11];
    fp_period_date_str(20541, s);
    ASSERT_STREQ(s, "2026-03-29");
    int32_t v;
    ASSERT_EQ(fp_period_parse_date("2026-03-29", &v), 0);
    ASSERT_EQ(v, 20541);
    ASSERT_EQ(fp_period_parse_date("2024-02-29", &v), 0);
    ASSERT_EQ(fp_period_parse_date("2026-02-29", &v), -1);
    ASSERT_EQ(fp_period_parse_date("2026-13-01", &v), -1);
    ASSERT_EQ(fp_period_parse_date("2026-3-29", &v), -1);
    ASSERT_EQ(fp_period_parse_date("2026-03-29x", &v), -1);
    ASSERT_EQ(fp_period_parse_date("", &v), -1);
}

TEST(test_parse_shifts)
{
    fp_period_cfg_t c = {.kind = FP_PERIOD_SHIFT};
    char err[128];
    ASSERT_EQ(fp_period_parse_shifts("06:00,14:00,22:00", &c, err, sizeof err), 0);
    ASSERT_EQ(c.nshifts, 3);
    ASSERT_EQ(c.shift_min[0], 360);
    ASSERT_EQ(c.shift_min[2], 1320);
    ASSERT_EQ(fp_period_parse_shifts(" 22:00 , 06:00,14:30", &c, err, sizeof err), 0);
    ASSERT_EQ(c.nshifts, 3);
    ASSERT_EQ(c.shift_min[2], 870);
    ASSERT_EQ(fp_period_parse_shifts("00:00", &c, err, sizeof err), 0);
    ASSERT_EQ(c.nshifts, 1);
    const char *bad[] = {"", "6:00", "24:00", "06:60", "06:00;14:00", "06:00,",
                         "14:00,06:00,10:00,02:00", "06:00,06:00,07:00", "06:00,14:00,07:00",
                         "06:00,05:00,06:00", "0a:00"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        c.nshifts = 7;
        ASSERT_EQ(fp_period_parse_shifts(bad[i], &c, err, sizeof err), -1);
        ASSERT(err[0] != 0);
        ASSERT_EQ(c.nshifts, 7); /* untouched */
    }
    ASSERT_EQ(fp_period_kind_parse("day"), FP_PERIOD_DAY);
    ASSERT_EQ(fp_period_kind_parse("shift"), FP_PERIOD_SHIFT);
    ASSERT_EQ(fp_period_kind_parse("hour"), FP_PERIOD_HOUR);
    ASSERT_EQ(fp_period_kind_parse("week"), -1);
}

TEST(test_day_utc_and_none)
{
    s_zone("UTC");
    fp_period_cfg_t day = {.kind = FP_PERIOD_DAY};
    s_expect(&day, s_utc(2026, 11, 23, 4, 13), s_utc(2026, 11, 23, 0, 0),
             s_utc(2026, 11, 24, 0, 0), "2026-11-23", 0);
    s_expect(&day, 0, 0, 86400 * NS, "1970-01-01", 0);
    s_expect(&day, -1, -86400 * NS, 0, "1969-12-31", 0);
    char name[16];
    fp_period_t p;
    fp_period_of(&day, 0, &p);
    fp_period_name(&day, &p, name);
    ASSERT_STREQ(name, "day");
    fp_period_cfg_t none = {.kind = FP_PERIOD_NONE};
    fp_period_of(&none, 12345, &p);
    ASSERT_EQ(p.start_ns, INT64_MIN);
    ASSERT_EQ(p.end_ns, INT64_MAX);
    fp_period_name(&none, &p, name);
    ASSERT_STREQ(name, "");
    /* far times are clamped, never overflow */
    fp_period_of(&day, INT64_MAX, &p);
    ASSERT(p.end_ns > p.start_ns);
    fp_period_of(&day, INT64_MIN, &p);
    ASSERT(p.end_ns > p.start_ns);
}

/* Europe/Berlin: CET (+1) / CEST (+2); 2026-03-29 02:00 CET -> 03:00 CEST
   (01:00Z), 2026-10-25 03:00 CEST -> 02:00 CET (01:00Z). */
TEST(test_berlin_dst_days)
{
    s_zone("Europe/Berlin");
    fp_period_cfg_t day = {.kind = FP_PERIOD_DAY};
    /* an ordinary winter day: 24 h from 23:00Z */
    s_expect(&day, s_utc(2026, 1, 15, 12, 0), s_utc(2026, 1, 14, 23, 0),
             s_utc(2026, 1, 15, 23, 0), "2026-01-15", 0);
    /* spring forward: 23 h */
    s_expect(&day, s_utc(2026, 3, 29, 1, 30), s_utc(2026, 3, 28, 23, 0),
             s_utc(2026, 3, 29, 22, 0), "2026-03-29", 0);
    /* fall back: 25 h */
    s_expect(&day, s_utc(2026, 10, 25, 1, 30), s_utc(2026, 10, 24, 22, 0),
             s_utc(2026, 10, 25, 23, 0), "2026-10-25", 0);
    /* local midnight is the boundary: 23:59:59 CET is the day before */
    s_expect(&day, s_utc(2026, 1, 15, 22, 59) + 59 * NS, s_utc(2026, 1, 14, 23, 0),
             s_utc(2026, 1, 15, 23, 0), "2026-01-15", 0);

    fp_period_cfg_t sh = {.kind = FP_PERIOD_SHIFT};
    char err[128];
    ASSERT_EQ(fp_period_parse_shifts("06:00,14:00,22:00", &sh, err, sizeof err), 0);
    /* the night shift into the spring-forward morning: 22:00 CET Sat
       (21:00Z) to 06:00 CEST Sun (04:00Z) = 7 h, posting date Saturday */
    s_expect(&sh, s_utc(2026, 3, 29, 0, 30), s_utc(2026, 3, 28, 21, 0),
             s_utc(2026, 3, 29, 4, 0), "2026-03-28", 3);
    s_expect(&sh, s_utc(2026, 3, 29, 5, 0), s_utc(2026, 3, 29, 4, 0),
             s_utc(2026, 3, 29, 12, 0), "2026-03-29", 1);
    /* the night shift into the fall-back morning: 22:00 CEST (20:00Z) to
       06:00 CET (05:00Z) = 9 h */
    s_expect(&sh, s_utc(2026, 10, 25, 1, 30), s_utc(2026, 10, 24, 20, 0),
             s_utc(2026, 10, 25, 5, 0), "2026-10-24", 3);
    s_expect(&sh, s_utc(2026, 10, 25, 13, 0), s_utc(2026, 10, 25, 13, 0),
             s_utc(2026, 10, 25, 21, 0), "2026-10-25", 2);
    char name[16];
    fp_period_t p;
    fp_period_of(&sh, s_utc(2026, 10, 25, 13, 0), &p);
    fp_period_name(&sh, &p, name);
    ASSERT_STREQ(name, "shift-2");

    /* a production day that starts the evening before: the 22:00 shift
       posts on the next date */
    fp_period_cfg_t ev = {.kind = FP_PERIOD_SHIFT};
    ASSERT_EQ(fp_period_parse_shifts("22:00,06:00,14:00", &ev, err, sizeof err), 0);
    s_expect(&ev, s_utc(2026, 3, 29, 0, 30), s_utc(2026, 3, 28, 21, 0),
             s_utc(2026, 3, 29, 4, 0), "2026-03-29", 1);
    s_expect(&ev, s_utc(2026, 3, 29, 19, 59), s_utc(2026, 3, 29, 12, 0),
             s_utc(2026, 3, 29, 20, 0), "2026-03-29", 3);
    s_expect(&ev, s_utc(2026, 3, 29, 20, 0), s_utc(2026, 3, 29, 20, 0),
             s_utc(2026, 3, 30, 4, 0), "2026-03-30", 1);

    fp_period_cfg_t hr = {.kind = FP_PERIOD_HOUR};
    /* spring forward: hour-01 (00:00Z) is followed by hour-03 (01:00Z) */
    s_expect(&hr, s_utc(2026, 3, 29, 0, 10), s_utc(2026, 3, 29, 0, 0), s_utc(2026, 3, 29, 1, 0),
             "2026-03-29", 1);
    s_expect(&hr, s_utc(2026, 3, 29, 1, 10), s_utc(2026, 3, 29, 1, 0), s_utc(2026, 3, 29, 2, 0),
             "2026-03-29", 3);
    /* fall back: hour-02 twice, two periods */
    s_expect(&hr, s_utc(2026, 10, 25, 0, 10), s_utc(2026, 10, 25, 0, 0),
             s_utc(2026, 10, 25, 1, 0), "2026-10-25", 2);
    s_expect(&hr, s_utc(2026, 10, 25, 1, 10), s_utc(2026, 10, 25, 1, 0),
             s_utc(2026, 10, 25, 2, 0), "2026-10-25", 2);
    s_expect(&hr, s_utc(2026, 10, 25, 2, 10), s_utc(2026, 10, 25, 2, 0),
             s_utc(2026, 10, 25, 3, 0), "2026-10-25", 3);
    /* 24 + 1 hour periods on the fall-back day, 23 on spring-forward */
    int n = 0;
    for (int64_t t = s_utc(2026, 10, 24, 22, 0); t < s_utc(2026, 10, 25, 23, 0);) {
        fp_period_of(&hr, t, &p);
        ASSERT_EQ(p.start_ns, t);
        t = p.end_ns;
        n++;
    }
    ASSERT_EQ(n, 25);
    n = 0;
    for (int64_t t = s_utc(2026, 3, 28, 23, 0); t < s_utc(2026, 3, 29, 22, 0);) {
        fp_period_of(&hr, t, &p);
        t = p.end_ns;
        n++;
    }
    ASSERT_EQ(n, 23);
}

/* America/Chicago: CST (-6) / CDT (-5); 2026-03-08 02:00 CST -> 03:00 CDT
   (08:00Z), 2026-11-01 02:00 CDT -> 01:00 CST (07:00Z). */
TEST(test_chicago_dst_days)
{
    s_zone("America/Chicago");
    fp_period_cfg_t day = {.kind = FP_PERIOD_DAY};
    s_expect(&day, s_utc(2026, 3, 8, 12, 0), s_utc(2026, 3, 8, 6, 0), s_utc(2026, 3, 9, 5, 0),
             "2026-03-08", 0);
    s_expect(&day, s_utc(2026, 11, 1, 12, 0), s_utc(2026, 11, 1, 5, 0), s_utc(2026, 11, 2, 6, 0),
             "2026-11-01", 0);
    /* 23:30 CDT on Oct 31 is 04:30Z Nov 1: still Oct 31 */
    s_expect(&day, s_utc(2026, 11, 1, 4, 30), s_utc(2026, 10, 31, 5, 0),
             s_utc(2026, 11, 1, 5, 0), "2026-10-31", 0);
    fp_period_cfg_t sh = {.kind = FP_PERIOD_SHIFT};
    char err[128];
    ASSERT_EQ(fp_period_parse_shifts("07:00,19:00", &sh, err, sizeof err), 0);
    /* 19:00 CDT Oct 31 (00:00Z) to 07:00 CST Nov 1 (13:00Z): 13 h */
    s_expect(&sh, s_utc(2026, 11, 1, 7, 30), s_utc(2026, 11, 1, 0, 0),
             s_utc(2026, 11, 1, 13, 0), "2026-10-31", 2);
    /* 19:00 CST Mar 7 (01:00Z) to 07:00 CDT Mar 8 (12:00Z): 11 h */
    s_expect(&sh, s_utc(2026, 3, 8, 9, 0), s_utc(2026, 3, 8, 1, 0), s_utc(2026, 3, 8, 12, 0),
             "2026-03-07", 2);
}

TEST(test_first_of_date)
{
    s_zone("Europe/Berlin");
    int32_t d = fp_days_from_civil(2026, 11, 1);
    fp_period_t p;
    fp_period_cfg_t day = {.kind = FP_PERIOD_DAY};
    fp_period_first_of_date(&day, d, &p);
    ASSERT_EQ(p.start_ns, s_utc(2026, 10, 31, 23, 0));
    ASSERT_EQ(p.date, d);
    fp_period_cfg_t sh = {.kind = FP_PERIOD_SHIFT};
    char err[128];
    ASSERT_EQ(fp_period_parse_shifts("06:00,14:00,22:00", &sh, err, sizeof err), 0);
    fp_period_first_of_date(&sh, d, &p);
    ASSERT_EQ(p.start_ns, s_utc(2026, 11, 1, 5, 0)); /* 06:00 CET */
    ASSERT_EQ(p.index, 1);
    ASSERT_EQ(p.date, d);
    ASSERT_EQ(fp_period_parse_shifts("22:00,06:00,14:00", &sh, err, sizeof err), 0);
    fp_period_first_of_date(&sh, d, &p);
    ASSERT_EQ(p.start_ns, s_utc(2026, 10, 31, 21, 0)); /* 22:00 the evening before */
    ASSERT_EQ(p.date, d);
}

int main(int argc, char **argv)
{
    test_init(argc, argv);
    RUN(test_civil_dates);
    RUN(test_parse_shifts);
    RUN(test_day_utc_and_none);
    RUN(test_berlin_dst_days);
    RUN(test_chicago_dst_days);
    RUN(test_first_of_date);
    return test_done();
}
