-- 008_placeholders.sql: rows whose images include placeholders (made by the offline provider, without an OpenAI
-- key): `batches`, `progress`, the review page and `work` count them through this index, which holds only those
-- few rows, never the whole batch.
CREATE INDEX IF NOT EXISTS csv_row_jobs_placeholder_idx ON csv_row_jobs (batch_id)
    WHERE status = 'completed' AND jsonb_path_exists(generated_images, '$[*] ? (@.placeholder == true)');
