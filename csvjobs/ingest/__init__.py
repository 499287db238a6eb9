"""Ingest: a CSV file -> a detected format (csv_format) -> rows mapped onto the pipeline's fields
(column_mapping, row_stream) -> binary COPY data (copy_encoding), parsed in a child process for big files
(child_producer, parser_process) -> one batch of row jobs (upload)."""
