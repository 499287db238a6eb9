-- claim.sql: how a job is claimed. claim_next_csv_row_job is the single-job call of the contract;
-- claim_csv_row_jobs claims several at once (the worker pool's call, which can start its rows as it claims
-- them; a single-job caller starts its row with update_csv_row_job_result(..., 'processing')). Every claim first
-- reclaims jobs whose worker went silent past the timeout.
--
-- Lock order, shared with results.sql to stay free of deadlocks: job rows first (claims take them with SKIP
-- LOCKED), then batch rows in ascending id order.
--
-- Quick claims: a session that sets csvjobs.async_claims to on (csvjobs' workers do, on the connection they
-- claim on, unless their setting async_claims is off) gets claims that commit without waiting for the WAL to
-- reach the disk (synchronous_commit off for the claim's own transaction: the statement's, when called on its
-- own). Waiting is most of a claim's time when rows are quick (0.25 of 0.4 ms), and a claim is the one write
-- whose loss is cheap: if the database server crashes within a fraction of a second of a claim (at most three
-- wal_writer_delay), and no later commit has flushed the WAL past it, the claim is forgotten and the row is
-- pending again, with its attempt unchanged; the worker's checkpoint saves and result for it are refused (fenced
-- by attempt), it drops the row, and the row is handed out again. Nothing is lost or recorded twice; at worst a
-- provider call made in that fraction of a second is made again. (A forgotten reclaim of a dead worker's rows is
-- simply done again.) Any other caller's claims, and every other write, wait as before.

-- Internal: a claim of a session that asked for quick claims (above) commits without waiting for the disk.
CREATE OR REPLACE FUNCTION csv_quick_claim()
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('csvjobs.async_claims', true) = 'on' THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
END
$$;

-- Internal: reclaim jobs whose claim is older than the timeout and whose worker has stopped sending heartbeats
-- (a live worker keeps its jobs, however slow the AI provider is). Counts a retry. A negative timeout would
-- take rows from live workers, so it is refused.
-- Locks: the timed-out job rows, skipping any that another transaction holds.
CREATE OR REPLACE FUNCTION csv_reclaim_timed_out_jobs(p_timeout_minutes numeric)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_cutoff timestamptz;
    v_ids bigint[];
BEGIN
    IF p_timeout_minutes IS NULL OR p_timeout_minutes < 0 THEN
        RAISE EXCEPTION 'the claim timeout must be zero or more minutes, not %',
            coalesce(p_timeout_minutes::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'pass p_timeout_minutes >= 0 (the default is 5)';
    END IF;
    v_cutoff := now() - make_interval(secs => (p_timeout_minutes * 60)::double precision);
    SELECT array_agg(t.id) INTO v_ids FROM (
        SELECT j.id FROM csv_row_jobs j
        WHERE j.status IN ('claimed', 'processing')
          AND j.claimed_at < v_cutoff
          AND NOT EXISTS (
              SELECT 1 FROM csv_processing_workers w
              WHERE w.instance_id = j.claimed_by AND w.status <> 'stopped' AND w.last_heartbeat >= v_cutoff)
        ORDER BY j.id
        FOR UPDATE OF j SKIP LOCKED
    ) t;
    IF v_ids IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM csv_release_jobs(v_ids, true, 'claim timed out (the worker stopped sending heartbeats)');
    RETURN cardinality(v_ids);
END
$$;

-- Does the batch have a pending job? Read from the pending index in its order: with statistics taken right after
-- an upload (every row pending), an EXISTS lets the planner scan the table from the start instead, stepping over
-- every finished row of a big batch on every claim (tests/test_queue_functions.py counts the scans). A scalar
-- subquery, because PostgreSQL drops ORDER BY and LIMIT inside EXISTS. PL/pgSQL, so that the session keeps its
-- plan: PostgreSQL plans a SQL function's query again on every call it does not inline (every claim).
CREATE OR REPLACE FUNCTION csv_batch_has_pending_jobs(p_batch_id uuid)
RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT p.id + 0 FROM csv_row_jobs p WHERE p.batch_id = p_batch_id AND p.status = 'pending'
            ORDER BY p.id + 0 LIMIT 1) IS NOT NULL;
END
$$;

-- Internal: has the row a pending row waits for (csv_row_jobs.reuses_job: it reuses that row's images) finished?
-- A lookup by key: a NOT EXISTS in the claim is planned as a hashed subplan that reads the whole table.
CREATE OR REPLACE FUNCTION csv_reused_row_done(p_reuses_job bigint)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT d.status FROM csv_row_jobs d WHERE d.id = p_reuses_job), 'completed')
           NOT IN ('pending', 'claimed', 'processing');
$$;

-- Internal: a queued batch's first claim moves it to processing, and says so in its log.
-- Locks: the batch row.
CREATE OR REPLACE FUNCTION csv_start_batch(p_batch_id uuid, p_worker_id text)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE csv_batches b
       SET status = 'processing', started_at = coalesce(b.started_at, now()), updated_at = now()
     WHERE b.id = p_batch_id AND b.status = 'queued';
    IF FOUND THEN
        INSERT INTO csv_processing_logs (batch_id, worker_instance, log_level, message, operation)
        VALUES (p_batch_id, p_worker_id, 'INFO', 'batch processing started', 'batch_started');
    END IF;
