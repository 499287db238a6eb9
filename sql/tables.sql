-- tables.sql: the four csvjobs tables: a batch per uploaded CSV, a job per data row, the registered workers and the
-- processing log; their indexes and the triggers that keep them consistent. Status words are enforced here with
-- CHECK constraints and are the enums of csvjobs/models.py (BatchStatus, JobStatus, WorkerStatus, LogLevel).
-- Indexes serve the hot paths: claiming the next pending job, counting jobs in flight, finding timed-out claims,
-- and reading a user's batches and logs. Progress never counts over the job table: csv_batches keeps the counters,
-- updated by the result functions in results.sql. (csv_rate_limits lives in rate_limits.sql.)

-- processing_rate_rows_per_minute is the rate as of the last finished row, kept for clients that read the table
-- (Supabase Realtime subscribers); get_csv_batch_progress() computes a live rate instead, so a stalled batch does
-- not keep showing its old speed. filename is the stored file's name (storage_path's last part, made safe);
-- original_filename is the name the user uploaded.
CREATE TABLE IF NOT EXISTS csv_batches (
    id                              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id                         uuid NOT NULL,
    filename                        text NOT NULL,
    original_filename               text NOT NULL,
    total_rows                      integer NOT NULL DEFAULT 0 CHECK (total_rows >= 0),
    processed_rows                  integer NOT NULL DEFAULT 0 CHECK (processed_rows >= 0),
    successful_rows                 integer NOT NULL DEFAULT 0 CHECK (successful_rows >= 0),
    failed_rows                     integer NOT NULL DEFAULT 0 CHECK (failed_rows >= 0),
    skipped_rows                    integer NOT NULL DEFAULT 0 CHECK (skipped_rows >= 0),
    status                          text NOT NULL DEFAULT 'uploaded' CHECK (status IN
                                        ('uploaded', 'queued', 'processing', 'paused', 'completed', 'failed',
                                         'cancelled')),
    storage_path                    text,
    csv_headers                     text[] NOT NULL DEFAULT '{}',
    column_mapping                  jsonb NOT NULL DEFAULT '{}',
    max_concurrent_jobs             integer NOT NULL DEFAULT 4 CHECK (max_concurrent_jobs > 0),
    processing_rate_rows_per_minute numeric NOT NULL DEFAULT 0,
    cost_usd                        numeric NOT NULL DEFAULT 0,
    created_at                      timestamptz NOT NULL DEFAULT now(),
    started_at                      timestamptz,
    completed_at                    timestamptz,
    updated_at                      timestamptz NOT NULL DEFAULT now(),
    -- sync: workers call the OpenAI API row by row; openai_batch: rows go through OpenAI's Batch API at half the
    -- price within 24 hours (openai_batches.sql), and the synchronous claim never hands them out.
    processing_mode                 text NOT NULL DEFAULT 'sync' CHECK (processing_mode IN ('sync', 'openai_batch')),
    CHECK (processed_rows = successful_rows + failed_rows),
    CHECK (processed_rows <= total_rows)
);

CREATE INDEX IF NOT EXISTS csv_batches_user_created_idx ON csv_batches (user_id, created_at DESC);
-- Claiming looks only at batches that can hand out work; this keeps that list small however many batches exist.
CREATE INDEX IF NOT EXISTS csv_batches_active_idx ON csv_batches (created_at)
    WHERE status IN ('queued', 'processing');

