"""csvjobs: turn a product catalogue CSV into AI-generated marketing images, one PostgreSQL job per row."""

__version__ = "0.1.0"
