"""debug translators."""