-- One job per data row. Lean on purpose: a 1,000,000-row upload writes every row of this table with one COPY, so
-- each column, check and index is paid a million times (bench/upload.py measures it):
--   * batch_id has no foreign key (the per-row check cost more than everything else together); only the upload,
--     as the service role, inserts jobs, into the batch it created in the same transaction, and deleting a batch
--     deletes its jobs through the statement trigger below;
--   * row_data is json, stored as the upload sent it (validated, not rebuilt as a tree), in the file's column order;
--   * product holds only the mapped fields that differ from their row_data column (NULL when none do), and
--     csv_row_job_product() in upload.sql gives the whole product;
--   * (batch_id, row_number) is unique by construction (one COPY numbers every row of a batch), so instead of a
--     unique index a BRIN index finds a batch's rows;
--   * the id sequence hands out ids 1,000 at a time per session.
CREATE TABLE IF NOT EXISTS csv_row_jobs (
    id                      bigint GENERATED ALWAYS AS IDENTITY (CACHE 1000) PRIMARY KEY,
    batch_id                uuid NOT NULL,
    row_number              integer NOT NULL CHECK (row_number > 0),
    row_data                json NOT NULL,
    product                 jsonb DEFAULT '{}',
    status                  text NOT NULL DEFAULT 'pending' CHECK (status IN
                                ('pending', 'claimed', 'processing', 'completed', 'failed')),
    trigger_text            text,
    generated_prompts       jsonb,
    generated_images        jsonb,
    generated_tags          jsonb,
    -- Results saved step by step while a row is processed, so a retried row never pays for a step twice.
    checkpoint              jsonb NOT NULL DEFAULT '{}',
    claimed_by              text,
    claimed_at              timestamptz,
    -- The claim token: incremented on every claim; only the holder of the current attempt may report a result.
    attempt                 integer NOT NULL DEFAULT 0,
    retry_count             integer NOT NULL DEFAULT 0 CHECK (retry_count >= 0),
    max_retries             integer NOT NULL DEFAULT 3 CHECK (max_retries >= 0),
    error_message           text,
    processing_time_seconds numeric,
    cost_usd                numeric,
    usage                   jsonb,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    completed_at            timestamptz,
    -- A variant that looks like an earlier row of its product (same photo, same look-changing options) waits for
    -- that row and reuses its images instead of paying for its own; set by the upload, NULL otherwise.
    depends_on              bigint,
    -- The merchant's review of the current images, per style: {"state": approved|rejected, "by", "at"}
    -- (review.sql); NULL until reviewed.
    review                  jsonb,
    CHECK ((status IN ('claimed', 'processing')) = (claimed_by IS NOT NULL))
);
COMMENT ON COLUMN csv_row_jobs.product IS
    'NULL, or the mapped product fields that differ from the row_data column they are read from (HTML reduced '
    'to text, values inherited from a parent row, the --country default). The other fields are that column''s '
    'value, named in csv_batches.column_mapping -> row_data_keys. csv_row_job_product() gives the whole product.';

-- The claim's index: pending jobs of one batch in order. Partial, so it holds only work still to hand out. It is
-- on (id + 0), and the claim orders by that expression, so that no other index can serve the claim: with stale
-- statistics (right after an upload every row looks pending) the planner otherwise walks the primary key from the
-- start of the table, stepping over every finished row on every claim.
CREATE INDEX IF NOT EXISTS csv_row_jobs_pending_idx ON csv_row_jobs (batch_id, (id + 0)) WHERE status = 'pending';
-- Jobs in flight: counted per batch for fair scheduling and progress; and by claim time, so that looking for
-- timed-out claims (on every claim) is a range scan that finds nothing in the normal case.
CREATE INDEX IF NOT EXISTS csv_row_jobs_in_flight_idx ON csv_row_jobs (batch_id)
    WHERE status IN ('claimed', 'processing');
CREATE INDEX IF NOT EXISTS csv_row_jobs_claimed_at_idx ON csv_row_jobs (claimed_at)
    WHERE status IN ('claimed', 'processing');
CREATE INDEX IF NOT EXISTS csv_row_jobs_failed_idx ON csv_row_jobs (batch_id, row_number) WHERE status = 'failed';
-- The rows waiting for another: found when that row finishes, so that they are handed out at once.
-- Rows whose images were made without the product's photo (an image with "edited": false): rows_without_photo
-- counts only these few, never the whole batch.
CREATE INDEX IF NOT EXISTS csv_row_jobs_without_photo_idx ON csv_row_jobs (batch_id)
    WHERE status = 'completed' AND jsonb_path_exists(generated_images, '$[*] ? (@.edited == false)');
CREATE INDEX IF NOT EXISTS csv_row_jobs_depends_on_idx ON csv_row_jobs (depends_on) WHERE depends_on IS NOT NULL;
-- A batch's rows (export, the delete trigger, a user's query by batch): bloom summaries stay selective when
-- ranges hold several batches. Ranges are summarised by autovacuum (autosummarize); until then they are read, as
-- a sequential scan would.
CREATE INDEX IF NOT EXISTS csv_row_jobs_batch_idx ON csv_row_jobs USING brin (batch_id uuid_bloom_ops)
    WITH (autosummarize = on);

CREATE TABLE IF NOT EXISTS csv_processing_workers (
    instance_id             text PRIMARY KEY,
    user_id                 uuid,
    batch_id                uuid REFERENCES csv_batches (id) ON DELETE SET NULL,
    status                  text NOT NULL DEFAULT 'idle' CHECK (status IN ('idle', 'processing', 'stopped')),
    max_concurrent_jobs     integer NOT NULL DEFAULT 1 CHECK (max_concurrent_jobs > 0),
    current_job_count       integer NOT NULL DEFAULT 0 CHECK (current_job_count >= 0),
    total_jobs_processed    integer NOT NULL DEFAULT 0,
    total_jobs_failed       integer NOT NULL DEFAULT 0,
    last_heartbeat          timestamptz NOT NULL DEFAULT now(),
    started_at              timestamptz NOT NULL DEFAULT now(),
    stopped_at              timestamptz,
    hostname                text,
    pid                     integer
);

