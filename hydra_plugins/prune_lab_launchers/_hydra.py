"""Every Hydra-private name the launchers use, in one place, for the Hydra they were written against (1.3.x).

Hydra's public launcher API (hydra.plugins.launcher.Launcher, hydra.core.utils.run_job / JobReturn) does not
cover what the launchers need: a failed job's exception (JobReturn.return_value raises it), the config loader's
sweep composition and its override application (prune_lab_launchers._compose). A Hydra release may change
these; `check_version` says so in one line at the launcher's setup instead of failing somewhere inside a sweep.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import hydra
from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra.core.utils import JobReturn, JobStatus

SUPPORTED = "1.3."  # hydra-core 1.3.x


def check_version(version: str = hydra.__version__) -> None:
    if not version.startswith(SUPPORTED):
        raise RuntimeError(f"prune_lab's launchers use internals of hydra-core {SUPPORTED}x, but hydra-core {version} "
                           "is installed; install hydra-core>=1.3,<1.4 (pyproject.toml) or use hydra/launcher=basic")


def value(ret: JobReturn) -> Any:
    """The job's return value, or for a failed job its exception (the public property raises it)."""
    return ret._return_value


def job_return(*, status: JobStatus, value: Any, overrides: Sequence[str], cfg: Any = None, hydra_cfg: Any = None,
               working_dir: str | None = None, task_name: str | None = None) -> JobReturn:
    ret = JobReturn(overrides=list(overrides), cfg=cfg, hydra_cfg=hydra_cfg, working_dir=working_dir,
                    task_name=task_name, status=status)
    ret._return_value = value
    return ret


def set_value(ret: JobReturn, value: Any) -> None:
    ret._return_value = value


def load_sweep_config(loader: Any, master: Any, overrides: Sequence[str]) -> Any:
    """Hydra's own composition of one job of a sweep (also when `loader` is a FastSweepLoader)."""
    return ConfigLoaderImpl.load_sweep_config(loader, master, list(overrides))


def apply_overrides(overrides: Sequence[Any], cfg: Any) -> None:
    ConfigLoaderImpl._apply_overrides_to_config(list(overrides), cfg)


def overrides_dirname(task: Sequence[Any], kv_sep: str, item_sep: str, exclude_keys: Sequence[str]) -> str:
    return get_overrides_dirname(overrides=list(task), kv_sep=kv_sep, item_sep=item_sep,
                                 exclude_keys=list(exclude_keys))


ConfigLoader = ConfigLoaderImpl  # the loader class FastSweepLoader extends
