"""Built-in training objectives (see zoo_plugins)."""
