"""Error types. Every error the zoo raises on bad input derives from `ZooError`, so the command line can
print its message (which says what is wrong and what to do) instead of a traceback."""

from __future__ import annotations


class ZooError(Exception):
    """Base class: a problem the user can fix, with a message that says how."""


class UnknownNameError(ZooError, KeyError):
    """A name that no plugin registered; the message lists the closest registered names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(ZooError):
    """Two plugins registered the same name for the same kind."""


class PluginLoadError(ZooError):
    """A plugin module could not be imported or raised while registering."""


class CheckpointError(ZooError):
    """A checkpoint file that is missing, truncated, not safetensors, or from a newer format."""


class RecipeError(ZooError):
    """A bad entry in registry.yaml (names the recipe and the offending key)."""


class DataError(ZooError):
    """Bad data: a missing or corrupt image, a malformed annotation file."""


class MetricError(ZooError):
    """A metric that cannot be computed here (Java missing, SPICE models absent, ...)."""


class ResultsDBError(ZooError):
    """A results database that cannot be opened, read or written, or a row it refuses (the message names
    the file or the field; raised by ``zoo.results.database`` and ``zoo.results.evalrecord``)."""


class LeaderboardError(ZooError):
    """Rows that cannot be ranked together, an unknown metric, too few resamples, a plot file in no format
    matplotlib writes (raised by ``zoo.results.leaderboard`` and by ``zoo.views.leaderboard``)."""


class ContractError(ZooError):
    """A plugin breaks a contract the zoo relies on: a decoder's shapes (``zoo.contracts.probe``), options that
    are not plain JSON values (``zoo.registry.options``). The message names the plugin and what to change."""


class PluginError(ZooError):
    """A plugin's own code raised while the zoo used it (a decoder's ``step`` in decoding, an encoder's
    ``forward`` in training): the message names the plugin, the part, what was being done and the plugin's
    file and line (``zoo.registry.blame``); the original exception is its ``__cause__``."""
