"""Trust at the seams: what prune_lab reads back from disk is verified and never executed, the dense cache uses
only entries its `cache_trust` trusts, and a cache that fails (a full disk) costs one line, never the run.

Real files, real other users (files chowned to `nobody` and `daemon`; needs root), a real full filesystem (a
64 KiB tmpfs; needs root and mount permission), real runs (`python -m prune_lab`, marked slow). Tests that need
root or a mount skip and say why without them.
"""

from __future__ import annotations

import errno
import grp
import hashlib
import io
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY, computed, job_from_config, read_json, run_cli

from prune_lab.api import prepare
from prune_lab.bookkeeping import override_dirname_excludes
from prune_lab.cache import DenseCache
from prune_lab.config import config_hash
from prune_lab.storage import CHECKSUM, PhaseStore

PENGUIN = ["device=cpu", "threads=1", "seed=5", "sparsity=0.5", *TINY]


class Payload:
    """What an attacker pickles: unpickling it calls open(marker, "w"), which creates the file `marker`."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def evil_bytes(marker: Path) -> bytes:
    """A torch.save file shaped like a cache entry / checkpoint whose unpickling would create `marker`."""
    buffer = io.BytesIO()
    torch.save({"model": {"w": Payload(marker)}, "mask": {}, "history": [], "hook": {}}, buffer)
    return buffer.getvalue()


def test_the_crafted_pickle_really_runs_code_when_executed(tmp_path: Path) -> None:
    """The payload the tests below plant is live: a loader that executes pickles creates its file."""
    proof = tmp_path / "proof"
    torch.load(io.BytesIO(evil_bytes(proof)), weights_only=False)
    assert proof.exists()


def plant(cache: DenseCache, key: str, data: bytes) -> None:
    """`data` as the entry `key`, with a manifest whose sha256 matches it (what anyone who can write the folder
    can do)."""
    pt, manifest, _ = cache._paths(key)
    pt.write_bytes(data)
    manifest.write_text(json.dumps({"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "identity": {}}))


def counting_train(value: float = 1.0):
    calls: list[int] = []

    def train() -> dict:
        calls.append(1)
        return {"model": {"w": torch.full((3,), value)}, "history": [{"epoch": 1}]}

    return train, calls


def err_lines(capsys: pytest.CaptureFixture) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


# --- case 8: read as data, never executed ------------------------------------------------------------------

def test_a_cache_entry_that_would_run_code_is_refused_set_aside_and_retrained(tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture) -> None:
    cache = DenseCache(tmp_path / "cache", {"seed": 0})
    key, pwned = cache.key("dense", 1), tmp_path / "pwned"
    evil = evil_bytes(pwned)
    plant(cache, key, evil)
    train, calls = counting_train()
    outcome = cache.fetch_or_train("dense", 1, train)
    assert not pwned.exists(), "the cache executed a pickle it read back"
    assert not outcome.hit and len(calls) == 1 and torch.equal(outcome.state["model"]["w"], torch.ones(3))
    (aside,) = (tmp_path / "cache").glob(f"{key}.pt.corrupt-*")  # kept for a post-mortem, never read again
    assert aside.read_bytes() == evil
    (line,) = err_lines(capsys)
    assert line.startswith(f"prune_lab: ignoring a corrupt dense-cache entry {cache._paths(key)[0]} (Unpickling")
    again = cache.fetch_or_train("dense", 1, train)  # the next job: a hit on the entry this one stored
    assert again.hit and len(calls) == 1 and not pwned.exists() and err_lines(capsys) == []


def test_a_checkpoint_that_would_run_code_is_refused_and_set_aside_despite_its_valid_checksum(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    store, pwned = PhaseStore(tmp_path / "checkpoints", "abc"), tmp_path / "pwned"
    evil = evil_bytes(pwned)
    path = tmp_path / "checkpoints" / "dense.done.pt"
    path.write_bytes(evil + CHECKSUM + hashlib.sha256(evil).hexdigest().encode())
    assert store.load("dense", "done") is None
    assert not pwned.exists(), "a checkpoint was executed"
    assert not path.exists() and len(list(path.parent.glob("dense.done.pt.corrupt-*"))) == 1
    (line,) = err_lines(capsys)
    assert f"checkpoint {path} does not load (UnpicklingError" in line and "moved it to" in line
    store.save("dense", "done", {"model": {"w": torch.ones(2)}, "history": [{"epoch": 1, "lr": 0.1}]})
    assert torch.equal(store.load("dense", "done")["model"]["w"], torch.ones(2))


def test_an_entry_that_does_not_fit_the_model_is_set_aside_and_retrained(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    cache = DenseCache(tmp_path, {"seed": 0})
    key = cache.key("dense", 1)
    cache.store(key, {"model": {"w": torch.zeros(2)}, "history": []}, {})  # intact, but not this model's
    train, calls = counting_train()
    outcome = cache.fetch_or_train("dense", 1, train, like={"w": torch.zeros(3)})
    assert not outcome.hit and len(calls) == 1
    (line,) = err_lines(capsys)
    assert "ignoring a corrupt dense-cache entry" in line and "its w is (2,) torch.float32, not (3,)" in line
    assert len(list(tmp_path.glob(f"{key}.pt.corrupt-*"))) == 1


def stored_states(job) -> list[tuple[str, str, dict]]:
    """Spy on a real job's PhaseStore: every checkpoint it writes, read back from its file at once."""
    store, written = job.store, []
    save = store.save

    def spy(name: str, kind: str, state: dict) -> None:
        save(name, kind, state)
        written.append((name, kind, store.load(name, kind)))

    store.save = spy
    return written


