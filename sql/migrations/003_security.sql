-- 003_security.sql (baseline): who may do what with the tables. Row-level security as Supabase does it, on any
-- PostgreSQL: a signed-in user (role authenticated, with request.jwt.claims carrying their id) reads only their own
-- batches, their jobs and their logs, and creates batches only for themselves; worker health is readable by
-- anyone, for monitoring; the service role (workers, cleanup) manages everything. Who may call which function is
-- privileges.sql's; users steer their batches through the SECURITY DEFINER functions of batch_control.sql. The
-- privileges below are stated whole, over whatever a Supabase project's default privileges granted.

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

ALTER TABLE csv_openai_submissions ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS csv_openai_submissions_select_own ON csv_openai_submissions;
CREATE POLICY csv_openai_submissions_select_own ON csv_openai_submissions FOR SELECT TO authenticated
    USING (EXISTS (SELECT 1 FROM csv_batches b WHERE b.id = csv_openai_submissions.batch_id
                                                 AND b.user_id = (SELECT auth.uid())));
DROP POLICY IF EXISTS csv_openai_submissions_service ON csv_openai_submissions;
CREATE POLICY csv_openai_submissions_service ON csv_openai_submissions FOR ALL TO service_role USING (true) WITH CHECK (true);

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

GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;

-- Privileges, stated whole, so that a Supabase project's default privileges (ALL on every new table, sequence and
-- function in public, for anon, authenticated and service_role) leave nothing open that was not meant to be.
REVOKE ALL ON csv_batches, csv_row_jobs, csv_processing_logs, csv_rate_limits, csv_image_versions,
    csv_openai_submissions, csv_batch_counters FROM PUBLIC, anon, authenticated;
GRANT SELECT, INSERT, DELETE ON csv_batches TO authenticated;
GRANT SELECT ON csv_row_jobs, csv_processing_logs, csv_image_versions, csv_openai_submissions, csv_batch_counters
    TO authenticated;
-- No TRUNCATE for anyone: it skips row-level security and the delete trigger that removes a batch's jobs.
REVOKE ALL ON csv_batches, csv_row_jobs, csv_processing_workers, csv_processing_logs, csv_rate_limits,
    csv_image_versions, csv_openai_submissions, csv_batch_counters FROM service_role;
GRANT SELECT, INSERT, UPDATE, DELETE ON csv_batches, csv_row_jobs, csv_processing_workers, csv_processing_logs,
    csv_rate_limits, csv_image_versions, csv_openai_submissions, csv_batch_counters TO service_role;
-- Identity columns draw their ids without any privilege on the sequence; nobody needs one, and setval by a
-- client would make every later insert fail.
REVOKE ALL ON SEQUENCE csv_row_jobs_id_seq, csv_processing_logs_id_seq, csv_image_versions_id_seq,
    csv_openai_submissions_id_seq FROM PUBLIC, anon, authenticated, service_role;

-- The ledgers (created by `csvjobs db migrate` before the first file runs) are the migrating role's alone: a client
-- that deleted a row from them would make every command refuse to run, or re-run a migration.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['public.csvjobs_schema_migrations', 'public.csvjobs_schema_functions'] LOOP
        IF to_regclass(t) IS NOT NULL THEN
            EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
            EXECUTE format('REVOKE ALL ON %s FROM PUBLIC, anon, authenticated, service_role', t);
        END IF;
    END LOOP;
END
$$;
