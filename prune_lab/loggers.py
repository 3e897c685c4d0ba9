"""Experiment trackers (`logger` config group): the run's metrics where researchers already look.

    python -m prune_lab logger=tensorboard          # one
    python -m prune_lab logger=[tensorboard,csv]    # several: each option adds its own key under `logger`

Each tracker gets, through the trackers' own libraries: the per-epoch records as they are trained
("<phase>/train_loss", "<phase>/val_acc", ... against the phase's epoch), every level's numbers at the end
(sparsity, accuracies, losses, parameter counts, FLOPs... against the level's index), the resolved config as
hyper-parameters, and the run's tags (dataset, model, init, pruner, seed, sweep) so a sweep groups in the
tracker's UI. Everything is local unless configured otherwise: TensorBoard event files and CSV in the run
folder, MLflow in a SQLite file (./mlflow.db), W&B in offline mode (`wandb sync` uploads later).

A tracker's package is imported when the run starts, only if chosen; a missing one stops the run before
training with one line naming the extra to install. A new tracker is a `Tracker` subclass (start, log_epoch, log_levels,
close) plus conf/logger/NAME.yaml holding `NAME: {_target_: ...}`.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prune_lab.bookkeeping import flatten
from prune_lab.errors import UserError
from prune_lab.results import METRICS

TAG_KEYS = ("dataset", "model", "init", "pruner", "seed", "sweep")


@dataclass(frozen=True)
class RunInfo:
    run_dir: Path
    name: str  # the run folder's name: a sweep's override string ("pruner=random,seed=1"), or the run's folder
    config: Mapping[str, Any]  # resolved, plain data
    tags: dict[str, str]  # TAG_KEYS -> value ("sweep": the sweep folder, or "" for a single run)

    @property
    def hparams(self) -> dict[str, Any]:
        """The resolved config as flat scalars ({"train.lr": 0.01, "model.hidden": "[12]", ...})."""
        return {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
                for k, v in flatten(self.config).items()}


def need(module: str, logger: str, extra: str) -> Any:
    """Import a tracker's package, or stop with the one line that says how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise UserError(f"logger={logger} needs the {extra} package ({e}); install it with "
                        f"pip install -e '.[{extra}]' or leave {logger} out of logger=") from None


def numbers(record: Mapping[str, Any]) -> dict[str, float]:
    """The finite numeric entries of a record (booleans, text, nested dicts and NaN left out)."""
    return {k: float(v) for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def epoch_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """{"dense/train_loss": ..., "dense/val_acc": ...} for one per-epoch record."""
    return {f"{record['phase']}/{k}": v for k, v in numbers(record).items() if k not in ("epoch", "epochs", "step")}


def level_metrics(level: Mapping[str, Any]) -> dict[str, float]:
    """{"level/sparsity": ..., "level/test_acc": ..., "level/flops": ...} for one level of results.json."""
    return {f"level/{k}": v for k, v in numbers(level).items()}


class Tracker:
    """What every tracker shares: epochs logged live as trained; at the end, any epoch not seen live (a phase
    restored from a checkpoint or served by the dense cache) from the final metrics.jsonl, then the levels."""

    def start(self, info: RunInfo) -> None:
        raise NotImplementedError

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def log_levels(self, levels: list[Mapping[str, Any]]) -> None:
        raise NotImplementedError

    def close(self, ok: bool) -> None:
        raise NotImplementedError

    def __call__(self, record: dict[str, Any]) -> None:
        if "epoch" in record:
            self._seen().add((record["phase"], record["epoch"]))
            self.log_epoch(record)

    def _seen(self) -> set[tuple[str, int]]:
        if not hasattr(self, "seen"):
            self.seen: set[tuple[str, int]] = set()
        return self.seen

    def finish(self, history: list[Mapping[str, Any]], results: Mapping[str, Any]) -> None:
        for record in history:
            if "epoch" in record and (record["phase"], record["epoch"]) not in self._seen():
                self.log_epoch(record)
        self.log_levels(results["levels"])
        self.close(ok=True)

    def fail(self) -> None:
        self.close(ok=False)


EPOCH_COLUMNS = ("phase", "epoch", "epochs", "step", "train_loss", "val_acc", "val_loss")


class CSVLogger(Tracker):
    """epochs.csv (one row per epoch, appended as trained) and levels.csv (one row per level, at the end) in
    `save_dir` (null: the run folder). At the end epochs.csv is rewritten whole from metrics.jsonl, in order."""

    def __init__(self, save_dir: str | None = None):
        self.save_dir = save_dir

    def start(self, info: RunInfo) -> None:
        self.folder = Path(self.save_dir).expanduser() if self.save_dir else info.run_dir
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write("epochs.csv", [], EPOCH_COLUMNS)

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        with (self.folder / "epochs.csv").open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=EPOCH_COLUMNS, extrasaction="ignore").writerow(record)

    def finish(self, history: list[Mapping[str, Any]], results: Mapping[str, Any]) -> None:
        self._write("epochs.csv", [r for r in history if "epoch" in r], EPOCH_COLUMNS)
        self.log_levels(results["levels"])

    def log_levels(self, levels: list[Mapping[str, Any]]) -> None:
        rows = [{k: v for k, v in level.items() if not isinstance(v, (dict, list))} for level in levels]
        self._write("levels.csv", rows, list(dict.fromkeys(k for row in rows for k in row)))

    def _write(self, name: str, rows: list[Mapping[str, Any]], columns: Any) -> None:
        with (self.folder / name).open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def close(self, ok: bool) -> None:
        pass


