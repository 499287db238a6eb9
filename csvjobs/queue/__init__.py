"""The queue: claiming rows, reporting results, the worker loop, the supervisor that runs worker processes, and
the rate limits they share, all through the SQL functions in sql/claim.sql, results.sql and workers.sql (the call
sites are in queries.py)."""
