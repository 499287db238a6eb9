-- budget.sql: paying for calls, and spending no more than a batch's budget (csv_batches.max_cost_usd) and the
-- account's daily cap, across every worker on every machine.
--
-- Just before a provider call that costs money, its worker reserves what the call can cost at most (its model,
-- size, quality and token limit say so: providers/pricing.py's worst cases), and when the answer arrives it
-- records what the call really cost (record_csv_paid_call), which gives the reservation back. A reservation lives
-- on the row (reserved_cost_usd, for the attempt in reserved_attempt) and counts only while the row is in flight,
-- so a finished, released or reclaimed row gives back whatever it still held by leaving flight. Spent is what was
-- paid: every paid call goes into the batch's cost when it is recorded, whether its row later completes or not,
-- and into the running total of the day (csv_daily_spend), which the daily cap reads. A reservation that would take
-- the batch past its budget (or the account past its daily cap) even with nothing else in flight pauses the batch
-- with the reason, and the row goes back to pending; `resume --max-cost` goes on. So a budget stops within one
-- call's worst case of its limit, and never past it.

-- Reserve p_amount more for a row its worker holds, before a call. Returns NULL when reserved, else why not:
-- 'wait: ...' when calls in flight hold what it would need (they usually cost less than they hold: try again when
-- they are paid), or the reason the batch was paused, when even with nothing in flight the call would not fit
-- ('already paused: ...' when another call paused it first).
-- With p_release (the default) a refused row goes back to pending (no retry counted) and a batch that cannot fit
-- the call is paused; without it nothing changes but the answer (a call the row can do without, such as a
-- fidelity redo, is simply not made). p_daily_max: the account's daily cap (NULL: none).
-- Locks: the batch row (so reservations of one batch are taken one at a time); with a daily cap, an advisory
-- transaction lock shared by every batch; then the job row.
CREATE OR REPLACE FUNCTION reserve_csv_call_cost(p_job_id bigint, p_worker_id text, p_attempt integer,
                                                 p_amount numeric, p_daily_max numeric DEFAULT NULL,
                                                 p_release boolean DEFAULT true)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_batch public.csv_batches;
    v_spent numeric;
    v_held numeric;
    v_reason text;
BEGIN
    -- Without a budget or a daily cap there is nothing to reserve, and no lock to take.
    IF p_daily_max IS NULL AND NOT EXISTS (
            SELECT 1 FROM public.csv_batches b JOIN public.csv_row_jobs j ON j.batch_id = b.id
            WHERE j.id = p_job_id AND b.max_cost_usd IS NOT NULL) THEN
        RETURN NULL;
    END IF;
    SELECT b.* INTO v_batch FROM public.csv_batches b
    WHERE b.id = (SELECT j.batch_id FROM public.csv_row_jobs j WHERE j.id = p_job_id)
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'the row is gone';
    END IF;
    IF v_batch.max_cost_usd IS NOT NULL THEN
        -- One statement, so one snapshot: a call paid meanwhile is either still held (its reservation counted)
        -- or paid (its cost counted), never neither. The row's own earlier reservations count as held too.
        SELECT v_batch.cost_usd + coalesce((SELECT sum(c.cost_usd) FROM public.csv_batch_counters c
                                            WHERE c.batch_id = v_batch.id), 0),
               coalesce((SELECT sum(j.reserved_cost_usd) FROM public.csv_row_jobs j
                         WHERE j.batch_id = v_batch.id AND j.status IN ('claimed', 'processing')
                           AND j.reserved_attempt = j.attempt), 0)
        INTO v_spent, v_held;
        IF v_spent + p_amount <= v_batch.max_cost_usd AND v_spent + v_held + p_amount > v_batch.max_cost_usd THEN
            v_reason := 'wait: calls in flight hold the rest of the budget';
        ELSIF v_spent + p_amount > v_batch.max_cost_usd THEN
            v_reason := format('budget reached: $%s spent of a $%s budget; the next call may cost up to $%s '
                               '(raise it with `csvjobs resume %s --max-cost USD`)',
                               round(v_spent, 4), round(v_batch.max_cost_usd, 4), round(p_amount, 4),
                               left(v_batch.id::text, 8));
        END IF;
    END IF;
    IF v_reason IS NULL AND p_daily_max IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtext('csvjobs daily budget'));
        SELECT coalesce((SELECT sum(d.cost_usd) FROM public.csv_daily_spend d
                         WHERE d.day = (now() AT TIME ZONE 'UTC')::date), 0),
               coalesce((SELECT sum(j.reserved_cost_usd) FROM public.csv_row_jobs j
                         WHERE j.status IN ('claimed', 'processing') AND j.reserved_attempt = j.attempt), 0)
        INTO v_spent, v_held;
        IF v_spent + p_amount <= p_daily_max AND v_spent + v_held + p_amount > p_daily_max THEN
            v_reason := 'wait: calls in flight hold the rest of the daily budget';
        ELSIF v_spent + p_amount > p_daily_max THEN
            v_reason := format('daily budget reached: $%s paid today (UTC) of a $%s daily cap '
                               '(CSVJOBS_DAILY_MAX_COST_USD); the next call may cost up to $%s; `csvjobs resume %s` '
                               'tomorrow, or raise the cap',
                               round(v_spent, 4), round(p_daily_max, 4), round(p_amount, 4),
                               left(v_batch.id::text, 8));
        END IF;
    END IF;
    IF v_reason IS NOT NULL AND NOT p_release THEN
        RETURN v_reason;
    END IF;
    IF v_reason IS NOT NULL AND v_reason NOT LIKE 'wait:%' THEN
        UPDATE public.csv_batches SET status = 'paused', pause_reason = v_reason, updated_at = now()
        WHERE id = v_batch.id AND status IN ('queued', 'processing');
        IF FOUND THEN
            INSERT INTO public.csv_processing_logs (batch_id, worker_instance, log_level, message, operation, details)
            VALUES (v_batch.id, p_worker_id, 'WARN', 'batch paused: ' || v_reason, 'budget_reached',
                    jsonb_build_object('max_cost_usd', v_batch.max_cost_usd, 'daily_max_usd', p_daily_max,
                                       'call_worst_case_usd', p_amount));
            -- A paused batch's table row is current (its realtime subscribers read it): fold its shards now.
            PERFORM public.csv_fold_batch_counters(v_batch.id, true);
        ELSE
            -- Said once, by the worker whose call paused the batch; the others hear that it already was.
            v_reason := 'already paused: ' || v_reason;
        END IF;
    END IF;
    IF v_reason IS NOT NULL THEN
        -- The row goes back to pending with the batch's other rows, no retry counted.
        IF EXISTS (SELECT 1 FROM public.csv_row_jobs j WHERE j.id = p_job_id AND j.claimed_by = p_worker_id
                                                      AND j.attempt = p_attempt) THEN
            PERFORM public.csv_release_jobs(ARRAY[p_job_id], false, v_reason);
        END IF;
        RETURN v_reason;
    END IF;
    UPDATE public.csv_row_jobs SET
        reserved_cost_usd = CASE WHEN reserved_attempt = p_attempt THEN coalesce(reserved_cost_usd, 0) ELSE 0 END
                            + p_amount,
        reserved_attempt = p_attempt
    WHERE id = p_job_id AND claimed_by = p_worker_id AND attempt = p_attempt AND status IN ('claimed', 'processing');
    IF NOT FOUND THEN
        RETURN 'the row is no longer held by this worker';
    END IF;
    RETURN NULL;
