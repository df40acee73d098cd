"""``zoo compare``: train several architectures under one budget and rank them.

Every combination of the listed encoders × decoders × tokenizers × seeds is trained with the same data,
budget, schedule and seed list, evaluated on the same split with the same decoding settings, and recorded
in the results database; the leaderboard is printed at the end. Each run has its own folder under
``--out``; a run whose ``eval.json`` exists is finished and is not redone, a run with a saved training
state is resumed, so an interrupted compare picks up where it stopped.

``objectives`` (``--objective xe,scst``) trains each combination once per training objective: the ``xe``
run as always, then each other objective's run (``<run>-scst``) starting from that ``xe`` run's
``best.safetensors`` (``--init``), with ``objective_overrides`` (``--objective-set``, e.g. a lower
``train.lr`` and fewer ``train.steps``) on top of the shared settings. XE and SCST versions of one
architecture are separate rows (systems) on the leaderboard.
"""

from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from zoo.errors import ZooError
from zoo.evaluation.model_eval import check_request, evaluate_model
from zoo.files import atomic_write, sha256_file
from zoo.generation.options import DecodingOptions
from zoo.models.builder import create_decoder, create_encoder
from zoo.models.checkpoint import load, read_extra
from zoo.registry.manager import get_registry
from zoo.registry.recipes import check_kwargs
from zoo.registry.registry import normalise
from zoo.results.record import PendingRecord, build_record, store
from zoo.training.config import TrainConfig
from zoo.training.objective import ObjectiveSchedule, checkpoint_objective
from zoo.training.runs import SECTIONS, RunSpec, execute, load_split, read_train_speed


@dataclass
class CompareConfig:
    encoders: list[str]
    decoders: list[str]
    tokenizers: list[str]
    data: str = "shapes"
    data_root: str | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    train: dict[str, Any] = field(default_factory=dict)
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    decoder_kwargs: dict[str, Any] = field(default_factory=dict)  # shared by all decoders
    tokenizer_kwargs: dict[str, Any] = field(default_factory=dict)
    split: str = "test"
    beam_size: int = 3
    max_len: int = 20
    #: further decoding settings (``zoo.generation.options.DecodingOptions`` fields: sampling, constraints, length
    #: penalty); None: their defaults
    decoding: dict[str, Any] | None = None
    metrics: tuple[str, ...] = ("bleu", "meteor", "rouge-l", "cider-d", "spice")
    pretrained: bool | str = False
    overrides: list[str] = field(default_factory=list)
    objectives: list[str] = field(default_factory=lambda: ["xe"])
    objective_overrides: list[str] = field(default_factory=list)  # for the runs of objectives other than xe


def decoding_options(cfg: CompareConfig) -> Any:
    """Every decoding setting of a compare as one ``zoo.generation.options.DecodingOptions``."""
    return DecodingOptions.from_mapping({"beam_size": cfg.beam_size, "max_len": cfg.max_len, **(cfg.decoding or {})})


def run_name(encoder: str, decoder: str, tokenizer: str, seed: int) -> str:
    return f"{encoder}-{decoder}-{tokenizer}-seed{seed}".replace("/", "_")


def plan(cfg: CompareConfig) -> list[tuple[str, RunSpec]]:
    """Every run, in training order: a combination's ``xe`` run before the runs that start from it (their
    ``spec.init`` is ``{"run": <the xe run's name>}`` until :func:`resolve_init` fills in its checkpoint)."""
    shared, per_decoder = split_overrides(cfg)
    runs = []
    for enc, dec, tok, seed in itertools.product(cfg.encoders, cfg.decoders, cfg.tokenizers, cfg.seeds):
        spec = RunSpec(
            encoder=enc, decoder=dec, tokenizer=tok, data=cfg.data, data_root=cfg.data_root,
            data_options=dict(cfg.data_options), encoder_kwargs=dict(cfg.encoder_kwargs),
            decoder_kwargs=dict(cfg.decoder_kwargs), tokenizer_kwargs=dict(cfg.tokenizer_kwargs),
            train={**cfg.train, "seed": seed}, pretrained=cfg.pretrained,
        ).with_overrides(shared + per_decoder.get(dec, []))
        name = run_name(enc, dec, tok, seed)
        for objective in cfg.objectives:
            if objective == "xe":
                runs.append((name, spec))
                continue
            other = copy.deepcopy(spec)
            other.train["objective"] = objective
            other = other.with_overrides(cfg.objective_overrides)
            other.pretrained = False  # every weight comes from the xe run's checkpoint
            other.init = {"run": name}
            runs.append((f"{name}-{objective}", other))
    return runs


