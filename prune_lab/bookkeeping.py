"""What is bookkeeping, not the experiment: the one list every notion of "the same run" reads.

A bookkeeping key says where things are, how the machine runs them or how often to save, never what is
computed: a run done with another value of it is the same experiment. The config hash (prune_lab.config),
the dense-cache key (prune_lab.cache), the sweep folder names (Hydra's `override_dirname.exclude_keys`,
through the `prune_lab_bookkeeping` resolver in conf/config.yaml) and the analysis' conditions
(multirun_analysis.loading) all read `BOOKKEEPING` here, at call time, so editing this tuple moves all four.

Machine facts a result may still depend on numerically (the device type, torch's version, the CPU thread
count) are not config identity; the dense cache adds them to its key as measured facts of the run.

This module imports nothing heavy: the analysis and the launchers import it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

# Dotted keys of the resolved config (and of command-line overrides).
BOOKKEEPING: tuple[str, ...] = (
    "device",                    # auto | cpu | cuda: where it runs (the cache key records the device type used)
    "threads",                   # CPU threads for torch (the cache key records the count used)
    "cache_dir",                 # where the dense-training cache lives
    "cache_trust",               # whose dense-cache entries are used (a served entry equals training's outcome)
    "keep_checkpoints",          # whether a finished run keeps its resumable checkpoints
    "keep_tickets",              # whether every level's weights and mask are saved (tickets/)
    "skip_absent_data",          # whether a run without its data files is skipped (size=debug) or fails
    "measure",                   # which payoff fields are measured (timings are not the experiment)
    "dataset.data_dir",          # where the data files are
    "dataset.download",          # whether missing files may be fetched
    "dataset.verify_md5",        # whether files are checked before use (a corrupt file fails either way)
    "train.checkpoint_every_s",  # how often a phase saves a resumable checkpoint
    "log_every",                 # how many epochs get a progress line
    "logger",                    # which experiment trackers the metrics also go to
    "objective",                 # which number a Hydra sweeper optimises
    "hparams_search",            # which sweeper search launched the run (it sets only hydra.sweeper)
)

# Settings added after runs were recorded, at the value that means "what every run did before the key existed".
# At that value a key is left out of the experiment's identity (config hash, dense-cache key, conditions), so a
# finished sweep keeps its hash when a release adds a setting; any other value is a new experiment. Add a key
# here when you add a setting whose default reproduces the old behaviour exactly; never change a value here.
NEUTRAL: dict[str, Any] = {
    "pruner.controls": [],  # the at-init pruners' sanity checks (snip, grasp, synflow): none, as before
    "pruner.select.distribution": "uniform",  # 2026-12: layerwise layer shares (er, erk); uniform is the old selection
    "pruner.stability": False,  # 2026-12: imp's instability analysis (a second copy per level); off, as before
}
# Where a key already existed elsewhere (in another option of its group), its neutral value is neutral only in
# the configs that match here (dotted key -> value): there the key is new. imp's `controls: []` has always been
# part of imp's config, so imp's hash keeps it.
NEUTRAL_WHERE: dict[str, dict[str, Any]] = {
    "pruner.controls": {"pruner._target_": "prune_lab.pruners.at_init.AtInit"},
}

# Keys that place a run on a curve rather than define its curve: the statistics' axes.
AXES: tuple[str, ...] = ("seed", "sparsity", "pruner.sparsity")


def normalize_key(key: str) -> str:
    """An override's key as a dotted config key: "+train/x" -> "train.x" (Hydra's +, ++ and ~ dropped)."""
    return key.lstrip("+~").replace("/", ".")


def is_bookkeeping(key: str) -> bool:
    return normalize_key(key) in BOOKKEEPING


def without(config: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """A deep copy of plain config data minus the dotted `keys`, e.g. "dataset.data_dir"."""
    trimmed = json.loads(json.dumps(config))
    for key in keys:
        *parents, last = key.split(".")
        node: Any = trimmed
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return trimmed


def neutral_keys(config: Mapping[str, Any]) -> list[str]:
    """The NEUTRAL keys `config` holds at their neutral value (left out of its identity)."""
    found = []
    for key, value in NEUTRAL.items():
        where = NEUTRAL_WHERE.get(key, {})
        if _holds(config, key, value) and all(_holds(config, k, v) for k, v in where.items()):
            found.append(key)
    return found


def _holds(config: Mapping[str, Any], key: str, value: Any) -> bool:
    """Whether the dotted `key` of `config` is present and equal to `value` (as JSON)."""
    node: Any = config
    for part in key.split("."):
        node = node.get(part, _ABSENT) if isinstance(node, Mapping) else _ABSENT
    return node is not _ABSENT and json.dumps(node, sort_keys=True) == json.dumps(value, sort_keys=True)


_ABSENT = object()


def experiment_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved config minus bookkeeping and neutral settings: what defines the experiment (the config hash
    hashes this)."""
    return without(config, (*BOOKKEEPING, *neutral_keys(config)))


def condition_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The experiment minus its axes (seed, target): runs with equal condition configs share one curve."""
    return without(config, (*BOOKKEEPING, *neutral_keys(config), *AXES))


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train.lr": 0.01, ...}: nested dicts flattened to dotted keys; lists kept as JSON text."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{dotted}."))
        elif isinstance(value, (list, tuple)):
            out[dotted] = json.dumps(value, sort_keys=True)
        else:
            out[dotted] = value
    return out


def override_dirname_excludes(*extra: str) -> list[str]:
    """Hydra's `override_dirname.exclude_keys`: bookkeeping plus `extra` (e.g. experiment, size)."""
    return [*BOOKKEEPING, *extra]
