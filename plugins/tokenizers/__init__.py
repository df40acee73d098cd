"""Built-in tokenizers (see zoo_plugins)."""