END
$$;

-- Claim up to p_limit pending jobs for a worker, fairly across batches: slots go one by one to the batch with
-- the fewest jobs in flight (counting the slots already given), so a small batch uploaded beside a huge one gets
-- its rows in flight at once instead of waiting behind it. Optionally only one batch (dedicated workers) or one
-- user's batches. Never hands out jobs of a batch that is not queued or processing (cancelled, paused,
-- completed). p_mode picks the batches by processing mode: 'sync' (the default, and the only one the single-job
-- claim sees) or 'openai_batch' (the OpenAI batch driver's claim). p_start: the caller starts on every row at once,
-- so they are 'processing' from the claim on (one update a row instead of a claim and then a start).
-- Reclaims timed-out claims first. The first claim moves a batch to processing.
-- Locks: the claimed job rows (FOR UPDATE SKIP LOCKED, so claimers never wait on each other); a batch row only
-- on its first claim.
CREATE OR REPLACE FUNCTION claim_csv_row_jobs(
    p_worker_id text,
    p_batch_id uuid DEFAULT NULL,
    p_timeout_minutes numeric DEFAULT 5,
    p_limit integer DEFAULT 1,
    p_user_id uuid DEFAULT NULL,
    p_mode text DEFAULT 'sync',
    p_start boolean DEFAULT false
) RETURNS TABLE (
    job_id bigint, batch_id uuid, user_id uuid, row_number integer, row_data jsonb, product jsonb,
    trigger_text text, attempt integer, retry_count integer, max_retries integer, checkpoint jsonb
)
LANGUAGE plpgsql
-- Its statements take parameters (the limit, the batch) whose values would make PostgreSQL plan each one afresh
-- on every call (a custom plan looks cheaper than the generic one for a limit of 10): planning cost more than
-- the claim. Their generic plans read the pending index in order and the picked rows by key.
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    v_batches uuid[];
    v_owners uuid[];
    v_mappings jsonb[];
    v_queued boolean[];
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
    PERFORM csv_quick_claim();
    -- Reclaim only when some claim is old enough (a look at the in-flight index by claim time): usually none is,
    -- and the call costs more than the look. A negative timeout goes to the call, which refuses it.
    IF p_timeout_minutes < 0
       OR EXISTS (SELECT 1 FROM csv_row_jobs j
                  WHERE j.status IN ('claimed', 'processing')
                    AND j.claimed_at < now() - make_interval(
                        secs => (coalesce(p_timeout_minutes, 5) * 60)::double precision)) THEN
        PERFORM csv_reclaim_timed_out_jobs(coalesce(p_timeout_minutes, 5));
    END IF;

    -- Batches that can hand out work (a short list, from csv_batches_active_idx).
    SELECT array_agg(b.id ORDER BY b.created_at, b.id), array_agg(b.user_id ORDER BY b.created_at, b.id),
           array_agg(b.column_mapping ORDER BY b.created_at, b.id),
           array_agg(b.status = 'queued' ORDER BY b.created_at, b.id)
      INTO v_batches, v_owners, v_mappings, v_queued
      FROM csv_batches b
     WHERE b.status IN ('queued', 'processing')
       AND (p_batch_id IS NULL OR b.id = p_batch_id)
       AND (p_user_id IS NULL OR b.user_id = p_user_id)
       AND b.processing_mode = coalesce(p_mode, 'sync')
       -- csv_batch_has_pending_jobs, written out: a function call per batch costs more than its query
       AND (SELECT p.id + 0 FROM csv_row_jobs p WHERE p.batch_id = b.id AND p.status = 'pending'
            ORDER BY p.id + 0 LIMIT 1) IS NOT NULL;
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
                                                 ORDER BY p.id + 0 LIMIT p_limit) q)::integer ORDER BY t.n)
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
            WITH claimed AS (
                UPDATE csv_row_jobs j SET
                    status = CASE WHEN p_start THEN 'processing' ELSE 'claimed' END,
                    claimed_by = p_worker_id,
                    claimed_at = now(),
                    attempt = j.attempt + 1,
                    updated_at = now()
                -- (= ANY of the picked ids, not a join: the generic plan then reads them by key)
                WHERE j.id = ANY (ARRAY(
                    SELECT p.id FROM csv_row_jobs p
                    WHERE p.batch_id = v_batches[i] AND p.status = 'pending'
                      -- a row that reuses another's images waits until that row has finished
                      AND (p.reuses_job IS NULL OR csv_reused_row_done(p.reuses_job))
                    ORDER BY p.id + 0  -- only csv_row_jobs_pending_idx has this order (see tables.sql)
                    LIMIT v_want
                    FOR UPDATE SKIP LOCKED))
                RETURNING j.id, j.batch_id, j.row_number, j.row_data, j.product, j.trigger_text, j.attempt,
                          j.retry_count, j.max_retries, j.checkpoint
            )
            SELECT c.id, c.batch_id, v_owners[i], c.row_number, c.row_data::jsonb,
                   csv_row_job_product(c.row_data, c.product, v_mappings[i]), c.trigger_text,
                   c.attempt, c.retry_count, c.max_retries, c.checkpoint
            FROM claimed c ORDER BY c.id;
            GET DIAGNOSTICS v_got = ROW_COUNT;
            IF v_got > 0 THEN
                IF v_queued[i] THEN
                    PERFORM csv_start_batch(v_batches[i], p_worker_id);
                END IF;
                v_remaining := v_remaining - v_got;
            END IF;
            EXIT WHEN v_remaining <= 0;
        END LOOP;
        EXIT WHEN v_remaining <= 0;
    END LOOP;
