"""``zoo list`` and ``zoo info``: what is registered, where it comes from, and its options."""

from __future__ import annotations

import argparse
import difflib
import inspect
import json
import sys
import warnings
from pathlib import Path

from zoo.errors import CheckpointError, UnknownNameError, ZooError
from zoo.files import missing_reason
from zoo.models.checkpoint import objective_signature, read_extra, read_metadata
from zoo.models.factory import list_names
from zoo.registry.hookspecs import hookimpl
from zoo.registry.manager import get_plugin_manager, get_registry
from zoo.registry.recipes import load_recipes
from zoo.registry.registry import KINDS

LISTABLE = [k + "s" for k in KINDS] + ["models", "weights", "plugins"]


@hookimpl
def zoo_add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("list", help="list registered names of a kind, by fnmatch pattern")
    p.add_argument("kind", choices=LISTABLE, help="what to list")
    p.add_argument("patterns", nargs="*", default=["*"], help="fnmatch patterns, e.g. 'convnext*'")
    p.set_defaults(func=cmd_list)
    p = subparsers.add_parser("info", help="where a name comes from (plugin, module), its options and defaults")
    p.add_argument("name", help="a decoder, encoder, tokenizer, dataset, metric, objective, executor or model recipe name")
    p.add_argument("--kind", choices=[k for k in KINDS] + ["model"], default=None)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)


def cmd_list(args: argparse.Namespace) -> int:
    get_registry()  # loads every plugin, so that those that fail are known (zoo.cli reports them)
    if args.kind == "plugins":
        pm = get_plugin_manager()
        for name, plugin in sorted(pm.list_name_plugin()):
            if name.startswith("zoo.commands."):
                continue
            print(f"{name}\t{getattr(plugin, '__name__', type(plugin).__name__)}")
    elif args.kind == "weights":
        pm = get_plugin_manager()
        for impl in pm.hook.zoo_pretrained_weights.get_hookimpls()[::-1]:
            print(f"{impl.plugin_name}\t{inspect.getdoc(impl.plugin) or ''}".split("\n")[0])
    else:
        names = list_names(args.kind, args.patterns)
        for n in names:
            print(n)
        if not names:
            print(f"no {args.kind} match {' '.join(args.patterns)}", file=sys.stderr)
    return 0  # failed plugins are reported by zoo.cli after every command


def _info(name: str, kind: str | None) -> dict:
    reg = get_registry()
    kinds = [kind] if kind else list(KINDS) + ["model"]
    for k in kinds:
        if k == "model":
            recipes = load_recipes()
            if name in recipes:
                r = recipes[name]
                return {"kind": "model", "name": name, "source": r.source, **r.to_dict()}
            continue
        try:
            e = reg.get(k, name)
        except UnknownNameError:
            continue
        opts, required = e.user_options()
        return {
            "kind": e.kind,
            "name": e.name,
            "plugin": e.plugin,
            "module": e.module,
            "family": e.family,
            "doc": own_doc(e.factory),
            "usage": usage(e.factory, e.module),
            "options": {o: v for o, v in opts.items() if o not in required},
            "required": required,
        }
    if kind:
        reg.get(kind, name)  # raises with close matches

    # every kind's names, encoders included (timm's ~1,300 are what the registry's own lookup suggests from)
    kind_of: dict[str, str] = {}
    for k in KINDS:
        for n in reg.names(k):
            kind_of.setdefault(n, k)
    for n in load_recipes_quietly():
        kind_of.setdefault(n, "model")
    close = difflib.get_close_matches(name, list(kind_of), n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(f'{c} ({kind_of[c]})' for c in close)}?" if close else ""
    raise ZooError(f"no decoder, encoder, tokenizer, dataset, metric, objective, executor or model is named {name!r}.{hint}")


def load_recipes_quietly() -> list[str]:
    """Recipe names for suggestions (a broken recipe file is reported elsewhere, not here)."""

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return list(load_recipes())
    except ZooError:
        return []


def own_doc(factory: object) -> str | None:
    """The first paragraph of the factory's own docstring: a class's, not one inherited from its base
    (``zoo.Decoder``'s text says nothing about a plugin's decoder); None when it has none."""
    text = factory.__dict__.get("__doc__") if inspect.isclass(factory) else getattr(factory, "__doc__", None)
    if not isinstance(text, str) or not text.strip():
        return None
    return inspect.cleandoc(text).split("\n\n")[0]


