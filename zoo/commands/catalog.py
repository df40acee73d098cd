"""``zoo list`` and ``zoo info``: what is registered, where it comes from, and its options."""

from __future__ import annotations

import argparse
import inspect
import json
import sys

from zoo.hookspecs import hookimpl
from zoo.registry import KINDS

LISTABLE = [k + "s" for k in KINDS] + ["models", "weights", "plugins"]
# arguments the zoo passes itself, not options a user sets
SUPPLIED_BY_THE_ZOO = {"decoder": ("vocab_size", "feature_dim"), "encoder": ("name",), "dataset": ()}


@hookimpl
def zoo_add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("list", help="list registered names of a kind, by fnmatch pattern")
    p.add_argument("kind", choices=LISTABLE, help="what to list")
    p.add_argument("patterns", nargs="*", default=["*"], help="fnmatch patterns, e.g. 'convnext*'")
    p.set_defaults(func=cmd_list)
    p = subparsers.add_parser("info", help="where a name comes from (plugin, module), its options and defaults")
    p.add_argument("name", help="a decoder, encoder, tokenizer, dataset, metric or model recipe name")
    p.add_argument("--kind", choices=[k for k in KINDS] + ["model"], default=None)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)


def cmd_list(args: argparse.Namespace) -> int:
    from zoo.factory import list_names
    from zoo.manager import get_plugin_manager, get_registry

    reg = get_registry()
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
    for plugin, why in reg.failed_plugins.items():
        print(f"warning: plugin {plugin!r} failed to load: {why}", file=sys.stderr)
    return 0


def _info(name: str, kind: str | None) -> dict:
    from zoo.errors import UnknownNameError, ZooError
    from zoo.manager import get_registry

    reg = get_registry()
    kinds = [kind] if kind else list(KINDS) + ["model"]
    for k in kinds:
        if k == "model":
            from zoo.recipes import load_recipes

            recipes = load_recipes()
            if name in recipes:
                r = recipes[name]
                return {"kind": "model", "name": name, "source": r.source, **r.to_dict()}
            continue
        try:
            e = reg.get(k, name)
        except UnknownNameError:
            continue
        hidden = SUPPLIED_BY_THE_ZOO.get(e.kind, ())
        all_opts = {o: d for o, d in e.options().items() if o not in hidden}
        required = [o for o, d in all_opts.items() if d is inspect.Parameter.empty]
        if e.kind == "tokenizer":
            required = []  # constructor arguments come from train(captions, **options), not from users
        opts = {o: d for o, d in all_opts.items() if d is not inspect.Parameter.empty}
        return {
            "kind": e.kind,
            "name": e.name,
            "plugin": e.plugin,
            "module": e.module,
            "family": e.family,
            "doc": e.doc,
            "options": {o: v for o, v in opts.items() if o not in required},
            "required": required,
        }
    if kind:
        reg.get(kind, name)  # raises with close matches
    all_names = []
    for k in KINDS:
        if k != "encoder":
            all_names += reg.names(k)
    import difflib

    close = difflib.get_close_matches(name, all_names, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ZooError(f"no decoder, encoder, tokenizer, dataset, metric or model is named {name!r}.{hint}")


def _jsonable(v):
    try:
        json.dumps(v)
        return v
    except TypeError:
        return repr(v)


def cmd_info(args: argparse.Namespace) -> int:
    info = _info(args.name, args.kind)
    if args.json:
        print(json.dumps(info, indent=2, default=_jsonable))
        return 0
    print(f"{info['kind']} {info['name']}")
    for key in ("plugin", "module", "family", "source", "description", "doc"):
        if info.get(key):
            print(f"  {key}: {info[key]}")
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
    return 0
