-- privileges.sql: who may call which csvjobs function, stated whole after every function file is applied, so
-- that a Supabase project's default privileges (EXECUTE on every new function for anon, authenticated and
-- service_role) leave nothing open that was not meant to be.

-- Every csvjobs function: nobody but the owner, then exactly the grants below. By name, not every function in
-- public: a function a newer csvjobs no longer defines (kept for workers of the previous version during a rolling
-- upgrade) keeps the grants it had.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = 'public'::regnamespace
          AND p.proname = ANY (ARRAY[
              'csv_add_batch_results', 'csv_release_jobs', 'csv_reclaim_timed_out_jobs', 'claim_csv_row_jobs',
              'claim_next_csv_row_job', 'update_csv_row_job_results', 'update_csv_row_job_result',
              'save_csv_row_job_checkpoint', 'update_csv_worker_heartbeat', 'release_csv_worker_jobs',
              'get_csv_batch_progress', 'cleanup_stale_csv_workers', 'queue_csv_batch', 'csv_outstanding_jobs',
              'csv_batches_needing_dedicated_workers', 'write_csv_processing_logs', 'acquire_csv_rate_limit',
              'pause_csv_rate_limit', 'csv_rate_limit_pause_remaining', 'csv_lock_owned_batch',
              'retry_csv_batch_rows', 'set_csv_batch_state', 'csv_row_job_product', 'csv_notify_new_logs',
              'csv_delete_rows_of_deleted_batches', 'csv_caller_is_service', 'csv_batches_start_clean',
              'get_csv_workers', 'csv_batch_has_pending_jobs', 'csv_review_target_rows',
              'csv_review_rows', 'csv_check_image_style',
              'review_csv_images', 'request_csv_image_regeneration', 'csv_openai_submission_holder',
              'csv_openai_submission_take_rows', 'open_csv_openai_submission', 'lease_csv_openai_submissions',
              'update_csv_openai_submission', 'split_csv_openai_submission', 'release_csv_openai_submission_rows',
              'finish_csv_openai_submission', 'release_csv_openai_submission_leases', 'csv_fold_batch_counters',
              'csv_reused_row_done', 'csv_start_batch', 'reserve_csv_row_cost', 'set_csv_batch_budget',
              'set_csv_image_alt_text', 'restore_csv_image_version', 'csv_quick_claim', 'reserve_csv_call_cost',
              'unreserve_csv_call_cost', 'record_csv_paid_call', 'csv_fold_idle_batches',
              'csv_paid_calls_append_only', 'redo_csv_placeholder_images', 'csv_reopen_batch',
              'csv_row_needs_eyes', 'approve_csv_unflagged_images', 'csv_write_review',
              'csv_check_review_rows', 'csv_images_need_eyes', 'csv_redone_rows', 'csv_review_changes',
              'csv_review_patch'])
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC, anon, authenticated, service_role', f);
    END LOOP;
END
$$;

GRANT EXECUTE ON FUNCTION
    csv_add_batch_results(uuid, integer, integer, numeric),
    csv_fold_batch_counters(uuid, boolean),
    csv_reused_row_done(bigint),
    csv_start_batch(uuid, text),
    csv_quick_claim(),
    csv_release_jobs(bigint[], boolean, text),
    csv_reclaim_timed_out_jobs(numeric),
    csv_batch_has_pending_jobs(uuid),
    claim_csv_row_jobs(text, uuid, numeric, integer, uuid, text, boolean),
    claim_next_csv_row_job(text, uuid, numeric),
    update_csv_row_job_results(text, jsonb),
    update_csv_row_job_result(bigint, text, text, jsonb, jsonb, jsonb, numeric, text, text, integer),
    save_csv_row_job_checkpoint(bigint, text, integer, jsonb),
    update_csv_worker_heartbeat(text, text, integer, integer, integer, integer, uuid, uuid, text, integer),
    release_csv_worker_jobs(text, boolean, bigint[]),
    cleanup_stale_csv_workers(numeric),
    queue_csv_batch(uuid, integer, integer),
    csv_outstanding_jobs(uuid, uuid, text),
    csv_batches_needing_dedicated_workers(integer, uuid),
    write_csv_processing_logs(text, jsonb),
    acquire_csv_rate_limit(text, numeric),
    pause_csv_rate_limit(text, numeric),
    csv_rate_limit_pause_remaining(text),
    csv_openai_submission_holder(bigint),
    csv_openai_submission_take_rows(text, uuid, text, bigint[]),
    open_csv_openai_submission(text, uuid, text, bigint[]),
    lease_csv_openai_submissions(text, numeric, integer, uuid, uuid),
    update_csv_openai_submission(bigint, text, jsonb, numeric, numeric),
    split_csv_openai_submission(bigint, text, text, bigint[]),
    release_csv_openai_submission_rows(bigint, text, bigint[], boolean, text),
    finish_csv_openai_submission(bigint, text, jsonb),
    release_csv_openai_submission_leases(text),
    reserve_csv_row_cost(bigint, text, integer, numeric, numeric),
    reserve_csv_call_cost(bigint, text, integer, numeric, numeric, boolean),
    unreserve_csv_call_cost(bigint, text, integer, numeric),
    record_csv_paid_call(bigint, text, integer, jsonb),
    csv_fold_idle_batches()
TO service_role;
GRANT EXECUTE ON FUNCTION
    get_csv_batch_progress(uuid),
    retry_csv_batch_rows(uuid, integer[]),
    set_csv_batch_state(uuid, text),
    csv_row_job_product(json, jsonb, jsonb),
    review_csv_images(uuid, integer[], text, text),
    request_csv_image_regeneration(uuid, integer[], text, text),
    set_csv_batch_budget(uuid, numeric),
    set_csv_image_alt_text(uuid, integer[], text, text),
    restore_csv_image_version(uuid, integer, text, integer),
    redo_csv_placeholder_images(uuid),
    csv_row_needs_eyes(uuid, integer, jsonb, jsonb),
    csv_images_need_eyes(jsonb, jsonb),
    csv_redone_rows(uuid),
    approve_csv_unflagged_images(uuid)
TO authenticated, service_role;
-- Harmless to anyone, and needed by the policies, triggers and functions that run as the caller.
GRANT EXECUTE ON FUNCTION csv_caller_is_service(), get_csv_workers(boolean) TO anon, authenticated, service_role;
