-- Hardening, from trying the contract as written and then trying to break in:
--   * the single-result call works as the contract writes it: positionally, with no worker id (unfenced, logged),
--     and with status 'processing' to mark a row started; workers mark rows processing as soon as they start;
--   * role checks inside SECURITY DEFINER functions use the database role in force, never a JWT claim;
--   * a user's new batch starts clean whatever the INSERT says;
--   * worker health is public (the monitoring columns only), owners alone see whom a dedicated worker serves;
--   * negative timeouts are refused;
--   * on a Supabase project, whose default privileges grant anon and authenticated everything created in public,
--     nothing of csvjobs is reachable by them beyond what the policies filter: no table without row-level
--     security, no TRUNCATE, no sequence, no function they were not meant to call.

-- Is the caller the service role (or a role that holds it, such as the database owner connecting directly)?
-- Reads the role in force outside any SECURITY DEFINER function: SET ROLE (what PostgREST and csvjobs use) is
-- kept in the 'role' setting, which a definer function does not change; without one it is the session's login
-- role. Claims in request.jwt.claims are not consulted: any signed-in client can write those.
CREATE OR REPLACE FUNCTION csv_caller_is_service() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT pg_has_role(
        CASE WHEN current_setting('role') = 'none' THEN session_user
             ELSE current_setting('role')::name END,
        'service_role', 'MEMBER');
$$;

-- The batch, locked, if the caller owns it (or is the service role); otherwise "no such batch", the same answer
-- as for a batch that does not exist, so ids of other users' batches reveal nothing.
-- Locks: the batch row.
CREATE OR REPLACE FUNCTION csv_lock_owned_batch(p_batch_id uuid)
RETURNS public.csv_batches
LANGUAGE plpgsql AS $$
DECLARE
    v_batch public.csv_batches;
BEGIN
    SELECT * INTO v_batch FROM public.csv_batches b WHERE b.id = p_batch_id FOR UPDATE;
    IF NOT FOUND OR (v_batch.user_id IS DISTINCT FROM auth.uid() AND NOT public.csv_caller_is_service()) THEN
        RAISE EXCEPTION 'no such batch: %', p_batch_id USING ERRCODE = 'P0002';
    END IF;
    RETURN v_batch;
END
$$;

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

-- Internal: reclaim jobs whose claim is older than the timeout and whose worker has stopped sending heartbeats
-- (a live worker keeps its jobs, however slow the AI provider is). Counts a retry. A negative timeout would
-- take rows from live workers, so it is refused.
-- Locks: the timed-out job rows, skipping any that another transaction holds.
CREATE OR REPLACE FUNCTION csv_reclaim_timed_out_jobs(p_timeout_minutes numeric)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_cutoff timestamptz;
    v_ids bigint[];
