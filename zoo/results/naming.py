"""Names of leaderboard rows: what tells the rows shown apart, read at a glance.

A row's identity (three parts with every option, objective signature, decoding, config and training
hashes, seeds, checkpoints) is far too long for a table cell, and most of it is the same on every row. So
a system is named by what differs between the rows on the board: the parts (encoder, decoder, tokenizer)
that are not the same on every row, then, only among rows that would still share a name, the first
differences that tell them apart, in this order:

1. model options (``gru-attn (attention_size=256)``), the bare option name unless two parts have it;
2. decoding settings (``gru (beam_size=1)``);
3. the objective's name (``updown (scst)``), then the arguments of its signature that differ
   (``updown (scst, baseline=greedy)``);
4. the checkpoint file (``best.safetensors``), the run's name (one-run rows), the seed set (``seed 1``);
5. only where nothing above tells rows apart: the config hash (``#1a2b3c4``), the training regime's hash
   (``train #2cca1c3``), the row id.

Each step applies only to the rows still sharing a name, so a hash is never shown beside a difference a
person can read. The full identity stays one click away (the page's drill-down, ``--format json``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from zoo.results.evalrecord import EvalRecord
from zoo.views.leaderboard_columns import parse_signature

PARTS = ("encoder", "decoder", "tokenizer")
Group = Sequence[EvalRecord]  # the runs of one system (its seeds)


def _value(v: Any) -> str:
    """An option's value as text: strings bare, everything else as compact JSON (``True``, ``0.5``)."""
    if isinstance(v, str):
        return v
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(v, sort_keys=True, separators=(",", ":"), default=str)


def _single(group: Group, get: Callable[[EvalRecord], Any]) -> Any:
    """``get`` of the group's runs when they all agree, else None."""
    values = {json.dumps(get(r), sort_keys=True, default=str) for r in group}
    return get(group[0]) if len(values) == 1 else None


def _options(group: Group) -> dict[str, str]:
    first = group[0]
    return {f"{part}.{k}": _value(v) for part in PARTS for k, v in getattr(first, f"{part}_options").items()}


def _decoding(group: Group) -> dict[str, str]:
    return {k: _value(v) for k, v in group[0].decoding.items()}


def _objective_name(group: Group) -> dict[str, str]:
    return {"": parse_signature(group[0].objective)[0]}


def _objective_args(group: Group) -> dict[str, str]:
    return parse_signature(group[0].objective)[1]


def _checkpoint_file(group: Group) -> dict[str, str]:
    file = _single(group, lambda r: Path(r.checkpoint_path).name if r.checkpoint_path else None)
    return {"": file} if file else {}


def _run_name(group: Group) -> dict[str, str]:
    if len(group) != 1:
        return {}
    r = group[0]
    return {"": r.run_name} if r.run_name else {}


def _seeds(group: Group) -> dict[str, str]:
    seeds = sorted({r.seed for r in group if r.seed is not None})
    if not seeds:
        return {}
    return {"": f"seed {seeds[0]}" if len(seeds) == 1 else "seeds " + ",".join(map(str, seeds))}


def _config_hash(group: Group) -> dict[str, str]:
    return {"": f"#{group[0].config_hash[:7]}"}


def _training_hash(group: Group) -> dict[str, str]:
    extra = group[0].extra if isinstance(group[0].extra, dict) else {}
    value = extra.get("train_hash")
    return {"": f"train #{value[:7]}"} if isinstance(value, str) and value else {}


def _checkpoint_path(group: Group) -> dict[str, str]:
    path = _single(group, lambda r: r.checkpoint_path)
    return {"": path} if path else {}


def _row_id(group: Group) -> dict[str, str]:
    ids = [r.id for r in group if r.id is not None]
    return {"": "row " + ",".join(map(str, ids))} if ids else {}


@dataclass(frozen=True)
class Difference:
    """One kind of difference between rows: each group's values by key ("" for a single value)."""

    what: str
    values: Callable[[Group], dict[str, str]]


#: in the order they are tried; see the module's docstring
DIFFERENCES = (
    Difference("options", _options),
    Difference("decoding", _decoding),
    Difference("objective", _objective_name),
    Difference("objective arguments", _objective_args),
    Difference("checkpoint file", _checkpoint_file),
    Difference("run", _run_name),
    Difference("seeds", _seeds),
    Difference("config hash", _config_hash),
    Difference("training regime", _training_hash),
    Difference("checkpoint", _checkpoint_path),
    Difference("row", _row_id),
)


