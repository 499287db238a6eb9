"""Example files bundled with csvjobs."""
