/*  fuzz_config.c - libFuzzer target for the configuration: the INI parser
    (fp_config_parse, src/ops/config.c) including [sink NAME] sections, then
    the sinks' option checks (fp_sinks_check, src/sinks/sinks.c, and each
    type's cb_new: jsonl, http, postgresql) on what parsed.

    Invariants: a refusal leaves the config untouched (all or nothing) and
    says "fuzz.ini:LINE: ... allowed ..."; an accepted config has every
    number in its documented range and every string NUL-terminated in its
    field; a refused [sink NAME] names "fuzz.ini:LINE: [sink NAME]".

    Seeds: fuzz/seeds/config/ (configs/floorpost.ini, sinks sections of
    each type, CURVE, a BOM and CRLF file).
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fuzz.h"
#include "sinks.h"

#define S_TERMINATED(field) FUZZ_CHECK(memchr((field), '\0', sizeof(field)) != NULL)

static void s_check_accepted(const fp_config_t *c)
{
    S_TERMINATED(c->instance);
    S_TERMINATED(c->ingest_router);
    S_TERMINATED(c->ingest_pull);
    S_TERMINATED(c->publish);
    S_TERMINATED(c->deadletter);
    S_TERMINATED(c->replay);
    S_TERMINATED(c->time_zone);
    S_TERMINATED(c->state_dir);
    S_TERMINATED(c->metrics_address);
    S_TERMINATED(c->curve_secret_key_file);
    S_TERMINATED(c->curve_allow_file);
    FUZZ_CHECK(c->instance[0] != '\0');
    FUZZ_CHECK(c->publish[0] && c->deadletter[0]);
    FUZZ_CHECK(c->ingest_router[0] || c->ingest_pull[0]);
    FUZZ_CHECK(c->workers >= 0 && c->workers <= FP_WORKERS_MAX);
    FUZZ_CHECK(c->shards >= 0 && c->shards <= FP_SHARDS_MAX);
    FUZZ_CHECK(c->queue_batches >= 1 && c->queue_batches <= 100000);
    FUZZ_CHECK(c->max_frame_bytes >= 1024 && c->max_frame_bytes <= 268435456);
    FUZZ_CHECK(c->dedup_window >= 64 && c->dedup_window <= 16777216);
    FUZZ_CHECK((c->dedup_window & (c->dedup_window - 1)) == 0);
    FUZZ_CHECK(c->round_interval_ms >= 1 && c->round_interval_ms <= 10000);
    FUZZ_CHECK(c->posting_interval_ms >= 10);
    FUZZ_CHECK(c->map_size_mb >= 1 && c->map_size_mb <= 1048576);
    FUZZ_CHECK(c->log_level >= 0 && c->log_level <= 3);
    FUZZ_CHECK(c->metrics_port >= 0 && c->metrics_port <= 65535);
    FUZZ_CHECK(!c->curve_secret_key_file[0] || c->curve_allow_file[0]);
    FUZZ_CHECK(c->nsinks >= 0 && c->nsinks <= FP_SINKS_MAX);
    for (int i = 0; i < c->nsinks; i++) {
        const fp_sink_config_t *sc = &c->sinks[i];
        S_TERMINATED(sc->name);
        FUZZ_CHECK(sc->name[0] != '\0');
        FUZZ_CHECK(sc->nkv >= 1 && sc->nkv <= FP_SINK_OPTS_MAX);
        FUZZ_CHECK(fp_sink_config_get(sc, "type", NULL) != NULL);
        FUZZ_CHECK(c->state_dir[0] != '\0');
        for (int k = 0; k < sc->nkv; k++) {
            S_TERMINATED(sc->kv[k].key);
            S_TERMINATED(sc->kv[k].value);
            int line = 0;
            FUZZ_CHECK(fp_sink_config_get(sc, sc->kv[k].key, &line) == sc->kv[k].value);
            FUZZ_CHECK(line == sc->kv[k].line && line > sc->line);
        }
    }
    char out[FP_ENDPOINT_MAX + 16];
    fp_config_connect_endpoint(c->publish, out, sizeof out);
    FUZZ_CHECK(memchr(out, '\0', sizeof out) != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    fp_config_t *cfg = malloc(sizeof *cfg), *before = malloc(sizeof *before);
    if (!text || !cfg || !before)
        abort();
    memcpy(text, data, size);
    text[size] = '\0'; /* an embedded NUL ends the text, as fp_config_load refuses it */
    fp_config_defaults(cfg);
    memcpy(before, cfg, sizeof *cfg);
    char err[512];
    int rc = fp_config_parse(cfg, text, "fuzz.ini", err, sizeof err);
    FUZZ_CHECK(rc == 0 || rc == -1);
    if (rc != 0) {
        FUZZ_CHECK(memcmp(cfg, before, sizeof *cfg) == 0);
        FUZZ_CHECK(strncmp(err, "fuzz.ini:", 9) == 0);
        FUZZ_CHECK(strstr(err, "allowed") != NULL);
        /* A short buffer gets the start of the same message. */
        char small[12];
        FUZZ_CHECK(fp_config_parse(cfg, text, "fuzz.ini", small, sizeof small) == -1);
        FUZZ_CHECK(strlen(small) < sizeof small && strncmp(small, err, strlen(small)) == 0);
    } else {
        s_check_accepted(cfg);
        rc = fp_sinks_check(cfg, "fuzz.ini", err, sizeof err);
        FUZZ_CHECK(rc == 0 || rc == -1);
        if (rc != 0) {
            FUZZ_CHECK(strncmp(err, "fuzz.ini:", 9) == 0);
            FUZZ_CHECK(strstr(err, "[sink ") != NULL);
        }
    }
    free(before);
    free(cfg);
    free(text);
    return 0;
}
