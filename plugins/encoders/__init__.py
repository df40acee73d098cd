"""Built-in encoders (see zoo_plugins)."""
