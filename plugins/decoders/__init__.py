"""Built-in decoders (see zoo_plugins)."""
