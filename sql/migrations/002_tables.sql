-- 002_tables.sql (baseline): the csvjobs tables and their indexes: a batch per uploaded CSV, a job per data row,
-- the registered workers, the processing log, and beside them the batch counter shards, the review's earlier
-- images, the shared rate limits and the OpenAI Batch API submissions. State only: the functions that work on these
-- tables, and the triggers that keep them consistent (triggers.sql), live in sql/*.sql and are re-applied by
-- `csvjobs db migrate` when their file changes. Status words are enforced here with CHECK constraints and are the
-- enums of csvjobs/models.py. Indexes serve the hot paths: claiming the next pending job, counting jobs in flight,
-- finding timed-out claims, and reading a user's batches and logs.

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
    -- price within 24 hours (submissions.sql), and the synchronous claim never hands them out.
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
    reuses_job              bigint,
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
CREATE INDEX IF NOT EXISTS csv_row_jobs_reuses_job_idx ON csv_row_jobs (reuses_job) WHERE reuses_job IS NOT NULL;
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

-- The review's earlier images (review.sql has the functions that write them).
CREATE TABLE IF NOT EXISTS csv_image_versions (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id      uuid NOT NULL REFERENCES csv_batches (id) ON DELETE CASCADE,
    row_job_id    bigint NOT NULL,
    row_number    integer NOT NULL,
    style         text NOT NULL CHECK (style IN ('lifestyle_emotional', 'single_white_background')),
    version       integer NOT NULL CHECK (version > 0),
    image         jsonb NOT NULL,
    review        text NOT NULL DEFAULT 'unreviewed' CHECK (review IN ('unreviewed', 'approved', 'rejected')),
    replaced_at   timestamptz NOT NULL DEFAULT now(),
    -- why it was replaced: who asked for the new version, when, with what note
    replaced_note text,
    replaced_by   uuid,
    UNIQUE (row_job_id, style, version)
);
CREATE INDEX IF NOT EXISTS csv_image_versions_batch_idx ON csv_image_versions (batch_id, row_number);

-- Rate limits shared by every worker on every machine (rate_limits.sql has the functions).
CREATE TABLE IF NOT EXISTS csv_rate_limits (
    key          text PRIMARY KEY,
    tat          timestamptz NOT NULL DEFAULT now(),
    paused_until timestamptz NOT NULL DEFAULT 'epoch',  -- not -infinity: PostgreSQL 15 cannot subtract it
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- A submission: rows of a CSV batch in OpenAI's Batch API mode, sent as one input file and so one OpenAI batch
-- (preparing -> uploaded -> submitted -> done); submissions.sql says how rows move through it, and why a driver
-- killed at any point is replaced by another without submitting or paying twice.
CREATE TABLE IF NOT EXISTS csv_openai_submissions (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id        uuid NOT NULL REFERENCES csv_batches (id) ON DELETE CASCADE,
    -- prompts: one chat completion per row; images: two image requests per row (generations, or edits of the
    -- product photo)
    step            text NOT NULL CHECK (step IN ('prompts', 'images')),
    endpoint        text,
    state           text NOT NULL DEFAULT 'preparing'
                        CHECK (state IN ('preparing', 'uploaded', 'submitted', 'done')),
    -- Sent as the OpenAI batch's metadata: finds a batch whose creation was not recorded (a kill in between).
    submission_key  uuid NOT NULL DEFAULT gen_random_uuid(),
    row_job_ids     bigint[] NOT NULL,
    request_count   integer,
    input_file_id   text,
    openai_batch_id text UNIQUE,
    -- OpenAI's word for the batch: validating, in_progress, finalizing, completed, failed, expired, cancelling,
    -- cancelled; and its request counts {total, completed, failed}
    openai_status   text,
    request_counts  jsonb,
    output_file_id  text,
    error_file_id   text,
    error_message   text,
    -- What the collection did: {completed, moved, retried, requeued, failed} rows
    outcome         jsonb,
    locked_by       text,
    locked_until    timestamptz,
    next_check_at   timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    submitted_at    timestamptz,
    done_at         timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Submissions still to advance, by when they are next due (a short list: done ones leave it).
CREATE INDEX IF NOT EXISTS csv_openai_submissions_due_idx ON csv_openai_submissions (next_check_at) WHERE state <> 'done';
CREATE INDEX IF NOT EXISTS csv_openai_submissions_batch_idx ON csv_openai_submissions (batch_id, id);

