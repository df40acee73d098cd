"""Built-in datasets (see zoo_plugins)."""