def base_names(groups: Sequence[Group]) -> tuple[list[str], dict[str, str]]:
    """Each group's name from the parts whose names differ between the groups (``gru``, ``lstm``), and the
    parts every group shares (``{"encoder": "resnet10t", "tokenizer": "word"}``), said once for the board.
    When every group has the same parts, or a row's system name is not its parts joined by ``+``
    (a hand-made row), the system names are used whole and nothing is shared."""
    firsts = [g[0] for g in groups]
    if not firsts or any(r.system != f"{r.encoder}+{r.decoder}+{r.tokenizer}" for r in firsts):
        return [r.system for r in firsts], {}
    varying = [p for p in PARTS if len({getattr(r, p) for r in firsts}) > 1]
    if not varying:
        return [r.system for r in firsts], {}
    shared = {p: getattr(firsts[0], p) for p in PARTS if p not in varying}
    return ["+".join(getattr(r, p) for p in varying) for r in firsts], shared


def _shown(what: str, key: str, value: str | None, bare: dict[str, str]) -> str | None:
    if key == "" or key.startswith("#"):
        return value
    name = bare.get(key, key)
    return f"{name}={'—' if value is None else value}"


def _tell_apart(groups: Sequence[Group], idx: list[int], steps: Sequence[Difference], quals: list[list[str]]) -> None:
    """Append to ``quals`` what tells the groups ``idx`` (all named alike so far) apart: the first step's
    differences among them, then the next steps within each part that still shares a name."""
    if len(idx) < 2 or not steps:
        return
    step, rest = steps[0], steps[1:]
    values = {i: step.values(groups[i]) for i in idx}
    keys = sorted({k for v in values.values() for k in v})
    varying = [k for k in keys if len({values[i].get(k) for i in idx}) > 1]
    # an option by its bare name (attention_size) unless two parts have one of that name
    bare_of: dict[str, list[str]] = defaultdict(list)
    for k in varying:
        bare_of[k.split(".", 1)[-1] if step.what == "options" else k].append(k)
    bare = {ks[0]: b for b, ks in bare_of.items() if len(ks) == 1}
    for i in idx:
        shown = [_shown(step.what, k, values[i].get(k), bare) for k in varying]
        quals[i] += [s for s in shown if s]
    parts: dict[tuple[str | None, ...], list[int]] = defaultdict(list)
    for i in idx:
        parts[tuple(values[i].get(k) for k in varying)].append(i)
    for part in parts.values():
        _tell_apart(groups, part, rest, quals)


def system_names(groups: Sequence[Group]) -> tuple[list[str], dict[str, str]]:
    """Display names for ``groups`` (the board's systems, each a list of runs) and the parts they all
    share (see :func:`base_names`): the base name, plus in brackets what tells it from the other
    groups of that base name (see the module's docstring)."""
    names, shared = base_names(groups)
    quals: list[list[str]] = [[] for _ in groups]
    by_name: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(names):
        by_name[name].append(i)
    for idx in by_name.values():
        _tell_apart(groups, idx, DIFFERENCES, quals)
    return [f"{n} ({', '.join(q)})" if q else n for n, q in zip(names, quals)], shared


def identity(group: Group) -> list[str]:
    """Everything that identifies a system, one line each, for a person: the full system name, every part
    with every option, the objective's whole signature, decoding, the config and training hashes, and
    each run (seed, checkpoint, sha256)."""
    first = group[0]
    lines = [first.system]
    for part in PARTS:
        options = getattr(first, f"{part}_options")
        opts = ", ".join(f"{k}={_value(v)}" for k, v in sorted(options.items()))
        lines.append(f"{part} {getattr(first, part)}" + (f": {opts}" if opts else ""))
    lines.append(f"objective {first.objective}")
    lines.append("decoding " + (", ".join(f"{k}={_value(v)}" for k, v in sorted(first.decoding.items())) or "—"))
    lines.append(f"config #{first.config_hash}")
    regime = _training_hash(group)
    if regime:
        extra = first.extra if isinstance(first.extra, dict) else {}
        lines.append(f"training regime #{extra.get('train_hash')}")
    for r in group:
        bits = ([f"row {r.id}"] if r.id is not None else []) + [f"seed {r.seed if r.seed is not None else '—'}"]
        if r.run_name:
            bits.append(f"run {r.run_name}")
        if r.checkpoint_path:
            bits.append(r.checkpoint_path)
        if r.checkpoint_sha256:
            bits.append(f"sha256 {r.checkpoint_sha256[:16]}…")
        lines.append("run: " + ", ".join(bits))
    return lines
