"""features translators."""
