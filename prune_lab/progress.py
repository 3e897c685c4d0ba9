"""Progress of a run as Python `logging` lines: Hydra sends them to the console and to the job's `.log` file.

One line per reported epoch ("dense 12/100  train loss 0.4123  val acc 0.9310  elapsed 0:00:03  ETA 0:00:21"),
one per level, one when a phase is restored from a finished checkpoint, resumed mid-way or served by the dense
cache. Lines are plain text: no carriage returns or colour codes, so a SLURM `.out` file or a log file reads
the same as the terminal. `log_every` sets the volume: `auto` reports about 20 epochs per phase whatever its
length (plus the first and the last), N reports every Nth, 0 reports no epochs (levels and events still show).
Every epoch is in metrics.jsonl whatever this says.

In a terminal (stderr is a tty) a live bar (tqdm) also shows the current phase inside its epochs: steps done,
speed, the phase's ETA and the epoch's loss so far, updated at the trainer's divergence checks (every 64 steps,
where the loss is read anyway) and at each epoch end; the lines above are printed past it. When the output is a
file, a pipe or a SLURM log there is no bar, only the lines. TQDM_DISABLE=1 turns the bar off.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from tqdm import tqdm

from prune_lab.errors import UserError

log = logging.getLogger("prune_lab")

LINES_PER_PHASE = 20  # log_every=auto: a 5-epoch run shows every epoch, a 4000-epoch run about 20 lines


def check_log_every(value: object) -> int | str:
    """`auto`, or a whole number of epochs >= 0; anything else stops the run before training."""
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value  # type: ignore[return-value]
    raise UserError(f"log_every={value!r} must be auto or a whole number of epochs >= 0 (0: no epoch lines), "
                    "e.g. log_every=10")


def clock(seconds: float) -> str:
    """1:02:03 for 3723 seconds (h:mm:ss; days as hours)."""
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """A `Job.log` sink: reads the records a job emits (per-epoch, per-level, events) and logs them."""

    def __init__(self, every: int | str = "auto", live: bool | None = None):
        self.every = check_log_every(every)
        self.live = sys.stderr.isatty() if live is None else live  # a terminal: the live bar too
        self.bar: tqdm | None = None
        self.bar_phase = ""
        self.started = time.monotonic()
        self.last_record = self.started
        # phase -> (time of the record before its first epoch here, epochs done before that): for the ETA
        self.phase_start: dict[str, tuple[float, int]] = {}
        self.first_end: dict[str, tuple[float, int]] = {}  # phase -> (time, epoch) of its first epoch's end here

    def due(self, epoch: int, epochs: int | None) -> bool:
        """Whether epoch `epoch` (1-based) of `epochs` gets a line."""
        if self.every == 0:
            return False
        if epoch == 1 or epoch == epochs:
            return True
        every = self.every if isinstance(self.every, int) else max(1, math.ceil((epochs or 1) / LINES_PER_PHASE))
        return epoch % every == 0

    def tick(self, phase: str, step: int, total_steps: int, loss: float) -> None:
        """The trainer's in-epoch report (prune_lab.training.train's `tick`): moves the live bar."""
        if not self.live:
            return
        if self.bar is None or self.bar_phase != phase or self.bar.total != total_steps:
            self.close()
            self.bar = tqdm(total=total_steps, initial=step, desc=phase, unit="step", file=sys.stderr,
                            leave=False, dynamic_ncols=True, mininterval=0.5)
            self.bar_phase = phase
        self.bar.n = step
        self.bar.set_postfix_str(f"loss {loss:.4f}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        """Removes the live bar (a phase ended, or the run did)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    @contextmanager
    def _past_the_bar(self) -> Iterator[None]:
        """A log line printed above the live bar, which is redrawn after it."""
        with tqdm.external_write_mode(file=sys.stderr) if self.bar is not None else nullcontext():
            yield

    def __call__(self, record: dict[str, Any]) -> None:
        if "level" in record:
            self.close()  # a level is measured between phases: its line replaces the bar
        with self._past_the_bar():
            self._record(record)
        if "epoch" in record and self.live and record.get("epochs"):
            self.tick(record["phase"], record["step"], record["step"] // record["epoch"] * record["epochs"],
                      record["train_loss"])  # at an epoch end too, where phases of few steps move it

    def _record(self, record: dict[str, Any]) -> None:
        now = time.monotonic()
        elapsed = clock(now - self.started)
        if "epoch" in record:
            self._epoch(record, now, elapsed)
        elif "level" in record:
            log.info(f"level {record['level']}: sparsity {record['sparsity']:.3f}  test acc {record['test_acc']:.4f}"
                     f"  test loss {record['test_loss']:.4f}  elapsed {elapsed}")
        elif record.get("event") == "restored":
            log.info(f"phase {record['phase']} restored from its finished checkpoint (no training)")
        elif record.get("event") == "resumed":
            log.info(f"phase {record['phase']} resumes from its checkpoint at epoch "
                     f"{record['from_epoch']}/{record['epochs']}")
        elif record.get("event") == "dense_cache_hit":
            log.info(f"phase {record['phase']} served by the dense cache (key {record['key']}): another job "
                     "trained this exact network")
        self.last_record = now

    def _epoch(self, record: dict[str, Any], now: float, elapsed: str) -> None:
        phase, epoch, epochs = record["phase"], record["epoch"], record.get("epochs")
        start_time, start_epoch = self.phase_start.setdefault(phase, (self.last_record, epoch - 1))
        # The first epoch of an attempt carries one-off costs (the first optimizer step imports torch._dynamo,
        # caches warm up): from the second on, the rate is measured from the end of the first.
        first_end = self.first_end.setdefault(phase, (now, epoch))
        if epoch > first_end[1]:
            start_time, start_epoch = first_end
        if not self.due(epoch, epochs):
            return
        width = len(str(epochs)) if epochs else 1
        parts = [f"{phase} {epoch:>{width}}/{epochs if epochs else '?'}", f"train loss {record['train_loss']:.4f}"]
        if "val_acc" in record:
            parts.append(f"val acc {record['val_acc']:.4f}")
        parts.append(f"elapsed {elapsed}")
        if epochs:  # the rate of this phase's epochs in this attempt, times the epochs left
            per_epoch = (now - start_time) / max(1, epoch - start_epoch)
            parts.append(f"ETA {clock(per_epoch * (epochs - epoch))}")
        log.info("  ".join(parts))


class Fanout:
    """Several `Job.log` sinks as one: metrics.jsonl, progress lines, trackers, each sees every record."""

    def __init__(self, *sinks: Any):
        self.sinks = sinks

    def __call__(self, record: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink(record)
