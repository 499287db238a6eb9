-- security.sql: who may do what. Row-level security as Supabase does it, on any PostgreSQL: a signed-in user (role
-- authenticated, with request.jwt.claims carrying their id) reads only their own batches, their jobs and their
-- logs, and creates batches only for themselves; worker health is readable by anyone, for monitoring; the service
-- role (workers, cleanup) manages everything. Functions that move jobs are the service role's alone; users steer
-- their batches through the SECURITY DEFINER functions of batch_control.sql. Installed after every object exists,
-- so that the privileges below are stated whole, over whatever a Supabase project's default privileges granted.

ALTER TABLE csv_batches ENABLE ROW LEVEL SECURITY;
ALTER TABLE csv_row_jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE csv_processing_workers ENABLE ROW LEVEL SECURITY;
ALTER TABLE csv_processing_logs ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS csv_batches_select_own ON csv_batches;
CREATE POLICY csv_batches_select_own ON csv_batches FOR SELECT TO authenticated
    USING (user_id = (SELECT auth.uid()));
DROP POLICY IF EXISTS csv_batches_insert_own ON csv_batches;
CREATE POLICY csv_batches_insert_own ON csv_batches FOR INSERT TO authenticated
    WITH CHECK (user_id = (SELECT auth.uid()));
DROP POLICY IF EXISTS csv_batches_delete_own ON csv_batches;
CREATE POLICY csv_batches_delete_own ON csv_batches FOR DELETE TO authenticated
    USING (user_id = (SELECT auth.uid()));
DROP POLICY IF EXISTS csv_batches_service ON csv_batches;
CREATE POLICY csv_batches_service ON csv_batches FOR ALL TO service_role USING (true) WITH CHECK (true);

DROP POLICY IF EXISTS csv_row_jobs_select_own ON csv_row_jobs;
CREATE POLICY csv_row_jobs_select_own ON csv_row_jobs FOR SELECT TO authenticated
    USING (EXISTS (SELECT 1 FROM csv_batches b WHERE b.id = csv_row_jobs.batch_id
                                                 AND b.user_id = (SELECT auth.uid())));
DROP POLICY IF EXISTS csv_row_jobs_service ON csv_row_jobs;
CREATE POLICY csv_row_jobs_service ON csv_row_jobs FOR ALL TO service_role USING (true) WITH CHECK (true);

DROP POLICY IF EXISTS csv_processing_logs_select_own ON csv_processing_logs;
CREATE POLICY csv_processing_logs_select_own ON csv_processing_logs FOR SELECT TO authenticated
    USING (EXISTS (SELECT 1 FROM csv_batches b WHERE b.id = csv_processing_logs.batch_id
                                                 AND b.user_id = (SELECT auth.uid())));
DROP POLICY IF EXISTS csv_processing_logs_service ON csv_processing_logs;
CREATE POLICY csv_processing_logs_service ON csv_processing_logs FOR ALL TO service_role
    USING (true) WITH CHECK (true);

DROP POLICY IF EXISTS csv_processing_workers_service ON csv_processing_workers;
CREATE POLICY csv_processing_workers_service ON csv_processing_workers FOR ALL TO service_role
    USING (true) WITH CHECK (true);

ALTER TABLE csv_image_versions ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS csv_image_versions_select_own ON csv_image_versions;
CREATE POLICY csv_image_versions_select_own ON csv_image_versions FOR SELECT TO authenticated
    USING (EXISTS (SELECT 1 FROM csv_batches b WHERE b.id = csv_image_versions.batch_id
                                                 AND b.user_id = (SELECT auth.uid())));
DROP POLICY IF EXISTS csv_image_versions_service ON csv_image_versions;
CREATE POLICY csv_image_versions_service ON csv_image_versions FOR ALL TO service_role USING (true) WITH CHECK (true);

ALTER TABLE csv_openai_batches ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS csv_openai_batches_select_own ON csv_openai_batches;
CREATE POLICY csv_openai_batches_select_own ON csv_openai_batches FOR SELECT TO authenticated
    USING (EXISTS (SELECT 1 FROM csv_batches b WHERE b.id = csv_openai_batches.batch_id
                                                 AND b.user_id = (SELECT auth.uid())));
DROP POLICY IF EXISTS csv_openai_batches_service ON csv_openai_batches;
CREATE POLICY csv_openai_batches_service ON csv_openai_batches FOR ALL TO service_role USING (true) WITH CHECK (true);

ALTER TABLE csv_batch_counters ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS csv_batch_counters_select_own ON csv_batch_counters;
CREATE POLICY csv_batch_counters_select_own ON csv_batch_counters FOR SELECT TO authenticated
    USING (EXISTS (SELECT 1 FROM csv_batches b WHERE b.id = csv_batch_counters.batch_id
                                                 AND b.user_id = (SELECT auth.uid())));
DROP POLICY IF EXISTS csv_batch_counters_service ON csv_batch_counters;
CREATE POLICY csv_batch_counters_service ON csv_batch_counters FOR ALL TO service_role USING (true) WITH CHECK (true);

ALTER TABLE csv_rate_limits ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS csv_rate_limits_service ON csv_rate_limits;
CREATE POLICY csv_rate_limits_service ON csv_rate_limits FOR ALL TO service_role USING (true) WITH CHECK (true);

-- Worker health for everyone, as the contract's monitoring query asks; whom a dedicated worker serves (its
-- user_id and batch_id) only for the owner and the service role, through get_csv_workers() below.
DROP POLICY IF EXISTS csv_processing_workers_select_public ON csv_processing_workers;
CREATE POLICY csv_processing_workers_select_public ON csv_processing_workers FOR SELECT TO anon, authenticated
    USING (true);
