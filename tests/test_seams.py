"""Trust at the seams: faults around a run (a full disk, signals, a busy machine, stale temp files, a shadowed
package or config) each give one clear line, with real processes, real filesystems and real signals.

Every case counts the lines of stderr: one line, never a traceback or Python's "--- Logging error ---" blocks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY, read_json, results_below, run_cli

# Penguins, a checkpoint at every epoch end; one thread, so the runs compute the same way whatever the load.
LONG = ["device=cpu", "threads=1", "seed=3", "sparsity=0.5", "train.epochs=15", "train.finetune_epochs=15",
        "train.batch_size=16", "train.checkpoint_every_s=0", "cache_dir=null"]


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0", **extra}


def start(*args: str, cwd: Path, **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "prune_lab", *args], cwd=cwd, env=env(**extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(folder: Path, pattern: str, proc: subprocess.Popen[str], timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while True:
        found = list(folder.glob(pattern))
        if found:
            return found[0]
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the run ended before {folder / pattern} appeared:\n{out[-2000:]}{err[-2000:]}")
        assert time.monotonic() < deadline, f"{folder / pattern} did not appear within {timeout}s"
        time.sleep(0.005)


def one_line(stderr: str, prefix: str = "prune_lab: error: ") -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr[-5000:]
    assert lines[0].startswith(prefix), stderr[-3000:]
    return lines[0]


# --- a full disk or no inodes in the run folder (case 11) --------------------------------------------------

@pytest.fixture
def tiny_fs(tmp_path: Path):
    """A mount point for a real, tiny tmpfs: `mount(options)` mounts it; unmounted at the end."""
    point = tmp_path / "tiny"
    point.mkdir()
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True,
                              text=True)
        if done.returncode != 0:
            pytest.skip(f"mounting a tmpfs is not permitted here ({done.stderr.strip()[:200]})")
        mounted.append(point)
        return point

    yield mount
    for p in mounted:
        subprocess.run(["umount", "-l", str(p)], capture_output=True)


def fill(folder: Path) -> None:
    """Fill the filesystem under `folder` to the last byte (a real ENOSPC for the next write)."""
    with (folder / ".filler").open("wb", buffering=0) as f:
        try:
            while f.write(b"\0" * 4096):
                pass
        except OSError:
            pass


def assert_full_disk_line(proc_stderr: str, returncode: int, run_dir: Path) -> None:
    line = one_line(proc_stderr)
    assert returncode == 1, proc_stderr
    assert f"hydra.run.dir={run_dir} is full" in line and "No space left on device" in line, line
    assert "Traceback" not in proc_stderr and "Logging error" not in proc_stderr
    assert not (run_dir / "results.json").exists()


def test_a_full_disk_at_start_is_one_line_naming_the_run_folder(tmp_path: Path, tiny_fs) -> None:
    mnt = tiny_fs("size=200k")
    fill(mnt)  # full before Hydra writes .hydra/ and its log
    run_dir = mnt / "run"
    done = run_cli(f"hydra.run.dir={run_dir}", *TINY, "cache_dir=null", cwd=tmp_path, timeout=120)
    assert_full_disk_line(done.stderr, done.returncode, run_dir)


def test_no_inodes_left_is_one_line_naming_the_run_folder(tmp_path: Path, tiny_fs) -> None:
    mnt = tiny_fs("size=1m,nr_inodes=3")  # the root and two more: the run folder and .hydra, then no file
    run_dir = mnt / "run"
    done = run_cli(f"hydra.run.dir={run_dir}", *TINY, "cache_dir=null", cwd=tmp_path, timeout=120)
    line = one_line(done.stderr)
    assert done.returncode != 0 and str(mnt) in line and "No space left on device" in line, done.stderr
    assert "Traceback" not in done.stderr and "Logging error" not in done.stderr


@pytest.mark.parametrize("when", ["dense.partial.pt", "finetune.partial.pt"])
def test_a_disk_that_fills_mid_training_is_one_line_and_the_relaunch_resumes(tmp_path: Path, tiny_fs,
                                                                              when: str) -> None:
    mnt = tiny_fs("size=400k")
    run_dir = mnt / "run"
    args = [f"hydra.run.dir={run_dir}", *LONG]
    proc = start(*args, cwd=tmp_path)
    wait_for(run_dir / "checkpoints", when, proc)
    fill(mnt)  # checkpoints, metrics.jsonl and the .log file all fail from here on
    _, err = proc.communicate(timeout=300)
    assert_full_disk_line(err, proc.returncode, run_dir)
    (mnt / ".filler").unlink()  # the fix the line names: free some space
    again = run_cli(*args, cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert again.returncode == 0, again.stderr[-3000:]
    assert read_json(run_dir / "results.json")["resumed"], "the relaunch resumes from the checkpoints"


def test_a_failing_log_handler_prints_no_logging_error_blocks(tmp_path: Path) -> None:
    """The .log file on a read-only descriptor: every record fails; one warning at the end, not a block each."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    log = run_dir / "__main__.log"
    log.write_text("")
    log.chmod(0o444)
    probe = textwrap.dedent("""
        import logging, sys
        from prune_lab.guard import guarded
        log = sys.argv[1]
        def main():
            logging.getLogger("x").addHandler(logging.StreamHandler(open(log)))  # read-only: every write fails
            for _ in range(50):
                logging.getLogger("x").warning("line")
        sys.argv = ["prune_lab"]
        guarded(main)
    """)
    done = subprocess.run([sys.executable, "-c", probe, str(log)], cwd=tmp_path, capture_output=True, text=True,
                          env=env(), timeout=120)
    assert done.returncode == 0, done.stderr
    line = one_line(done.stderr, "prune_lab: warning: could not write the log")
    assert "Logging error" not in done.stderr and str(log) in line