END
$$;

-- The contract's single-job claim: the next pending job (optionally of one batch) or no row, with its claim
-- token (attempt). With one batch handing out work (the common case) it claims the row in one statement of its
-- own, without claim_csv_row_jobs' sharing out of slots among batches (with one batch there is nothing to share,
-- and a worker calling once a row pays it once a row). With several, it is claim_csv_row_jobs.
-- Locks: as claim_csv_row_jobs.
CREATE OR REPLACE FUNCTION claim_next_csv_row_job(
    p_worker_id text,
    p_batch_id uuid DEFAULT NULL,
    p_timeout_minutes numeric DEFAULT 5
) RETURNS TABLE (
    job_id bigint, batch_id uuid, user_id uuid, row_number integer, row_data jsonb, product jsonb,
    trigger_text text, attempt integer, retry_count integer, max_retries integer, checkpoint jsonb
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_batch record;
    v_job record;
    v_batches integer := 0;
    v_got integer;
BEGIN
    IF p_worker_id IS NULL OR p_worker_id = '' THEN
        RAISE EXCEPTION 'claim_next_csv_row_job: a worker id is required' USING ERRCODE = '22023';
    END IF;
    PERFORM csv_quick_claim();
    -- As in claim_csv_row_jobs: reclaim only when some claim is old enough (usually none is, and the look at the
    -- in-flight index by claim time costs less than the call). Written out in both rather than a function: one
    -- with a subquery is not inlined, and is planned again in every claim's transaction.
    IF p_timeout_minutes < 0
       OR EXISTS (SELECT 1 FROM csv_row_jobs j
                  WHERE j.status IN ('claimed', 'processing')
                    AND j.claimed_at < now() - make_interval(
                        secs => (coalesce(p_timeout_minutes, 5) * 60)::double precision)) THEN
        PERFORM csv_reclaim_timed_out_jobs(coalesce(p_timeout_minutes, 5));
    END IF;
    FOR v_job IN
        SELECT b.id, b.user_id, b.status, b.column_mapping FROM csv_batches b
         WHERE b.status IN ('queued', 'processing') AND b.processing_mode = 'sync'
           AND (p_batch_id IS NULL OR b.id = p_batch_id)
           -- csv_batch_has_pending_jobs, written out (a function call per batch costs more than its query)
           AND (SELECT p.id + 0 FROM csv_row_jobs p WHERE p.batch_id = b.id AND p.status = 'pending'
                ORDER BY p.id + 0 LIMIT 1) IS NOT NULL
         LIMIT 2
    LOOP
        v_batches := v_batches + 1;
        v_batch := v_job;
    END LOOP;
    IF v_batches = 0 THEN
        RETURN;
    ELSIF v_batches > 1 THEN
        RETURN QUERY SELECT * FROM claim_csv_row_jobs(p_worker_id, p_batch_id, p_timeout_minutes, 1);
        RETURN;
    END IF;

    -- The claim and its answer in one statement.
    RETURN QUERY
    WITH claimed AS (
        UPDATE csv_row_jobs j SET
            status = 'claimed', claimed_by = p_worker_id, claimed_at = now(), attempt = j.attempt + 1,
            updated_at = now()
        WHERE j.id = (
            SELECT p.id FROM csv_row_jobs p
            WHERE p.batch_id = v_batch.id AND p.status = 'pending'
              AND (p.reuses_job IS NULL OR csv_reused_row_done(p.reuses_job))
            ORDER BY p.id + 0
            LIMIT 1
            FOR UPDATE SKIP LOCKED)
        RETURNING j.id, j.batch_id, j.row_number, j.row_data, j.product, j.trigger_text, j.attempt, j.retry_count,
                  j.max_retries, j.checkpoint
    )
    SELECT c.id, c.batch_id, v_batch.user_id, c.row_number, c.row_data::jsonb,
           csv_row_job_product(c.row_data, c.product, v_batch.column_mapping), c.trigger_text, c.attempt,
           c.retry_count, c.max_retries, c.checkpoint
    FROM claimed c;
    GET DIAGNOSTICS v_got = ROW_COUNT;
    IF v_got > 0 AND v_batch.status = 'queued' THEN
        PERFORM csv_start_batch(v_batch.id, p_worker_id);
    END IF;
END
$$;
