"""``zoo compare``: train architectures under one budget, evaluate, record, and print the leaderboard."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from zoo.data.datasets import add_image_arguments
from zoo.errors import ZooError
from zoo.files import atomic_write
from zoo.generation.options import DEFAULTS, DecodingOptions, add_decoding_arguments
from zoo.registry.hookspecs import hookimpl
from zoo.registry.manager import get_registry
from zoo.results.compare import CompareConfig, compare
from zoo.results.database import ResultsDB, add_db_argument, check_writable
from zoo.results.leaderboard import build_leaderboard
from zoo.results.sweep import failure_report, missing_note, parse_settings, status, status_table, sweep


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


@hookimpl
def zoo_add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare",
        help="train and rank several architectures under the same budget",
        description="Every combination of --encoder × --decoder × --tokenizer × --seeds is trained with the "
        "same data, budget and schedule, evaluated on the same split and decoding settings, recorded, "
        "and ranked. Re-running the same command resumes: finished runs are not redone. Plugin decoders, "
        "encoders and tokenizers are accepted like the built-ins (install the plugin, or load it with "
        "`zoo --plugin MODULE compare ...`); each decoder is checked against the decoder contract before "
        "any run trains.",
    )
    p.add_argument("--encoder", help="comma-separated encoder names (required)")
    p.add_argument("--decoder",
                   help="comma-separated decoder names: built-ins (gru,gru-stacked,gru-attn,lstm) or any plugin's "
                   "(installed, or loaded with --plugin; see `zoo list decoders`), e.g. gru-attn,transformer")
    p.add_argument("--tokenizer", default="word", help="comma-separated tokenizer names")
    p.add_argument("--data", default="shapes")
    p.add_argument("--data-root", default=None)
    p.add_argument("--steps", type=int, default=None, help="training budget in optimiser steps")
    p.add_argument("--epochs", type=int, default=None, help="training budget in epochs")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 1,2")
    p.add_argument("--split", default="test", help="split to evaluate and rank on")
    add_decoding_arguments(p)
    p.add_argument("--pretrained", nargs="?", const=True, default=False)
    p.add_argument("--freeze", action="store_true", help="freeze the encoder (features cached once, shared by all runs)")
    p.add_argument("--metrics", default="bleu,meteor,rouge-l,cider-d,spice")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="applied to every run, e.g. decoder.hidden_size=256, train.lr=1e-3; or to one decoder's runs "
                   "when it names that decoder, e.g. gru-attn.attention_size=256 (part of that system's identity)")
    p.add_argument("--objective", default="xe",
                   help="comma-separated training objectives, e.g. xe,scst: each objective other than xe trains a "
                   "second run per combination, starting from its xe run's best checkpoint")
    p.add_argument("--objective-set", dest="objective_overrides", action="append", default=[],
                   metavar="SECTION.KEY=VALUE",
                   help="applied to the runs of objectives other than xe only, e.g. train.lr=5e-5 (SCST usually "
                   "wants ~10x the xe learning rate lower), train.steps=300, objective.sample_n=5")
    p.add_argument("--out", default="runs/compare", help="folder for the runs")
    add_db_argument(p)
    add_image_arguments(p)
    p.add_argument("--html", default=None, help="also write the leaderboard page here")
    p.add_argument("--plot", default=None, help="also write the plot (PNG) here")
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--executor", default=None,
                   help="where the runs are carried out: local (default: this machine) or slurm, or a plugin's "
                   "(`zoo list executors`, `zoo info slurm`). With an executor, each run is a job: the command "
                   "watches them, Ctrl-C leaves them running, and the same command reattaches")
    p.add_argument("--jobs", type=int, default=None,
                   help="runs at once (local: default one per GPU, or 1 on CPUs, whose cores are divided between "
                   "the runs; slurm: at most this many array tasks running)")
    p.add_argument("--executor-set", dest="executor_settings", action="append", default=[], metavar="KEY=VALUE",
                   help="an executor option, e.g. partition=gpu, time=240, gpus_per_run=1, account=lab, "
                   "sbatch='{constraint: a100}' (see `zoo info slurm`)")
    p.add_argument("--status", metavar="DIR", default=None,
                   help="show where the sweep in this compare folder stands (submits nothing) and exit")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    if args.status:
        states, _ = status(args.status)
        print(status_table(states))
        for rs in states.values():
            if rs.state in ("failed", "blocked"):
                print(failure_report(rs, Path(args.status)))
        return 0
    for flag, value in (("--encoder", args.encoder), ("--decoder", args.decoder)):
        if not value:
            raise ZooError(f"zoo compare: {flag} is required (comma-separated names), e.g. --encoder resnet10t "
                           "--decoder gru,lstm; or --status DIR to see a sweep")
    decoding = DecodingOptions.from_args(args)  # bad settings fail before anything trains
    if args.steps is None and args.epochs is None:
        raise ZooError("give the budget: --steps N or --epochs N (the same for every run)")
    train = {"steps": args.steps} if args.steps is not None else {"epochs": args.epochs}
    seeds = []
    for text in _csv(args.seeds):
        try:
            seeds.append(int(text))
        except ValueError:
            raise ZooError(
                f"--seeds {args.seeds!r}: {text!r} is not a whole number; give comma-separated integers, "
                f"e.g. --seeds 1,2"
            ) from None
    cfg = CompareConfig(
        encoders=_csv(args.encoder), decoders=_csv(args.decoder), tokenizers=_csv(args.tokenizer),
        data=args.data, data_root=str(Path(args.data_root).resolve()) if args.data_root else None,
        seeds=seeds, train=train, split=args.split, beam_size=decoding.beam_size,
        max_len=decoding.max_len, decoding=_more_decoding(decoding), metrics=tuple(_csv(args.metrics)), pretrained=args.pretrained,
        encoder_kwargs={"freeze": True} if args.freeze else {}, overrides=list(args.overrides),
        objectives=_csv(args.objective), objective_overrides=list(args.objective_overrides),
    )

    check_writable(args.db)  # every run is recorded there: find out before training, not after
    settings = parse_settings(args.executor_settings)
    if args.executor is None and args.jobs in (None, 1) and not settings:
        # one run after another in this process, as always (progress bars, Ctrl-C stops the run)
        summaries = compare(cfg, args.out, db_path=args.db, progress=not args.no_progress)
        show_leaderboard([s["record_id"] for s in summaries], args.db, resamples=args.resamples,
                         html=args.html, plot=args.plot)
        return 0
    name = args.executor or "local"
    if args.jobs is not None:
        entry = get_registry().get("executor", name)
        if "jobs" not in entry.options():
            raise ZooError(f"--jobs: executor {name!r} takes no jobs option (see `zoo info {name}`)")
        settings.setdefault("jobs", args.jobs)
    try:
        summaries, states = sweep(cfg, args.out, name, settings, db_path=args.db,
                                  plugins=tuple(getattr(args, "plugins", ()) or ()))
    except KeyboardInterrupt:
        return 130
    if summaries:
        show_leaderboard([s["record_id"] for s in summaries], args.db, resamples=args.resamples,
                         html=args.html, plot=args.plot)
    missing = missing_note(states)
    if missing:
        print(missing)
        return 1
    return 0


def show_leaderboard(record_ids: list[int], db_path: str | None, resamples: int = 1000,
                     html: str | None = None, plot: str | None = None) -> object:
    """Print the leaderboard of exactly these rows (not older rows of the same database)."""
    with ResultsDB(db_path) as db:
        rows = db.rows(id=list(record_ids))
        lb = build_leaderboard(rows, resamples=resamples)
        images = db.images(lb.references_hash) if html else None
    print(lb.to_table())
    if plot:
        lb.plot(plot)
        print(f"plot: {plot}")
    if html:
        page = lb.to_html(lb.plot_png(), images)
        atomic_write(html, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
        print(f"page: {html}")
    return lb


def _more_decoding(decoding) -> dict | None:
    """The decoding settings besides beam size and maximum length that differ from their defaults (None
    when there are none, so a compare folder made before these settings existed stays reusable)."""

    more = {k: v for k, v in asdict(decoding).items() if k not in ("beam_size", "max_len") and v != DEFAULTS[k]}
    return more or None