END
$$;

-- The previous version's name and arguments, for workers of that version during a rolling upgrade: one
-- reservation for the whole row, taken the same way.
CREATE OR REPLACE FUNCTION reserve_csv_row_cost(p_job_id bigint, p_worker_id text, p_attempt integer,
                                                p_amount numeric, p_daily_max numeric DEFAULT NULL)
RETURNS text
LANGUAGE sql AS $$
    SELECT public.reserve_csv_call_cost(p_job_id, p_worker_id, p_attempt, p_amount, p_daily_max, true);
$$;

-- Give back p_amount of a row's reservation (a call that failed, and was not paid).
-- Locks: the job row.
CREATE OR REPLACE FUNCTION unreserve_csv_call_cost(p_job_id bigint, p_worker_id text, p_attempt integer,
                                                   p_amount numeric)
RETURNS void
LANGUAGE sql AS $$
    UPDATE public.csv_row_jobs SET reserved_cost_usd = greatest(0, reserved_cost_usd - p_amount)
    WHERE id = p_job_id AND claimed_by = p_worker_id AND attempt = p_attempt AND reserved_attempt = p_attempt
      AND reserved_cost_usd IS NOT NULL AND p_amount > 0;
$$;

-- Record one paid call of a row, the moment its answer arrived: into the append-only csv_paid_calls, the row's
-- cost, its batch's cost (through the counters, as results do) and the day's running total, and give back the
-- reservation the call held (p_call.reserved_usd, when its worker still holds the attempt). Recorded whether or not
-- the worker still holds the row: the money was spent either way. p_call: key (unique per call of the row), kind,
-- purpose, style, route, row_has_photo, model, size, quality, price_factor, cost_usd, reserved_usd.
-- Returns false when this call was recorded before (nothing changes).
-- Locks: the job row, then the batch's counter shard or row (csv_add_batch_results), then the day's shard.
CREATE OR REPLACE FUNCTION record_csv_paid_call(p_job_id bigint, p_holder text, p_attempt integer, p_call jsonb)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_cost numeric := coalesce((p_call ->> 'cost_usd')::numeric, 0);
    v_given_back numeric := coalesce((p_call ->> 'reserved_usd')::numeric, 0);
    v_batch_id uuid;
