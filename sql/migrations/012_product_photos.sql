-- 012: the product's own photo. csv_row_job_product() gives image_url with the other fields (a URL, or a path
-- beside the CSV that the upload stored with the batch); jobs written before it have none, so it comes out ''.

-- The whole product of a job: its stored fields, else the row_data column the batch maps the field from, else ''.
-- Jobs whose product holds every field (written before the lean layout) come out unchanged.
CREATE OR REPLACE FUNCTION csv_row_job_product(p_row_data json, p_product jsonb, p_column_mapping jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT jsonb_object_agg(f.name, coalesce(p_product ->> f.name,
                                             p_row_data ->> (p_column_mapping -> 'row_data_keys' ->> f.name),
                                             ''))
    FROM unnest(ARRAY['country', 'product_type', 'size', 'mpn', 'description', 'title', 'image_url']) AS f(name);
$$;
