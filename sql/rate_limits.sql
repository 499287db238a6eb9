-- rate_limits.sql: rate limits shared by every worker on every machine: one row per limited resource (for example
-- "images:gpt-image-2.6-flare"). Each call reserves the next free slot at the configured rate (a virtual
-- scheduling clock, "tat"), so all pools together stay under the limit without talking to each other. A 429 from
-- the provider sets paused_until, which holds every worker's next calls to that resource until then.

-- Reserve one call on p_key at p_per_minute (0 or NULL: unlimited, only pauses apply). Returns how many seconds
-- the caller must wait before making the call.
-- Locks: the p_key row, for the length of this short transaction.
CREATE OR REPLACE FUNCTION acquire_csv_rate_limit(p_key text, p_per_minute numeric)
RETURNS double precision
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
    v_row csv_rate_limits;
    v_slot timestamptz;
BEGIN
    INSERT INTO csv_rate_limits AS r (key, tat) VALUES (p_key, v_now) ON CONFLICT (key) DO NOTHING;
    SELECT * INTO v_row FROM csv_rate_limits WHERE key = p_key FOR UPDATE;
    v_slot := greatest(v_row.tat, v_now, v_row.paused_until);
    IF coalesce(p_per_minute, 0) > 0 THEN
        UPDATE csv_rate_limits
           SET tat = v_slot + make_interval(secs => 60.0 / p_per_minute::double precision), updated_at = v_now
         WHERE key = p_key;
    END IF;
    RETURN greatest(extract(epoch FROM v_slot - v_now), 0);
END
$$;

-- Hold every worker's calls to p_key for p_seconds (a 429's Retry-After); never shortens a longer pause.
-- Locks: the p_key row.
CREATE OR REPLACE FUNCTION pause_csv_rate_limit(p_key text, p_seconds numeric)
RETURNS timestamptz
LANGUAGE sql AS $$
    INSERT INTO csv_rate_limits AS r (key, paused_until)
    VALUES (p_key, clock_timestamp() + make_interval(secs => p_seconds::double precision))
    ON CONFLICT (key) DO UPDATE
        SET paused_until = greatest(r.paused_until, excluded.paused_until), updated_at = clock_timestamp()
    RETURNING paused_until;
$$;

-- Seconds left in a pause of p_key (0 when there is none): checked right before a reserved call is made, so a
-- pause that began while the caller waited for its slot still holds it.
CREATE OR REPLACE FUNCTION csv_rate_limit_pause_remaining(p_key text)
RETURNS double precision
LANGUAGE sql STABLE AS $$
    SELECT coalesce(greatest(extract(epoch FROM max(paused_until) - clock_timestamp()), 0), 0)
    FROM csv_rate_limits WHERE key = p_key;
$$;
