-- Lean row jobs: what an upload writes per CSV row, cut to what a 1,000,000-row upload can afford. Measured with a
-- COPY of 1M prepared rows into csv_row_jobs (bench/upload.py has the end-to-end figures): the per-row foreign key
-- check on batch_id cost more than everything else together, parsing row_data and product into jsonb most of the
-- rest, and every index on the table is paid once per row. So, in this migration:
--   1. batch_id loses its foreign key; deleting a batch still deletes its jobs, through one statement trigger.
--   2. row_data becomes json: stored as the upload sent it (validated, not rebuilt as a tree), which also keeps
--      the CSV's column order.
--   3. product holds only the mapped fields that are not simply a column of row_data; csv_row_job_product() gives
--      the whole product and the claim returns it, so workers see what they saw before.
--   4. The unique index on (batch_id, row_number) becomes a BRIN index on batch_id.
--   5. The id sequence hands out ids 1,000 at a time per session instead of one by one.

-- 1. Integrity of batch_id now rests on who can write jobs: only the upload (as the service role, into the
--    batch it created in the same transaction) inserts them, and authenticated users cannot insert at all
--    (005_security.sql). The cascade runs as the table owner, as the foreign key's did, so a user deleting
--    their own batch also removes its jobs although they may not delete jobs themselves.
ALTER TABLE csv_row_jobs DROP CONSTRAINT IF EXISTS csv_row_jobs_batch_id_fkey;

CREATE OR REPLACE FUNCTION csv_delete_jobs_of_deleted_batches() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    DELETE FROM public.csv_row_jobs j USING deleted_batches d WHERE j.batch_id = d.id;
    RETURN NULL;
END
$$;
REVOKE EXECUTE ON FUNCTION csv_delete_jobs_of_deleted_batches() FROM PUBLIC;

DROP TRIGGER IF EXISTS csv_batches_delete_jobs ON csv_batches;
CREATE TRIGGER csv_batches_delete_jobs AFTER DELETE ON csv_batches
    REFERENCING OLD TABLE AS deleted_batches
    FOR EACH STATEMENT EXECUTE FUNCTION csv_delete_jobs_of_deleted_batches();

-- 2.
ALTER TABLE csv_row_jobs ALTER COLUMN row_data TYPE json USING row_data::json;

-- 3. NULL, not '{}', when row_data says it all: a NULL is not parsed (that saved a twentieth of the COPY).
ALTER TABLE csv_row_jobs ALTER COLUMN product DROP NOT NULL;
COMMENT ON COLUMN csv_row_jobs.product IS
    'NULL, or the mapped product fields that differ from the row_data column they are read from (HTML reduced '
    'to text, values inherited from a parent row, the --country default). The other fields are that column''s '
    'value, named in csv_batches.column_mapping -> row_data_keys. csv_row_job_product() gives the whole product.';

