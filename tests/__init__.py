"""cgic test suite."""