def split_overrides(cfg: CompareConfig) -> tuple[list[str], dict[str, list[str]]]:
    """``--set`` split into the settings of every run and those of one decoder: ``gru-attn.attention_size=256``
    sets ``decoder.attention_size`` for the ``gru-attn`` runs only (checked against that decoder's options;
    being a decoder option it is part of the system's identity: its config hash, its leaderboard row)."""
    decoders = {normalise(d): d for d in cfg.decoders}
    shared: list[str] = []
    per: dict[str, list[str]] = {}
    for assignment in cfg.overrides:
        key = assignment.split("=", 1)[0]
        section = key.split(".", 1)[0] if "." in key else ""
        if section in SECTIONS or not section:
            shared.append(assignment)
        elif normalise(section) in decoders:
            per.setdefault(decoders[normalise(section)], []).append(f"decoder.{assignment[len(section) + 1:]}")
        elif (("decoder", section) in get_registry()):
            raise ZooError(f"--set {assignment!r}: decoder {section!r} is not in this compare (--decoder "
                           f"{','.join(cfg.decoders)}); set options of the decoders compared")
        else:
            raise ZooError(f"--set {assignment!r}: {section!r} is neither a section ({', '.join(SECTIONS)}) nor a "
                           f"decoder of this compare ({', '.join(cfg.decoders)}), e.g. "
                           f"--set {cfg.decoders[0]}.hidden_size=256 sets it for that decoder only")
    return shared, per


def resolve_init(spec: RunSpec, out: Path) -> RunSpec:
    """``spec`` with ``init`` naming the xe run's ``best.safetensors`` in ``out`` and its sha256."""
    if spec.init is None or "run" not in spec.init:
        return spec
    ckpt = (out / spec.init["run"] / "best.safetensors").resolve()
    resolved = copy.deepcopy(spec)
    resolved.init = {"run": spec.init["run"], "path": str(ckpt), "sha256": sha256_file(ckpt) if ckpt.exists() else None}
    return resolved


