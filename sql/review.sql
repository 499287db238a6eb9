-- review.sql: the merchant's review of the generated images. Each row's current image of each style can be
-- approved or rejected (csv_row_reviews), and redone with an optional note: the request puts the row back to
-- pending with the styles to redo in its checkpoint, the worker pays for exactly those images (the prompts and the
-- other image are reused), and the image it replaces is kept as a version in csv_image_versions, never lost.
-- Users change review state only through the SECURITY DEFINER functions here, which check ownership as the
-- policies do; every change is logged and notified on csv_image_reviews (the review page listens).

-- Internal: refuse row numbers past the file's last data row (or below 1), naming them: a typo must not look like
-- "0 changed". A number the file had but the upload left out (an image-only row, an invalid row skipped) passes,
-- so a range across it still applies to the rows around it. NULL (every row) passes.
CREATE OR REPLACE FUNCTION csv_check_review_rows(p_batch_id uuid, p_rows integer[])
RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_beyond integer[];
    v_last integer;
BEGIN
    IF p_rows IS NULL THEN
        RETURN;
    END IF;
    -- The file's data rows: those written and those left out.
    SELECT b.total_rows + b.skipped_rows INTO v_last FROM public.csv_batches b WHERE b.id = p_batch_id;
    IF EXISTS (SELECT 1 FROM unnest(p_rows) n WHERE n > coalesce(v_last, 0) OR n < 1) THEN
        -- Only then the batch's highest row number (a batch from before skipped rows were counted has it): it is a
        -- pass over the batch's rows, which a bulk decision within the file's rows does not pay for.
        v_last := greatest(v_last, (SELECT max(j.row_number) FROM public.csv_row_jobs j
                                    WHERE j.batch_id = p_batch_id));
        SELECT array_agg(DISTINCT n ORDER BY n) INTO v_beyond FROM unnest(p_rows) n
        WHERE n > coalesce(v_last, 0) OR n < 1;
        IF v_beyond IS NOT NULL THEN
            RAISE EXCEPTION 'batch % has no row %', left(p_batch_id::text, 8), array_to_string(v_beyond, ', ')
                USING ERRCODE = '22023',
                      HINT = format('row numbers are the file''s data rows, from 1 to %s', coalesce(v_last, 0));
        END IF;
    END IF;
END
$$;

-- Internal: the rows of p_batch_id named by p_rows (all rows when NULL), as job ids, in row order; row numbers
-- checked by csv_check_review_rows.
CREATE OR REPLACE FUNCTION csv_review_target_rows(p_batch_id uuid, p_rows integer[])
RETURNS bigint[]
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_ids bigint[];
BEGIN
    PERFORM public.csv_check_review_rows(p_batch_id, p_rows);
    SELECT coalesce(array_agg(j.id ORDER BY j.row_number), '{}') INTO v_ids
    FROM public.csv_row_jobs j
    -- A semi-join on the numbers, not "= ANY (p_rows)": a parameter array is searched element by element for
    -- every row, so 100,000 numbers over 100,000 rows made ten billion comparisons.
    WHERE j.batch_id = p_batch_id AND (p_rows IS NULL OR j.row_number IN (SELECT unnest(p_rows)));
    RETURN v_ids;
END
$$;

-- Internal: refuse a style that is not one of the two images' (NULL, "both", only when not p_required).
CREATE OR REPLACE FUNCTION csv_check_image_style(p_style text, p_required boolean)
RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF (p_style IS NULL AND p_required)
       OR (p_style IS NOT NULL AND p_style NOT IN ('lifestyle_emotional', 'single_white_background')) THEN
        RAISE EXCEPTION 'unknown image style %; use lifestyle_emotional or single_white_background', p_style
            USING ERRCODE = '22023';
    END IF;
END
$$;

