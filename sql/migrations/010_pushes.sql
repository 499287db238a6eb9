-- 010_pushes.sql: the push ledger. One row per generated image csvjobs adds to a product in a shop through the
-- shop's API (shops/push.py), written before the shop is asked (state 'started') and moved on as the shop answers
-- ('attached': the shop holds it under media_id; 'ready': the shop finished processing it; 'failed': it did not;
-- 'removed': --replace-pushed took it off again). A re-run reads it first, so nothing is added twice; a push cut
-- off between asking and recording finds its image in the shop by the file name it was sent under (its marker).
CREATE TABLE IF NOT EXISTS csv_pushes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id uuid NOT NULL,
    batch_id uuid NOT NULL,
    row_number integer NOT NULL,
    style text NOT NULL,
    image_sha256 text NOT NULL,
    shop text NOT NULL CHECK (shop IN ('shopify', 'woocommerce')),
    -- The store's address as given (no credentials: push refuses a URL with userinfo).
    store text NOT NULL,
    -- The shop's own id of the product the image went to, and of the media it became.
    product_id text NOT NULL,
    media_id text,
    state text NOT NULL CHECK (state IN ('started', 'attached', 'ready', 'failed', 'removed')),
    error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- An image is on a product once: a second live row for the same image and product cannot be written.
CREATE UNIQUE INDEX IF NOT EXISTS csv_pushes_once_idx ON csv_pushes (shop, store, product_id, image_sha256)
    WHERE state <> 'removed';
CREATE INDEX IF NOT EXISTS csv_pushes_batch_idx ON csv_pushes (batch_id, row_number, style);

ALTER TABLE csv_pushes ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS csv_pushes_own ON csv_pushes;
CREATE POLICY csv_pushes_own ON csv_pushes FOR ALL TO authenticated
    USING (user_id = (SELECT auth.uid())) WITH CHECK (user_id = (SELECT auth.uid()));
DROP POLICY IF EXISTS csv_pushes_service ON csv_pushes;
CREATE POLICY csv_pushes_service ON csv_pushes FOR ALL TO service_role USING (true) WITH CHECK (true);

REVOKE ALL ON csv_pushes FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT, INSERT, UPDATE ON csv_pushes TO authenticated, service_role;
REVOKE ALL ON SEQUENCE csv_pushes_id_seq FROM PUBLIC, anon, authenticated, service_role;
