"""The registry: every encoder, decoder, tokenizer, data set, metric, training objective and executor by name.

Plugins never write into module-level dicts; their ``zoo_register(registry)`` hook calls ``add_*`` on the
object it is handed. The registry knows which plugin is registering (the manager tells it), so it can name
both plugins when a name is taken twice, and say where every name comes from (``zoo info``).

Encoders are special: timm alone has 1,300+ backbones, so a plugin may register an *encoder family*, a
factory plus a way to list and recognise its names, instead of one entry per name.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from zoo.errors import DuplicateNameError, UnknownNameError
from zoo.registry.options import check_option_defaults

KINDS: tuple[str, ...] = ("encoder", "decoder", "tokenizer", "dataset", "metric", "objective", "executor")
PLURALS: dict[str, str] = {k + "s": k for k in KINDS}
# arguments the zoo passes to a factory itself, not options a user sets (``zoo info``, recipe checks)
SUPPLIED_BY_THE_ZOO: dict[str, tuple[str, ...]] = {
    "decoder": ("vocab_size", "feature_dim"),
    "encoder": ("name",),
    "dataset": (),
}


#: kinds whose options are stored (checkpoints, run.json): their factories' defaults must be plain JSON
CHECKED_OPTIONS: tuple[str, ...] = ("encoder", "decoder", "tokenizer", "dataset")


@dataclass(frozen=True)
class Entry:
    """One registered name."""

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    module: str
    family: str | None = None  # for encoders found through a family

    @property
    def doc(self) -> str:
        text = inspect.getdoc(self.factory) or ""
        return text.strip().split("\n\n")[0]

    def options(self) -> dict[str, Any]:
        """Keyword options of the factory and their defaults (``inspect.Parameter.empty`` if required)."""
        target = self.factory
        if inspect.isclass(target):
            target = target.__init__  # type: ignore[misc]
        try:
            sig = inspect.signature(target)
        except (TypeError, ValueError):
            return {}
        out: dict[str, Any] = {}
        for p in sig.parameters.values():
            if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            out[p.name] = p.default
        return out

    def accepts_any_option(self) -> bool:
        """True when the factory takes ``**kwargs``, so no option name can be called unknown."""
        target = self.factory.__init__ if inspect.isclass(self.factory) else self.factory  # type: ignore[misc]
        try:
            sig = inspect.signature(target)
        except (TypeError, ValueError):
            return True
        return any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())

    def user_options(self) -> tuple[dict[str, Any], list[str]]:
        """What a user may set, as ``zoo info`` shows it: ``(options with their defaults, required
        options)``, without the arguments the zoo supplies itself. A tokenizer's options are those of
        ``train(captions, **options)``, which its constructor's keyword defaults mirror; it has no required
        ones (the constructor's positional arguments come from training, never from a user)."""
        hidden = SUPPLIED_BY_THE_ZOO.get(self.kind, ())
        all_opts = {o: d for o, d in self.options().items() if o not in hidden}
        required = [o for o, d in all_opts.items() if d is inspect.Parameter.empty]
        if self.kind == "tokenizer":
            required = []
        opts = {o: d for o, d in all_opts.items() if d is not inspect.Parameter.empty}
        return opts, required


@dataclass
class EncoderFamily:
    """A set of encoder names served by one factory (``factory(name, **kwargs)``)."""

    name: str
    factory: Callable[..., Any]
    list_names: Callable[[], Iterable[str]]
    contains: Callable[[str], bool]
    plugin: str
    module: str
    _cache: list[str] | None = field(default=None, repr=False)

    def names(self) -> list[str]:
        if self._cache is None:
            self._cache = sorted(self.list_names())
        return self._cache


def _module_of(obj: Any) -> str:
    return getattr(obj, "__module__", None) or type(obj).__module__


def normalise(name: str) -> str:
    """Names are lower-case and hyphenated; accept ``GRU_Attn`` for ``gru-attn``. Encoder names are
    timm's own and are not normalised."""
    return name.strip().lower().replace("_", "-")


class Registry:
    """Names → factories, per kind. Filled by the ``zoo_register`` hooks of all plugins."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}
        self._families: list[EncoderFamily] = []
        self.recipe_files: list[tuple[Path, str]] = []
        self.failed_plugins: dict[str, str] = {}
        self.current_plugin: str = "<direct>"

    # -- adding ---------------------------------------------------------------------------------------
    def add(self, kind: str, name: str, factory: Callable[..., Any]) -> None:
        """Register ``factory`` under ``name`` for ``kind``. A name taken twice names both plugins."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; kinds are {', '.join(KINDS)}")
        key = name if kind == "encoder" else normalise(name)
        if key != name and kind != "encoder":
            raise ValueError(
                f"{kind} name {name!r} from plugin {self.current_plugin!r} must be lower-case and "
                f"hyphenated, e.g. {key!r}"
            )
        table = self._entries[kind]
        if key in table:
            old = table[key]
            raise DuplicateNameError(
                f"{kind} {key!r} is registered twice: by plugin {old.plugin!r} ({old.module}) and by "
                f"plugin {self.current_plugin!r} ({_module_of(factory)}). Uninstall or disable one of "
                f"them, or rename the {kind} in your plugin."
            )
        entry = Entry(kind, key, factory, self.current_plugin, _module_of(factory))
        if kind in CHECKED_OPTIONS:  # stored in checkpoints and run.json: plain JSON, said at once
            check_option_defaults(kind, key, self.current_plugin, entry.options())
        table[key] = entry

    def add_encoder(self, name: str, factory: Callable[..., Any]) -> None:
        self.add("encoder", name, factory)

    def add_decoder(self, name: str, factory: Callable[..., Any]) -> None:
        self.add("decoder", name, factory)

    def add_tokenizer(self, name: str, factory: Callable[..., Any]) -> None:
        self.add("tokenizer", name, factory)

    def add_dataset(self, name: str, factory: Callable[..., Any]) -> None:
        self.add("dataset", name, factory)

    def add_metric(self, name: str, factory: Callable[..., Any]) -> None:
        self.add("metric", name, factory)

    def add_objective(self, name: str, factory: Callable[..., Any]) -> None:
        """A training objective (``zoo.training.objective.Objective`` subclass): ``zoo train --objective NAME``."""
        self.add("objective", name, factory)

    def add_executor(self, name: str, factory: Callable[..., Any]) -> None:
        """Where a sweep's runs are carried out (``zoo.contracts.executor.Executor`` subclass): ``zoo compare
        --executor NAME``; its keyword options are what ``--executor-set KEY=VALUE`` sets."""
        self.add("executor", name, factory)

    def add_encoder_family(
        self,
        name: str,
        factory: Callable[..., Any],
        list_names: Callable[[], Iterable[str]],
        contains: Callable[[str], bool],
    ) -> None:
        """Register many encoder names at once (``factory(encoder_name, **kwargs)``), as timm does."""
        for fam in self._families:
            if fam.name == name:
                raise DuplicateNameError(
                    f"encoder family {name!r} is registered twice: by plugin {fam.plugin!r} and by "
                    f"plugin {self.current_plugin!r}. Uninstall or disable one of them."
                )
        self._families.append(
            EncoderFamily(name, factory, list_names, contains, self.current_plugin, _module_of(factory))
        )

    def add_recipes(self, path: str | Path) -> None:
        """Add a ``registry.yaml``-style recipe file shipped by a plugin."""
        self.recipe_files.append((Path(path), self.current_plugin))

    def discard_plugin(self, plugin: str) -> None:
        """Forget everything ``plugin`` added (the manager calls this when its ``zoo_register`` fails
        part-way, so a broken plugin contributes nothing rather than half of its names)."""
        for table in self._entries.values():
            for key in [k for k, e in table.items() if e.plugin == plugin]:
                del table[key]
        self._families = [f for f in self._families if f.plugin != plugin]
        self.recipe_files = [(p, who) for p, who in self.recipe_files if who != plugin]

    # -- looking up -----------------------------------------------------------------------------------
    def names(self, kind: str, pattern: str | Iterable[str] = "*") -> list[str]:
        """Registered names of ``kind`` matching fnmatch pattern(s), sorted; encoders include families."""
        kind = PLURALS.get(kind, kind)
        if kind not in KINDS:
            raise UnknownNameError(_unknown_msg("kind", kind, list(KINDS)))
        names = set(self._entries[kind])
        if kind == "encoder":
            for fam in self._families:
                names.update(fam.names())
        patterns = [pattern] if isinstance(pattern, str) else list(pattern)
        if kind != "encoder":  # as get() does: 'GRU_*' finds gru-attn; encoder names are timm's own
            patterns = [normalise(p) for p in patterns]
        return sorted(n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns))

    def get(self, kind: str, name: str) -> Entry:
        """The entry for ``name``; an unknown name raises with the closest registered names."""
        kind = PLURALS.get(kind, kind)
        if kind not in KINDS:
            raise UnknownNameError(_unknown_msg("kind", kind, list(KINDS)))
        key = name if kind == "encoder" else normalise(name)
        entry = self._entries[kind].get(key)
        if entry is not None:
            return entry
        if kind == "encoder":
            for fam in self._families:
                if fam.contains(name):
                    return Entry("encoder", name, fam.factory, fam.plugin, fam.module, family=fam.name)
        hint = ""
        if self.failed_plugins:
            hint = " Plugins that failed to load: " + "; ".join(
                f"{p} ({e.splitlines()[0] if e else 'error'})" for p, e in self.failed_plugins.items()
            )
        raise UnknownNameError(_unknown_msg(kind, name, self.names(kind)) + hint)

    def create(self, kind: str, name: str, *args: Any, **kwargs: Any) -> Any:
        """Build ``name`` of ``kind`` through its factory (encoder families get the name first)."""
        entry = self.get(kind, name)
        if entry.family is not None:
            return entry.factory(name, *args, **kwargs)
        return entry.factory(*args, **kwargs)

    def __contains__(self, item: tuple[str, str]) -> bool:
        kind, name = item
        try:
            self.get(kind, name)
        except UnknownNameError:
            return False
        return True

    def families(self) -> list[EncoderFamily]:
        return list(self._families)


def _unknown_msg(kind: str, name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.5)
    if not close:
        low = name.lower()
        close = [c for c in candidates if low in c.lower()][:5]
    msg = f"unknown {kind} {name!r}."
    if close:
        msg += " Did you mean: " + ", ".join(close) + "?"
    plural = kind if kind == "kind" else kind + "s"
    msg += f" See `zoo list {plural}` for all names" if kind != "kind" else ""
    if kind != "kind":
        msg += ", or install/load the plugin that provides it (`--plugin module`)."
    return msg