REVOKE ALL ON csv_processing_workers FROM PUBLIC, anon, authenticated;
GRANT SELECT (instance_id, status, max_concurrent_jobs, current_job_count, total_jobs_processed, total_jobs_failed,
              last_heartbeat, started_at, stopped_at, hostname, pid)
    ON csv_processing_workers TO anon, authenticated;

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

GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;

-- Privileges, stated whole, so that a Supabase project's default privileges (ALL on every new table, sequence and
-- function in public, for anon, authenticated and service_role) leave nothing open that was not meant to be.
REVOKE ALL ON csv_batches, csv_row_jobs, csv_processing_logs, csv_rate_limits, csv_image_versions,
    csv_openai_batches, csv_batch_counters FROM PUBLIC, anon, authenticated;
GRANT SELECT, INSERT, DELETE ON csv_batches TO authenticated;
GRANT SELECT ON csv_row_jobs, csv_processing_logs, csv_image_versions, csv_openai_batches, csv_batch_counters
    TO authenticated;
-- No TRUNCATE for anyone: it skips row-level security and the delete trigger that removes a batch's jobs.
REVOKE ALL ON csv_batches, csv_row_jobs, csv_processing_workers, csv_processing_logs, csv_rate_limits,
    csv_image_versions, csv_openai_batches, csv_batch_counters FROM service_role;
GRANT SELECT, INSERT, UPDATE, DELETE ON csv_batches, csv_row_jobs, csv_processing_workers, csv_processing_logs,
    csv_rate_limits, csv_image_versions, csv_openai_batches, csv_batch_counters TO service_role;
-- Identity columns draw their ids without any privilege on the sequence; nobody needs one, and setval by a
-- client would make every later insert fail.
REVOKE ALL ON SEQUENCE csv_row_jobs_id_seq, csv_processing_logs_id_seq, csv_image_versions_id_seq,
    csv_openai_batches_id_seq FROM PUBLIC, anon, authenticated, service_role;

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
              'csv_delete_rows_of_deleted_batches', 'csv_caller_is_service', 'csv_batches_start_clean',
              'start_csv_row_jobs', 'get_csv_workers', 'csv_batch_has_pending_jobs', 'csv_review_target_rows',
              'review_csv_images', 'request_csv_image_regeneration', 'csv_openai_batch_holder',
              'csv_openai_batch_take_rows', 'open_csv_openai_batch', 'lease_csv_openai_batches',
              'update_csv_openai_batch', 'split_csv_openai_batch', 'release_csv_openai_batch_rows',
              'finish_csv_openai_batch', 'release_csv_openai_batch_leases', 'csv_fold_batch_counters',
              'csv_dependency_done', 'csv_start_batch'])
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC, anon, authenticated, service_role', f);
    END LOOP;
END
$$;

GRANT EXECUTE ON FUNCTION
    csv_add_batch_results(uuid, integer, integer, numeric),
    csv_fold_batch_counters(uuid, boolean),
    csv_dependency_done(bigint),
    csv_start_batch(uuid, text),
    csv_release_jobs(bigint[], boolean, text),
    csv_reclaim_timed_out_jobs(numeric),
    csv_batch_has_pending_jobs(uuid),
    claim_csv_row_jobs(text, uuid, numeric, integer, uuid, text, boolean),
    claim_next_csv_row_job(text, uuid, numeric),
    update_csv_row_job_results(text, jsonb),
    update_csv_row_job_result(bigint, text, text, jsonb, jsonb, jsonb, numeric, text, text, integer),
    start_csv_row_jobs(text, bigint[]),
    save_csv_row_job_checkpoint(bigint, text, integer, jsonb),
    update_csv_worker_heartbeat(text, text, integer, integer, integer, integer, uuid, uuid, text, integer),
    release_csv_worker_jobs(text, boolean, bigint[]),
    cleanup_stale_csv_workers(numeric),
    queue_csv_batch(uuid, integer, integer),
    csv_outstanding_jobs(uuid, uuid, text),
    csv_batches_needing_dedicated_workers(integer, uuid),
    write_csv_processing_logs(text, jsonb),
    acquire_csv_rate_limit(text, numeric),
    pause_csv_rate_limit(text, numeric),
    csv_rate_limit_pause_remaining(text),
    csv_openai_batch_holder(bigint),
    csv_openai_batch_take_rows(text, uuid, text, bigint[]),
    open_csv_openai_batch(text, uuid, text, bigint[]),
    lease_csv_openai_batches(text, numeric, integer, uuid, uuid),
    update_csv_openai_batch(bigint, text, jsonb, numeric, numeric),
    split_csv_openai_batch(bigint, text, text, bigint[]),
    release_csv_openai_batch_rows(bigint, text, bigint[], boolean, text),
    finish_csv_openai_batch(bigint, text, jsonb),
    release_csv_openai_batch_leases(text)
TO service_role;
GRANT EXECUTE ON FUNCTION
    get_csv_batch_progress(uuid),
    retry_csv_batch_rows(uuid, integer[]),
    set_csv_batch_state(uuid, text),
    csv_row_job_product(json, jsonb, jsonb),
    review_csv_images(uuid, integer[], text, text),
    request_csv_image_regeneration(uuid, integer[], text, text)
TO authenticated, service_role;
-- Harmless to anyone, and needed by the policies, triggers and functions that run as the caller.
GRANT EXECUTE ON FUNCTION csv_caller_is_service(), get_csv_workers(boolean) TO anon, authenticated, service_role;
