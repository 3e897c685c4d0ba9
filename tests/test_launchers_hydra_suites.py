"""Hydra's own launcher contract (hydra.test_utils.launcher_common_tests) against each local launcher of prune_lab.

LauncherTestSuite sweeps Hydra's test app in process and checks every JobReturn (cfg, hydra_cfg, working_dir,
task_name, overrides, the task's return value) and the job folders; IntegrationTestSuite runs small generated
Hydra apps in subprocesses (offline: each app is a file it writes in the test's tmpdir) and checks job names,
sweep folders and Hydra's path helpers. The launchers are chosen by their ConfigStore names (_config.py).
"""

from __future__ import annotations

import pytest
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from hydra.version import VersionBase
from packaging.version import Version

import hydra_plugins.prune_lab_launchers._config  # noqa: F401  (the ConfigStore names, before Hydra's fixtures save it)

# Each local launcher: the one-process default, warm workers (two, whatever the machine) and a process per run.
LAUNCHERS = [
    pytest.param("prune_lab_one_process", [], id="one_process"),
    pytest.param("prune_lab_local", ["hydra.launcher.parallelism=2", "hydra.launcher.gpus_per_node=0"], id="warm"),
    pytest.param("prune_lab_local", ["hydra.launcher.warm=false", "hydra.launcher.parallelism=2",
                                     "hydra.launcher.gpus_per_node=0"], id="warm_false",
                 marks=pytest.mark.slow),  # a process per job: seconds each
]


@pytest.fixture(autouse=True)
def _hydra_1_1_base():
    """The suites compose without a version_base, so they expect Hydra's 1.1 defaults (hydra.job.chdir=True: the
    job's log in its working_dir). VersionBase is a process-wide singleton that any earlier test composing with
    version_base="1.3" leaves set (CI failed 18 of these that way, in file order, while the file alone passed)."""
    base = VersionBase.instance()
    before = base.getbase()
    base.setbase(Version("1.1"))
    yield
    base.version_base = before


@pytest.mark.parametrize("launcher_name, overrides", LAUNCHERS)
class TestPruneLabLaunchers(LauncherTestSuite):
    pass


def _app(launcher: str, **settings: object) -> dict:
    return {"defaults": [{"override hydra/launcher": launcher}, {"override hydra/hydra_logging": "hydra_debug"},
                         {"override hydra/job_logging": "disabled"}],
            "hydra": {"launcher": settings}}


@pytest.mark.slow  # 33 subprocess apps: minutes
@pytest.mark.parametrize("task_launcher_cfg, extra_flags", [
    pytest.param(_app("prune_lab_one_process"), ["-m"], id="one_process"),
    pytest.param(_app("prune_lab_local", parallelism=2, gpus_per_node=0), ["-m"], id="warm"),
    pytest.param(_app("prune_lab_local", warm=False, parallelism=2, gpus_per_node=0, timeout_min=2), ["-m"],
                 id="warm_false"),
])
class TestPruneLabLaunchersIntegration(IntegrationTestSuite):
    pass
