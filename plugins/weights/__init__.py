"""Built-in weights (see zoo_plugins)."""