-- The whole product of a job: its stored fields, else the row_data column the batch maps the field from, else ''.
-- Jobs written before this migration stored every field in product, so they come out unchanged.
CREATE OR REPLACE FUNCTION csv_row_job_product(p_row_data json, p_product jsonb, p_column_mapping jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT jsonb_object_agg(f.name, coalesce(p_product ->> f.name,
                                             p_row_data ->> (p_column_mapping -> 'row_data_keys' ->> f.name),
                                             ''))
    FROM unnest(ARRAY['country', 'product_type', 'size', 'mpn', 'description', 'title']) AS f(name);
$$;

-- 4. The unique index cost a sixth of the COPY. Every row of a batch is written by the one COPY that numbers them,
--    so uniqueness holds by construction; what the index also gave, finding a batch's jobs (the cascade above,
--    export, a user's query by batch), a BRIN index gives for almost nothing per row: a batch's rows are written
--    together, and bloom summaries stay selective when ranges hold several batches. Ranges are summarised by
--    autovacuum (autosummarize); until then they are read, as a sequential scan would.
ALTER TABLE csv_row_jobs DROP CONSTRAINT IF EXISTS csv_row_jobs_batch_id_row_number_key;
CREATE INDEX IF NOT EXISTS csv_row_jobs_batch_idx ON csv_row_jobs USING brin (batch_id uuid_bloom_ops)
    WITH (autosummarize = on);

-- 5. Gaps between sessions are harmless; ids within one upload still follow the file's order.
ALTER TABLE csv_row_jobs ALTER COLUMN id SET CACHE 1000;

-- The claim again, unchanged but for what it returns: row_data (json since this migration) as jsonb, and the
-- whole product from csv_row_job_product().
--
-- Claim up to p_limit pending jobs for a worker, fairly across batches: slots go one by one to the batch with
-- the fewest jobs in flight (counting the slots already given), so a small batch uploaded beside a huge one gets
-- its rows in flight at once instead of waiting behind it. Optionally only one batch (dedicated workers) or one
-- user's batches. Never hands out jobs of a batch that is not queued or processing (cancelled, paused,
-- completed). Reclaims timed-out claims first. The first claim moves a batch to processing.
-- Locks: the claimed job rows (FOR UPDATE SKIP LOCKED, so claimers never wait on each other); a batch row only
-- on its first claim.
CREATE OR REPLACE FUNCTION claim_csv_row_jobs(
    p_worker_id text,
    p_batch_id uuid DEFAULT NULL,
    p_timeout_minutes numeric DEFAULT 5,
    p_limit integer DEFAULT 1,
    p_user_id uuid DEFAULT NULL
) RETURNS TABLE (
    job_id bigint, batch_id uuid, user_id uuid, row_number integer, row_data jsonb, product jsonb,
    trigger_text text, attempt integer, retry_count integer, max_retries integer, checkpoint jsonb
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_batches uuid[];
    v_owners uuid[];
    v_mappings jsonb[];
    v_load integer[];
    v_available integer[];
    v_share integer[];
    v_n integer;
    v_best integer;
    v_remaining integer := p_limit;
    v_got integer;
    v_pass integer;
    v_want integer;
    i integer;
    s integer;
BEGIN
    IF p_worker_id IS NULL OR p_worker_id = '' THEN
        RAISE EXCEPTION 'claim_csv_row_jobs: a worker id is required' USING ERRCODE = '22023';
    END IF;
    IF p_limit IS NULL OR p_limit < 1 THEN
        RETURN;
    END IF;
    PERFORM csv_reclaim_timed_out_jobs(coalesce(p_timeout_minutes, 5));

    -- Batches that can hand out work (a short list, from csv_batches_active_idx).
    SELECT array_agg(b.id ORDER BY b.created_at, b.id), array_agg(b.user_id ORDER BY b.created_at, b.id),
           array_agg(b.column_mapping ORDER BY b.created_at, b.id)
      INTO v_batches, v_owners, v_mappings
      FROM csv_batches b
     WHERE b.status IN ('queued', 'processing')
       AND (p_batch_id IS NULL OR b.id = p_batch_id)
       AND (p_user_id IS NULL OR b.user_id = p_user_id)
       AND EXISTS (SELECT 1 FROM csv_row_jobs p WHERE p.batch_id = b.id AND p.status = 'pending');
    IF v_batches IS NULL THEN
        RETURN;
    END IF;
    v_n := cardinality(v_batches);
    IF v_n = 1 THEN
        v_share := ARRAY[p_limit];
    ELSE
        -- Several batches: count each one's jobs in flight and (up to p_limit) pending jobs, both from small
        -- partial indexes, and give the slots one by one to the least loaded.
        SELECT array_agg((SELECT count(*) FROM csv_row_jobs f
                           WHERE f.batch_id = t.id AND f.status IN ('claimed', 'processing'))::integer ORDER BY t.n),
               array_agg((SELECT count(*) FROM (SELECT 1 FROM csv_row_jobs p
                                                 WHERE p.batch_id = t.id AND p.status = 'pending'
                                                 LIMIT p_limit) q)::integer ORDER BY t.n)
          INTO v_load, v_available
          FROM unnest(v_batches) WITH ORDINALITY AS t(id, n);
        v_share := array_fill(0, ARRAY[v_n]);
        FOR s IN 1..p_limit LOOP
            v_best := NULL;
            FOR i IN 1..v_n LOOP
                IF v_share[i] < v_available[i]
                   AND (v_best IS NULL OR v_load[i] + v_share[i] < v_load[v_best] + v_share[v_best]) THEN
                    v_best := i;
                END IF;
            END LOOP;
            EXIT WHEN v_best IS NULL;
            v_share[v_best] := v_share[v_best] + 1;
        END LOOP;
    END IF;

    -- First pass: each batch's share; second pass: whatever other claimers took from under us, from any batch.
    FOR v_pass IN 1..2 LOOP
        FOR i IN 1..v_n LOOP
            v_want := CASE WHEN v_pass = 1 THEN least(v_share[i], v_remaining) ELSE v_remaining END;
            CONTINUE WHEN v_want <= 0;
            RETURN QUERY
            WITH picked AS (
                SELECT j.id FROM csv_row_jobs j
                WHERE j.batch_id = v_batches[i] AND j.status = 'pending'
                ORDER BY j.id + 0  -- only csv_row_jobs_pending_idx has this order (see 002_tables.sql)
                LIMIT v_want
                FOR UPDATE SKIP LOCKED
            ), claimed AS (
                UPDATE csv_row_jobs j SET
                    status = 'claimed',
                    claimed_by = p_worker_id,
                    claimed_at = now(),
                    attempt = j.attempt + 1,
                    updated_at = now()
                FROM picked
                WHERE j.id = picked.id
                RETURNING j.id, j.batch_id, j.row_number, j.row_data, j.product, j.trigger_text, j.attempt,
                          j.retry_count, j.max_retries, j.checkpoint
            )
            SELECT c.id, c.batch_id, v_owners[i], c.row_number, c.row_data::jsonb,
                   csv_row_job_product(c.row_data, c.product, v_mappings[i]), c.trigger_text,
                   c.attempt, c.retry_count, c.max_retries, c.checkpoint
            FROM claimed c ORDER BY c.id;
            GET DIAGNOSTICS v_got = ROW_COUNT;
            IF v_got > 0 THEN
                UPDATE csv_batches b
                   SET status = 'processing', started_at = coalesce(b.started_at, now()), updated_at = now()
                 WHERE b.id = v_batches[i] AND b.status = 'queued';
                IF FOUND THEN
                    INSERT INTO csv_processing_logs (batch_id, worker_instance, log_level, message, operation)
                    VALUES (v_batches[i], p_worker_id, 'INFO', 'batch processing started', 'batch_started');
                END IF;
                v_remaining := v_remaining - v_got;
            END IF;
            EXIT WHEN v_remaining <= 0;
        END LOOP;
        EXIT WHEN v_remaining <= 0;
    END LOOP;
END
$$;
