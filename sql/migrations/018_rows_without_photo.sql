-- Rows whose images were made without the product's photo (an image recorded with "edited": false): counted for
-- `batches --json` (rows_without_photo), progress, the review page and the shop export's warning. A partial index
-- keeps that count to the few such rows instead of a scan of the whole batch.
CREATE INDEX IF NOT EXISTS csv_row_jobs_without_photo_idx ON csv_row_jobs (batch_id)
    WHERE status = 'completed' AND jsonb_path_exists(generated_images, '$[*] ? (@.edited == false)');
