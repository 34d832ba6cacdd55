"""Data-quality checks of the validate stage (Great Expectations suites run on the rows read)."""