BEGIN
    IF p_timeout_minutes IS NULL OR p_timeout_minutes < 0 THEN
        RAISE EXCEPTION 'the claim timeout must be zero or more minutes, not %', coalesce(p_timeout_minutes::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'pass p_timeout_minutes >= 0 (the default is 5)';
    END IF;
    v_cutoff := now() - make_interval(secs => (p_timeout_minutes * 60)::double precision);
    SELECT array_agg(t.id) INTO v_ids FROM (
        SELECT j.id FROM csv_row_jobs j
        WHERE j.status IN ('claimed', 'processing')
          AND j.claimed_at < v_cutoff
          AND NOT EXISTS (
              SELECT 1 FROM csv_processing_workers w
              WHERE w.instance_id = j.claimed_by AND w.status <> 'stopped' AND w.last_heartbeat >= v_cutoff)
        ORDER BY j.id
        FOR UPDATE OF j SKIP LOCKED
    ) t;
    IF v_ids IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM csv_release_jobs(v_ids, true, 'claim timed out (the worker stopped sending heartbeats)');
    RETURN cardinality(v_ids);
END
$$;

-- Cron's job: workers without a heartbeat for p_timeout_minutes are marked stopped, and every job held by a
-- stopped or silent worker goes back to pending (counting a retry) or fails past max_retries. Safe when two run
-- at once: each worker is stopped by one of them (row lock) and each job released by one (SKIP LOCKED).
-- A negative timeout is refused (it would declare live workers dead).
-- Locks: stale worker rows, then their job rows, then batch rows in id order.
CREATE OR REPLACE FUNCTION cleanup_stale_csv_workers(p_timeout_minutes numeric DEFAULT 5)
RETURNS TABLE (workers_stopped integer, jobs_released integer, jobs_failed integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_cutoff timestamptz;
    v_workers integer;
    v_ids bigint[];
    v_released integer := 0;
    v_failed integer := 0;
BEGIN
    IF p_timeout_minutes IS NULL OR p_timeout_minutes < 0 THEN
        RAISE EXCEPTION 'the cleanup timeout must be zero or more minutes, not %',
            coalesce(p_timeout_minutes::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'pass p_timeout_minutes >= 0 (the default is 5)';
    END IF;
    v_cutoff := now() - make_interval(secs => (p_timeout_minutes * 60)::double precision);
    WITH stale AS (
        UPDATE csv_processing_workers w
           SET status = 'stopped', stopped_at = now(), current_job_count = 0
         WHERE w.status <> 'stopped' AND w.last_heartbeat < v_cutoff
        RETURNING w.instance_id, w.batch_id, w.last_heartbeat
    ), logged AS (
        INSERT INTO csv_processing_logs (batch_id, worker_instance, log_level, message, operation, details)
        SELECT s.batch_id, s.instance_id, 'WARN',
               format('worker marked stopped: no heartbeat since %s', s.last_heartbeat), 'worker_stale',
               jsonb_build_object('last_heartbeat', s.last_heartbeat)
        FROM stale s
    )
    SELECT count(*) INTO v_workers FROM stale;

    SELECT array_agg(t.id) INTO v_ids FROM (
        SELECT j.id FROM csv_row_jobs j
        WHERE j.status IN ('claimed', 'processing')
          AND (
              EXISTS (SELECT 1 FROM csv_processing_workers w
                      WHERE w.instance_id = j.claimed_by
                        AND (w.status = 'stopped' OR w.last_heartbeat < v_cutoff))
              OR (NOT EXISTS (SELECT 1 FROM csv_processing_workers w WHERE w.instance_id = j.claimed_by)
                  AND j.claimed_at < v_cutoff))
        ORDER BY j.id
        FOR UPDATE OF j SKIP LOCKED
    ) t;

    IF v_ids IS NOT NULL THEN
        SELECT rel.released, rel.failed INTO v_released, v_failed
        FROM csv_release_jobs(v_ids, true, 'the worker holding the row stopped (cleanup)') rel;
    END IF;
    RETURN QUERY SELECT v_workers, v_released, v_failed;
END
$$;

-- Report the results of several jobs in one transaction. p_results is a JSON array of objects with job_id,
-- attempt (the claim token from the claim), status ('completed', 'failed', or 'pending' to retry later, which
-- counts a retry and fails the job past max_retries), and optionally trigger_text, generated_prompts,
-- generated_images, generated_tags, processing_time_seconds, error_message, cost_usd and usage.
-- Fenced: with a worker id, a job changes only while that worker holds its current attempt (an attempt left out
-- matches any attempt of that worker); otherwise applied is false and the caller knows it lost the job. Without
-- a worker id (p_worker_id NULL, the single-call contract) a result applies to any claimed or processing job,
-- and its log line says it was unfenced. Batch counters are updated in the same transaction, once per batch.
-- Locks: the reported job rows, then their batch rows in id order.
CREATE OR REPLACE FUNCTION update_csv_row_job_results(p_worker_id text, p_results jsonb)
RETURNS TABLE (job_id bigint, applied boolean, status text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_ids bigint[];
    v_batches uuid[];
    v_statuses text[];
    v_costs numeric[];
    r record;
BEGIN
    IF jsonb_typeof(p_results) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'update_csv_row_job_results: p_results must be a JSON array' USING ERRCODE = '22023';
    END IF;
    IF EXISTS (SELECT 1 FROM jsonb_array_elements(p_results) e
               WHERE NOT (e ->> 'status' = ANY (ARRAY['completed', 'failed', 'pending']))) THEN
        RAISE EXCEPTION 'update_csv_row_job_results: status must be completed, failed or pending'
            USING ERRCODE = '22023';
    END IF;

    WITH input AS (
        SELECT * FROM jsonb_to_recordset(p_results) AS i(
            job_id bigint, attempt integer, status text, trigger_text text, generated_prompts jsonb,
            generated_images jsonb, generated_tags jsonb, processing_time_seconds numeric, error_message text,
            cost_usd numeric, usage jsonb)
    ), held AS (
        -- Who held each job before this update (the update clears claimed_by); for the log line.
        SELECT j.id, j.claimed_by FROM csv_row_jobs j JOIN input i ON i.job_id = j.id
    ), upd AS (
        UPDATE csv_row_jobs j SET
            status = CASE
                WHEN i.status <> 'pending' THEN i.status
                WHEN j.retry_count < j.max_retries THEN 'pending'
                ELSE 'failed'
            END,
            retry_count = j.retry_count
                + CASE WHEN i.status = 'pending' AND j.retry_count < j.max_retries THEN 1 ELSE 0 END,
            trigger_text = coalesce(i.trigger_text, j.trigger_text),
            generated_prompts = coalesce(i.generated_prompts, j.generated_prompts),
            generated_images = coalesce(i.generated_images, j.generated_images),
            generated_tags = coalesce(i.generated_tags, j.generated_tags),
            processing_time_seconds = coalesce(i.processing_time_seconds, j.processing_time_seconds),
            cost_usd = coalesce(j.cost_usd, 0) + coalesce(i.cost_usd, 0),
            usage = coalesce(i.usage, j.usage),
            error_message = CASE
                WHEN i.status = 'completed' THEN NULL
                WHEN i.status = 'pending' AND j.retry_count >= j.max_retries
                    THEN coalesce(i.error_message, 'failed') || format(' (gave up after %s retries)', j.retry_count)
                ELSE i.error_message
            END,
            completed_at = CASE WHEN i.status <> 'pending' OR j.retry_count >= j.max_retries THEN now() END,
            claimed_by = NULL,
            claimed_at = NULL,
            updated_at = now()
        FROM input i
        WHERE j.id = i.job_id
          AND j.status IN ('claimed', 'processing')
          AND (p_worker_id IS NULL
               OR (j.claimed_by = p_worker_id AND (i.attempt IS NULL OR j.attempt = i.attempt)))
        RETURNING j.id, j.batch_id, j.row_number, j.status, j.error_message, j.retry_count,
                  j.processing_time_seconds, coalesce(i.cost_usd, 0) AS cost
    ), logged AS (
        INSERT INTO csv_processing_logs (batch_id, row_job_id, row_number, worker_instance, log_level, message,
                                         operation, details)
        SELECT u.batch_id, u.id, u.row_number, coalesce(p_worker_id, h.claimed_by),
               CASE u.status WHEN 'completed' THEN 'INFO' WHEN 'failed' THEN 'ERROR' ELSE 'WARN' END,
               CASE u.status
                   WHEN 'completed' THEN 'row completed'
                   WHEN 'failed' THEN 'row failed: ' || coalesce(u.error_message, 'unknown error')
                   ELSE format('row will be retried (retry %s): %s', u.retry_count,
                               coalesce(u.error_message, 'unknown error'))
               END
               || CASE WHEN p_worker_id IS NULL THEN ' (unfenced: reported without a worker id)' ELSE '' END,
               CASE u.status WHEN 'completed' THEN 'row_completed' WHEN 'failed' THEN 'row_failed'
                             ELSE 'row_retry' END,
               jsonb_build_object('processing_time_seconds', u.processing_time_seconds, 'cost_usd', u.cost)
               || CASE WHEN p_worker_id IS NULL THEN jsonb_build_object('unfenced', true, 'claimed_by', h.claimed_by)
                       ELSE '{}'::jsonb END
        FROM upd u LEFT JOIN held h ON h.id = u.id
    )
    SELECT array_agg(u.id), array_agg(u.batch_id), array_agg(u.status), array_agg(u.cost)
      INTO v_ids, v_batches, v_statuses, v_costs
      FROM upd u;

    IF v_ids IS NOT NULL THEN
        FOR r IN
            SELECT t.batch_id,
                   count(*) FILTER (WHERE t.status = 'completed')::integer AS ok,
                   count(*) FILTER (WHERE t.status = 'failed')::integer AS bad,
                   sum(t.cost) AS cost
            FROM unnest(v_batches, v_statuses, v_costs) AS t(batch_id, status, cost)
            GROUP BY t.batch_id
            ORDER BY t.batch_id
        LOOP
            IF r.ok + r.bad > 0 OR r.cost > 0 THEN
                PERFORM csv_add_batch_results(r.batch_id, r.ok, r.bad, r.cost);
            END IF;
        END LOOP;
        IF 'pending' = ANY (v_statuses) THEN
            PERFORM pg_notify('csv_row_jobs', '');
        END IF;
    END IF;

    RETURN QUERY
    SELECT i.job_id, t.id IS NOT NULL, t.status
    FROM jsonb_to_recordset(p_results) AS i(job_id bigint)
    LEFT JOIN unnest(v_ids, v_statuses) AS t(id, status) ON t.id = i.job_id;
END
$$;

-- Mark claimed jobs as started: a row is 'processing' from the moment its worker starts on it. Fenced like a
-- result (with a worker id, only that worker's jobs; without one, any claimed job). Returns how many changed.
-- Locks: the given job rows.
CREATE OR REPLACE FUNCTION start_csv_row_jobs(p_worker_id text, p_job_ids bigint[])
RETURNS integer
LANGUAGE sql AS $$
    WITH upd AS (
        UPDATE csv_row_jobs j SET status = 'processing', updated_at = now()
        WHERE j.id = ANY (p_job_ids) AND j.status = 'claimed'
          AND (p_worker_id IS NULL OR j.claimed_by = p_worker_id)
        RETURNING 1
    )
    SELECT count(*)::integer FROM upd;
$$;

-- The single-result call, positionally as the contract writes it:
--   update_csv_row_job_result(job_id, status, trigger_text, prompts, images, tags, processing_time_seconds
--                             [, error_message [, worker_id [, attempt]]])
-- status is 'completed', 'failed', 'pending' (retry later) or 'processing' (the worker has started on the row).
-- Returns true when the change was made, false when the job is not (or no longer) held as the call says: with a
-- worker id, by that worker (and attempt, if given); without one, by anyone (an unfenced call, logged as such).
-- Locks: as update_csv_row_job_results (or start_csv_row_jobs for 'processing').
CREATE OR REPLACE FUNCTION update_csv_row_job_result(
    p_job_id bigint,
    p_status text,
    p_trigger_text text DEFAULT NULL,
    p_generated_prompts jsonb DEFAULT NULL,
    p_generated_images jsonb DEFAULT NULL,
    p_generated_tags jsonb DEFAULT NULL,
    p_processing_time_seconds numeric DEFAULT NULL,
    p_error_message text DEFAULT NULL,
    p_worker_id text DEFAULT NULL,
    p_attempt integer DEFAULT NULL
) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF p_status = 'processing' THEN
        PERFORM 1 FROM csv_row_jobs j
         WHERE j.id = p_job_id AND j.status IN ('claimed', 'processing')
           AND (p_worker_id IS NULL
                OR (j.claimed_by = p_worker_id AND (p_attempt IS NULL OR j.attempt = p_attempt)))
           FOR UPDATE;
        IF NOT FOUND THEN
            RETURN false;
        END IF;
        UPDATE csv_row_jobs j SET status = 'processing', updated_at = now()
         WHERE j.id = p_job_id AND j.status = 'claimed';
        RETURN true;
    END IF;
    RETURN coalesce((
        SELECT r.applied FROM update_csv_row_job_results(
            p_worker_id,
            jsonb_build_array(jsonb_build_object(
                'job_id', p_job_id, 'attempt', p_attempt, 'status', p_status, 'trigger_text', p_trigger_text,
                'generated_prompts', p_generated_prompts, 'generated_images', p_generated_images,
                'generated_tags', p_generated_tags, 'processing_time_seconds', p_processing_time_seconds,
                'error_message', p_error_message))) r
    ), false);
END
$$;

-- Worker health for everyone, as the contract's monitoring query asks; whom a dedicated worker serves (its
-- user_id and batch_id) only for the owner and the service role, through get_csv_workers() below.
DROP POLICY IF EXISTS csv_processing_workers_select_signed_in ON csv_processing_workers;
DROP POLICY IF EXISTS csv_processing_workers_select_public ON csv_processing_workers;
CREATE POLICY csv_processing_workers_select_public ON csv_processing_workers FOR SELECT TO anon, authenticated
    USING (true);
REVOKE ALL ON csv_processing_workers FROM PUBLIC, anon, authenticated;
GRANT SELECT (instance_id, status, max_concurrent_jobs, current_job_count, total_jobs_processed, total_jobs_failed,
              last_heartbeat, started_at, stopped_at, hostname, pid)
    ON csv_processing_workers TO anon, authenticated;

-- Registered workers (live ones, or all), with user_id and batch_id shown only to the service role and to the
-- owner of the user or batch a dedicated worker serves.
CREATE OR REPLACE FUNCTION get_csv_workers(p_include_stopped boolean DEFAULT false)
RETURNS TABLE (
    instance_id text, status text, hostname text, pid integer, last_heartbeat timestamptz,
    current_job_count integer, total_jobs_processed integer, total_jobs_failed integer, max_concurrent_jobs integer,
    started_at timestamptz, stopped_at timestamptz, user_id uuid, batch_id uuid
)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT w.instance_id, w.status, w.hostname, w.pid, w.last_heartbeat, w.current_job_count,
           w.total_jobs_processed, w.total_jobs_failed, w.max_concurrent_jobs, w.started_at, w.stopped_at,
           CASE WHEN v.visible THEN w.user_id END, CASE WHEN v.visible THEN w.batch_id END
    FROM public.csv_processing_workers w
    CROSS JOIN LATERAL (
        SELECT public.csv_caller_is_service()
               OR (auth.uid() IS NOT NULL AND (
                   w.user_id = auth.uid()
                   OR EXISTS (SELECT 1 FROM public.csv_batches b WHERE b.id = w.batch_id AND b.user_id = auth.uid())))
    ) AS v(visible)
    WHERE p_include_stopped OR w.status <> 'stopped'
    ORDER BY w.status = 'stopped', w.last_heartbeat DESC;
$$;

-- Supabase Storage: signed-in users upload templates only into their own {user_id}/ folder (anyone may read).
DO $$
BEGIN
    IF to_regclass('storage.objects') IS NULL THEN
        RETURN;
    END IF;
    DROP POLICY IF EXISTS "csvjobs templates: signed-in users upload" ON storage.objects;
    DROP POLICY IF EXISTS "csvjobs templates: own folder uploads" ON storage.objects;
    CREATE POLICY "csvjobs templates: own folder uploads" ON storage.objects FOR INSERT TO authenticated
        WITH CHECK (bucket_id = 'csv-templates' AND (storage.foldername(name))[1] = (SELECT auth.uid())::text);
END
$$;

-- Privileges, stated whole, so that a Supabase project's default privileges (ALL on every new table, sequence and
-- function in public, for anon, authenticated and service_role) leave nothing open that was not meant to be.
REVOKE ALL ON csv_batches, csv_row_jobs, csv_processing_logs, csv_rate_limits FROM PUBLIC, anon, authenticated;
GRANT SELECT, INSERT, DELETE ON csv_batches TO authenticated;
GRANT SELECT ON csv_row_jobs, csv_processing_logs TO authenticated;
-- No TRUNCATE for anyone: it skips row-level security and the delete trigger that removes a batch's jobs.
REVOKE ALL ON csv_batches, csv_row_jobs, csv_processing_workers, csv_processing_logs, csv_rate_limits
    FROM service_role;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON csv_batches, csv_row_jobs, csv_processing_workers, csv_processing_logs, csv_rate_limits TO service_role;
-- Identity columns draw their ids without any privilege on the sequence; nobody needs one, and setval by a
-- client would make every later insert fail.
REVOKE ALL ON SEQUENCE csv_row_jobs_id_seq, csv_processing_logs_id_seq FROM PUBLIC, anon, authenticated, service_role;

-- The migration ledger (created by `csvjobs db migrate` before the first file runs) is the migrating role's alone:
-- a client that deleted a row from it would make every command refuse to run.
DO $$
BEGIN
    IF to_regclass('public.csvjobs_schema_migrations') IS NOT NULL THEN
        ALTER TABLE public.csvjobs_schema_migrations ENABLE ROW LEVEL SECURITY;
        REVOKE ALL ON public.csvjobs_schema_migrations FROM PUBLIC, anon, authenticated, service_role;
    END IF;
END
$$;

-- Every csvjobs function: nobody but the owner, then exactly the grants below.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = 'public'::regnamespace
          AND p.proname = ANY (ARRAY[
              'csv_add_batch_results', 'csv_release_jobs', 'csv_reclaim_timed_out_jobs', 'claim_csv_row_jobs',
              'claim_next_csv_row_job', 'update_csv_row_job_results', 'update_csv_row_job_result',
              'save_csv_row_job_checkpoint', 'update_csv_worker_heartbeat', 'release_csv_worker_jobs',
              'get_csv_batch_progress', 'cleanup_stale_csv_workers', 'queue_csv_batch', 'csv_outstanding_jobs',
              'csv_batches_needing_dedicated_workers', 'write_csv_processing_logs', 'acquire_csv_rate_limit',
              'pause_csv_rate_limit', 'csv_rate_limit_pause_remaining', 'csv_lock_owned_batch',
              'retry_csv_batch_rows', 'set_csv_batch_state', 'csv_row_job_product', 'csv_notify_new_logs',
              'csv_delete_jobs_of_deleted_batches', 'csv_caller_is_service', 'csv_batches_start_clean',
              'start_csv_row_jobs', 'get_csv_workers'])
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC, anon, authenticated, service_role', f);
    END LOOP;
END
$$;

GRANT EXECUTE ON FUNCTION
    csv_add_batch_results(uuid, integer, integer, numeric),
    csv_release_jobs(bigint[], boolean, text),
    csv_reclaim_timed_out_jobs(numeric),
    claim_csv_row_jobs(text, uuid, numeric, integer, uuid),
    claim_next_csv_row_job(text, uuid, numeric),
    update_csv_row_job_results(text, jsonb),
    update_csv_row_job_result(bigint, text, text, jsonb, jsonb, jsonb, numeric, text, text, integer),
    start_csv_row_jobs(text, bigint[]),
    save_csv_row_job_checkpoint(bigint, text, integer, jsonb),
    update_csv_worker_heartbeat(text, text, integer, integer, integer, integer, uuid, uuid, text, integer),
    release_csv_worker_jobs(text, boolean, bigint[]),
    cleanup_stale_csv_workers(numeric),
    queue_csv_batch(uuid, integer, integer),
    csv_outstanding_jobs(uuid, uuid),
    csv_batches_needing_dedicated_workers(integer, uuid),
    write_csv_processing_logs(text, jsonb),
    acquire_csv_rate_limit(text, numeric),
    pause_csv_rate_limit(text, numeric),
    csv_rate_limit_pause_remaining(text)
TO service_role;
GRANT EXECUTE ON FUNCTION
    get_csv_batch_progress(uuid),
    retry_csv_batch_rows(uuid, integer[]),
    set_csv_batch_state(uuid, text),
    csv_row_job_product(json, jsonb, jsonb)
TO authenticated, service_role;
-- Harmless to anyone, and needed by the policies, triggers and functions that run as the caller.
GRANT EXECUTE ON FUNCTION csv_caller_is_service(), get_csv_workers(boolean) TO anon, authenticated, service_role;
