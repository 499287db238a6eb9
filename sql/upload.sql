-- upload.sql: turning a validated CSV into row jobs. The CLI creates the batch as the user (row-level security
-- checks that it is theirs), then, in the same transaction, switches to the service role to COPY the rows straight
-- into csv_row_jobs (COPY cannot write to a table under row-level security, and a detour through a staging table
-- doubles the write), and calls queue_csv_batch. Everything commits together or not at all.

-- Record the row count of a freshly uploaded batch and queue it (or complete it when it has no rows).
-- Locks: the batch row.
CREATE OR REPLACE FUNCTION queue_csv_batch(p_batch_id uuid, p_total_rows integer, p_skipped_rows integer DEFAULT 0)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
BEGIN
    SELECT b.status INTO v_status FROM csv_batches b WHERE b.id = p_batch_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no such batch: %', p_batch_id USING ERRCODE = '42704';
    END IF;
    IF v_status <> 'uploaded' THEN
        RAISE EXCEPTION 'batch % is %, not uploaded: it can be queued only once', p_batch_id, v_status
            USING ERRCODE = '55000';
    END IF;
    UPDATE csv_batches SET
        total_rows = p_total_rows,
        skipped_rows = greatest(p_skipped_rows, 0),
        status = CASE WHEN p_total_rows = 0 THEN 'completed' ELSE 'queued' END,
        completed_at = CASE WHEN p_total_rows = 0 THEN now() END,
        updated_at = now()
    WHERE id = p_batch_id
    RETURNING status INTO v_status;

    INSERT INTO csv_processing_logs (batch_id, log_level, message, operation, details)
    VALUES (p_batch_id, 'INFO', format('batch queued with %s rows (%s skipped)', p_total_rows, p_skipped_rows),
            'batch_queued', jsonb_build_object('total_rows', p_total_rows, 'skipped_rows', p_skipped_rows));
    PERFORM pg_notify('csv_row_jobs', p_batch_id::text);
    RETURN v_status;
END
$$;

-- The whole product of a job: its stored fields, else the row_data column the batch maps the field from, else ''.
-- Jobs whose product holds every field (written before the lean layout) come out unchanged. One expression, field
-- by field, and STABLE as jsonb_build_object is, so that PostgreSQL inlines it into the query that calls it (the
-- claim, for every row it hands out) instead of calling a function per row.
CREATE OR REPLACE FUNCTION csv_row_job_product(p_row_data json, p_product jsonb, p_column_mapping jsonb)
RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT jsonb_build_object(
        'country', coalesce(p_product ->> 'country', p_row_data ->> (p_column_mapping -> 'row_data_keys' ->> 'country'), ''),
        'product_type', coalesce(p_product ->> 'product_type', p_row_data ->> (p_column_mapping -> 'row_data_keys' ->> 'product_type'), ''),
        'size', coalesce(p_product ->> 'size', p_row_data ->> (p_column_mapping -> 'row_data_keys' ->> 'size'), ''),
        'mpn', coalesce(p_product ->> 'mpn', p_row_data ->> (p_column_mapping -> 'row_data_keys' ->> 'mpn'), ''),
        'description', coalesce(p_product ->> 'description', p_row_data ->> (p_column_mapping -> 'row_data_keys' ->> 'description'), ''),
        'title', coalesce(p_product ->> 'title', p_row_data ->> (p_column_mapping -> 'row_data_keys' ->> 'title'), ''),
        'image_url', coalesce(p_product ->> 'image_url', p_row_data ->> (p_column_mapping -> 'row_data_keys' ->> 'image_url'), ''))
           -- the earlier row whose images this one reuses (see csv_row_jobs.reuses_job), when there is one
           || CASE WHEN p_product ? 'reuses_row' THEN jsonb_build_object('reuses_row', p_product ->> 'reuses_row')
                   ELSE '{}'::jsonb END;
$$;
