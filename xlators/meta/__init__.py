"""meta translators."""
