"""The xlfs translator framework (public names are re-exported by ``xlators``)."""
