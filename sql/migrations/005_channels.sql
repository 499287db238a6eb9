-- 005_channels.sql: where a batch's images will be sold (upload --channel): they are stored at the size those
-- channels need and checked against their rules (csvjobs/images/channels.py). The names are models.Channel's.
ALTER TABLE csv_batches ADD COLUMN IF NOT EXISTS channels text[] NOT NULL DEFAULT '{}';
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'csv_batches'::regclass
                                                 AND conname = 'csv_batches_channels_check') THEN
        ALTER TABLE csv_batches ADD CONSTRAINT csv_batches_channels_check
            CHECK (channels <@ ARRAY['amazon', 'google', 'shopify', 'ebay', 'etsy']::text[]);
    END IF;
END
$$;
