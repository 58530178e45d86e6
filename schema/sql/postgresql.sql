-- postgresql.sql - the interface tables of floorpost's PostgreSQL sink
-- (docs/sinks-postgresql.md). Embedded into the binary at build time; the
-- sink applies it at open when a table is missing or lacks the period
-- columns (the upgrade below), in one transaction under
-- pg_advisory_xact_lock, every statement idempotent. @SCHEMA@ stands for the
-- sink's `schema` option as a quoted identifier (default "floorpost").
--
-- One row per checkpoint; event_id (UNIQUE) is the ERP's reference key, so
-- a delivery repeated after a crash inserts nothing twice. The ERP's import
-- job owns process_status (PENDING -> PROCESSING -> DONE or ERROR),
-- error_code, error_text and processed_at; floorpost only inserts rows, and
-- turns each move into ERROR (verdict_xid, verdict_seq, set by the trigger)
-- into one posting dead letter.

-- (The IF NOT EXISTS notices of an upgrade are not news.)
SET LOCAL client_min_messages = warning;

CREATE SCHEMA IF NOT EXISTS @SCHEMA@;

-- Numbers each verdict (a row moving into ERROR), in the order they happen
-- within a transaction; verdict_xid orders the transactions.
CREATE SEQUENCE IF NOT EXISTS @SCHEMA@.verdict_seq AS bigint;

-- The columns every posting table has: a template the three tables are
-- made LIKE (columns, defaults, constraints, indexes); never written.
CREATE TABLE IF NOT EXISTS @SCHEMA@.posting_template (
    event_id          text COLLATE "C" NOT NULL UNIQUE, -- the ERP's reference key (ASCII)
    global_seq        bigint      NOT NULL,             -- floorpost's outbox order
    instance          text        NOT NULL,
    plant             text        NOT NULL,
    line              text,
    order_no          text        NOT NULL,
    operation         text        NOT NULL,
    posting_date      date        NOT NULL,             -- in the plant's time zone
    first_event_at    timestamptz NOT NULL,
    last_event_at     timestamptz NOT NULL,
    record_count      bigint      NOT NULL,             -- telemetry records summed
    late              boolean     NOT NULL,             -- a correction after a final completion
    lineage           jsonb       NOT NULL,             -- [{source_id, epoch, first_seq, last_seq}]
    lineage_truncated boolean     NOT NULL DEFAULT false,
    checkpoint_no     bigint      NOT NULL,
    stream_seq        bigint      NOT NULL,
    topic             text        NOT NULL,
    inserted_at       timestamptz NOT NULL DEFAULT now(),
    process_status    text        NOT NULL DEFAULT 'PENDING'
                      CHECK (process_status IN ('PENDING', 'PROCESSING', 'DONE', 'ERROR')),
    error_code        text,
    error_text        text,
    processed_at      timestamptz,
    verdict_seq       bigint,                           -- set by the trigger on -> ERROR
    verdict_xid       xid8,
    -- The posting period (docs/schema.md "Posting periods"); NULL period
    -- for a floorpost without [aggregate] period (posting_date is then the
    -- date of last_event_at in the plant's time zone).
    period            text,                             -- day, shift-N, hour-HH
    period_start      timestamptz,                      -- inclusive
    period_end        timestamptz,                      -- exclusive
    backfill          boolean     NOT NULL DEFAULT false, -- a further posting to a flushed period
    original_posting_date date,                         -- a closed period re-posted: its own date
    original_period_start timestamptz                   -- and its own period's start
);
-- The import job's work queue, and floorpost's verdict poll.
CREATE INDEX IF NOT EXISTS posting_template_status ON @SCHEMA@.posting_template (process_status);
CREATE INDEX IF NOT EXISTS posting_template_verdict
    ON @SCHEMA@.posting_template (verdict_xid, verdict_seq) WHERE verdict_xid IS NOT NULL;

CREATE TABLE IF NOT EXISTS @SCHEMA@.consumption (
    LIKE @SCHEMA@.posting_template INCLUDING ALL,
    material          text,
    lot               text,
    unit              text,
    quantity          numeric(20,3) NOT NULL            -- exact, in unit
);

CREATE TABLE IF NOT EXISTS @SCHEMA@.completion (
    LIKE @SCHEMA@.posting_template INCLUDING ALL,
    yield_qty         bigint      NOT NULL,             -- good parts
    scrap_qty         bigint      NOT NULL,             -- scrapped parts
    final             boolean     NOT NULL              -- final confirmation of the operation
);

CREATE TABLE IF NOT EXISTS @SCHEMA@.scrap (
    LIKE @SCHEMA@.posting_template INCLUDING ALL,
    reason            text,                             -- the scrap reason code
    parts             bigint      NOT NULL
);

-- Upgrade in place: the tables of an older floorpost (made before the
-- period columns) get them; LIKE copied the template's columns when each
-- table was made, so every table is altered. Rows written before keep
-- period NULL and backfill false.
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['posting_template', 'consumption', 'completion', 'scrap'] LOOP
        EXECUTE format('ALTER TABLE @SCHEMA@.%I '
            'ADD COLUMN IF NOT EXISTS period text, '
            'ADD COLUMN IF NOT EXISTS period_start timestamptz, '
            'ADD COLUMN IF NOT EXISTS period_end timestamptz, '
            'ADD COLUMN IF NOT EXISTS backfill boolean NOT NULL DEFAULT false, '
            'ADD COLUMN IF NOT EXISTS original_posting_date date, '
            'ADD COLUMN IF NOT EXISTS original_period_start timestamptz', t);
    END LOOP;
END
$$;

-- Each sink's durable position: the last global_seq whose rows are
-- committed, written in the same transaction as the rows.
CREATE TABLE IF NOT EXISTS @SCHEMA@.sink_position (
    sink       text        PRIMARY KEY,
    position   bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A row moving into ERROR gets a verdict number: floorpost reports verdicts
-- in (verdict_xid, verdict_seq) order once their transaction has ended.
CREATE OR REPLACE FUNCTION @SCHEMA@.verdict_mark() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.process_status = 'ERROR' AND OLD.process_status IS DISTINCT FROM 'ERROR' THEN
        NEW.verdict_seq := nextval('@SCHEMA@.verdict_seq');
        NEW.verdict_xid := pg_current_xact_id();
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER consumption_verdict BEFORE UPDATE ON @SCHEMA@.consumption
    FOR EACH ROW EXECUTE FUNCTION @SCHEMA@.verdict_mark();
CREATE OR REPLACE TRIGGER completion_verdict BEFORE UPDATE ON @SCHEMA@.completion
    FOR EACH ROW EXECUTE FUNCTION @SCHEMA@.verdict_mark();
CREATE OR REPLACE TRIGGER scrap_verdict BEFORE UPDATE ON @SCHEMA@.scrap
    FOR EACH ROW EXECUTE FUNCTION @SCHEMA@.verdict_mark();
