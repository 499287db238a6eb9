-- triggers.sql: the triggers that keep the tables consistent, and their functions.

-- Watchers (`csvjobs logs --follow`) LISTEN instead of polling. NOTIFY takes a cluster-wide lock at commit, so
-- each session notifies at most every 250 ms (not per statement): with a notification on every commit, 16
-- connections reporting a row each at a time ran 25% slower, queued on that lock. A watcher that missed the
-- rest of a burst reads it on its next look, at most a second later (it looks every second anyway). The time
-- is a session setting, so a rolled-back insert leaves it as it was; it is kept as epoch seconds, which read back
-- the same whatever the session's DateStyle, and anything else in it counts as "long ago".
CREATE OR REPLACE FUNCTION csv_notify_new_logs() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_last text := current_setting('csvjobs.logs_notified_at', true);
    v_now double precision := extract(epoch FROM clock_timestamp());
    v_then double precision;
BEGIN
    IF v_last ~ '^[0-9]{1,12}(\.[0-9]{1,9})?$' THEN  -- (an IF of its own: SQL does not promise to test it first)
        v_then := v_last::double precision;
    END IF;
    IF v_then IS NULL OR v_now - v_then >= 0.25 OR v_now < v_then THEN
        PERFORM set_config('csvjobs.logs_notified_at', v_now::text, false);
        PERFORM pg_notify('csv_processing_logs', '');
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS csv_processing_logs_notify ON csv_processing_logs;
CREATE TRIGGER csv_processing_logs_notify AFTER INSERT ON csv_processing_logs
    FOR EACH STATEMENT EXECUTE FUNCTION csv_notify_new_logs();

-- Deleting a batch deletes its jobs, their decisions, its logs and counter shards (there is no foreign key to
-- cascade; see csv_row_jobs and csv_processing_logs). It runs as the table owner, as a foreign key's cascade does,
-- so a user deleting their own batch also removes its rows although they may not delete them themselves.
CREATE OR REPLACE FUNCTION csv_delete_rows_of_deleted_batches() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    DELETE FROM public.csv_row_jobs j USING deleted_batches d WHERE j.batch_id = d.id;
    DELETE FROM public.csv_row_reviews r USING deleted_batches d WHERE r.batch_id = d.id;
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

-- The record of paid calls is append-only, for everyone (the owner included): what was paid stays paid, whatever
-- happens to the batch, its rows or their images later. (Privileges already keep UPDATE and DELETE from the
-- service role; this also covers the table's owner, who privileges cannot stop.)
CREATE OR REPLACE FUNCTION csv_paid_calls_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'csv_paid_calls is append-only: a paid call is never changed or removed'
        USING ERRCODE = '42501';
END
$$;

DROP TRIGGER IF EXISTS csv_paid_calls_append_only ON csv_paid_calls;
CREATE TRIGGER csv_paid_calls_append_only BEFORE UPDATE OR DELETE ON csv_paid_calls
    FOR EACH ROW EXECUTE FUNCTION csv_paid_calls_append_only();
DROP TRIGGER IF EXISTS csv_paid_calls_no_truncate ON csv_paid_calls;
CREATE TRIGGER csv_paid_calls_no_truncate BEFORE TRUNCATE ON csv_paid_calls
    FOR EACH STATEMENT EXECUTE FUNCTION csv_paid_calls_append_only();