CREATE INDEX IF NOT EXISTS csv_processing_workers_live_idx ON csv_processing_workers (last_heartbeat)
    WHERE status <> 'stopped';

-- batch_id has no foreign key: its check locks the batch row (FOR KEY SHARE) on every log line, and with every
-- worker logging at once those locks pile up as multixacts on the one row each batch has (bench/claim.py: a third
-- of the throughput at 16 connections). Only csvjobs' functions, as the service role, write logs; deleting a
-- batch deletes its logs through the statement trigger below.
CREATE TABLE IF NOT EXISTS csv_processing_logs (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id        uuid,
    row_job_id      bigint,
    row_number      integer,
    worker_instance text,
    log_level       text NOT NULL DEFAULT 'INFO' CHECK (log_level IN ('DEBUG', 'INFO', 'WARN', 'ERROR', 'FATAL')),
    message         text NOT NULL,
    operation       text NOT NULL,
    details         jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS csv_processing_logs_batch_idx ON csv_processing_logs (batch_id, id);
CREATE INDEX IF NOT EXISTS csv_processing_logs_created_idx ON csv_processing_logs (created_at);

-- Watchers (`csvjobs logs --follow`) LISTEN instead of polling. One notification per statement, not per row:
-- NOTIFY takes a cluster-wide lock at commit, so it must stay cheap.
CREATE OR REPLACE FUNCTION csv_notify_new_logs() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('csv_processing_logs', '');
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS csv_processing_logs_notify ON csv_processing_logs;
CREATE TRIGGER csv_processing_logs_notify AFTER INSERT ON csv_processing_logs
    FOR EACH STATEMENT EXECUTE FUNCTION csv_notify_new_logs();

-- A batch's counters while its rows finish, spread over a few rows: each finishing transaction adds to the
-- shard its backend picks (csv_add_batch_results in results.sql) instead of updating the batch's one row, on which
-- every worker would queue. They are deltas: the batch's counts are csv_batches' own plus these, which
-- get_csv_batch_progress adds up (at most 16 rows a batch). They are folded into csv_batches about once a second,
-- when the batch completes and before a user's action changes its counters.
CREATE TABLE IF NOT EXISTS csv_batch_counters (
    batch_id        uuid NOT NULL,
    shard           smallint NOT NULL,
    successful_rows integer NOT NULL DEFAULT 0,
    failed_rows     integer NOT NULL DEFAULT 0,
    cost_usd        numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (batch_id, shard)
);

-- Deleting a batch deletes its jobs, logs and counter shards (there is no foreign key to cascade; see csv_row_jobs
-- and csv_processing_logs). It runs as the table owner, as a foreign key's cascade does, so a user deleting their
-- own batch also removes its rows although they may not delete them themselves.
CREATE OR REPLACE FUNCTION csv_delete_rows_of_deleted_batches() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    DELETE FROM public.csv_row_jobs j USING deleted_batches d WHERE j.batch_id = d.id;
    DELETE FROM public.csv_processing_logs l USING deleted_batches d WHERE l.batch_id = d.id;
    DELETE FROM public.csv_batch_counters c USING deleted_batches d WHERE c.batch_id = d.id;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS csv_batches_delete_jobs ON csv_batches;
CREATE TRIGGER csv_batches_delete_jobs AFTER DELETE ON csv_batches
    REFERENCING OLD TABLE AS deleted_batches
    FOR EACH STATEMENT EXECUTE FUNCTION csv_delete_rows_of_deleted_batches();

-- A batch a user creates starts as an upload in progress: status, counters, cost and times are the system's to
-- set (queue_csv_batch and the result functions, as the service role), not the INSERT's.
CREATE OR REPLACE FUNCTION csv_batches_start_clean() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT csv_caller_is_service() THEN
        NEW.status := 'uploaded';
        NEW.total_rows := 0;
        NEW.processed_rows := 0;
        NEW.successful_rows := 0;
        NEW.failed_rows := 0;
        NEW.skipped_rows := 0;
        NEW.cost_usd := 0;
        NEW.processing_rate_rows_per_minute := 0;
        NEW.created_at := now();
        NEW.updated_at := now();
        NEW.started_at := NULL;
        NEW.completed_at := NULL;
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS csv_batches_start_clean ON csv_batches;
CREATE TRIGGER csv_batches_start_clean BEFORE INSERT ON csv_batches
    FOR EACH ROW EXECUTE FUNCTION csv_batches_start_clean();