BEGIN
    IF v_cost < 0 OR v_given_back < 0 THEN
        RAISE EXCEPTION 'record_csv_paid_call: cost_usd and reserved_usd cannot be negative' USING ERRCODE = '22023';
    END IF;
    INSERT INTO public.csv_paid_calls (user_id, batch_id, row_job_id, row_number, attempt, call_key, kind, purpose,
                                       style, route, row_has_photo, model, size, quality, price_factor, cost_usd)
    SELECT b.user_id, j.batch_id, j.id, j.row_number, p_attempt, p_call ->> 'key', p_call ->> 'kind',
           coalesce(p_call ->> 'purpose', 'row'), p_call ->> 'style', p_call ->> 'route',
           coalesce((p_call ->> 'row_has_photo')::boolean, false), coalesce(p_call ->> 'model', ''),
           p_call ->> 'size', p_call ->> 'quality', coalesce((p_call ->> 'price_factor')::numeric, 1), v_cost
    FROM public.csv_row_jobs j JOIN public.csv_batches b ON b.id = j.batch_id
    WHERE j.id = p_job_id
    ON CONFLICT (row_job_id, call_key) DO NOTHING
    RETURNING batch_id INTO v_batch_id;
    IF v_batch_id IS NULL THEN
        RETURN false;
    END IF;
    UPDATE public.csv_row_jobs j SET
        cost_usd = coalesce(j.cost_usd, 0) + v_cost,
        reserved_cost_usd = CASE WHEN j.claimed_by = p_holder AND j.attempt = p_attempt
                                      AND j.reserved_attempt = p_attempt
                                 THEN greatest(0, j.reserved_cost_usd - v_given_back)
                                 ELSE j.reserved_cost_usd END
    WHERE j.id = p_job_id;
    IF v_cost > 0 THEN
        PERFORM public.csv_add_batch_results(v_batch_id, 0, 0, v_cost);
        INSERT INTO public.csv_daily_spend AS d (day, shard, cost_usd)
        VALUES ((now() AT TIME ZONE 'UTC')::date, (pg_backend_pid() % 32768)::smallint, v_cost)
        ON CONFLICT (day, shard) DO UPDATE SET cost_usd = d.cost_usd + excluded.cost_usd;
    END IF;
    RETURN true;
END
$$;

-- Set a batch's budget as its owner (NULL: none); `csvjobs resume --max-cost` resumes it after. Returns its status.
-- Locks: the batch row.
CREATE OR REPLACE FUNCTION set_csv_batch_budget(p_batch_id uuid, p_max_cost numeric)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_batch public.csv_batches;
BEGIN
    IF p_max_cost IS NOT NULL AND p_max_cost < 0 THEN
        RAISE EXCEPTION 'a budget cannot be negative' USING ERRCODE = '22023';
    END IF;
    v_batch := public.csv_lock_owned_batch(p_batch_id);
    UPDATE public.csv_batches SET max_cost_usd = p_max_cost, updated_at = now() WHERE id = p_batch_id;
    INSERT INTO public.csv_processing_logs (batch_id, log_level, message, operation, details)
    VALUES (p_batch_id, 'INFO', format('budget set to %s', coalesce('$' || p_max_cost::text, 'none')), 'budget_set',
            jsonb_build_object('max_cost_usd', p_max_cost, 'was', v_batch.max_cost_usd));
    RETURN v_batch.status;
END
$$;
