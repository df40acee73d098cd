"""The zoo's built-in plugins, installed as ``zoo_plugins`` (never as a bare ``plugins`` package).

Each module here is an entry point of the ``zoo`` group in pyproject.toml, loaded exactly as a third
party's plugin is. A module may touch only the public API of ``zoo`` (``zoo.Decoder``, ``zoo.hookimpl``,
``zoo.Features``, ``zoo.Tokenizer``...), never another plugin's internals.
"""