def compare(
    cfg: CompareConfig,
    out_dir: str | Path,
    db_path: str | Path | None = None,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train and evaluate every planned run (skipping finished ones); returns one summary per run."""
    out = Path(out_dir)
    runs = plan(cfg)
    test_set = check(cfg, runs)  # everything that can be checked fails here, before any run trains
    _check_reuse(cfg, runs, out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "compare.json", lambda tmp: Path(tmp).write_text(_settings_json(cfg)))
    summaries = []
    for i, (name, spec) in enumerate(runs, 1):
        run_dir = out / name
        done = run_dir / "eval.json"
        if done.exists():
            say(f"[{i}/{len(runs)}] {name}: finished earlier, skipped")
            summaries.append(json.loads(done.read_text()))
            continue
        if not (run_dir / EVALUATION).exists():
            resume = (run_dir / "state.safetensors").exists()
            finished_training = (run_dir / "last.safetensors").exists()
            say(f"[{i}/{len(runs)}] {name}: {'evaluating' if finished_training else 'resuming' if resume else 'training'}")
            train_and_evaluate(cfg, out, name, spec, test_set, progress=progress)
        summaries.append(record_run(out, name, db_path))
    return summaries


#: a run folder's evaluation, written by whoever trained and evaluated the run, not yet in the database
EVALUATION = "evaluation.json"


def train_and_evaluate(cfg: CompareConfig, out: Path, name: str, spec: RunSpec, test_set: Any,
                       progress: bool = True) -> dict[str, Any]:
    """Train (or resume, or only evaluate) one planned run into ``out/name`` and write its evaluation there
    (``evaluation.json``: the database row to be, and the run's summary). Writes nothing else: the results
    database is the driver's alone (:func:`record_run`), so a sweep's jobs never write it. Under torchrun
    every rank trains; rank 0 writes."""
    run_dir = out / name
    resume = (run_dir / "state.safetensors").exists()
    spec = resolve_init(spec, out)
    if not (run_dir / "last.safetensors").exists():
        train_speed = execute(spec, run_dir, resume=resume, progress=progress).train_images_per_s
    else:
        train_speed = read_train_speed(run_dir)
    ckpt = run_dir / "best.safetensors"
    model = load(ckpt)
    ev = evaluate_model(model, test_set, decoding=decoding_options(cfg), metrics=cfg.metrics,
                        out_dir=run_dir / "eval", progress=progress)
    if ev is None:  # another rank than 0 under torchrun: rank 0 scores and writes
        return {}
    pending = build_record(ev, model, checkpoint=ckpt, seed=spec.train.get("seed"), run_name=name,
                           train_images_per_s=train_speed)
    objective = checkpoint_objective(read_extra(ckpt))["signature"]
    row = {"run": name, "system": spec.system, "objective": objective, "seed": spec.train.get("seed"),
           "metrics": ev.metrics, "not_computed": ev.not_computed,
           "train_images_per_s": train_speed, "decode_images_per_s": ev.decode_images_per_s}
    text = json.dumps({"summary": row, "record": json.loads(pending.to_json())})
    atomic_write(run_dir / EVALUATION, lambda tmp: Path(tmp).write_text(text))
    return row


def record_run(out: Path, name: str, db_path: str | Path | None) -> dict[str, Any]:
    """Store the evaluation a run folder holds in the results database (once: a driver stopped between
    storing it and writing ``eval.json`` finds its row again instead of adding a second) and mark the run
    recorded (``eval.json``, the run's summary with its row id). Returns that summary."""
    run_dir = out / name
    done = run_dir / "eval.json"
    if done.exists():
        return json.loads(done.read_text())
    saved = json.loads((run_dir / EVALUATION).read_text())
    rid = store(PendingRecord.from_json(json.dumps(saved["record"])), db_path, once=True)
    row = {**saved["summary"], "record_id": rid}
    atomic_write(done, lambda tmp: Path(tmp).write_text(json.dumps(row, indent=1)))
    return row


def check(cfg: CompareConfig, runs: list[tuple[str, RunSpec]]) -> Any:
    """Check a compare before anything trains, so a typo does not surface after the first runs: every
    encoder, decoder, tokenizer and data set name is registered (the error names the closest ones), the
    shared decoder and tokenizer options exist for every one of them, the seeds, the training settings
    (``TrainConfig``: ranges, device), the metrics and decoding options
    (:func:`zoo.evaluation.model_eval.check_request`: names, Java), every decoder keeps the decoder contract (a probe,
``_probe_decoders``), and the evaluation split loads. Returns that split
    (the same data for every run)."""
    reg = get_registry()
    for kind, flag, names in (("encoder", "--encoder", cfg.encoders), ("decoder", "--decoder", cfg.decoders),
                              ("tokenizer", "--tokenizer", cfg.tokenizers), ("seed", "--seeds", cfg.seeds)):
        if not names:
            raise ZooError(f"zoo compare: {flag} lists no {kind}; give at least one (comma-separated)")
        twice = sorted({str(n) for n in names if names.count(n) > 1})
        if twice:
            raise ZooError(f"zoo compare: {flag} lists {', '.join(twice)} more than once; each run is trained once")
    for kind, names in (("encoder", cfg.encoders), ("decoder", cfg.decoders), ("tokenizer", cfg.tokenizers),
                        ("dataset", [cfg.data])):
        for name in names:
            reg.get(kind, name)  # an unknown name raises, naming the closest registered ones
    for seed in cfg.seeds:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ZooError(f"zoo compare: seeds must be whole numbers (e.g. --seeds 1,2), got {seed!r}")
    options = decoding_options(cfg)
    check_request(cfg.metrics, options.beam_size, options.max_len, options.length_penalty, decoding=options)
    twice = sorted({o for o in cfg.objectives if cfg.objectives.count(o) > 1})
    if not cfg.objectives or twice:
        raise ZooError(f"zoo compare: --objective lists {', '.join(twice) or 'no objective'}"
                       f"{' more than once' if twice else ''}; give each once, e.g. --objective xe,scst")
    for objective in cfg.objectives:
        reg.get("objective", objective)
    if any(o != "xe" for o in cfg.objectives) and "xe" not in cfg.objectives:
        raise ZooError(f"zoo compare --objective {','.join(cfg.objectives)}: these runs start from the xe run's "
                       "best checkpoint; list xe too, e.g. --objective xe,scst")
    for _, spec in runs:
        ObjectiveSchedule(TrainConfig.from_dict(spec.train), spec.objective_options)  # names, options
    for _, spec in runs:
        for kind, name, kwargs in (("encoder", spec.encoder, spec.encoder_kwargs),
                                   ("decoder", spec.decoder, spec.decoder_kwargs),
                                   ("tokenizer", spec.tokenizer, spec.tokenizer_kwargs)):
            try:
                check_kwargs("zoo compare --set", kind, reg.get(kind, name), kwargs, ZooError, prefix=kind)
            except ZooError as exc:
                if kind != "decoder":
                    raise
                unknown = [k for k in kwargs if k not in reg.get(kind, name).options()][:1] or ["OPTION"]
                takers = [d for d in dict.fromkeys(s.decoder for _, s in runs)
                          if unknown[0] in reg.get("decoder", d).options()] or [name]
                raise ZooError(f"{exc} To set an option for one decoder only, name the decoder instead of the "
                               f"section: --set {takers[0]}.{unknown[0]}=VALUE") from exc
        TrainConfig.from_dict(spec.train)
    _probe_decoders(runs)
    return load_split(runs[0][1], cfg.split)


#: the vocabulary the compare-time probe builds decoders with (the runs' tokenizers are not trained yet)
PROBE_VOCAB = 64


def _probe_decoders(runs: list[tuple[str, RunSpec]]) -> None:
    """Build every decoder of the compare once, on each encoder's feature size, so one that breaks the
    decoder contract (``zoo.contracts.probe``) stops the compare before the first run trains, not after the
    runs listed before it. Encoders are built without weights; nothing is trained."""
    dims: dict[tuple[str, str], int] = {}
    done: set[tuple[str, int, str]] = set()
    for _, spec in runs:
        enc_key = (spec.encoder, json.dumps(spec.encoder_kwargs, sort_keys=True, default=str))
        if enc_key not in dims:
            dims[enc_key] = create_encoder(spec.encoder, **{**spec.encoder_kwargs, "pretrained": False}).feature_dim
        key = (spec.decoder, dims[enc_key], json.dumps(spec.decoder_kwargs, sort_keys=True, default=str))
        if key not in done:
            done.add(key)
            create_decoder(spec.decoder, PROBE_VOCAB, dims[enc_key], **spec.decoder_kwargs)


#: the compare settings that say which runs there are; any other difference makes earlier runs stale
_COMBINATIONS = ("encoders", "decoders", "tokenizers", "seeds", "objectives", "objective_overrides")


def _settings_json(cfg: CompareConfig) -> str:
    return json.dumps(cfg.__dict__, indent=1, default=list)


def _check_reuse(cfg: CompareConfig, runs: list[tuple[str, RunSpec]], out: Path) -> None:
    """Runs in ``out`` are reused (skipped when evaluated, resumed when interrupted) only when they were
    made with the same settings: a different budget, data, split or decoding would put stale results on
    the leaderboard. Adding encoders, decoders, tokenizers or seeds is fine: those are new runs."""
    previous = out / "compare.json"
    if previous.exists():
        try:
            before = json.loads(previous.read_text())
        except json.JSONDecodeError as exc:
            raise ZooError(f"{previous} is not valid JSON ({exc}); delete it or choose another --out") from exc
        now = json.loads(_settings_json(cfg))
        changed = sorted(k for k in set(before) | set(now) if k not in _COMBINATIONS and before.get(k) != now.get(k))
        if changed:
            raise ZooError(
                f"{out} holds a compare made with other settings ({', '.join(changed)} differ; see "
                f"{previous}); its runs would be stale. Choose another --out, or delete {out} to start over."
            )
    for name, spec in runs:
        saved = out / name / "run.json"
        if saved.exists():
            changed = RunSpec.from_file(saved).differences(resolve_init(spec, out))
            if changed:
                raise ZooError(
                    f"{out / name} was trained with other settings ({', '.join(changed)} differ); choose "
                    f"another --out, or delete that folder to train it again."
                )