def usage(factory: object, module: str) -> str | None:
    """How to use a registered name, as its plugin's author wrote it: the rest of the factory's own
    docstring (after the first paragraph, which ``doc`` shows), then the docstring of the plugin module
    that registered it (the ``folder`` data set's captions-file format, say). None when neither has more.

    Why both: authors put the options on the class or function and the formats, equations and examples
    in the module docstring; a user reading ``zoo info`` should not need the source for either."""
    parts: list[str] = []
    text = factory.__dict__.get("__doc__") if inspect.isclass(factory) else getattr(factory, "__doc__", None)
    if isinstance(text, str) and text.strip():
        rest = inspect.cleandoc(text).split("\n\n", 1)[1:]
        parts += [r.strip() for r in rest if r.strip()]
    mod = sys.modules.get(module)
    mod_doc = getattr(mod, "__doc__", None)
    if isinstance(mod_doc, str) and mod_doc.strip():
        parts.append(inspect.cleandoc(mod_doc))
    return "\n\n".join(parts) or None


def _jsonable(v):
    try:
        json.dumps(v)
        return v
    except TypeError:
        return repr(v)


def checkpoint_info(path: str) -> dict | None:
    """What ``zoo info CHECKPOINT`` shows of a checkpoint file (or a run folder's best checkpoint): its
    parts and options, and how it was trained (the objective's signature, ``xe`` for cross-entropy);
    None when ``path`` is not a file or folder, so the name is looked up in the registry instead."""

    p = Path(path)
    if p.is_symlink() and missing_reason(p) is not None:  # a link loop or a broken link: say so, not "unknown name"
        raise CheckpointError(f"{p} {missing_reason(p)}")
    if not (p.is_file() or p.is_dir()) or not (p.is_file() or (p / "best.safetensors").exists()
                                                  or (p / "last.safetensors").exists()):
        return None
    if p.is_dir():
        p = p / "best.safetensors" if (p / "best.safetensors").exists() else p / "last.safetensors"
    meta = read_metadata(p)  # a foreign or damaged file is refused, naming it (config and extra included)
    config = json.loads(meta.get("config", "{}"))
    extra = read_extra(p)
    objective = extra.get("objective") if isinstance(extra.get("objective"), dict) else None
    return {
        "kind": "checkpoint", "name": str(p), "zoo_version": meta.get("zoo_version"),
        **{part: config.get(part) for part in ("encoder", "decoder", "tokenizer") if part in config},
        "objective": objective_signature(extra, p),
        "objective_options": (objective or {}).get("options", {}),
    }


def cmd_info(args: argparse.Namespace) -> int:
    info = checkpoint_info(args.name) if args.kind is None else None
    if info is not None:
        if args.json:
            print(json.dumps(info, indent=2, default=_jsonable))
            return 0
        print(f"checkpoint {info['name']}")
        for part in ("encoder", "decoder", "tokenizer"):
            found = info.get(part)
            if isinstance(found, dict):
                print(f"  {part}: {found.get('name')} {found.get('kwargs') or ''}")
            elif found:  # an edited config: shown as it is (zoo.load names what is wrong with it)
                print(f"  {part}: {found!r} (malformed: expected {{'name': ..., 'kwargs': {{...}}}})")
        print(f"  objective: {info['objective']}")
        if info["objective_options"]:
            print(f"  objective options: {info['objective_options']}")
        return 0
    info = _info(args.name, args.kind)
    if args.json:
        print(json.dumps(info, indent=2, default=_jsonable))
        return 0
    print(f"{info['kind']} {info['name']}")
    for key in ("plugin", "module", "family", "source", "description", "doc"):
        if info.get(key):
            print(f"  {key}: {info[key]}")
        elif key == "doc" and info["kind"] != "model":
            print("  doc: (no docstring)")
    if info["kind"] == "model":
        for part in ("encoder", "decoder", "tokenizer"):
            print(f"  {part}: {info[part]['name']} {info[part]['kwargs'] or ''}")
        for part in ("train", "data", "weights"):
            if info.get(part):
                print(f"  {part}: {info[part]}")
        return 0
    if info.get("required"):
        print("  required: " + ", ".join(info["required"]))
    if info.get("options"):
        print("  options (defaults):")
        for k, v in info["options"].items():
            print(f"    {k} = {v!r}")
    if info.get("usage"):
        print("  usage:")
        for line in info["usage"].splitlines():
            print(f"    {line}".rstrip())
    return 0
