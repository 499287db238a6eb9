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
