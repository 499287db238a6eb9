-- 011_submission_progress.sql: how far a submission to OpenAI's Batch API has got on csvjobs' side, for
-- `progress` (counts per OpenAI batch and an ETA from the observed rate): rows whose requests are written while it
-- is prepared, rows whose output lines were read and rows completed while its output is collected, and when the
-- collection began.
ALTER TABLE csv_openai_submissions ADD COLUMN IF NOT EXISTS prepared_rows integer NOT NULL DEFAULT 0;
ALTER TABLE csv_openai_submissions ADD COLUMN IF NOT EXISTS collected_rows integer NOT NULL DEFAULT 0;
ALTER TABLE csv_openai_submissions ADD COLUMN IF NOT EXISTS completed_rows integer NOT NULL DEFAULT 0;
ALTER TABLE csv_openai_submissions ADD COLUMN IF NOT EXISTS collecting_since timestamptz;
