-- review.sql: the merchant's review of the generated images. Each row's current image of each style can be
-- approved or rejected (csv_row_jobs.review), and redone with an optional note: the request puts the row back to
-- pending with the styles to redo in its checkpoint, the worker pays for exactly those images (the prompts and the
-- other image are reused), and the image it replaces is kept as a version in csv_image_versions, never lost.
-- Users change review state only through the SECURITY DEFINER functions here, which check ownership as the
-- policies do; every change is logged and notified on csv_image_reviews (the review page listens).

-- Internal: the rows of p_batch_id named by p_rows (all rows when NULL), as job ids.
CREATE OR REPLACE FUNCTION csv_review_target_rows(p_batch_id uuid, p_rows integer[])
RETURNS bigint[]
LANGUAGE sql STABLE AS $$
    SELECT coalesce(array_agg(j.id ORDER BY j.row_number), '{}')
    FROM public.csv_row_jobs j
    WHERE j.batch_id = p_batch_id AND (p_rows IS NULL OR j.row_number = ANY (p_rows));
$$;

-- Approve or reject (p_action 'approve' / 'reject' / 'clear') the current image of p_style (both styles when
-- NULL) of the given rows (all rows when NULL) that have one. Returns how many images changed.
-- Locks: the batch row (ownership), then the rows' job rows.
CREATE OR REPLACE FUNCTION review_csv_images(p_batch_id uuid, p_rows integer[], p_style text, p_action text)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_state text;
    v_styles text[];
    v_count integer := 0;
    v_style text;
    v_changed integer;
BEGIN
    PERFORM public.csv_lock_owned_batch(p_batch_id);
    v_state := CASE p_action WHEN 'approve' THEN 'approved' WHEN 'reject' THEN 'rejected'
                             WHEN 'clear' THEN 'unreviewed' END;
    IF v_state IS NULL THEN
        RAISE EXCEPTION 'unknown review action %; use approve, reject or clear', p_action USING ERRCODE = '22023';
    END IF;
    IF p_style IS NOT NULL AND p_style NOT IN ('lifestyle_emotional', 'single_white_background') THEN
        RAISE EXCEPTION 'unknown image style %; use lifestyle_emotional or single_white_background', p_style
            USING ERRCODE = '22023';
    END IF;
    v_styles := CASE WHEN p_style IS NULL THEN ARRAY['lifestyle_emotional', 'single_white_background']
                     ELSE ARRAY[p_style] END;
    FOREACH v_style IN ARRAY v_styles LOOP
        WITH upd AS (
            UPDATE public.csv_row_jobs j
               SET review = coalesce(j.review, '{}'::jsonb) || jsonb_build_object(v_style, jsonb_build_object(
                       'state', v_state, 'by', auth.uid(), 'at', now())),
                   updated_at = now()
             WHERE j.id = ANY (public.csv_review_target_rows(p_batch_id, p_rows))
               AND j.status = 'completed'
               AND jsonb_typeof(j.generated_images) = 'array'
               AND EXISTS (SELECT 1 FROM jsonb_array_elements(j.generated_images) i WHERE i ->> 'style' = v_style)
               AND coalesce(j.review -> v_style ->> 'state', 'unreviewed') IS DISTINCT FROM v_state
            RETURNING 1
        )
        SELECT count(*) INTO v_changed FROM upd;
        v_count := v_count + v_changed;
    END LOOP;
    IF v_count > 0 THEN
        INSERT INTO public.csv_processing_logs (batch_id, log_level, message, operation, details)
        VALUES (p_batch_id, 'INFO', format('%s image(s) %s', v_count, v_state), 'images_' || v_state,
                jsonb_build_object('rows', p_rows, 'style', p_style, 'count', v_count));
        PERFORM pg_notify('csv_image_reviews', p_batch_id::text);
    END IF;
    RETURN v_count;
END
$$;

-- Ask for new versions of the image of p_style (both when NULL) of the given rows, with an optional note for the
-- prompt. Only completed rows can be redone; each goes back to pending (and the batch to processing) with the
-- request in its checkpoint, and its counters are taken back as a retry does. Returns how many rows were queued.
-- Locks: the batch row, then the rows' job rows.
CREATE OR REPLACE FUNCTION request_csv_image_regeneration(
    p_batch_id uuid, p_rows integer[], p_style text, p_note text DEFAULT NULL
) RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_batch public.csv_batches;
    v_request jsonb := '{}';
    v_count integer;
BEGIN
    v_batch := public.csv_lock_owned_batch(p_batch_id);
    IF v_batch.status = 'cancelled' THEN
        RAISE EXCEPTION 'batch % is cancelled; its images cannot be redone', p_batch_id USING ERRCODE = '55000';
    END IF;
    IF p_style IS NOT NULL AND p_style NOT IN ('lifestyle_emotional', 'single_white_background') THEN
        RAISE EXCEPTION 'unknown image style %; use lifestyle_emotional or single_white_background', p_style
            USING ERRCODE = '22023';
    END IF;
    IF length(coalesce(p_note, '')) > 1000 THEN
        RAISE EXCEPTION 'the note is % characters; keep it under 1000', length(p_note) USING ERRCODE = '22023';
    END IF;
    SELECT jsonb_object_agg(s, jsonb_build_object('note', nullif(btrim(coalesce(p_note, '')), ''),
                                                  'by', auth.uid(), 'at', now()))
      INTO v_request
      FROM unnest(CASE WHEN p_style IS NULL THEN ARRAY['lifestyle_emotional', 'single_white_background']
                       ELSE ARRAY[p_style] END) AS s;
    WITH redo AS (
        UPDATE public.csv_row_jobs j
           SET status = 'pending', retry_count = 0, error_message = NULL, completed_at = NULL,
               checkpoint = j.checkpoint || jsonb_build_object('regenerate',
                                coalesce(j.checkpoint -> 'regenerate', '{}'::jsonb) || v_request),
               updated_at = now()
         WHERE j.id = ANY (public.csv_review_target_rows(p_batch_id, p_rows)) AND j.status = 'completed'
        RETURNING 1
    )
    SELECT count(*) INTO v_count FROM redo;
    IF v_count > 0 THEN
        UPDATE public.csv_batches SET
            successful_rows = successful_rows - v_count,
            processed_rows = processed_rows - v_count,
            status = CASE WHEN status IN ('completed', 'failed') THEN 'processing' ELSE status END,
            completed_at = NULL,
            updated_at = now()
        WHERE id = p_batch_id;
        INSERT INTO public.csv_processing_logs (batch_id, log_level, message, operation, details)
        VALUES (p_batch_id, 'INFO', format('%s row(s) queued to redo %s', v_count,
                                           coalesce(p_style, 'both images')), 'images_regenerate',
                jsonb_build_object('rows', p_rows, 'style', p_style, 'note', p_note, 'count', v_count));
        PERFORM pg_notify('csv_row_jobs', p_batch_id::text);
        PERFORM pg_notify('csv_batch_progress', p_batch_id::text);
        PERFORM pg_notify('csv_image_reviews', p_batch_id::text);
    END IF;
    RETURN v_count;
END
$$;