@pytest.mark.parametrize("overrides", [
    ("train=sgd", "train/schedule=cosine", "train.warmup=epoch:1"),
    ("train=adadelta",), ("train=adamw", "train/schedule=onecycle"),
    ("pruner=agp", "pruner/score=movement"),  # a step hook's state (movement scores)
    ("pruner=imp", "pruner.rewind=epoch:1", "pruner.controls=[randomly_reinitialize,randomly_prune]"),  # snapshots
], ids=lambda o: ",".join(o))
def test_every_checkpoint_a_run_writes_reads_back_as_data_only(overrides: tuple[str, ...], tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    """Optimizer, schedule, masks, history, hook state and snapshots are plain tensors, dicts, lists, numbers and
    strings: every checkpoint loads under weights_only=True (none is set aside), so resuming still works."""
    job = job_from_config(tmp_path, *overrides, "device=cpu", "train.epochs=2", "train.finetune_epochs=1",
                          "train.checkpoint_every_s=0")
    written = stored_states(job)
    job.pruner.run(job)
    assert {kind for _, kind, _ in written} >= {"partial", "done"}
    assert all(state is not None for _, _, state in written)
    assert "does not load" not in capsys.readouterr().err


# --- case 3 and the trust model: whose entries are used ------------------------------------------------------

def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("making files owned by another user (os.chown) needs root")


def user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pytest.skip(f"this machine has no user {name!r} to own files")


def tampered(folder: Path, trust: str) -> tuple[DenseCache, str, dict[Path, bytes]]:
    """A cache whose entry for ("dense", 1) holds altered weights (666) with a matching checksum."""
    cache = DenseCache(folder, {"seed": 0}) if trust == "owner" else DenseCache(folder, {"seed": 0}, trust)
    key = cache.key("dense", 1)
    cache.store(key, {"model": {"w": torch.full((3,), 666.0)}, "history": [{"epoch": 1}]}, {})
    return cache, key, {p: p.read_bytes() for p in cache._paths(key)[:2]}


@pytest.mark.parametrize("whose", ["pt", "json", "both"])
def test_an_entry_another_user_wrote_is_ignored_left_in_place_and_the_job_trains_its_own(
        whose: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """cache_trust=owner (the default). The manifest counts as much as the .pt: its checksum vouches only for
    what its writer meant, so another user's manifest over your .pt is as untrusted as another user's .pt."""
    need_root()
    nobody = user("nobody")
    cache, key, before = tampered(tmp_path / "cache", "owner")
    pt, manifest, _ = cache._paths(key)
    for path in {"pt": [pt], "json": [manifest], "both": [pt, manifest]}[whose]:
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    train, calls = counting_train()
    outcome = cache.fetch_or_train("dense", 1, train)
    assert not outcome.hit and len(calls) == 1 and torch.equal(outcome.state["model"]["w"], torch.ones(3))
    assert {p: p.read_bytes() for p in before} == before, "someone else's entry was overwritten or moved"
    (line,) = err_lines(capsys)
    assert line.startswith("prune_lab: ignoring the dense-cache entry ")
    assert "is owned by nobody, not you, and cache_trust=owner does not trust it" in line
    assert "leaves the entry in place" in line


def test_cache_trust_group_uses_entries_of_the_folders_group_only_and_everyone_uses_any(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A lab's shared cache: a folder of group nogroup, writable by the group (2770). `nobody` (primary group
    nogroup) is in the group; `daemon` is not."""
    from prune_lab.cache import entry_distrust, folder_distrust

    need_root()
    nobody, daemon = user("nobody"), user("daemon")
    lab = nobody.pw_gid
    if daemon.pw_gid == lab or daemon.pw_name in grp.getgrgid(lab).gr_mem:
        pytest.skip("daemon is in nobody's group here")
    folder = tmp_path / "shared"
    cache, key, _ = tampered(folder, "group")
    os.chown(folder, 0, lab)
    os.chmod(folder, 0o2770)
    pt, manifest, _ = cache._paths(key)
    assert folder_distrust(os.stat(folder), "owner") == "is writable by its group (2770)"
    assert DenseCache.open(str(folder), {"seed": 0}, torch.device("cpu"), 1) is None  # owner: the folder is off
    (line,) = err_lines(capsys)
    assert f"the dense cache is off for this run: cache_dir={folder} is writable by its group (2770)" in line
    assert "set cache_trust=group" in line and "a shared cache trusts everyone who can write it" in line

    def served(trust: str) -> bool:
        shared = DenseCache.open(str(folder), {"seed": 0, "cache_trust": trust}, torch.device("cpu"), 1)
        assert shared is not None
        return shared.load(key) is not None

    for path in (pt, manifest):
        os.chown(path, nobody.pw_uid, lab)  # written by a member of the folder's group
    assert served("group") and served("everyone")
    for path in (pt, manifest):
        os.chown(path, daemon.pw_uid, daemon.pw_gid)  # written by someone outside the group
    assert not served("group") and served("everyone")  # everyone: a shared cache trusts everyone who can write it
    assert "is owned by daemon, who is not in the cache folder's group" in capsys.readouterr().err
    os.chmod(folder, 0o777)
    assert folder_distrust(os.stat(folder), "group") == "is writable by everyone (0777)"
    assert entry_distrust(os.stat(pt), os.stat(folder), "everyone") is None


def test_a_cache_folder_prune_lab_makes_is_0700_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        DenseCache(tmp_path / "new" / "cache", {})
    finally:
        os.umask(old)
    for folder in (tmp_path / "new", tmp_path / "new" / "cache"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_cache_trust_is_bookkeeping_and_a_bad_value_is_one_line(tmp_path: Path) -> None:
    config = {"seed": 1, "sparsity": 0.5, "cache_dir": "/c", "cache_trust": "owner", "train": {"lr": 0.1}}
    assert config_hash(config) == config_hash({**config, "cache_trust": "everyone"})
    assert "cache_trust" in override_dirname_excludes()  # never names a sweep folder
    from prune_lab.errors import UserError

    with pytest.raises(UserError, match=r"^cache_trust=anyone is not a choice: choose one of owner, group, everyone"):
        DenseCache.open(str(tmp_path), {"seed": 0, "cache_trust": "anyone"}, torch.device("cpu"), 1)


# --- case 10: a cache that fails costs one line, never the run -----------------------------------------------

@pytest.fixture
def full_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB tmpfs, filled up: a folder can still be made in it and empty files (the probe, the lock)
    created, but no byte more fits (ENOSPC)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        (mount / "cache").mkdir()
        try:
            with (mount / "filler").open("wb", buffering=0) as f:
                while True:
                    f.write(bytes(4096))
        except OSError as e:
            assert e.errno == errno.ENOSPC
        yield mount / "cache"
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_full_cache_is_one_line_and_the_job_keeps_and_stores_its_own_training(
        full_tmpfs: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _, job = prepare(*PENGUIN, f"cache_dir={full_tmpfs}", run_dir=tmp_path / "run")
    assert job.dense_cache is not None
    job.train("dense", 2)
    (line,) = err_lines(capsys)
    assert line.startswith(f"prune_lab: cannot store the dense-cache entry {full_tmpfs}/")
    assert "No space left on device" in line and "the run goes on with its own training" in line
    assert job.cached_phases[0]["hit"] is False and len(job.history) == 2
    done = job.store.load("dense", "done")  # the phase is in the run's own checkpoints, as without a cache
    assert done is not None and done["history"] == job.history
    for name, tensor in job.model.state_dict().items():
        assert torch.equal(done["model"][name], tensor)
    assert not list(full_tmpfs.glob("*.pt")) and not list(full_tmpfs.glob(".*.tmp"))  # nothing half-written


def test_a_failure_inside_training_is_not_taken_for_a_cache_failure(tmp_path: Path) -> None:
    cache = DenseCache(tmp_path, {})

    def train() -> dict:
        raise OSError(errno.ENOSPC, "No space left on device", "the run folder")

    with pytest.raises(OSError, match="the run folder"):
        cache.fetch_or_train("dense", 1, train)


AS_NOBODY = textwrap.dedent("""
    import json, sys, torch
    from pathlib import Path
    from prune_lab.cache import DenseCache
    cache = DenseCache(Path(sys.argv[1]), {"seed": 0})
    key = cache.key("dense", 1)
    cache.store(key, {"model": {"w": torch.zeros(3)}, "history": []}, {})
    cache._paths(key)[0].chmod(0)  # an entry of this user's that this user cannot read: EACCES
    outcome = cache.fetch_or_train("dense", 1, lambda: {"model": {"w": torch.ones(3)}, "history": []})
    print(json.dumps({"hit": outcome.hit, "w": outcome.state["model"]["w"].tolist(),
                      "stored": cache.load(key) is not None}))
""")


def test_an_unreadable_entry_is_one_line_and_the_job_trains_and_stores_its_own() -> None:
    """Run as the real user `nobody` (root reads any file, so root cannot meet EACCES)."""
    need_root()
    nobody = user("nobody")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to run a process as nobody")
    base = Path(tempfile.mkdtemp(prefix="prune_lab_nobody."))  # not under tmp_path: nobody cannot enter that
    try:
        os.chmod(base, 0o755)
        os.chown(base, nobody.pw_uid, nobody.pw_gid)
        done = subprocess.run(["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
                               sys.executable, "-c", AS_NOBODY, str(base / "cache")], cwd=ROOT, capture_output=True,
                              text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(base)})
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(done.stdout.splitlines()[-1]) == {"hit": False, "w": [1.0, 1.0, 1.0], "stored": True}
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("prune_lab: cannot read the dense-cache entry "), lines
        assert "Permission denied" in lines[0]
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_a_full_cache_dir_costs_one_line_and_the_run_and_its_rerun_finish(full_tmpfs: Path, tmp_path: Path) -> None:
    for run in ("a", "b"):  # the rerun (a new folder) finds the cache as full as before: the same one line
        done = run_cli(f"hydra.run.dir={tmp_path / run}", *PENGUIN, f"cache_dir={full_tmpfs}", cwd=ROOT)
        assert done.returncode == 0, done.stderr[-3000:]
        assert (tmp_path / run / "results.json").exists()
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "cannot store the dense-cache entry" in lines[0], lines
        assert read_json(tmp_path / run / "results.json")["dense_cache"][0]["hit"] is False


@pytest.mark.slow
def test_planted_code_in_the_cache_and_a_checkpoint_never_runs_and_the_run_finishes_twice(tmp_path: Path) -> None:
    """A crafted pickle as the dense-cache entry (matching manifest) and as the run's dense checkpoint (valid
    checksum trailer): the relaunch sets both aside, creates no file, finishes with the original results, and a
    later relaunch finishes without a word about either."""
    run, cache, pwned = tmp_path / "run", tmp_path / "cache", tmp_path / "pwned"
    args = [f"hydra.run.dir={run}", *PENGUIN, f"cache_dir={cache}", "keep_checkpoints=true"]
    first = run_cli(*args, cwd=ROOT)
    assert first.returncode == 0, first.stderr[-3000:]
    levels = computed(read_json(run / "results.json")["levels"])
    evil = evil_bytes(pwned)
    (entry,) = cache.glob("*.pt")
    entry.write_bytes(evil)
    manifest = entry.with_suffix(".json")
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "sha256": hashlib.sha256(evil).hexdigest()}))
    checkpoint = run / "checkpoints" / "dense.done.pt"
    checkpoint.write_bytes(evil + CHECKSUM + hashlib.sha256(evil).hexdigest().encode())
    for attempt in range(2):
        (run / "results.json").unlink()  # the run is redone from its checkpoints
        again = run_cli(*args, cwd=ROOT)
        assert again.returncode == 0, again.stderr[-3000:]
        assert not pwned.exists()
        lines = [line for line in again.stderr.splitlines() if line.strip()]
        if attempt == 0:
            assert len(lines) == 2, lines
            assert f"checkpoint {checkpoint} does not load (UnpicklingError" in lines[0]
            assert f"ignoring a corrupt dense-cache entry {entry} (UnpicklingError" in lines[1]
        else:
            assert lines == []
        assert computed(read_json(run / "results.json")["levels"]) == levels
    assert len(list(cache.glob("*.pt.corrupt-*"))) == len(list(run.glob("checkpoints/*.corrupt-*"))) == 1
