"""A training run described as data (``run.json``): parts, data set, training settings.

``zoo train`` and ``zoo compare`` both go through ``RunSpec`` → ``execute``; a run folder's ``run.json``
is all ``--resume`` needs. Overrides use dotted keys, ``--set decoder.hidden_size=1024``: the first part
names the section (encoder, decoder, tokenizer → their options; train → ``TrainConfig``; data → the data
set's options; objective → the options of ``train.objective``), values are parsed as YAML scalars (``1e-3``, ``true``, ``[1, 2]``).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from zoo.data.datasets import drop_bad_images, load_dataset
from zoo.errors import ZooError
from zoo.files import atomic_write, missing_reason, sha256_file
from zoo.models.builder import create_tokenizer, tokenizer_from_bytes
from zoo.models.checkpoint import config_parts, load, read_extra
from zoo.models.factory import create_model
from zoo.registry.recipes import get_recipe
from zoo.runtime import distributed as dist
from zoo.training.config import TrainConfig, TrainResult
from zoo.training.loop import train
from zoo.training.objective import ObjectiveSchedule
from zoo.training.run_guard import RunFailed
from zoo.training.schedule import total_steps
from zoo.training.state import read_state_metadata, saved_step, seed_everything

SECTIONS = ("encoder", "decoder", "tokenizer", "train", "data", "objective")
SECTION_OF = {"encoder_kwargs": "encoder", "decoder_kwargs": "decoder", "tokenizer_kwargs": "tokenizer",
              "data_options": "data", "objective_options": "objective"}

#: what ``--resume`` may change: how long to train and how often to check, nothing that changes what
#: the steps already taken mean (batch size, data, architecture, optimiser settings)
RESUMABLE_CHANGES = frozenset(
    f"train.{k}" for k in ("steps", "epochs", "eval_every", "checkpoint_every", "log_every", "progress",
                           "num_workers", "val_images", "val_beam_size", "device", "compile")
)


@dataclass
class RunSpec:
    encoder: str
    decoder: str
    tokenizer: str
    data: str
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    decoder_kwargs: dict[str, Any] = field(default_factory=dict)
    tokenizer_kwargs: dict[str, Any] = field(default_factory=dict)
    data_options: dict[str, Any] = field(default_factory=dict)
    data_root: str | None = None
    train_split: str = "train"
    val_split: str | None = "val"
    train: dict[str, Any] = field(default_factory=dict)
    pretrained: bool | str = False
    recipe: str | None = None
    objective_options: dict[str, Any] = field(default_factory=dict)  # options of train.objective
    #: ``--init CKPT``: the weights (and tokenizer) the run starts from, ``{"path", "sha256"}``
    init: dict[str, Any] | None = None

    def differences(self, other: "RunSpec") -> list[str]:
        """Dotted names of the settings that differ (``train.steps``, ``decoder.hidden_size``, ``data``)."""
        mine, theirs = asdict(self), asdict(other)
        out = []
        for k in sorted(set(mine) | set(theirs)):
            a, b = mine.get(k), theirs.get(k)
            if isinstance(a, dict) and isinstance(b, dict):
                section = SECTION_OF.get(k, k)
                out += [f"{section}.{n}" for n in sorted(set(a) | set(b)) if a.get(n) != b.get(n)]
            elif a != b:
                out.append(k)
        return out

    @property
    def system(self) -> str:
        return f"{self.encoder}+{self.decoder}+{self.tokenizer}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_file(cls, path: str | Path) -> "RunSpec":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                data = {k: v for k, v in data.items() if k not in RECORDED_KEYS}
            return cls(**data)
        except FileNotFoundError as exc:
            raise ZooError(f"{path} does not exist: is this a run folder made by `zoo train`?") from exc
        except OSError as exc:  # a symbolic link loop, a file that cannot be read
            raise ZooError(f"{path} {missing_reason(path) or f'cannot be read ({exc.strerror})'}") from exc
        except (TypeError, json.JSONDecodeError) as exc:
            raise ZooError(f"{path} is not a valid run description: {exc}") from exc

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> "RunSpec | None":
        """The run a checkpoint was trained in, from its own metadata (``zoo train`` writes its spec into
        every model file), so a checkpoint copied out of its run folder still knows its data set and
        seed; None for a checkpoint made otherwise (``zoo.save`` by hand, an old file)."""
        try:
            data = read_extra(path).get("run", {}).get("spec")
        except (AttributeError, ValueError):  # extra that is not a JSON object: not ours to read
            return None
        if not isinstance(data, dict):
            return None
        try:
            return cls(**{k: v for k, v in data.items() if k not in RECORDED_KEYS})
        except TypeError:  # a spec from another caption-zoo version
            return None

    @classmethod
    def from_recipe(cls, name: str) -> "RunSpec":
        r = get_recipe(name)
        data = dict(r.data)
        data_name = data.pop("name", "shapes")
        train = dict(r.train)
        if "max_caption_len" in data:
            train.setdefault("max_caption_len", data.pop("max_caption_len"))
        return cls(
            encoder=r.encoder,
            decoder=r.decoder,
            tokenizer=r.tokenizer,
            data=data_name,
            encoder_kwargs=dict(r.encoder_kwargs),
            decoder_kwargs=dict(r.decoder_kwargs),
            tokenizer_kwargs=dict(r.tokenizer_kwargs),
            data_options=data,
            train=train,
            pretrained=r.pretrained,
            recipe=name,
        )

    def with_overrides(self, assignments: list[str]) -> "RunSpec":
        spec = copy.deepcopy(self)
        for a in assignments:
            if "=" not in a:
                raise ZooError(f"--set {a!r}: expected SECTION.KEY=VALUE, e.g. decoder.hidden_size=1024")
            key, raw = a.split("=", 1)
            if "." not in key:
                raise ZooError(f"--set {a!r}: the key needs a section ({', '.join(SECTIONS)}), e.g. train.{key}")
            section, name = key.split(".", 1)
            try:
                value = yaml.safe_load(raw) if raw != "" else ""
            except yaml.YAMLError as exc:
                raise ZooError(f"--set {a!r}: cannot parse value {raw!r}: {exc}") from exc
            target = {
                "encoder": spec.encoder_kwargs,
                "decoder": spec.decoder_kwargs,
                "tokenizer": spec.tokenizer_kwargs,
                "train": spec.train,
                "data": spec.data_options,
                "objective": spec.objective_options,
            }.get(section)
            if target is None:
                raise ZooError(f"--set {a!r}: unknown section {section!r}; sections are {', '.join(SECTIONS)}")
            target[name] = value
        return spec


#: what a training hash leaves out: the seed (runs that differ only in it are seeds of one system), where
#: the data lies on this machine, the recipe label, and the settings that change how a run is watched or
#: where it runs but not what it learns
_NOT_TRAINING = frozenset({"train.seed", "data_root", "recipe", "init.path", *RESUMABLE_CHANGES} - {"train.steps", "train.epochs"})


def training_hash(spec: RunSpec) -> str:
    """sha256 of what a run was trained with (parts, data, splits, training settings), without the seed:
    two runs with equal hashes are two draws of one training regime; written into every checkpoint of the
    run, so the leaderboard pools as seeds only runs of one regime, wherever their files are."""
    full = json.loads(spec.to_json())
    full["train"] = asdict(TrainConfig.from_dict(spec.train))  # a default spelled out hashes as left out
    flat: dict[str, Any] = {}
    for key, value in full.items():
        section = SECTION_OF.get(key, key)
        if isinstance(value, dict):
            flat.update({f"{section}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    kept = {k: v for k, v in flat.items() if k not in _NOT_TRAINING}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def load_split(spec: RunSpec, split: str) -> Any:
    return load_dataset(spec.data, root=spec.data_root, split=split, **spec.data_options)


def build_model(spec: RunSpec, train_set: Any, tokenizer: Any = None) -> Any:
    """The untrained model of a run: tokenizer trained on the training captions (unless given, as when
    resuming), encoder, decoder."""
    tok = tokenizer or create_tokenizer(spec.tokenizer, train_set.captions(), **spec.tokenizer_kwargs)
    return create_model(
        encoder=spec.encoder,
        decoder=spec.decoder,
        tokenizer=tok,
        pretrained=spec.pretrained,
        encoder_kwargs=spec.encoder_kwargs,
        decoder_kwargs=spec.decoder_kwargs,
    )


def execute(spec: RunSpec, out_dir: str | Path, resume: bool = False, stop_after: int | None = None,
            progress: bool = True) -> Any:
    """Train the run described by ``spec`` into ``out_dir``.

    Everything a bad setting can break is built first (training settings, data sets, tokenizer, model),
    and only then is the folder made and ``run.json`` written, so a refused run leaves nothing behind that
    would stand in the way of the corrected command. What training itself refuses later (a ZooError before
    the first saved state) is cleaned up too: see :func:`_refused_run_cleanup`."""
    out = Path(out_dir)
    cfg = TrainConfig.from_dict({**spec.train, **({} if progress else {"progress": False})})
    ObjectiveSchedule(cfg, spec.objective_options)  # a bad objective name or option fails here
    state = out / "state.safetensors"
    if not resume and state.exists():
        raise ZooError(
            f"{out} already holds a training run; continue it with --resume {out}, or choose another --out"
        )
    if resume and not state.exists():
        raise ZooError(
            f"cannot resume {out}: it holds no saved training state ({state.name} does not exist), so the run "
            f"stopped or was refused before its first checkpoint and there is nothing to continue. Start it "
            f"again with the same --out (zoo train ... --out {out}); a new run there replaces its run.json."
        )
    if resume and (out / "run.json").exists():
        changed = [k for k in RunSpec.from_file(out / "run.json").differences(spec) if k not in RESUMABLE_CHANGES]
        if changed:
            raise ZooError(
                f"cannot resume {out} with {', '.join(changed)} changed: the saved state was trained with "
                f"the values in {out / 'run.json'}. A resume may change only "
                f"{', '.join(sorted(RESUMABLE_CHANGES))}; start a new run (another --out) for the rest."
            )
    seed_everything(cfg.seed)  # model initialisation is part of what a seed fixes
    train_set = load_split(spec, spec.train_split)
    val_set = load_split(spec, spec.val_split) if spec.val_split else None
    skipped: list[dict[str, Any]] = []
    if cfg.skip_bad_images:
        train_set, skipped, val_set = _without_bad_images(train_set, val_set, cfg)
        seed_everything(cfg.seed)  # as if the check had not run
    if resume:
        finished = _finished(out, cfg, train_set)
        if finished is not None:
            return finished  # nothing to do: the run's files are left exactly as they are
    tokenizer = _tokenizer_from_state(state, spec.tokenizer) if resume else None
    model = load_init(spec) if spec.init is not None and tokenizer is None else build_model(spec, train_set, tokenizer)
    run_info: dict[str, Any] = {"spec": json.loads(spec.to_json()), "train_hash": training_hash(spec)}
    record = dict(run_info["spec"])
    if cfg.skip_bad_images:
        run_info["skipped_images"] = record["skipped_images"] = skipped
    with _refused_run_cleanup(out, enabled=not resume and dist.rank() == 0):
        if dist.rank() == 0:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write(out / "run.json", lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1, sort_keys=True)))
        result = train(model, train_set, val_set, out, cfg, run_info=run_info, resume=resume, stop_after=stop_after,
                       objective_options=spec.objective_options)
    if skipped:
        result.note = _skipped_note(skipped, out) + (f"\n{result.note}" if result.note else "")
    return result


#: what ``run.json`` records besides the spec (the outcome of preparing the run), ignored when it is read back
RECORDED_KEYS = ("skipped_images",)


def _without_bad_images(train_set: Any, val_set: Any, cfg: Any) -> tuple[Any, list[dict[str, Any]], Any]:
    """``train.skip_bad_images``: the training and validation sets without the images that cannot be decoded
    (each one logged), and the list of those dropped (both splits), each tagged with its split."""
    skipped: list[dict[str, Any]] = []
    kept = []
    for dataset in (train_set, val_set):
        if dataset is None:
            kept.append(None)
            continue
        good, bad = drop_bad_images(dataset, num_workers=cfg.num_workers, progress=cfg.progress)
        skipped += [{"split": dataset.split, **b} for b in bad]
        kept.append(good)
    if len(kept[0]) == 0:
        raise ZooError(f"no image of data set {train_set.name!r} split {train_set.split!r} can be decoded; nothing to train on")
    return kept[0], skipped, kept[1]


def _skipped_note(skipped: list[dict[str, Any]], out: Path) -> str:
    names = [str(s["path"] or s["image_id"]) for s in skipped]
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (
        f"{len(skipped)} bad image(s) skipped (train.skip_bad_images; listed in {out / 'run.json'} under "
        f"skipped_images): {shown}"
    )


@contextlib.contextmanager
def _refused_run_cleanup(out: Path, enabled: bool) -> Iterator[None]:
    """Undo what a fresh run wrote when training refuses it (a ZooError before its loop starts; a failure
    inside the loop is ``zoo.training.run_guard``'s to report) and no training state was saved: the folder if this run made it, else the files it wrote there (``run.json``, ``log.jsonl``;
    an earlier ``run.json`` is put back). A folder holding a saved state or a model file is never touched."""
    if not enabled:
        yield
        return
    made_folder = not out.exists()
    old_spec = (out / "run.json").read_bytes() if (out / "run.json").is_file() else None
    had_log = (out / "log.jsonl").exists()

    try:
        yield
    except RunFailed:
        raise  # the loop had started: its message names this folder and what to do with it
    except ZooError:
        kept = ("state.safetensors", "best.safetensors", "last.safetensors")
        if out.is_dir() and not any((out / name).exists() for name in kept):
            if made_folder:
                shutil.rmtree(out, ignore_errors=True)
            else:
                if old_spec is None:
                    (out / "run.json").unlink(missing_ok=True)
                else:
                    (out / "run.json").write_bytes(old_spec)
                if not had_log:
                    (out / "log.jsonl").unlink(missing_ok=True)
        raise


def init_from_checkpoint(spec: RunSpec | None, path: str | Path) -> RunSpec:
    """The spec of a run that starts from the weights of checkpoint ``path`` (``zoo train --init``): the
    architecture and tokenizer are the checkpoint's; the data set and training settings are those of the
    run that made it (its ``run.json``, recorded in the checkpoint) unless ``spec`` gives them. The
    checkpoint's path and sha256 go into ``spec.init`` (and so into ``run.json``)."""
    path = Path(path).resolve()
    if path.is_dir():
        path = path / "best.safetensors"
    parts = config_parts(path)  # a missing, damaged or foreign file, or a malformed entry, is a clear error here
    recorded = (read_extra(path).get("run") or {}).get("spec")
    if spec is None:
        if not recorded:
            raise ZooError(
                f"--init {path}: the checkpoint does not record the run that made it, so the data set is "
                "unknown; also give --data (and --data-root) or a recipe"
            )
        try:
            spec = RunSpec(**recorded)
        except TypeError as exc:
            raise ZooError(
                f"--init {path}: the run recorded in the checkpoint (extra entry 'run.spec') is malformed ({exc}); "
                "give --data (and --data-root) or a recipe so it is not needed"
            ) from None
        spec.recipe = None
    spec = copy.deepcopy(spec)
    spec.encoder, spec.encoder_kwargs = parts["encoder"]
    spec.decoder, spec.decoder_kwargs = parts["decoder"]
    spec.tokenizer, spec.tokenizer_kwargs = parts["tokenizer"]
    spec.encoder_kwargs.pop("pretrained", None)
    spec.pretrained = False  # every weight comes from the checkpoint
    spec.init = {"path": str(path), "sha256": sha256_file(path)}
    return spec


