-- Row-level security as Supabase does it, on any PostgreSQL: a signed-in user (role authenticated, with
-- request.jwt.claims carrying their id) reads only their own batches, their jobs and their logs, and creates
-- batches only for themselves; worker rows are readable by any signed-in user for monitoring; the service role
-- (workers, cleanup) manages everything; anonymous users see nothing. Functions that move jobs are the service
-- role's alone. Where Supabase's storage schema or realtime publication exist, the buckets, their policies and
-- the publication membership are added too.

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

DROP POLICY IF EXISTS csv_processing_workers_select_signed_in ON csv_processing_workers;
CREATE POLICY csv_processing_workers_select_signed_in ON csv_processing_workers FOR SELECT TO authenticated
    USING (true);
DROP POLICY IF EXISTS csv_processing_workers_service ON csv_processing_workers;
CREATE POLICY csv_processing_workers_service ON csv_processing_workers FOR ALL TO service_role
    USING (true) WITH CHECK (true);

-- Supabase grants everything in public to anon and authenticated by default; take it back and grant only what
-- the policies above are meant to filter.
REVOKE ALL ON csv_batches, csv_row_jobs, csv_processing_workers, csv_processing_logs FROM PUBLIC, anon, authenticated;
GRANT SELECT, INSERT, DELETE ON csv_batches TO authenticated;
GRANT SELECT ON csv_row_jobs, csv_processing_logs, csv_processing_workers TO authenticated;
GRANT ALL ON csv_batches, csv_row_jobs, csv_processing_workers, csv_processing_logs TO service_role;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO service_role;
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;

REVOKE EXECUTE ON FUNCTION
    csv_add_batch_results(uuid, integer, integer, numeric),
    csv_release_jobs(bigint[], boolean, text),
    csv_reclaim_timed_out_jobs(numeric),
    claim_csv_row_jobs(text, uuid, numeric, integer, uuid),
    claim_next_csv_row_job(text, uuid, numeric),
    update_csv_row_job_results(text, jsonb),
    update_csv_row_job_result(bigint, text, text, jsonb, jsonb, jsonb, numeric, text, text, integer),
    save_csv_row_job_checkpoint(bigint, text, integer, jsonb),
    update_csv_worker_heartbeat(text, text, integer, integer, integer, integer, uuid, uuid, text, integer),
    release_csv_worker_jobs(text, boolean, bigint[]),
    cleanup_stale_csv_workers(numeric),
    get_csv_batch_progress(uuid),
    queue_csv_batch(uuid, integer, integer)
FROM PUBLIC, anon, authenticated;

GRANT EXECUTE ON FUNCTION
    csv_add_batch_results(uuid, integer, integer, numeric),
    csv_release_jobs(bigint[], boolean, text),
    csv_reclaim_timed_out_jobs(numeric),
    claim_csv_row_jobs(text, uuid, numeric, integer, uuid),
    claim_next_csv_row_job(text, uuid, numeric),
    update_csv_row_job_results(text, jsonb),
    update_csv_row_job_result(bigint, text, text, jsonb, jsonb, jsonb, numeric, text, text, integer),
    save_csv_row_job_checkpoint(bigint, text, integer, jsonb),
    update_csv_worker_heartbeat(text, text, integer, integer, integer, integer, uuid, uuid, text, integer),
    release_csv_worker_jobs(text, boolean, bigint[]),
    cleanup_stale_csv_workers(numeric),
    queue_csv_batch(uuid, integer, integer)
TO service_role;
GRANT EXECUTE ON FUNCTION get_csv_batch_progress(uuid) TO authenticated, service_role;

-- Supabase Storage: the buckets csvjobs uses, each user confined to their own {user_id}/ folder.
DO $$
BEGIN
    IF to_regclass('storage.buckets') IS NULL OR to_regclass('storage.objects') IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO storage.buckets (id, name, public)
    VALUES ('csv-uploads', 'csv-uploads', false),
           ('csv-templates', 'csv-templates', true),
           ('csv-images', 'csv-images', false)
    ON CONFLICT (id) DO NOTHING;

    IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'storage' AND tablename = 'objects'
                                               AND policyname = 'csvjobs uploads: own folder') THEN
        CREATE POLICY "csvjobs uploads: own folder" ON storage.objects FOR ALL TO authenticated
            USING (bucket_id = 'csv-uploads' AND (storage.foldername(name))[1] = (SELECT auth.uid())::text)
            WITH CHECK (bucket_id = 'csv-uploads' AND (storage.foldername(name))[1] = (SELECT auth.uid())::text);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'storage' AND tablename = 'objects'
                                               AND policyname = 'csvjobs templates: anyone reads') THEN
        CREATE POLICY "csvjobs templates: anyone reads" ON storage.objects FOR SELECT TO anon, authenticated
            USING (bucket_id = 'csv-templates');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'storage' AND tablename = 'objects'
                                               AND policyname = 'csvjobs templates: signed-in users upload') THEN
        CREATE POLICY "csvjobs templates: signed-in users upload" ON storage.objects FOR INSERT TO authenticated
            WITH CHECK (bucket_id = 'csv-templates');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'storage' AND tablename = 'objects'
                                               AND policyname = 'csvjobs images: own folder') THEN
        CREATE POLICY "csvjobs images: own folder" ON storage.objects FOR SELECT TO authenticated
            USING (bucket_id = 'csv-images' AND (storage.foldername(name))[1] = (SELECT auth.uid())::text);
    END IF;
END
$$;

-- Supabase Realtime: clients subscribed to the batch and job tables see progress live.
DO $$
DECLARE
    t text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'supabase_realtime') THEN
        RETURN;
    END IF;
    FOREACH t IN ARRAY ARRAY['csv_batches', 'csv_row_jobs'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_publication_tables
                       WHERE pubname = 'supabase_realtime' AND schemaname = 'public' AND tablename = t) THEN
            EXECUTE format('ALTER PUBLICATION supabase_realtime ADD TABLE public.%I', t);
        END IF;
    END LOOP;
END
$$;
