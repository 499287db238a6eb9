-- 004_supabase_services.sql (baseline): csvjobs' place in Supabase's own services, where the project has them
-- (on a plain PostgreSQL this file does nothing): the Storage buckets and their policies, and the Realtime publication.

-- Supabase Storage: the buckets csvjobs uses, each user confined to their own {user_id}/ folder (anyone may read
-- templates).
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
                                               AND policyname = 'csvjobs templates: own folder uploads') THEN
        CREATE POLICY "csvjobs templates: own folder uploads" ON storage.objects FOR INSERT TO authenticated
            WITH CHECK (bucket_id = 'csv-templates' AND (storage.foldername(name))[1] = (SELECT auth.uid())::text);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'storage' AND tablename = 'objects'
                                               AND policyname = 'csvjobs images: own folder') THEN
        CREATE POLICY "csvjobs images: own folder" ON storage.objects FOR SELECT TO authenticated
            USING (bucket_id = 'csv-images' AND (storage.foldername(name))[1] = (SELECT auth.uid())::text);
    END IF;
END
$$;

-- The public templates bucket takes CSV files only, of at most 10 MiB (Supabase Storage enforces a bucket's
-- allowed_mime_types and file_size_limit on upload); without them any signed-in user could publish any file of
-- any size there. Older Storage schemas without these columns are left as they are.
DO $$
BEGIN
    IF to_regclass('storage.buckets') IS NULL THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'storage' AND table_name = 'buckets'
                                                           AND column_name = 'allowed_mime_types') THEN
        UPDATE storage.buckets SET allowed_mime_types = ARRAY['text/csv', 'text/plain', 'application/csv']
        WHERE id = 'csv-templates';
    END IF;
    IF EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'storage' AND table_name = 'buckets'
                                                           AND column_name = 'file_size_limit') THEN
        UPDATE storage.buckets SET file_size_limit = 10485760 WHERE id = 'csv-templates';
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
