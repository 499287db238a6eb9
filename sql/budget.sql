-- budget.sql: spending no more than a batch's budget (csv_batches.max_cost_usd) and the account's daily cap, across
-- every worker on every machine. Before it pays for a row, a worker reserves the row's estimated cost (with a
-- margin: RESERVE_MARGIN in queue/row_rules.py); the reservation lives on the row (reserved_cost_usd) and counts
-- only while the row is in flight, so a finished, released or reclaimed row gives it back by leaving flight, in the
-- same transaction that records its real cost. A reservation that would take the batch past its budget (or the account past its
-- daily cap) pauses the batch with the reason, and the row goes back to pending; `resume --max-cost` goes on.

-- Reserve p_amount for a row its worker holds. Returns NULL when reserved, else why not, and then the row is back
-- to pending (no retry counted): 'wait: ...' when rows in flight hold what it would need (their real cost is
-- usually below their reservation: try again when they finish), or the reason the batch was paused, when even
-- with nothing in flight the row would not fit. p_daily_max: the account's daily cap (NULL: none).
-- Locks: the batch row (so reservations of one batch are taken one at a time); with a daily cap, an advisory
-- transaction lock shared by every batch; then the job row.
CREATE OR REPLACE FUNCTION reserve_csv_row_cost(p_job_id bigint, p_worker_id text, p_attempt integer,
                                                p_amount numeric, p_daily_max numeric DEFAULT NULL)
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
        -- One statement, so one snapshot: a row finishing meanwhile is either still in flight (its reservation
        -- counted) or finished (its cost counted), never neither.
        SELECT v_batch.cost_usd + coalesce((SELECT sum(c.cost_usd) FROM public.csv_batch_counters c
                                            WHERE c.batch_id = v_batch.id), 0),
               coalesce((SELECT sum(j.reserved_cost_usd) FROM public.csv_row_jobs j
                         WHERE j.batch_id = v_batch.id AND j.status IN ('claimed', 'processing')
                           AND j.id <> p_job_id), 0)
        INTO v_spent, v_held;
        IF v_spent + p_amount <= v_batch.max_cost_usd AND v_spent + v_held + p_amount > v_batch.max_cost_usd THEN
            v_reason := 'wait: rows in flight hold the rest of the budget';
        ELSIF v_spent + v_held + p_amount > v_batch.max_cost_usd THEN
            v_reason := format('budget reached: $%s spent and $%s held by rows in flight of a $%s budget; the next '
                               'row needs up to $%s (raise it with `csvjobs resume %s --max-cost USD`)',
                               round(v_spent, 4), round(v_held, 4), round(v_batch.max_cost_usd, 4), round(p_amount, 4),
                               left(v_batch.id::text, 8));
        END IF;
    END IF;
    IF v_reason IS NULL AND p_daily_max IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtext('csvjobs daily budget'));
        SELECT coalesce((SELECT sum(j.cost_usd) FROM public.csv_row_jobs j
                         WHERE j.completed_at >= date_trunc('day', now()) AND j.completed_at IS NOT NULL), 0),
               coalesce((SELECT sum(j.reserved_cost_usd) FROM public.csv_row_jobs j
                         WHERE j.status IN ('claimed', 'processing') AND j.id <> p_job_id), 0)
        INTO v_spent, v_held;
        IF v_spent + p_amount <= p_daily_max AND v_spent + v_held + p_amount > p_daily_max THEN
            v_reason := 'wait: rows in flight hold the rest of the daily budget';
        ELSIF v_spent + v_held + p_amount > p_daily_max THEN
            v_reason := format('daily budget reached: $%s spent today and $%s held by rows in flight of a $%s '
                               'daily cap (CSVJOBS_DAILY_MAX_COST_USD); `csvjobs resume %s` tomorrow, or raise the cap',
                               round(v_spent, 4), round(v_held, 4), round(p_daily_max, 4), left(v_batch.id::text, 8));
        END IF;
    END IF;
    IF v_reason IS NOT NULL AND v_reason NOT LIKE 'wait:%' THEN
        UPDATE public.csv_batches SET status = 'paused', pause_reason = v_reason, updated_at = now()
        WHERE id = v_batch.id AND status IN ('queued', 'processing');
        IF FOUND THEN
            INSERT INTO public.csv_processing_logs (batch_id, worker_instance, log_level, message, operation, details)
            VALUES (v_batch.id, p_worker_id, 'WARN', 'batch paused: ' || v_reason, 'budget_reached',
                    jsonb_build_object('max_cost_usd', v_batch.max_cost_usd, 'daily_max_usd', p_daily_max,
                                       'row_estimate_usd', p_amount));
            PERFORM pg_notify('csv_batch_progress', v_batch.id::text);
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
    UPDATE public.csv_row_jobs SET reserved_cost_usd = p_amount
    WHERE id = p_job_id AND claimed_by = p_worker_id AND attempt = p_attempt AND status IN ('claimed', 'processing');
    IF NOT FOUND THEN
        RETURN 'the row is no longer held by this worker';
    END IF;
    RETURN NULL;
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
