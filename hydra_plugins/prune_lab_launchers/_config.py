"""The schema of prune_lab's SLURM profiles: submitit's SlurmQueueConf plus packing (conf/hydra/launcher/slurm_*.yaml).

Not a plugin module (its name starts with "_", so Hydra's plugin scan skips it): launchers.py imports it,
which registers `hydra/launcher=prune_lab_slurm` for the profiles' defaults lists.
"""

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf


@dataclass
class PackedSlurmQueueConf(SlurmQueueConf):
    # Runs per array task, run in turn by a pool of warm workers across the task's CPUs: 1 (one task per run),
    # K, or auto (ceil(runs / array_parallelism), at least workers_per_task). slurm/README.md: when to pack.
    runs_per_task: Any = 1
    # Warm workers in a packed task: auto = cpus_per_task (one torch thread each), or N (cpus_per_task // N threads).
    workers_per_task: Any = "auto"


ConfigStore.instance().store(group="hydra/launcher", name="prune_lab_slurm", node=PackedSlurmQueueConf(),
                             provider="prune_lab")
