/*  clock.h - the two clocks floorpost reads, in ns as int64_t (good until
    the year 2262).

    fp_now_ns (CLOCK_MONOTONIC): intervals, timeouts, deadlines, rates.
    fp_wall_ns (CLOCK_REALTIME): what is stored or shown (commit times,
    retention, dead-letter times, barrier wall time); it may jump.

    Header-only so the gateway library and the tools share it without
    linking anything of floorpost. Any thread.
*/
#ifndef FP_CLOCK_H
#define FP_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t fp_clock_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline int64_t fp_now_ns(void)
{
    return fp_clock_ns(CLOCK_MONOTONIC);
}

static inline int64_t fp_wall_ns(void)
{
    return fp_clock_ns(CLOCK_REALTIME);
}

#endif
