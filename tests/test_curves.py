"""Training curves: ``curves.png`` in a run folder (written and redrawn at each validation, never able to
stop training), wall time in the log, ``zoo curves`` overlaying runs, TensorBoard events when installed."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from PIL import Image

from zoo.cli import main
from zoo.views.curves import curves_figure, distinct_labels, read_log
from zoo.training.monitor import RunMonitor
from zoo.training.runs import RunSpec, execute

pytestmark = [pytest.mark.xdist_group("train"), pytest.mark.filterwarnings("ignore:CIDEr-D on 4 images")]


def tiny_spec(steps: int, eval_every: int) -> RunSpec:
    return RunSpec(
        encoder="resnet10t", decoder="gru", tokenizer="word", data="shapes",
        encoder_kwargs={"img_size": 32, "freeze": True}, decoder_kwargs={"embed_size": 8, "hidden_size": 16},
        tokenizer_kwargs={"min_count": 0},
        data_options={"num_train": 40, "num_val": 4, "num_test": 4, "image_size": 32},
        train={"steps": steps, "batch_size": 8, "lr": 3e-3, "warmup_steps": 1, "val_images": 4,
               "eval_every": eval_every, "log_every": 1, "progress": False},
    )


@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_FEATURE_CACHE", str(tmp_path / "features"))


def fake_log(run: Path, entries: list[dict]) -> Path:
    run.mkdir(parents=True)
    (run / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    return run


def log_entries(steps: int, loss0: float, speed: float, scst: bool = False) -> list[dict]:
    out = []
    for s in range(1, steps + 1):
        e = {"step": s, "epoch": 0, "loss": loss0 / s, "lr": 1e-3, "elapsed": s / speed}
        if scst:
            e |= {"reward": 0.5 + s / 100, "baseline": 0.45 + s / 100}
        out.append(e)
        if s % 5 == 0:
            out.append({"step": s, "epoch": 0, "val_cider_d": 0.1 * s, "elapsed": s / speed + 0.1})
    return out


def test_training_writes_curves_redrawn_at_each_validation(cache_env, tmp_path, monkeypatch):
    drawn: list[int] = []
    import zoo.training.monitor

    real = zoo.training.monitor.write_curves

    def counting(runs, path):
        drawn.append(len(runs[0][1]))
        return real(runs, path)

    monkeypatch.setattr(zoo.training.monitor, "write_curves", counting)
    out = tmp_path / "run"
    execute(tiny_spec(steps=4, eval_every=2), out, progress=False)
    with Image.open(out / "curves.png") as im:
        assert im.format == "PNG" and im.width > 600
    log = read_log(out)
    assert len(drawn) == 2 and drawn[0] < drawn[1] == len(log)  # at each validation, with the log so far
    times = [e["elapsed"] for e in log]
    assert all(isinstance(t, float) for t in times) and times == sorted(times)


def test_a_plotting_failure_warns_and_training_goes_on(cache_env, tmp_path, monkeypatch):
    import zoo.training.monitor

    def broken(runs, path):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(zoo.training.monitor, "write_curves", broken)
    out = tmp_path / "run"
    with pytest.warns(RuntimeWarning, match="training goes on.*curves.png.*no fonts"):
        execute(tiny_spec(steps=4, eval_every=2), out, progress=False)
    assert (out / "last.safetensors").exists() and not (out / "curves.png").exists()


def test_resumed_run_continues_its_wall_time(tmp_path):
    run = fake_log(tmp_path / "run", log_entries(5, 3.0, speed=0.5))  # the earlier part ended at 10.1 s
    entry = RunMonitor(run, writer_factory=None)({"step": 6, "loss": 1.0})
    assert 10.1 <= entry["elapsed"] < 20


def test_zoo_curves_overlays_two_runs(tmp_path, capsys):
    a = fake_log(tmp_path / "a" / "gru", log_entries(20, 3.0, speed=10))
    b = fake_log(tmp_path / "b" / "gru", log_entries(30, 4.0, speed=5))
    out = tmp_path / "cmp.png"
    assert main(["curves", str(a), str(b), "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.format == "PNG"
    fig = curves_figure([("a/gru", read_log(a)), ("b/gru", read_log(b))])
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["training loss", "learning rate", "validation CIDEr-D (×100)"]  # no SCST panel
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["a/gru", "b/gru"]
    # the wall-time row puts the slower run's end later, the step row does not
    step_ax, time_ax = fig.axes[2], fig.axes[5]
    assert [line.get_xdata()[-1] for line in step_ax.get_lines()] == [20, 30]
    ends = [line.get_xdata()[-1] for line in time_ax.get_lines()]
    assert ends[1] > 2 * ends[0]


def _scst_log(steps: int, baseline: str, spread: bool = True) -> list[dict]:
    out = []
    for s in range(1, steps + 1):
        r = 0.5 + s / 100
        e = {"step": s, "epoch": 0, "loss": 1.0, "lr": 5e-5, "elapsed": float(s), "reward": r}
        if spread:
            e["reward_std"] = 0.2 - s / 200
        if baseline == "mean":  # what the NSC baseline logged before: the mean reward, up to rounding
            e["baseline"] = r + 1e-16 * (s % 2)
        elif baseline == "greedy":
            e["baseline"] = r + 0.1
        out.append(e)
    return out


def _scst_axis(entries):
    fig = curves_figure([("scst", entries)])
    ax = next(a for a in fig.axes if a.get_title() == "SCST sample reward")
    return ax, [line.get_label() for line in ax.get_lines()]


def test_scst_panel_shows_the_spread_and_a_baseline_only_where_it_differs_from_the_mean_reward():
    # NSC: its baseline averages to the mean reward; a second line would lie exactly on the first
    ax, labels = _scst_axis(_scst_log(10, "none"))
    assert labels == ["mean reward"]
    band = ax.collections[0].get_paths()[0].vertices
    assert band[:, 1].min() == pytest.approx(0.51 - 0.195) and band[:, 1].max() == pytest.approx(0.60 + 0.15)
    assert "± std within an image" in [t.get_text() for t in ax.get_legend().get_texts()]
    # a log written before: NSC baseline logged, equal to the reward, no spread: the baseline is left out
    ax, labels = _scst_axis(_scst_log(10, "mean", spread=False))
    assert labels == ["mean reward"] and not ax.collections
    # greedy baseline (SCST): the greedy caption's reward is its own line
    ax, labels = _scst_axis(_scst_log(10, "greedy"))
    assert labels == ["mean reward", "baseline (greedy caption's reward)"]


LR_SCHEDULES = {
    "constant 2e-3": lambda s: 2e-3,
    "constant 5e-5 (SCST)": lambda s: 5e-5,
    "cosine 2e-3 → 0": lambda s: 1e-3 * (1 + math.cos(math.pi * s / 200)),
    "warm-up then cosine": lambda s: 2e-3 * min(1.0, s / 20) * 0.5 * (1 + math.cos(math.pi * max(0, s - 20) / 180)),
    "cosine 3e-4 → 1e-4": lambda s: 1e-4 + 1e-4 * (1 + math.cos(math.pi * s / 200)),
}


@pytest.mark.parametrize("schedule", LR_SCHEDULES)
def test_learning_rate_tick_labels_never_repeat(schedule):
    lr = LR_SCHEDULES[schedule]
    entries = [{"step": s, "loss": 1.0, "lr": lr(s), "elapsed": s / 2} for s in range(1, 201)]
    fig = curves_figure([("run", entries)])
    fig.canvas.draw()  # the labels as rendered
    for ax in (a for a in fig.axes if a.get_title() == "learning rate" or a is fig.axes[3]):
        lo, hi = ax.get_ylim()
        labels = [t.get_text() for t, v in zip(ax.get_yticklabels(), ax.get_yticks()) if lo <= v <= hi]
        assert len(labels) >= 3 and len(set(labels)) == len(labels), labels
        assert lo == 0 and labels[0] == "0"  # read against zero


def test_distinct_labels_take_the_digits_they_need():
    assert distinct_labels([0, 5e-4, 1e-3, 1.5e-3, 2e-3]) == ["0", "5e-4", "1e-3", "1.5e-3", "2e-3"]
    assert distinct_labels([1e-4, 1.25e-4, 1.5e-4]) == ["1e-4", "1.25e-4", "1.5e-4"]


def test_zoo_curves_errors_name_the_file(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["curves", str(tmp_path / "empty"), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "log.jsonl does not exist" in err and "Traceback" not in err
    run = fake_log(tmp_path / "run", log_entries(5, 3.0, speed=1))
    assert main(["curves", str(run), "--out", str(tmp_path / "x.txt")]) == 2
    assert "unknown format '.txt'" in capsys.readouterr().err


class FakeWriter:
    def __init__(self, log_dir: str) -> None:
        self.log_dir, self.scalars, self.flushes = log_dir, [], 0

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        self.flushes += 1


def test_tensorboard_scalars_through_a_writer(tmp_path):
    mon = RunMonitor(tmp_path / "run", writer_factory=FakeWriter)
    mon({"step": 10, "epoch": 0, "loss": 2.5, "lr": 1e-3})
    mon({"step": 10, "epoch": 0, "val_cider_d": 0.4})
    w = mon.writer
    assert w.log_dir == str(tmp_path / "run" / "tensorboard")
    assert w.scalars == [("train/loss", 2.5, 10), ("train/lr", 1e-3, 10), ("val/cider_d", 0.4, 10)]
    assert w.flushes == 2


def test_without_tensorboard_nothing_breaks(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails: not installed
    mon = RunMonitor(tmp_path / "run")
    assert mon.writer is None
    mon({"step": 1, "loss": 1.0})
    mon({"step": 1, "val_cider_d": 0.1})
    assert (tmp_path / "run" / "curves.png").exists() and not (tmp_path / "run" / "tensorboard").exists()


def test_with_tensorboard_installed_runs_write_event_files(tmp_path):
    pytest.importorskip("tensorboard", reason="the optional tensorboard package (caption-zoo[tb]) is not installed")
    mon = RunMonitor(tmp_path / "run")
    mon({"step": 1, "loss": 1.0})
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
