"""Operating csvjobs as a user or an operator: progress, logs, worker health, batch control, export and
maintenance (migrations, cleanup, the embedded server, the template)."""