class TensorBoardLogger(Tracker):
    """Event files through torch.utils.tensorboard: scalars per phase and level, HPARAMS with the config and tags.

    `tensorboard --logdir SWEEP_DIR` shows every run of a sweep, each named by its folder."""

    def __init__(self, save_dir: str | None = None):
        self.save_dir = save_dir

    def start(self, info: RunInfo) -> None:
        need("tensorboard", "tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.info = info
        self.writer = SummaryWriter(str(Path(self.save_dir).expanduser() if self.save_dir
                                        else info.run_dir / "tensorboard"))
        self.writer.add_text("tags", ", ".join(f"{k}={v}" for k, v in info.tags.items()))

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        for key, value in epoch_metrics(record).items():
            self.writer.add_scalar(key, value, global_step=record["epoch"])

    def log_levels(self, levels: list[Mapping[str, Any]]) -> None:
        for i, level in enumerate(levels):
            for key, value in level_metrics(level).items():
                self.writer.add_scalar(key, value, global_step=i)
        last = numbers(levels[-1])
        final = {f"final/{k}": last[k] for k in ("sparsity", "test_acc", "val_acc", "test_loss") if k in last}
        # HPARAMS tab: the config and tags beside the final numbers, in this run's own folder (run_name=".").
        self.writer.add_hparams({**self.info.hparams, **{f"tag.{k}": v for k, v in self.info.tags.items()}},
                                final, run_name=".")

    def close(self, ok: bool) -> None:
        self.writer.close()


class MLflowLogger(Tracker):
    """Runs through MlflowClient: params = the flattened config, tags, metrics per epoch and per level.

    `tracking_uri` null: a SQLite store ./mlflow.db (MLflow 3 refuses plain ./mlruns folders); `mlflow ui
    --backend-store-uri sqlite:///mlflow.db` shows it. A sweep's runs share the experiment and its `sweep` tag."""

    def __init__(self, tracking_uri: str | None = None, experiment_name: str = "prune_lab"):
        self.tracking_uri, self.experiment_name = tracking_uri, experiment_name

    def start(self, info: RunInfo) -> None:
        need("mlflow", "mlflow", "mlflow")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = self.tracking_uri or f"sqlite:///{Path('mlflow.db').resolve()}"
        self.client = MlflowClient(uri)
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        experiment_id = (experiment.experiment_id if experiment is not None
                         else self.client.create_experiment(self.experiment_name))
        self.run_id = self.client.create_run(experiment_id, tags=info.tags, run_name=info.name).info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in info.hparams.items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def _metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        self.client.log_batch(self.run_id, metrics=[Metric(k, v, 0, step) for k, v in values.items()])

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        self._metrics(epoch_metrics(record), record["epoch"])

    def log_levels(self, levels: list[Mapping[str, Any]]) -> None:
        for i, level in enumerate(levels):
            self._metrics(level_metrics(level), i)

    def close(self, ok: bool) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")


class WandbLogger(Tracker):
    """A W&B run: config = the resolved config, tags "key=value" (cut to W&B's 64 characters), group = the sweep,
    history per epoch, the levels at the end (history and summary). mode: offline (default) writes
    <run>/wandb/offline-run-*, which `wandb sync` uploads; online needs `wandb login`."""

    def __init__(self, project: str = "prune_lab", mode: str = "offline", entity: str | None = None):
        self.project, self.mode, self.entity = project, mode, entity

    def start(self, info: RunInfo) -> None:
        wandb = need("wandb", "wandb", "wandb")
        self.run = wandb.init(project=self.project, entity=self.entity, mode=self.mode, dir=str(info.run_dir),
                              name=info.name, group=info.tags["sweep"][-128:] or None,  # W&B: <= 128 characters
                              tags=[f"{k}={v}"[:64] for k, v in info.tags.items() if v != "" and k != "sweep"],
                              config=dict(info.config), reinit="create_new")

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        self.run.log({**epoch_metrics(record), f"{record['phase']}/epoch": record["epoch"]})

    def log_levels(self, levels: list[Mapping[str, Any]]) -> None:
        for i, level in enumerate(levels):
            self.run.log({**level_metrics(level), "level/index": i})
        self.run.summary.update({f"final/{k}": v for k, v in numbers(levels[-1]).items()})

    def close(self, ok: bool) -> None:
        self.run.finish(exit_code=0 if ok else 1)


class Trackers:
    """The run's chosen trackers as one `Job.log` sink; empty for logger=none."""

    def __init__(self, trackers: list[Tracker], run_dir: Path):
        self.trackers, self.run_dir = trackers, run_dir

    @classmethod
    def open(cls, config: Mapping[str, Any], run_dir: Path, choices: Mapping[str, str]) -> Trackers:
        """Build and start every tracker under `logger` (a missing package: one line, before training)."""
        from hydra.utils import instantiate

        nodes = config.get("logger") or {}
        if not nodes:
            return cls([], run_dir)
        info = RunInfo(run_dir, run_dir.name, config, run_tags(config, choices))
        opened = cls([], run_dir)
        try:
            for name, node in nodes.items():
                if not isinstance(node, Mapping) or "_target_" not in node:
                    raise UserError(f"logger.{name} must be a tracker config with _target_ (choose logger=csv, "
                                    "tensorboard, mlflow or wandb; several: logger=[csv,tensorboard])")
                tracker = instantiate(dict(node), _convert_="all")
                tracker.start(info)
                opened.trackers.append(tracker)
        except BaseException:
            opened.fail()  # the trackers already started are closed as failed, not left running
            raise
        return opened

    def __call__(self, record: dict[str, Any]) -> None:
        for tracker in self.trackers:
            tracker(record)

    def finish(self, results: Mapping[str, Any]) -> None:
        """After results.json: the final metrics.jsonl (every epoch, restored or cached ones too) and the levels."""
        if not self.trackers:
            return
        path = self.run_dir / METRICS
        history = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for tracker in self.trackers:
            tracker.finish(history, results)

    def fail(self) -> None:
        for tracker in self.trackers:
            with contextlib.suppress(Exception):  # the run's own error is the one to report
                tracker.fail()


def run_tags(config: Mapping[str, Any], choices: Mapping[str, str]) -> dict[str, str]:
    """dataset, model, init, pruner, seed and sweep (the sweep folder of a Hydra multirun, else "")."""
    tags = {k: str(choices.get(k, "")) for k in ("dataset", "model", "init", "pruner")}
    tags["seed"] = str(config.get("seed"))
    tags["sweep"] = ""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            sweep = Path(HydraConfig.get().sweep.dir).resolve()
            # As typed under the working folder (sweeps/init_study), where ./mlflow.db lives; else absolute.
            tags["sweep"] = str(sweep.relative_to(Path.cwd())) if sweep.is_relative_to(Path.cwd()) else str(sweep)
    except Exception:  # no Hydra app (the Python API): a single run
        pass
    return tags