# --- signals: the resume line, quoted for bash and Hydra (case 12) ------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_resume_line_of_a_run_in_a_folder_with_spaces_and_accents_resumes_it(tmp_path: Path, sig) -> None:
    here = tmp_path / "my runs" / "çà"
    here.mkdir(parents=True)
    proc = start(*LONG, cwd=here)  # Hydra's default folder: outputs/<date>/<time> under this one
    checkpoint = wait_for(here, "outputs/*/*/checkpoints/dense.partial.pt", proc)
    run_dir = checkpoint.parent.parent
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == (130 if sig == signal.SIGINT else 128 + signal.SIGTERM), err[-3000:]
    line = one_line(err, "prune_lab: interrupted;" if sig == signal.SIGINT else "prune_lab: terminated (SIGTERM);")
    command = line.split("Resume with: ", 1)[1]
    again = subprocess.run(command.replace("python", sys.executable, 1), shell=True, executable="/bin/bash",
                           cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, command + "\n" + again.stderr[-3000:]
    assert results_below(tmp_path) == [run_dir / "results.json"], "the same run, in the same folder"
    assert read_json(run_dir / "results.json")["resumed"]
    assert "kept the checkpointed phases dense (finished" in line or "dense (part-way)" in line, line


def test_resume_command_quotes_for_hydra_inside_and_bash_outside(monkeypatch) -> None:
    from prune_lab.guard import WHERE, resume_command

    monkeypatch.setitem(WHERE, "run_dir", "/data/my runs/çà/it's")
    command = resume_command(["seed=1", "hydra.run.dir=whatever"])
    echoed = subprocess.run(["bash", "-c", f"printf '%s\\n' {command.split(' ', 3)[3]}"], capture_output=True,
                            text=True).stdout.splitlines()
    assert echoed == ["seed=1", 'hydra.run.dir="/data/my runs/çà/it\'s"']
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (parsed,) = OverridesParser.create().parse_overrides([echoed[1]])
    assert parsed.value() == "/data/my runs/çà/it's"


def test_ctrl_c_during_start_up_says_nothing_was_kept(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = start(f"hydra.run.dir={run_dir}", *LONG[:-3], "train.epochs=400", "cache_dir=null", cwd=tmp_path)
    wait_for(run_dir / ".hydra", "config.yaml", proc)  # Hydra has started the run; no phase is checkpointed
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    line = one_line(err, "prune_lab: interrupted;")
    assert "nothing was finished yet, so nothing was kept" in line and "finished work is kept" not in line


# --- threads (case 13 and threads=auto) ---------------------------------------------------------------------

@pytest.mark.parametrize("var", ["PRUNE_LAB_THREADS", "SLURM_CPUS_PER_TASK"])
def test_a_thread_count_variable_that_is_not_a_number_is_one_line_exit_2(tmp_path: Path, var: str) -> None:
    extra = {"PRUNE_LAB_THREADS": ""} if var == "SLURM_CPUS_PER_TASK" else {}
    done = run_cli("hydra.run.dir=run", *TINY, cwd=tmp_path, env={var: "abc", **extra}, timeout=120)
    line = one_line(done.stderr)
    assert done.returncode == 2 and f"{var}='abc'" in line and f"export {var}=" in line, line
    assert not results_below(tmp_path)


def test_more_threads_than_usable_cores_warns_once_and_keeps_the_count(tmp_path: Path) -> None:
    many = 2 * len(os.sched_getaffinity(0)) + 1
    done = run_cli("hydra.run.dir=run", *TINY, f"threads={many}", "cache_dir=null", cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    line = one_line(done.stderr, "prune_lab: warning: ")
    assert f"threads={many} exceeds the {len(os.sched_getaffinity(0))} usable core" in line
    assert read_json(tmp_path / "run" / "results.json")["threads"] == many


def test_auto_threads_follow_affinity_launcher_share_and_load(monkeypatch) -> None:
    import prune_lab.threads as threads

    for var in ("PRUNE_LAB_THREADS", "SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (2.1, 1.0, 1.0))
    assert threads.auto_threads() == (2, "4 usable cores, load 2.1")  # two cores busy: two left
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (7.9, 1.0, 1.0))
    assert threads.auto_threads()[0] == 1  # a loaded machine: one thread, never zero
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "8")
    assert threads.auto_threads()[0] == 4  # capped by the affinity
    monkeypatch.setenv("PRUNE_LAB_THREADS", "2")  # the parallel launcher's share of the cores
    assert threads.auto_threads() == (2, "PRUNE_LAB_THREADS=2, 4 usable cores")


def test_auto_threads_prints_its_choice_once(tmp_path: Path) -> None:
    bare = {k: v for k, v in env().items() if k not in ("PRUNE_LAB_THREADS", "SLURM_CPUS_PER_TASK",
                                                         "OMP_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-m", "prune_lab", "hydra.run.dir=run", *TINY, "cache_dir=null"],
                          cwd=tmp_path, env=bare, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    chosen = [line for line in done.stdout.splitlines() if line.startswith("prune_lab: threads=auto -> ")]
    assert len(chosen) == 1 and "usable core" in chosen[0] and "load" in chosen[0], done.stdout
    assert read_json(tmp_path / "run" / "results.json")["threads"] == int(chosen[0].split("-> ")[1].split()[0])


# --- stale temp files of killed atomic writes -----------------------------------------------------------------

def test_stale_temp_files_are_removed_on_the_next_start_and_a_live_writers_are_kept(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    stale = [run_dir / "checkpoints" / f".dense.partial.pt.k{i}.tmp" for i in range(3)] + [run_dir / ".m.json.x.tmp"]
    for path in stale:
        path.write_bytes(b"torn")
    old = time.time() - 5
    for path in stale:
        os.utime(path, (old, old))
    live = run_dir / "checkpoints" / ".finetune.partial.pt.live.tmp"
    live.write_bytes(b"being written")
    os.utime(live, (old, old))
    with live.open("ab"):  # a concurrent writer holds it open: never deleted under it
        done = run_cli(f"hydra.run.dir={run_dir}", *TINY, "cache_dir=null", cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"removed 4 stale temp file(s) of interrupted writes in {run_dir}" in done.stdout
    assert not any(p.exists() for p in stale) and live.exists()


# --- what a newcomer meets: sweeps without -m, a shadowing clone, a hidden config -----------------------------

def test_a_comma_list_without_multirun_says_add_m(tmp_path: Path) -> None:
    done = run_cli("sparsity=0.9,0.95", "hydra.run.dir=run", cwd=tmp_path, timeout=120)
    line = one_line(done.stderr)
    assert done.returncode == 2
    assert line == ("prune_lab: error: sparsity=0.9,0.95 is a sweep: add -m "
                    "(python -m prune_lab -m sparsity=0.9,0.95)")


def test_a_clone_named_prune_lab_in_the_current_folder_is_one_line(tmp_path: Path) -> None:
    """A clone's root (no __init__.py) in the current folder, with prune_lab installed by `pip install -e .`
    (setuptools' editable finder, an import hook after the path search): Python imports the clone's root as
    a namespace package, and the installed code's modules through the hook."""
    from setuptools.command.editable_wheel import _finder_template

    clone = tmp_path / "prune_lab"
    (clone / "prune_lab").mkdir(parents=True)
    (clone / "README.md").write_text("a clone\n")
    hook = tmp_path / "hook"
    hook.mkdir()
    mapping = {name: str(ROOT / name) for name in ("prune_lab", "hydra_plugins")}
    (hook / "editable_finder.py").write_text(_finder_template("editable_finder", mapping,
                                                              {"hydra_plugins": [str(ROOT / "hydra_plugins")]}))
    code = (f"import sys; sys.path[:] = [p for p in sys.path if p != {str(ROOT)!r}]; sys.path.insert(0, ''); "
            "import editable_finder, runpy; editable_finder.install(); "
            "runpy.run_module('prune_lab', run_name='__main__', alter_sys=True)")
    done = subprocess.run([sys.executable, "-c", code, "hydra.run.dir=run", *TINY], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=env(PYTHONPATH=str(hook)))
    line = one_line(done.stderr)
    assert done.returncode == 2 and str(clone) in line and "cd elsewhere" in line, done.stderr
    assert not (tmp_path / "run" / "results.json").exists()


def test_a_config_dir_file_named_like_a_packaged_option_is_named_in_one_warning(tmp_path: Path) -> None:
    mine = tmp_path / "my_conf" / "train"
    mine.mkdir(parents=True)
    (mine / "adam.yaml").write_text("defaults:\n  - adam\nlr: 0.5\n")
    (mine / "my_sgd.yaml").write_text("defaults:\n  - sgd\n")
    done = run_cli("--config-dir", str(tmp_path / "my_conf"), "hydra.run.dir=run", *TINY, "cache_dir=null",
                   cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    line = one_line(done.stderr, "prune_lab: warning: ")
    assert f"{mine / 'adam.yaml'} (train=adam)" in line and "my_sgd" not in line.split("rename")[0], line
