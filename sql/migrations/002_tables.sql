-- The four csvjobs tables: a batch per uploaded CSV, a job per data row, the registered workers and the processing
-- log. Status words are enforced here with CHECK constraints and mirror the enums in csvjobs/models.py.
-- Indexes are chosen for the hot paths: claiming the next pending job, counting jobs in flight, finding timed-out
-- claims, and reading a user's batches and logs. Progress never counts over the job table: csv_batches keeps the
-- counters, updated by the result functions in 003_functions.sql.

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
    CHECK (processed_rows = successful_rows + failed_rows),
    CHECK (processed_rows <= total_rows)
);

CREATE INDEX IF NOT EXISTS csv_batches_user_created_idx ON csv_batches (user_id, created_at DESC);
-- Claiming looks only at batches that can hand out work; this keeps that list small however many batches exist.
CREATE INDEX IF NOT EXISTS csv_batches_active_idx ON csv_batches (created_at)
    WHERE status IN ('queued', 'processing');

CREATE TABLE IF NOT EXISTS csv_row_jobs (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id                uuid NOT NULL REFERENCES csv_batches (id) ON DELETE CASCADE,
    row_number              integer NOT NULL CHECK (row_number > 0),
    row_data                jsonb NOT NULL,
    -- The row mapped onto the pipeline's fields (title, description, product_type, size, mpn, country).
    product                 jsonb NOT NULL DEFAULT '{}',
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
    UNIQUE (batch_id, row_number),
    CHECK ((status IN ('claimed', 'processing')) = (claimed_by IS NOT NULL))
);

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

CREATE TABLE IF NOT EXISTS csv_processing_logs (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id        uuid REFERENCES csv_batches (id) ON DELETE CASCADE,
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
