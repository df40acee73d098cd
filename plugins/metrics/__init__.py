"""Built-in metrics (see zoo_plugins)."""
