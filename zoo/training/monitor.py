"""What a training run shows while it runs: every log entry stamped with ``elapsed``, TensorBoard events
when the ``tensorboard`` package is installed (``pip install caption-zoo[tb]``), and ``curves.png``
redrawn at each validation (drawn by ``zoo.views.curves``).

Why ``RunMonitor`` is one object called once per log entry from the training loop: the loop stays the
loop, and nothing about figures can stop a run: a failure to draw or to write events becomes one warning
and monitoring turns itself off for the rest of the run.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

from zoo.views.curves import CURVES_FILE, read_log, write_curves

TB_DIR = "tensorboard"


class RunMonitor:
    """Called with every log entry of a training run (``zoo.training.loop``): stamps ``elapsed`` (seconds of
    training, continuing the run's earlier log on ``--resume``), writes TensorBoard scalars when the
    package is installed, and redraws ``curves.png`` at each validation. ``active=False`` (ranks other
    than 0) only stamps. Never raises: a failure warns once and turns that part off."""

    def __init__(self, run_dir: str | Path, active: bool = True, writer_factory: Any = None) -> None:
        self.run_dir = Path(run_dir)
        self.active = active
        self.entries: list[dict[str, Any]] = []
        if active and (self.run_dir / "log.jsonl").is_file():
            try:
                self.entries = read_log(self.run_dir)  # a resumed run: its log so far
            except Exception as exc:  # noqa: BLE001 - curves must never stop training
                self._warn("read the earlier log", exc)
        earlier = [e["elapsed"] for e in self.entries if isinstance(e.get("elapsed"), (int, float))]
        self.offset = max(earlier, default=0.0)
        self.t0 = time.perf_counter()
        self.draw = active
        self.writer = _tensorboard_writer(self.run_dir / TB_DIR, writer_factory) if active else None

    def __call__(self, entry: dict[str, Any]) -> dict[str, Any]:
        entry.setdefault("elapsed", round(self.offset + time.perf_counter() - self.t0, 3))
        if not self.active:
            return entry
        self.entries.append(dict(entry))
        if self.writer is not None:
            try:
                for key, value in entry.items():
                    if key not in ("step", "epoch", "elapsed") and isinstance(value, (int, float)) and not isinstance(value, bool):
                        self.writer.add_scalar(_tb_tag(key), value, int(entry["step"]))
                self.writer.flush()
            except Exception as exc:  # noqa: BLE001
                self._warn("write TensorBoard events", exc)
                self.writer = None
        if self.draw and "val_cider_d" in entry:
            try:
                write_curves([(self.run_dir.name, self.entries)], self.run_dir / CURVES_FILE)
            except Exception as exc:  # noqa: BLE001
                self._warn(f"draw {self.run_dir / CURVES_FILE}", exc)
                self.draw = False
        return entry

    @staticmethod
    def _warn(what: str, exc: BaseException) -> None:
        warnings.warn(f"training goes on, but could not {what} ({type(exc).__name__}: {exc})", RuntimeWarning, stacklevel=3)


def _tb_tag(key: str) -> str:
    """``val_cider_d`` → ``val/cider_d``; training quantities under ``train/``."""
    return key.replace("val_", "val/", 1) if key.startswith("val_") else f"train/{key}"


def _tensorboard_writer(log_dir: Path, factory: Any = None) -> Any:
    """A ``SummaryWriter`` when the ``tensorboard`` package is installed, else None (nothing to do)."""
    if factory is None:
        try:
            from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package
        except ImportError:
            return None
        factory = SummaryWriter
    try:
        return factory(log_dir=str(log_dir))
    except Exception as exc:  # noqa: BLE001
        RunMonitor._warn(f"start TensorBoard events in {log_dir}", exc)
        return None
