/*  sink_pg.h - what the PostgreSQL sink (sink_pg.c, `type = postgresql`)
    offers besides its type struct: the resubmission of a row the ERP's
    import job refused, for `floorpost deadletters resubmit`, and the COPY
    data of a batch, for the tests.

    Thread contract: any thread; fp_sink_pg_resubmit makes and closes its
    own connection.
*/
#ifndef FP_SINK_PG_H
#define FP_SINK_PG_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "sink.h"

/* Sets the row event_id of table (consumption, completion or scrap) in the
   database of [sink sink_name] of cfg back to PENDING (error_code,
   error_text and processed_at cleared), only while it still holds the
   verdict verdict_seq (process_status ERROR): so one verdict is resubmitted
   once. Returns the rows updated (1, or 0 when the row no longer holds that
   verdict), or -1 with err (no such sink, not a postgresql sink, a bad
   option, the database unreachable or refusing). */
int fp_sink_pg_resubmit(const fp_config_t *cfg, const char *sink_name, const char *table,
                        const char *event_id, uint64_t verdict_seq, char *err, size_t errlen);

/* The data of `COPY <kind's table> (columns) FROM STDIN (FORMAT binary)` that a
   delivery of evs[0..n) sends for kind (FP_CK_CONSUMPTION, _COMPLETION or
   _SCRAP): the header, a tuple per event of that kind, the trailer; empty
   (*out NULL, *len 0) when none is of that kind. *out is malloc'd: the
   caller frees it. 0, or -1 when out of memory. */
int fp_sink_pg_copy_data(const fp_sink_event_t *evs, size_t n, int kind, char **out,
                         size_t *len);

#endif
