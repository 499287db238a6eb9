-- 006_costs.sql: what a batch is expected to cost and may cost. estimated_cost_usd is the upload's estimate (what
-- `progress` and the review page set the spend against); max_cost_usd the budget (NULL: none); pause_reason why a
-- batch was paused by csvjobs rather than by its owner (the budget). A row in flight holds its reservation in
-- reserved_cost_usd (budget.sql); rows that left flight hold nothing, whatever the column still says.
ALTER TABLE csv_batches ADD COLUMN IF NOT EXISTS estimated_cost_usd numeric;
-- The estimate for one row that pays (what a worker reserves, with its margin, before paying for the row).
ALTER TABLE csv_batches ADD COLUMN IF NOT EXISTS estimated_row_cost_usd numeric;
ALTER TABLE csv_batches ADD COLUMN IF NOT EXISTS max_cost_usd numeric;
ALTER TABLE csv_batches ADD COLUMN IF NOT EXISTS pause_reason text;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'csv_batches'::regclass
                                                 AND conname = 'csv_batches_max_cost_usd_check') THEN
        ALTER TABLE csv_batches ADD CONSTRAINT csv_batches_max_cost_usd_check CHECK (max_cost_usd >= 0);
    END IF;
END
$$;
ALTER TABLE csv_row_jobs ADD COLUMN IF NOT EXISTS reserved_cost_usd numeric;
-- Today's spend for the account-wide daily cap, and a run's summary: rows by when they completed. Rows are
-- written without completed_at, so the upload's COPY never touches this index.
CREATE INDEX IF NOT EXISTS csv_row_jobs_completed_at_idx ON csv_row_jobs (completed_at)
    WHERE completed_at IS NOT NULL;
