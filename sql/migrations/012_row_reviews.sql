-- 012_row_reviews.sql: the merchant's decisions on a row's images move out of csv_row_jobs.review into a narrow
-- table of their own. Approving 100,000 rows rewrote 100,000 wide job rows (row data, prompts, images: ~2 KB
-- each, never a HOT update), 5-9 s on this project's test machine against the 2 s a bulk decision must take; here
-- it writes 100,000 rows of ~100 bytes, on half-full pages so that a changed decision is a HOT update.
-- One row per job row that has a decision or an edited alt text, in the shape csv_row_jobs.review had:
-- {"<style>": {"state": approved|rejected|unreviewed, "by", "at", "alt_text"?, "unflagged"?}}. Written only by
-- review.sql's functions (and results.sql, which clears the decision on an image a redo replaced).
CREATE TABLE IF NOT EXISTS csv_row_reviews (
    row_job_id bigint PRIMARY KEY,
    batch_id   uuid NOT NULL,
    review     jsonb NOT NULL
) WITH (fillfactor = 50);
-- A batch's decisions (the review page's counts, the batch delete trigger), summarised as csv_row_jobs' are: an
-- index that costs a bulk decision nothing per row.
CREATE INDEX IF NOT EXISTS csv_row_reviews_batch_idx ON csv_row_reviews USING brin (batch_id uuid_bloom_ops)
    WITH (autosummarize = on);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = 'public' AND table_name = 'csv_row_jobs' AND column_name = 'review') THEN
        INSERT INTO csv_row_reviews (row_job_id, batch_id, review)
        SELECT j.id, j.batch_id, j.review FROM csv_row_jobs j
         WHERE j.review IS NOT NULL AND j.review <> '{}'::jsonb
        ON CONFLICT (row_job_id) DO NOTHING;
        ALTER TABLE csv_row_jobs DROP COLUMN review;
    END IF;
END
$$;

ALTER TABLE csv_row_reviews ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS csv_row_reviews_select_own ON csv_row_reviews;
CREATE POLICY csv_row_reviews_select_own ON csv_row_reviews FOR SELECT TO authenticated
    USING (EXISTS (SELECT 1 FROM csv_batches b WHERE b.id = csv_row_reviews.batch_id
                                                 AND b.user_id = (SELECT auth.uid())));
DROP POLICY IF EXISTS csv_row_reviews_service ON csv_row_reviews;
CREATE POLICY csv_row_reviews_service ON csv_row_reviews FOR ALL TO service_role USING (true) WITH CHECK (true);

-- As csv_row_jobs: users read their own and change them only through review.sql's functions.
REVOKE ALL ON csv_row_reviews FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON csv_row_reviews TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON csv_row_reviews TO service_role;

-- Supabase Realtime: decisions are seen live as the job rows are.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'supabase_realtime')
       AND NOT EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = 'supabase_realtime'
                       AND schemaname = 'public' AND tablename = 'csv_row_reviews') THEN
        ALTER PUBLICATION supabase_realtime ADD TABLE public.csv_row_reviews;
    END IF;
END
$$;