def load_init(spec: RunSpec) -> Any:
    """The model of ``spec.init``, checked against the sha256 recorded when the run was planned (a file
    that changed since would silently start the run from other weights)."""
    assert spec.init is not None
    path = Path(spec.init["path"])
    problem = missing_reason(path)
    if problem == "does not exist":
        raise ZooError(f"--init {path}: the checkpoint does not exist (any more); train from another one")
    if problem is not None:
        raise ZooError(f"--init {path}: the checkpoint {problem}")
    got = sha256_file(path)
    if spec.init.get("sha256") and got != spec.init["sha256"]:
        raise ZooError(
            f"--init {path}: its sha256 is {got}, not {spec.init['sha256']} as recorded when this run was "
            "set up; the checkpoint changed since. Start a new run (another --out) from it."
        )
    return load(path)


def _finished(out: Path, cfg: Any, train_set: Any) -> Any:
    """A :class:`zoo.training.config.TrainResult` (from the run's ``summary.json``, with a ``note`` saying so) when
    the run in ``out`` has already trained all its steps and written its final files; else None. A run
    that stopped between its last state and its final files is not finished: training writes them."""
    step = saved_step(out / "state.safetensors")
    total, _ = total_steps(cfg, sum(len(item.captions) for item in train_set))
    summary_path = out / "summary.json"
    if step < total or not (out / "last.safetensors").exists() or not summary_path.exists():
        return None
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    note = (
        f"{out} is already complete at step {step} (its train.steps/train.epochs ask for {total}); nothing "
        f"to do, its files are unchanged. To train it longer: zoo train --resume {out} --set train.steps=M "
        f"with M larger than {step}."
    )
    return TrainResult(out, step, summary.get("best_val_cider_d"), summary.get("final_loss"),
                       summary.get("train_images_per_s"), note=note)


def _tokenizer_from_state(path: Path, name: str) -> Any:
    meta = read_state_metadata(path)
    return tokenizer_from_bytes(name, base64.b64decode(meta["tokenizer"]))


def read_train_speed(run_dir: str | Path | None) -> float | None:
    """Training images/s that a finished run recorded in its ``summary.json`` (None if absent)."""
    if run_dir is None or not (Path(run_dir) / "summary.json").exists():
        return None
    return json.loads((Path(run_dir) / "summary.json").read_text()).get("train_images_per_s")