-- (the rows sharing the given rows' images, now worked out with the rows themselves by csv_review_rows)
DROP FUNCTION IF EXISTS csv_review_sharing_rows(uuid, bigint[]);

-- Review by exception. A row needs the merchant's eyes when one of its images was flagged by the fidelity check
-- (the product may have changed), fails a rule of the batch's channels or is a placeholder (no image model made
-- it), when the photo its file gave could not be used (its images are the model's idea of the product), or when it
-- was redone (it has earlier versions). The rest can be approved in one action after a spot-check of a sample of
-- them. The review page's filter, its counts and the bulk approval all say it with the two functions below, over
-- a whole batch: csv_images_need_eyes(images, checkpoint) OR row_number IN (SELECT csv_redone_rows(batch)).
-- (Two, because a function holding a subquery is not inlined: called once a row, it took 1.1 s of 1.2 s on
-- 100,000 rows; inlined, the redone rows are one hashed set.)

-- The row's own part: an image flagged, failing a channel rule or a placeholder, or a photo that could not be used.
CREATE OR REPLACE FUNCTION csv_images_need_eyes(p_images jsonb, p_checkpoint jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(jsonb_path_exists(CASE WHEN jsonb_typeof(p_images) = 'array' THEN p_images END,
                                      '$[*] ? (@.flagged == true || @.placeholder == true'
                                      ' || exists(@.checks.* ? (@.passed == false)))'),
                    false)
        OR coalesce(p_checkpoint ? 'reference_error', false);
$$;

-- The batch's redone rows (those with earlier versions), as row numbers.
CREATE OR REPLACE FUNCTION csv_redone_rows(p_batch_id uuid)
RETURNS SETOF integer
LANGUAGE sql STABLE AS $$
    SELECT v.row_number FROM public.csv_image_versions v WHERE v.batch_id = p_batch_id;
$$;

-- One row's answer, for a caller asking about a row at a time.
CREATE OR REPLACE FUNCTION csv_row_needs_eyes(p_batch_id uuid, p_row integer, p_images jsonb, p_checkpoint jsonb)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT public.csv_images_need_eyes(p_images, p_checkpoint)
        OR EXISTS (SELECT 1 FROM public.csv_redone_rows(p_batch_id) AS r(n) WHERE r.n = p_row);
$$;

-- (its arguments were the rows' ids until decisions moved to csv_row_reviews)
DROP FUNCTION IF EXISTS csv_write_review(bigint[], text[], jsonb, boolean);

-- Internal: whether a decision to p_state changes an image whose state is p_current (NULL: never decided), and
-- (p_only_unreviewed) applies to it at all.
CREATE OR REPLACE FUNCTION csv_review_changes(p_current text, p_state text, p_only_unreviewed boolean)
RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(p_current, 'unreviewed') IS DISTINCT FROM p_state
       AND (NOT p_only_unreviewed OR coalesce(p_current, 'unreviewed') = 'unreviewed');
$$;

-- Internal: what a decision p_entry adds to a row's review p_review for the images it changes (p_lifestyle,
-- p_white): each such style's entry, keeping an alt text the merchant edited.
CREATE OR REPLACE FUNCTION csv_review_patch(p_review jsonb, p_lifestyle boolean, p_white boolean, p_entry jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_lifestyle THEN jsonb_build_object('lifestyle_emotional', p_entry
                    || jsonb_strip_nulls(jsonb_build_object('alt_text',
                                                            p_review -> 'lifestyle_emotional' -> 'alt_text')))
                ELSE '{}' END
        || CASE WHEN p_white THEN jsonb_build_object('single_white_background', p_entry
                    || jsonb_strip_nulls(jsonb_build_object('alt_text',
                                                            p_review -> 'single_white_background' -> 'alt_text')))
                ELSE '{}' END;
$$;

-- Internal: the rows a review action on p_rows (every row when NULL) of p_batch_id applies to: the completed rows
-- named and the completed rows sharing their images (a look-alike variant that reuses another row's images,
-- csv_row_jobs.reuses_job, while its images are still that row's; the row it reuses; that row's other such
-- variants: a merchant's decision on one image is a decision on every row that shows it), each with whether it
-- has a current image of p_style (of each style when NULL); p_unflagged: only the rows that need no eyes.
-- A bounded number of passes: the batch's rows read once (the rows named and every look-alike variant; a reused
-- row outside them by its key), every lookup a hashed set, so it stays linear in the rows whatever their number.
-- The one home of "which rows share an image": decisions (csv_write_review) and alt texts use it.
CREATE OR REPLACE FUNCTION csv_review_rows(p_batch_id uuid, p_rows integer[], p_style text, p_unflagged boolean)
RETURNS TABLE (id bigint, batch_id uuid, has_lifestyle boolean, has_white boolean)
LANGUAGE sql STABLE AS $$
    WITH scanned AS MATERIALIZED (
        -- One pass over the batch: every row (p_rows NULL), else the rows named and every look-alike variant.
        -- (The numbers as hashed sets, "IN (SELECT unnest(...))": a join with them could be planned as a nested
        -- loop over 100,000 numbers for every row.)
        SELECT j.id, j.batch_id, j.reuses_job,
               j.status = 'completed' AND jsonb_typeof(j.generated_images) = 'array' AS completed,
               p_rows IS NULL OR j.row_number IN (SELECT unnest(p_rows)) AS named,
               coalesce(j.usage ? 'reuses_row', false) AND j.reuses_job IS NOT NULL AS variant,
               coalesce(p_style, 'lifestyle_emotional') = 'lifestyle_emotional'
                   AND j.generated_images @> '[{"style": "lifestyle_emotional"}]' AS has_lifestyle,
               coalesce(p_style, 'single_white_background') = 'single_white_background'
                   AND j.generated_images @> '[{"style": "single_white_background"}]' AS has_white,
               NOT p_unflagged
                   OR NOT (public.csv_images_need_eyes(j.generated_images, j.checkpoint)
                           OR j.row_number IN (SELECT r.n FROM public.csv_redone_rows(p_batch_id) AS r(n)))
                   AS eligible
          FROM public.csv_row_jobs j
         WHERE j.batch_id = p_batch_id
           AND (p_rows IS NULL OR j.row_number IN (SELECT unnest(p_rows)) OR j.usage ? 'reuses_row')
    ), owners AS MATERIALIZED (
        -- (the rows the named look-alike variants reuse; with every row named, there is nothing to add)
        SELECT s.reuses_job AS id FROM scanned s WHERE p_rows IS NOT NULL AND s.named AND s.variant
    )
    SELECT s.id, s.batch_id, s.has_lifestyle, s.has_white
      FROM scanned s
     WHERE s.completed AND s.eligible
       AND (s.named OR (s.variant AND (s.reuses_job IN (SELECT o.id FROM owners o)
                                       OR s.reuses_job IN (SELECT n.id FROM scanned n WHERE n.named))))
    UNION ALL
    -- (an owner outside the rows named: read by its key, the few there are; p_unflagged comes with every row)
    SELECT j.id, j.batch_id,
           coalesce(p_style, 'lifestyle_emotional') = 'lifestyle_emotional'
               AND j.generated_images @> '[{"style": "lifestyle_emotional"}]',
           coalesce(p_style, 'single_white_background') = 'single_white_background'
               AND j.generated_images @> '[{"style": "single_white_background"}]'
      FROM public.csv_row_jobs j
     WHERE j.id = ANY (ARRAY(SELECT o.id FROM owners o EXCEPT SELECT n.id FROM scanned n WHERE n.named))
       AND j.batch_id = p_batch_id AND j.status = 'completed' AND jsonb_typeof(j.generated_images) = 'array';
$$;

-- Internal: write one decision (p_entry: its state, by, at) on the current images of p_style (both when NULL) of
-- the completed rows of p_batch_id named by p_rows (every row when NULL) and of the rows sharing their images
-- (csv_review_rows), where the image's state differs from it (p_only_unreviewed: where it is still unreviewed;
-- p_unflagged: only rows that need no eyes). An alt text the merchant edited stays. Returns how many images
-- changed.
-- One statement of a bounded number of passes: the rows found by csv_review_rows, then each decision updated in
-- place where it changes and each undecided row given one (csv_row_reviews, 012_row_reviews.sql). Nothing
-- between the read and the write is sorted or held (staging the decisions read, the changes and the patches in
-- CTEs of their own took a third of a changed decision), and the patch of a row without an edited alt text is
-- built once.
-- Nested loops are off: the decisions table is read while rows are written to it, and statistics taken before a
-- first bulk decision say it is empty, so a loop over it for every row looked free and was quadratic; hash joins
-- are linear whatever the statistics say. jit is off because its compile time was a quarter of a 100,000-row
-- decision; work_mem is raised so that its hashes of 100,000 rows stay in memory.
CREATE OR REPLACE FUNCTION csv_write_review(p_batch_id uuid, p_rows integer[], p_style text, p_entry jsonb,
                                            p_only_unreviewed boolean, p_unflagged boolean)
RETURNS integer
LANGUAGE sql
SET jit = off
SET work_mem = '64MB'
SET enable_nestloop = off
AS $$
    WITH targets AS MATERIALIZED (
        SELECT t.id, t.batch_id, t.has_lifestyle, t.has_white
          FROM public.csv_review_rows(p_batch_id, p_rows, p_style, p_unflagged) t
         WHERE t.has_lifestyle OR t.has_white
    ), entries AS MATERIALIZED (
        -- (the patches of a row without an edited alt text, built once)
        SELECT jsonb_build_object('lifestyle_emotional', p_entry) AS lifestyle,
               jsonb_build_object('single_white_background', p_entry) AS white,
               jsonb_build_object('lifestyle_emotional', p_entry, 'single_white_background', p_entry) AS both
    ), updated AS (
        -- The rows with a decision: each image's state read from the row as it was (o), the row rewritten (r)
        -- where one changes.
        UPDATE public.csv_row_reviews r
           SET review = r.review || c.patch
          FROM (SELECT o.row_job_id, x.lifestyle::int + x.white::int AS images,
                       CASE WHEN o.review -> 'lifestyle_emotional' ? 'alt_text'
                                 OR o.review -> 'single_white_background' ? 'alt_text'
                            THEN public.csv_review_patch(o.review, x.lifestyle, x.white, p_entry)
                            WHEN x.lifestyle AND x.white THEN (SELECT e.both FROM entries e)
                            WHEN x.lifestyle THEN (SELECT e.lifestyle FROM entries e)
                            ELSE (SELECT e.white FROM entries e) END AS patch
                  FROM targets t
                  JOIN public.csv_row_reviews o ON o.row_job_id = t.id
                 CROSS JOIN LATERAL (
                       SELECT t.has_lifestyle
                                  AND public.csv_review_changes(o.review -> 'lifestyle_emotional' ->> 'state',
                                                                p_entry ->> 'state', p_only_unreviewed) AS lifestyle,
                              t.has_white
                                  AND public.csv_review_changes(o.review -> 'single_white_background' ->> 'state',
                                                                p_entry ->> 'state', p_only_unreviewed) AS white) x
                 WHERE o.batch_id = p_batch_id AND (x.lifestyle OR x.white)) c
         WHERE r.row_job_id = c.row_job_id AND r.batch_id = p_batch_id
        RETURNING c.images
    ), inserted AS (
        -- The rows without one (every image unreviewed). No ON CONFLICT, which cost a third of a first decision
        -- on 100,000 rows: every writer of decisions holds the batch's lock, so a row found undecided is still
        -- so, and a conflict would be an error, not a loss.
        INSERT INTO public.csv_row_reviews (row_job_id, batch_id, review)
        SELECT t.id, t.batch_id,
               CASE WHEN t.has_lifestyle AND t.has_white THEN (SELECT e.both FROM entries e)
                    WHEN t.has_lifestyle THEN (SELECT e.lifestyle FROM entries e)
                    ELSE (SELECT e.white FROM entries e) END
          FROM targets t
         WHERE p_entry ->> 'state' <> 'unreviewed'
           AND NOT EXISTS (SELECT 1 FROM public.csv_row_reviews o
                           WHERE o.row_job_id = t.id AND o.batch_id = p_batch_id)
        RETURNING (review ? 'lifestyle_emotional')::int + (review ? 'single_white_background')::int AS images
    )
    SELECT (coalesce((SELECT sum(images) FROM updated), 0) + coalesce((SELECT sum(images) FROM inserted), 0))::integer;
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
    v_entry jsonb;
    v_count integer := 0;
BEGIN
    PERFORM public.csv_lock_owned_batch(p_batch_id);
    v_state := CASE p_action WHEN 'approve' THEN 'approved' WHEN 'reject' THEN 'rejected'
                             WHEN 'clear' THEN 'unreviewed' END;
    IF v_state IS NULL THEN
        RAISE EXCEPTION 'unknown review action %; use approve, reject or clear', p_action USING ERRCODE = '22023';
    END IF;
    PERFORM public.csv_check_image_style(p_style, false);
    PERFORM public.csv_check_review_rows(p_batch_id, p_rows);
    -- The decision once (auth.uid() parses the session's claims on every call), written in one statement.
    v_entry := jsonb_build_object('state', v_state, 'by', auth.uid(), 'at', now());
    v_count := public.csv_write_review(p_batch_id, p_rows, p_style, v_entry, false, false);
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
    PERFORM public.csv_check_image_style(p_style, false);
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
          FROM unnest(public.csv_review_target_rows(p_batch_id, p_rows)) AS t(id)
         WHERE j.id = t.id AND j.status = 'completed'
        RETURNING 1
    )
    SELECT count(*) INTO v_count FROM redo;
    IF v_count > 0 THEN
        PERFORM public.csv_reopen_batch(p_batch_id, v_count, 0);
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

-- Redo exactly the placeholder images of a batch (the offline provider's, made without an OpenAI key): each row
-- whose own image of a style is a placeholder goes back to pending with that style to redo (its real images, its
-- prompts and any cut-out are kept, as a reviewer's redo keeps them), and each look-alike variant that showed such
-- a row's placeholders goes back to pending as it was first, to reuse the new images at no cost once that row is
-- done. Returns how many rows were queued.
-- Locks: the batch row, then the rows' job rows.
CREATE OR REPLACE FUNCTION redo_csv_placeholder_images(p_batch_id uuid)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_batch public.csv_batches;
    v_count integer;
BEGIN
    v_batch := public.csv_lock_owned_batch(p_batch_id);
    IF v_batch.status = 'cancelled' THEN
        RAISE EXCEPTION 'batch % is cancelled; its images cannot be redone', p_batch_id USING ERRCODE = '55000';
    END IF;
    WITH owners AS (
        SELECT j.id, (SELECT jsonb_object_agg(i ->> 'style', jsonb_build_object(
                                'note', NULL, 'by', auth.uid(), 'at', now(), 'placeholder', true))
                      FROM jsonb_array_elements(j.generated_images) i
                      WHERE coalesce((i ->> 'placeholder')::boolean, false)) AS request
        FROM public.csv_row_jobs j
        WHERE j.batch_id = p_batch_id AND j.status = 'completed'
          AND jsonb_path_exists(j.generated_images, '$[*] ? (@.placeholder == true)')
          AND NOT coalesce(j.usage ? 'reuses_row', false)
    ), redo AS (
        UPDATE public.csv_row_jobs j
           SET status = 'pending', retry_count = 0, error_message = NULL, completed_at = NULL,
               checkpoint = j.checkpoint || jsonb_build_object('regenerate',
                                coalesce(j.checkpoint -> 'regenerate', '{}'::jsonb) || o.request),
               updated_at = now()
          FROM owners o
         WHERE j.id = o.id
        RETURNING j.id
    ), variants AS (
        -- (the variants of rows being redone, whose images are still those rows' placeholders)
        UPDATE public.csv_row_jobs v
           SET status = 'pending', retry_count = 0, error_message = NULL, completed_at = NULL, updated_at = now()
         WHERE v.batch_id = p_batch_id AND v.status = 'completed' AND v.reuses_job IN (SELECT id FROM owners)
           AND v.usage ? 'reuses_row'
           AND jsonb_path_exists(v.generated_images, '$[*] ? (@.placeholder == true)')
        RETURNING v.id
    )
    SELECT (SELECT count(*) FROM redo) + (SELECT count(*) FROM variants) INTO v_count;
    IF v_count > 0 THEN
        PERFORM public.csv_reopen_batch(p_batch_id, v_count, 0);
        INSERT INTO public.csv_processing_logs (batch_id, log_level, message, operation, details)
        VALUES (p_batch_id, 'INFO', format('%s row(s) queued to replace their placeholder images', v_count),
                'images_regenerate', jsonb_build_object('placeholders', true, 'count', v_count));
        PERFORM pg_notify('csv_row_jobs', p_batch_id::text);
        PERFORM pg_notify('csv_batch_progress', p_batch_id::text);
        PERFORM pg_notify('csv_image_reviews', p_batch_id::text);
    END IF;
    RETURN v_count;
END
$$;

-- Set the alt text of the current image of p_style of the given completed rows and of the rows sharing it
-- (csv_review_rows), as the merchant edited it on the review page; exports then use it instead of the prompt
-- model's. An empty text goes back to the model's. Returns how many rows changed.
-- Locks: the batch row (ownership), then the rows' job rows.
CREATE OR REPLACE FUNCTION set_csv_image_alt_text(p_batch_id uuid, p_rows integer[], p_style text, p_text text)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_text text := nullif(btrim(coalesce(p_text, '')), '');
    v_count integer;
BEGIN
    PERFORM public.csv_lock_owned_batch(p_batch_id);
    PERFORM public.csv_check_image_style(p_style, true);
    IF length(v_text) > 500 THEN
        RAISE EXCEPTION 'alt text of % characters; keep it under 500', length(v_text) USING ERRCODE = '22023';
    END IF;
    PERFORM public.csv_check_review_rows(p_batch_id, p_rows);
    WITH targets AS MATERIALIZED (
        SELECT t.id, t.batch_id FROM public.csv_review_rows(p_batch_id, p_rows, p_style, false) t
    ), written AS (
        INSERT INTO public.csv_row_reviews AS r (row_job_id, batch_id, review)
        SELECT t.id, t.batch_id, jsonb_build_object(p_style, jsonb_build_object('alt_text', v_text))
          FROM targets t WHERE v_text IS NOT NULL
        ON CONFLICT (row_job_id) DO UPDATE
           SET review = r.review || jsonb_build_object(p_style,
                            coalesce(r.review -> p_style, '{}'::jsonb) || jsonb_build_object('alt_text', v_text))
    ), cleared AS (
        -- (back to the model's: nothing to write where there is no decision)
        UPDATE public.csv_row_reviews r
           SET review = r.review || jsonb_build_object(p_style, coalesce(r.review -> p_style, '{}'::jsonb) - 'alt_text')
          FROM targets t
         WHERE v_text IS NULL AND r.row_job_id = t.id AND r.review ? p_style
    )
    SELECT count(*) INTO v_count FROM targets;
    IF v_count > 0 THEN
        INSERT INTO public.csv_processing_logs (batch_id, log_level, message, operation, details)
        VALUES (p_batch_id, 'INFO', format('alt text of %s image(s) edited', v_count), 'alt_text_edited',
                jsonb_build_object('rows', p_rows, 'style', p_style));
        PERFORM pg_notify('csv_image_reviews', p_batch_id::text);
    END IF;
    RETURN v_count;
END
$$;

-- Bring back an earlier version of a row's image of p_style: it becomes the current image again (with the review
-- it had), and the image it replaces is kept as the newest version, so nothing is ever lost. Returns the number of
-- the version the replaced image now is.
-- Locks: the batch row (ownership), then the job row.
CREATE OR REPLACE FUNCTION restore_csv_image_version(p_batch_id uuid, p_row integer, p_style text, p_version integer)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_job public.csv_row_jobs;
    v_review jsonb;
    v_old public.csv_image_versions;
    v_current jsonb;
    v_next integer;
BEGIN
    PERFORM public.csv_lock_owned_batch(p_batch_id);
    PERFORM public.csv_check_image_style(p_style, true);
    SELECT * INTO v_job FROM public.csv_row_jobs j
    WHERE j.id = (public.csv_review_target_rows(p_batch_id, ARRAY[p_row]))[1] FOR UPDATE;
    IF v_job.status IS DISTINCT FROM 'completed' OR jsonb_typeof(v_job.generated_images) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'row % is not completed: only a completed row''s images can be swapped', p_row
            USING ERRCODE = '55000';
    END IF;
    SELECT r.review INTO v_review FROM public.csv_row_reviews r WHERE r.row_job_id = v_job.id;
    SELECT * INTO v_old FROM public.csv_image_versions v
    WHERE v.row_job_id = v_job.id AND v.style = p_style AND v.version = p_version;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'row % has no version % of its % image', p_row, p_version, p_style USING ERRCODE = '22023';
    END IF;
    SELECT i.value INTO v_current FROM jsonb_array_elements(v_job.generated_images) i
    WHERE i.value ->> 'style' = p_style;
    IF v_current IS NULL THEN
        RAISE EXCEPTION 'row % has no current % image to swap', p_row, p_style USING ERRCODE = '55000';
    END IF;
    v_next := 1 + (SELECT max(v.version) FROM public.csv_image_versions v
                   WHERE v.row_job_id = v_job.id AND v.style = p_style);
    INSERT INTO public.csv_image_versions (batch_id, row_job_id, row_number, style, version, image, review,
                                           replaced_note, replaced_by)
    VALUES (p_batch_id, v_job.id, v_job.row_number, p_style, v_next, v_current,
            coalesce(v_review -> p_style ->> 'state', 'unreviewed'),
            format('replaced by version %s, restored', p_version), auth.uid());
    UPDATE public.csv_row_jobs j
       SET generated_images = (SELECT jsonb_agg(CASE WHEN i.value ->> 'style' = p_style THEN v_old.image
                                                     ELSE i.value END ORDER BY i.ordinality)
                               FROM jsonb_array_elements(v_job.generated_images) WITH ORDINALITY i),
           updated_at = now()
     WHERE j.id = v_job.id;
    INSERT INTO public.csv_row_reviews AS r (row_job_id, batch_id, review)
    VALUES (v_job.id, p_batch_id, jsonb_build_object(p_style, jsonb_build_object(
                'state', v_old.review, 'by', auth.uid(), 'at', now())))
    ON CONFLICT (row_job_id) DO UPDATE SET review = r.review || excluded.review;
    INSERT INTO public.csv_processing_logs (batch_id, row_job_id, row_number, log_level, message, operation, details)
    VALUES (p_batch_id, v_job.id, v_job.row_number, 'INFO',
            format('%s image: version %s restored (the replaced one is version %s)', p_style, p_version, v_next),
            'image_restored', jsonb_build_object('style', p_style, 'restored', p_version, 'kept_as', v_next));
    PERFORM pg_notify('csv_image_reviews', p_batch_id::text);
    RETURN v_next;
END
$$;


-- Approve every image still to review of the batch's completed rows that need no eyes (csv_row_needs_eyes): what
-- the merchant rejected or approved stays as it is. Returns how many images were approved.
-- Locks: the batch row, then the rows' job rows.
CREATE OR REPLACE FUNCTION approve_csv_unflagged_images(p_batch_id uuid)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_entry jsonb;
    v_count integer;
BEGIN
    PERFORM public.csv_lock_owned_batch(p_batch_id);
    v_entry := jsonb_build_object('state', 'approved', 'by', auth.uid(), 'at', now(), 'unflagged', true);
    v_count := public.csv_write_review(p_batch_id, NULL, NULL, v_entry, true, true);
    IF v_count > 0 THEN
        INSERT INTO public.csv_processing_logs (batch_id, log_level, message, operation, details)
        VALUES (p_batch_id, 'INFO', format('%s image(s) that need no eyes approved', v_count), 'images_approved',
                jsonb_build_object('unflagged', true, 'count', v_count));
        PERFORM pg_notify('csv_image_reviews', p_batch_id::text);
    END IF;
    RETURN v_count;
END
$$;
