"""Reading sources: CSV files (local, file://, gs://, globs, gzip) into typed Arrow tables."""
