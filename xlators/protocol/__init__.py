"""protocol translators."""
