-- 009_language.sql: the language a batch writes in for shoppers (alt text, tags, any text in an image), a BCP 47
-- tag chosen at upload (ingest/language.py), and the extra languages its alt text is also written in.
ALTER TABLE csv_batches ADD COLUMN IF NOT EXISTS language text;
ALTER TABLE csv_batches ADD COLUMN IF NOT EXISTS alt_languages text[] NOT NULL DEFAULT '{}';
