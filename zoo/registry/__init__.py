"""The plugin machinery: how names become parts.

- ``hookspecs``: the hooks a plugin may implement (``zoo_register``, ``zoo_pretrained_weights``,
  ``zoo_add_commands``) and the ``hookimpl`` marker.
- ``manager``: the one ``pluggy.PluginManager("zoo")``; entry points of the ``zoo`` group, the zoo's own
  first; the registry they fill; plugins that failed, by name.
- ``registry``: the :class:`Registry` a ``zoo_register`` hook receives (names → factories per kind,
  close-match suggestions, fnmatch listing).
- ``options``: plugin options checked as plain JSON (defaults at registration, values at construction).
- ``recipes``: the catalogue (``registry.yaml`` and plugins' recipe files): named, checked model recipes.
- ``loading``: ``load_plugin``, a plugin added by hand (``--plugin``), which fails loudly.
- ``blame``: a failure raised inside a plugin's own code, as a ``PluginError`` naming the plugin and part.

May import: ``zoo.errors`` and the standard library, pluggy, yaml. Nothing here knows torch: the layers
above (contracts, models, …) use the registry, never the other way round.
"""

from zoo.registry.registry import EncoderFamily, Entry, Registry, normalise

__all__ = ["EncoderFamily", "Entry", "Registry", "normalise"]
