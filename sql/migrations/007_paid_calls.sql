-- 007_paid_calls.sql: the record of what was paid. Every call a provider was paid for (a prompt, an image, a
-- fidelity redo, a reviewer's redo, a Batch API output line) is one row of csv_paid_calls, written the moment the
-- answer arrives (budget.sql, record_csv_paid_call), whether or not the row later completes, fails or is redone.
-- It is append-only: regenerate, retry, restore and deleting a batch never change it (no foreign key to the batch,
-- and a trigger refuses UPDATE and DELETE to everyone), so the daily cap and the bill read what was really paid.
-- csv_daily_spend keeps the running total per UTC day the daily cap reads (a sum over a few shards, not a scan of
-- the day's calls); estimates learn per-call prices and routes from csv_paid_calls (ingest/estimate.py).
CREATE TABLE IF NOT EXISTS csv_paid_calls (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    paid_at timestamptz NOT NULL DEFAULT now(),
    user_id uuid NOT NULL,
    batch_id uuid NOT NULL,
    row_job_id bigint NOT NULL,
    row_number integer NOT NULL,
    attempt integer NOT NULL,
    -- Unique per paid call of a row: recording the same call twice (a Batch API output read again after a
    -- restart) adds nothing.
    call_key text NOT NULL,
    -- 'prompts' or 'image'; purpose: 'row' (the row's own calls), 'fidelity_redo' (an image made again because
    -- the first lost the product), 'white_redo' (a white image made again because its background was not clean
    -- enough to frame the product for the batch's channels), 'regenerate' (a reviewer's redo).
    kind text NOT NULL CHECK (kind IN ('prompts', 'image')),
    purpose text NOT NULL DEFAULT 'row' CHECK (purpose IN ('row', 'fidelity_redo', 'white_redo', 'regenerate')),
    style text,
    -- models.Route of an image call (generated_from_photo, generated_from_text); for a prompt call, whether the
    -- model was shown the photo (from_photo / from_text).
    route text,
    -- Whether the row's file gave it a photo (what upload knows, so estimates learn per kind of row).
    row_has_photo boolean NOT NULL DEFAULT false,
    model text NOT NULL,
    size text,
    quality text,
    -- 0.5 for the Batch API (and flex prompts): cost_usd is what was paid, cost_usd / price_factor the standard price.
    price_factor numeric NOT NULL DEFAULT 1 CHECK (price_factor > 0),
    cost_usd numeric NOT NULL CHECK (cost_usd >= 0),
    UNIQUE (row_job_id, call_key)
);
CREATE INDEX IF NOT EXISTS csv_paid_calls_batch_idx ON csv_paid_calls (batch_id, id);
CREATE INDEX IF NOT EXISTS csv_paid_calls_user_idx ON csv_paid_calls (user_id, id DESC);
CREATE INDEX IF NOT EXISTS csv_paid_calls_paid_at_idx ON csv_paid_calls (paid_at);

CREATE TABLE IF NOT EXISTS csv_daily_spend (
    day date NOT NULL,
    -- The writing backend's shard (its pid, as csv_batch_counters): concurrent payers never queue on one row.
    shard smallint NOT NULL,
    cost_usd numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (day, shard)
);

-- The reservation of a row counts for the attempt that made it only: a reservation left on a row by an earlier
-- attempt (a dead worker's) is no longer held.
ALTER TABLE csv_row_jobs ADD COLUMN IF NOT EXISTS reserved_attempt integer;

ALTER TABLE csv_paid_calls ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS csv_paid_calls_select_own ON csv_paid_calls;
CREATE POLICY csv_paid_calls_select_own ON csv_paid_calls FOR SELECT TO authenticated
    USING (user_id = (SELECT auth.uid()));
DROP POLICY IF EXISTS csv_paid_calls_service ON csv_paid_calls;
CREATE POLICY csv_paid_calls_service ON csv_paid_calls FOR ALL TO service_role USING (true) WITH CHECK (true);
ALTER TABLE csv_daily_spend ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS csv_daily_spend_service ON csv_daily_spend;
CREATE POLICY csv_daily_spend_service ON csv_daily_spend FOR ALL TO service_role USING (true) WITH CHECK (true);

REVOKE ALL ON csv_paid_calls, csv_daily_spend FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON csv_paid_calls TO authenticated;
-- Append-only for the workers too: no UPDATE, DELETE or TRUNCATE (the trigger below also stops the owner).
GRANT SELECT, INSERT ON csv_paid_calls TO service_role;
GRANT SELECT, INSERT, UPDATE ON csv_daily_spend TO service_role;
REVOKE ALL ON SEQUENCE csv_paid_calls_id_seq FROM PUBLIC, anon, authenticated, service_role;
