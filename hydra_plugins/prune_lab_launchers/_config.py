"""The schemas of prune_lab's launchers, registered in Hydra's ConfigStore.

`hydra/launcher=prune_lab_slurm`: submitit's SlurmQueueConf plus packing, the base of conf/hydra/launcher/slurm_*.yaml.
`hydra/launcher=prune_lab_one_process` and `prune_lab_local`: the one-process and local launchers for any Hydra app
(prune_lab's own conf/hydra/launcher/one_process.yaml and local.yaml set the same targets); Hydra's launcher test
suites (tests/test_launchers_hydra_suites.py) run against these.

Not a plugin module (its name starts with "_", so Hydra's plugin scan skips it): launchers.py imports it.
"""

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf

TARGET = "hydra_plugins.prune_lab_launchers.launchers."


@dataclass
class PackedSlurmQueueConf(SlurmQueueConf):
    # Runs per array task, run in turn by a pool of warm workers across the task's CPUs: 1 (one task per run),
    # K, or auto (ceil(runs / array_parallelism), at least workers_per_task). slurm/README.md: when to pack.
    runs_per_task: Any = 1
    # Warm workers in a packed task: auto = cpus_per_task (one torch thread each), or N (cpus_per_task // N threads).
    workers_per_task: Any = "auto"


@dataclass
class OneProcessConf:
    _target_: str = TARGET + "BasicLauncher"


@dataclass
class LocalConf(LocalQueueConf):
    _target_: str = TARGET + "LocalLauncher"
    warm: bool = True  # a pool of warm workers; false: a process per run (submitit's local executor)
    parallelism: Any = "auto"  # runs at the same time; auto: one per usable core


store = ConfigStore.instance()
store.store(group="hydra/launcher", name="prune_lab_slurm", node=PackedSlurmQueueConf(), provider="prune_lab")
store.store(group="hydra/launcher", name="prune_lab_one_process", node=OneProcessConf(), provider="prune_lab")
store.store(group="hydra/launcher", name="prune_lab_local", node=LocalConf(), provider="prune_lab")
