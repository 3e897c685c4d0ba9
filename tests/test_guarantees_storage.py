"""Atomic files and the phase store (prune_lab/storage.py), in process: what a resume and a reader rely on.

Each guarantee by hand: a write is whole or absent (its temp file gone on failure), files get the umask's mode,
a checkpoint is verified (sha256) and read as data only, a folder is tied to one config and one code, a bad
file is set aside and never read again, `build_once` builds once, and only dead writers' temp files are
removed. Fast: `make mutation` runs these per mutant (docs/contributing.md, "Mutation testing"); the
multi-process and real filesystem-fault cases are in tests/test_storage_faults.py and tests/test_seams.py.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import pickle
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from prune_lab import storage
from prune_lab.errors import FolderTaken
from prune_lab.storage import (
    CHECKSUM,
    FILE_MODE,
    STALE_AFTER_S,
    PhaseStore,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    build_once,
    clean_leftovers,
    load_plain,
    one_line,
    remove_stale_temp_files,
    set_aside,
    stale_temp_files,
)

HASH, OTHER = "0123456789abcdef", "fedcba9876543210"


def temp_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp"))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- atomic writes -------------------------------------------------------------------------------------------

def test_the_file_mode_is_the_umask_s() -> None:
    mask = os.umask(0)
    os.umask(mask)
    assert 0o666 & ~mask == FILE_MODE
    os.umask(0o027)
    try:
        assert storage._umask() == 0o027 and storage._umask() == 0o027  # read, and left as it was
    finally:
        os.umask(mask)


def test_atomic_write_bytes_makes_parents_and_replaces_whole(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "f.bin"
    atomic_write_bytes(path, b"first")
    assert path.read_bytes() == b"first" and mode(path) == FILE_MODE
    atomic_write_bytes(path, b"second", mode=0o600)
    assert path.read_bytes() == b"second" and mode(path) == 0o600
    assert temp_files(path.parent) == []


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"old")

    def fail(*args: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage.os, "replace", fail)
    with pytest.raises(OSError, match="No space"):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old" and temp_files(tmp_path) == []


def test_a_write_interrupted_by_ctrl_c_leaves_no_temp_file(tmp_path: Path, monkeypatch) -> None:
    def interrupt(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(storage.os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(tmp_path / "f.bin", b"x")
    assert list(tmp_path.iterdir()) == []


def test_the_temp_file_is_hidden_beside_its_target(tmp_path: Path, monkeypatch) -> None:
    seen: list[tuple[str, str]] = []
    real = storage.os.replace

    def spy(src: str, dst: Any) -> None:
        seen.append((str(src), str(dst)))
        real(src, dst)

    monkeypatch.setattr(storage.os, "replace", spy)
    atomic_write_bytes(tmp_path / "results.json", b"{}")
    ((src, dst),) = seen
    assert Path(src).parent == tmp_path and Path(src).name.startswith(".results.json.") and src.endswith(".tmp")
    assert dst == str(tmp_path / "results.json")


def test_atomic_write_json_is_indented_with_a_newline_and_keeps_nan(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "r.json", {"a": float("nan"), "b": [1, 2]})
    text = (tmp_path / "r.json").read_text()
    assert text == json.dumps({"a": float("nan"), "b": [1, 2]}, indent=2) + "\n"
    atomic_write_json(tmp_path / "p.json", {}, mode=0o640)
    assert mode(tmp_path / "p.json") == 0o640


def test_atomic_torch_save_writes_whole_with_the_umask_s_mode(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "sub" / "dir" / "m.pt"  # two folders to make
    atomic_torch_save(path, {"w": torch.ones(3)})
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(3)) and mode(path) == FILE_MODE
    assert temp_files(path.parent) == []

    def fail(obj: Any, f: Any) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(storage.torch, "save", fail)
    with pytest.raises(OSError):
        atomic_torch_save(path, {"w": torch.zeros(3)})
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(3)) and temp_files(path.parent) == []


def test_one_line_joins_and_cuts() -> None:
    assert one_line(ValueError("a\n  b\tc")) == "ValueError: a b c"
    assert one_line(OSError("x" * 200)) == f"OSError: {'x' * 160}"
    assert one_line(KeyError("k"), most=3) == "KeyError: 'k'"
    assert one_line(RuntimeError("abcdef"), most=3) == "RuntimeError: abc"


def test_load_plain_reads_data_and_never_runs_code() -> None:
    buffer = io.BytesIO()
    torch.save({"w": torch.arange(3), "n": 1, "s": "x", "l": [1.5]}, buffer)
    state = load_plain(buffer.getvalue())
    assert torch.equal(state["w"], torch.arange(3)) and state["n"] == 1 and state["l"] == [1.5]
    assert state["w"].device.type == "cpu"
    evil = io.BytesIO()
    torch.save({"f": os.getcwd}, evil)  # a pickle naming a function: refused, never called
    with pytest.raises(pickle.UnpicklingError):
        load_plain(evil.getvalue())


# --- build_once ----------------------------------------------------------------------------------------------

def test_build_once_loads_what_is_there_without_building(tmp_path: Path) -> None:
    calls: list[Any] = []
    product, built = build_once(tmp_path / "lock", lambda locked: calls.append(locked) or "there",
                                lambda: calls.append("build") or "new", "waiting")
    assert (product, built) == ("there", False) and calls == [False]
    assert not (tmp_path / "lock").exists()  # no lock taken when the product is there


def test_build_once_builds_under_the_lock_after_looking_again(tmp_path: Path) -> None:
    calls: list[Any] = []

    def load(locked: bool) -> None:
        calls.append(("load", locked))
        return None

    def build() -> str:
        from filelock import FileLock, Timeout

        with pytest.raises(Timeout):  # the lock is held while building
            FileLock(str(tmp_path / "lock")).acquire(timeout=0)
        calls.append("build")
        return "new"

    assert build_once(tmp_path / "lock", load, build, "waiting") == ("new", True)
    assert calls == [("load", False), ("load", True), "build"]


def test_build_once_uses_what_another_process_built_while_it_waited(tmp_path: Path) -> None:
    answers = iter([None, "theirs"])
    built: list[str] = []
    assert build_once(tmp_path / "lock", lambda locked: next(answers), lambda: built.append("x") or "mine",
                      "waiting") == ("theirs", False)
    assert built == []


def test_build_once_waits_for_the_lock_and_says_so(tmp_path: Path, capsys) -> None:
    import threading

    from filelock import FileLock

    held = threading.Event()

    def hold() -> None:  # another thread (filelock refuses a second lock of one path in one thread)
        with FileLock(str(tmp_path / "lock")):
            held.set()
            time.sleep(0.3)

    threading.Thread(target=hold).start()
    held.wait()
    answers = iter([None, "theirs"])
    assert build_once(tmp_path / "lock", lambda locked: next(answers), lambda: "mine", "a build is under way") \
        == ("theirs", False)
    assert capsys.readouterr().err == "prune_lab: a build is under way\n"


@pytest.mark.parametrize(("code", "said"), [(errno.ENOLCK, True), (errno.EROFS, False), (errno.EACCES, False),
                                            (errno.EPERM, False)])
def test_build_once_without_a_lock_builds_anyway(tmp_path: Path, monkeypatch, capsys, code: int, said: bool) -> None:
    import filelock

    def refuse(self: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(filelock.FileLock, "acquire", refuse)
    assert build_once(tmp_path / "lock", lambda locked: None, lambda: "built", "waiting") == ("built", True)
    err = capsys.readouterr().err
    assert (f"prune_lab: cannot lock {tmp_path / 'lock'}" in err and "going on without the lock" in err) == said
    assert bool(err) == said


def test_build_once_releases_the_lock_when_the_build_fails(tmp_path: Path) -> None:
    from filelock import FileLock

    def build() -> str:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        build_once(tmp_path / "lock", lambda locked: None, build, "waiting")
    lock = FileLock(str(tmp_path / "lock"))
    lock.acquire(timeout=0)  # free again
    lock.release()


# --- set_aside -----------------------------------------------------------------------------------------------

def test_set_aside_renames_with_time_and_pid(tmp_path: Path) -> None:
    path = tmp_path / "entry.pt"
    path.write_bytes(b"bad")
    aside = set_aside(path)
    assert not path.exists() and aside.read_bytes() == b"bad" and aside.parent == tmp_path
    assert aside.name.startswith("entry.pt.corrupt-") and aside.name.endswith(f"-{os.getpid()}")
    stamp = aside.name[len("entry.pt.corrupt-"):].rsplit("-", 1)[0]
    assert time.strptime(stamp, "%Y%m%dT%H%M%S")
    assert set_aside(path).name.startswith("entry.pt.corrupt-")  # already gone (another process): no error


# --- the phase store -----------------------------------------------------------------------------------------

def test_a_store_ties_its_folder_to_a_config_and_a_code(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    PhaseStore(folder, HASH, code="c1")
    assert (folder / "config_hash").read_text() == HASH and (folder / "code").read_text() == "c1"
    assert PhaseStore.check_owner(folder, HASH) == HASH
    with pytest.raises(FolderTaken) as refused:
        PhaseStore(folder, OTHER, code="c1")
    message = str(refused.value)
    assert message == (f"{folder} holds checkpoints of another configuration (hash {HASH!r}, this run {OTHER}); "
                       "run into a new folder (hydra.run.dir=... or hydra.sweep.dir=...) or delete it")
    assert PhaseStore.check_owner(tmp_path / "new", HASH) is None


def test_a_store_without_code_records_none_and_keeps_an_existing_marker(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    PhaseStore(folder, HASH)
    assert (folder / "config_hash").read_text() == HASH and not (folder / "code").exists()
    store = PhaseStore(folder, HASH)
    store.save("dense", "done", {"x": 1})
    PhaseStore(folder, HASH)  # code unknown (None): nothing moved
    assert store.load("dense", "done") == {"x": 1}


def test_a_code_change_moves_the_checkpoints_aside_with_one_line(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "checkpoints"
    store = PhaseStore(folder, HASH, code="c1")
    store.save("dense", "done", {"x": 1})
    PhaseStore(folder, HASH, code="c1")  # the same code: kept
    assert store.load("dense", "done") == {"x": 1} and capsys.readouterr().err == ""
    again = PhaseStore(folder, HASH, code="c2")
    err = capsys.readouterr().err
    aside = tmp_path / f"checkpoints-old-code-c1-{os.getpid()}"
    assert err == (f"prune_lab: the code changed since {folder} was written (code c1, now c2); its phases train "
                   f"again with this code (old checkpoints kept in {aside.name})\n")
    assert (aside / "dense.done.pt").exists() and again.load("dense", "done") is None
    assert (folder / "code").read_text() == "c2" and (folder / "config_hash").read_text() == HASH


def test_checkpoints_written_before_code_markers_count_as_another_code(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "checkpoints"
    store = PhaseStore(folder, HASH)  # no code recorded
    store.save("dense", "partial", {"x": 1})
    PhaseStore(folder, HASH, code="c2")
    err = capsys.readouterr().err
    assert "(code unrecorded, now c2)" in err and f"checkpoints-old-code-unknown-{os.getpid()}" in err
    assert not (folder / "dense.partial.pt").exists()


def test_a_checkpoint_round_trips_with_its_sha256(tmp_path: Path) -> None:
    store = PhaseStore(tmp_path / "c", HASH)
    state = {"w": torch.randn(4), "step": 7, "nested": {"m": [torch.ones(2)]}}
    store.save("round-1", "partial", state)
    raw = (tmp_path / "c" / "round-1.partial.pt").read_bytes()
    data, digest = raw[:-(len(CHECKSUM) + 64)], raw[-64:]
    assert raw[-(len(CHECKSUM) + 64):-64] == CHECKSUM == b"\nprune_lab sha256 "
    assert hashlib.sha256(data).hexdigest().encode() == digest
    loaded = store.load("round-1", "partial")
    assert torch.equal(loaded["w"], state["w"]) and loaded["step"] == 7
    assert torch.equal(loaded["nested"]["m"][0], torch.ones(2))
    assert store.load("round-1", "done") is None and store.load("round-2", "partial") is None


def test_a_checkpoint_without_a_checksum_is_read_as_data(tmp_path: Path) -> None:
    store = PhaseStore(tmp_path / "c", HASH)
    torch.save({"step": 3}, tmp_path / "c" / "dense.done.pt")  # an older run's checkpoint
    assert store.load("dense", "done") == {"step": 3}


@pytest.mark.parametrize("damage", ["flip", "truncate", "not_a_dict", "code", "garbage"])
def test_a_bad_checkpoint_is_set_aside_with_one_line_and_counts_as_absent(tmp_path: Path, capsys, damage: str) -> None:
    store = PhaseStore(tmp_path / "c", HASH)
    store.save("dense", "partial", {"step": 3})
    path = tmp_path / "c" / "dense.partial.pt"
    raw = path.read_bytes()
    if damage == "flip":
        path.write_bytes(raw[:10] + bytes([raw[10] ^ 1]) + raw[11:])
    elif damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint at all")
    else:
        buffer = io.BytesIO()
        torch.save([1, 2] if damage == "not_a_dict" else {"f": os.getcwd}, buffer)
        data = buffer.getvalue()
        path.write_bytes(data + CHECKSUM + hashlib.sha256(data).hexdigest().encode())  # checksum matches
    assert store.load("dense", "partial") is None
    err = capsys.readouterr().err
    assert err.startswith(f"prune_lab: checkpoint {path} does not load (") and err.count("\n") == 1
    assert err.endswith("and this phase restarts from the last good point\n")
    if damage == "flip":
        assert "its bytes fail their sha256 check" in err
    if damage == "not_a_dict":
        assert "holds a list, not a checkpoint" in err
    assert not path.exists() and len(list((tmp_path / "c").glob("dense.partial.pt.corrupt-*"))) == 1
    assert store.load("dense", "partial") is None and capsys.readouterr().err == ""  # never read again


def test_drop_and_clear(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    store = PhaseStore(folder, HASH, code="c1")
    store.save("dense", "done", {"x": 1})
    store.save("round-1", "partial", {"x": 2})
    store.drop("round-1", "partial")
    store.drop("round-9", "partial")  # absent: fine
    assert store.load("round-1", "partial") is None and store.load("dense", "done") == {"x": 1}
    store.clear()
    assert not folder.exists()
    PhaseStore(folder, HASH, code="c1")
    (folder / "keep.txt").write_text("a user's file")
    PhaseStore(folder, HASH, code="c1").clear()  # the folder stays while it holds something else
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]


# --- stale temp files ----------------------------------------------------------------------------------------

def aged(path: Path, seconds: float) -> Path:
    path.write_bytes(b"x")
    t = time.time() - seconds
    os.utime(path, (t, t))
    return path


def test_a_temp_file_older_than_the_limit_is_stale(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(storage, "_remote", lambda path: True)  # as on NFS: the age rule only
    assert STALE_AFTER_S == 600
    old = aged(tmp_path / ".results.json.abc.tmp", STALE_AFTER_S + 5)
    young = aged(tmp_path / ".model.pt.def.tmp", STALE_AFTER_S - 30)
    aged(tmp_path / "results.json", 10_000)  # not a temp file
    aged(tmp_path / ".hidden", 10_000)
    assert stale_temp_files(tmp_path) == [old]
    assert young.exists()


def test_on_a_local_disk_a_temp_file_older_than_this_process_is_stale(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(storage, "_remote", lambda path: False)
    started = storage._process_start()
    assert started <= time.time()
    before = aged(tmp_path / ".a.tmp", time.time() - started + 5)
    now = tmp_path / ".b.tmp"
    now.write_bytes(b"x")
    assert stale_temp_files(tmp_path) == [before]


def test_a_temp_file_held_open_is_never_stale(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(storage, "_remote", lambda path: True)
    path = aged(tmp_path / ".a.tmp", STALE_AFTER_S * 10)
    with open(path, "rb"):
        assert stale_temp_files(tmp_path) == []
    assert stale_temp_files(tmp_path) == [path]


def test_without_proc_only_the_age_rule_applies(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(storage, "_open_here", lambda: None)
    monkeypatch.setattr(storage, "_remote", lambda path: False)
    old = aged(tmp_path / ".a.tmp", STALE_AFTER_S + 5)
    aged(tmp_path / ".b.tmp", 30)  # older than this process, perhaps, but /proc cannot say no one holds it
    assert stale_temp_files(tmp_path) == [old]


def test_the_open_files_and_the_mounts_are_read_from_proc(tmp_path: Path) -> None:
    path = tmp_path / "held"
    with open(path, "w"):
        assert str(path.resolve()) in storage._open_here()
    assert storage._remote(Path("/proc")) is False  # proc, not a network filesystem
    assert storage._remote(tmp_path) is False


def test_remove_stale_temp_files_in_the_run_and_its_checkpoints(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(storage, "_remote", lambda path: True)
    (tmp_path / "checkpoints").mkdir()
    a = aged(tmp_path / ".results.json.x.tmp", STALE_AFTER_S + 5)
    b = aged(tmp_path / "checkpoints" / ".dense.partial.pt.y.tmp", STALE_AFTER_S + 5)
    assert sorted(remove_stale_temp_files(tmp_path)) == sorted([a, b])
    assert not a.exists() and not b.exists() and capsys.readouterr().out == ""
    assert remove_stale_temp_files(tmp_path) == []
    assert stale_temp_files(tmp_path / "absent") == []


def test_clean_leftovers_says_what_it_removed(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(storage, "_remote", lambda path: True)
    clean_leftovers(tmp_path)
    assert capsys.readouterr().out == ""
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "dense.done.pt").write_bytes(b"x")
    aged(tmp_path / ".results.json.x.tmp", STALE_AFTER_S + 5)
    clean_leftovers(tmp_path, keep_checkpoints=True)
    assert (tmp_path / "checkpoints").is_dir()
    assert capsys.readouterr().out == "prune_lab: removed leftovers of an interrupted finish: .results.json.x.tmp\n"
    clean_leftovers(tmp_path)
    assert not (tmp_path / "checkpoints").exists()
    assert capsys.readouterr().out == "prune_lab: removed leftovers of an interrupted finish: checkpoints\n"


def test_process_start_is_read_from_proc_not_the_import_time() -> None:
    ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    expected = time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - (ticks + 1) / os.sysconf("SC_CLK_TCK"))
    assert abs(storage._process_start() - expected) < 0.004  # a clock tick is 0.01 s: the rounding is checked
    assert storage._process_start() < storage._IMPORTED  # started before it imported torch and this module


MOUNTS = """\
/dev/vda / ext4 rw 0 0
server:/export /mnt/nfs nfs4 rw 0 0
/dev/vdb /mnt/nfs/local xfs rw 0 0
host: /mnt/ssh fuse.sshfs rw 0 0
lustre@tcp:/fs /scratch lustre rw 0 0
"""


@pytest.mark.parametrize(("path", "remote"), [
    ("/home/user/runs", False), ("/", False), ("/mnt/nfs", True), ("/mnt/nfs/sweep/run", True),
    ("/mnt/nfs/local/run", False), ("/mnt/nfsx/run", False), ("/mnt/ssh/x", True), ("/scratch/a/b", True),
])
def test_remote_is_the_filesystem_of_the_longest_mount_holding_the_path(tmp_path: Path, path: str,
                                                                      remote: bool) -> None:
    (tmp_path / "mounts").write_text(MOUNTS)
    assert storage._remote(Path(path), str(tmp_path / "mounts")) is remote


def test_remote_when_it_cannot_tell(tmp_path: Path) -> None:
    assert storage._remote(Path("/x"), str(tmp_path / "absent")) is True  # no mount table
    (tmp_path / "mounts").write_text("server:/e /mnt/nfs nfs rw 0 0\n")
    assert storage._remote(Path("/home/x"), str(tmp_path / "mounts")) is True  # no mount holds it


def test_stale_temp_files_on_this_real_local_disk(tmp_path: Path) -> None:
    before = aged(tmp_path / ".a.tmp", time.time() - storage._process_start() + 5)
    assert stale_temp_files(tmp_path) == [before]  # the real mount table: tmp is local here


def test_one_held_temp_file_does_not_hide_the_others(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(storage, "_remote", lambda path: True)
    paths = [aged(tmp_path / f".f{i}.tmp", STALE_AFTER_S + 5) for i in range(7)]
    with open(paths[3], "rb"):
        assert sorted(stale_temp_files(tmp_path)) == sorted(paths[:3] + paths[4:])


def test_the_age_and_start_rules_are_strict(tmp_path: Path, monkeypatch) -> None:
    now = time.time()
    monkeypatch.setattr(storage.time, "time", lambda: now)
    monkeypatch.setattr(storage, "_remote", lambda path: True)
    edge = aged(tmp_path / ".edge.tmp", 0)
    os.utime(edge, (now - STALE_AFTER_S, now - STALE_AFTER_S))
    assert stale_temp_files(tmp_path) == []  # exactly STALE_AFTER_S old: not yet
    monkeypatch.setattr(storage, "_remote", lambda path: False)
    monkeypatch.setattr(storage, "_process_start", lambda: now - STALE_AFTER_S)
    assert stale_temp_files(tmp_path) == []  # written exactly as this process started: not older than it


def test_clean_leftovers_lists_everything_it_removed(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(storage, "_remote", lambda path: True)
    (tmp_path / "checkpoints").mkdir()
    aged(tmp_path / ".results.json.x.tmp", STALE_AFTER_S + 5)
    clean_leftovers(tmp_path)
    assert capsys.readouterr().out == \
        "prune_lab: removed leftovers of an interrupted finish: .results.json.x.tmp, checkpoints\n"


def test_atomic_torch_save_writes_a_hidden_temp_beside_its_target_then_renames(tmp_path: Path, monkeypatch) -> None:
    seen: list[str] = []
    real = storage.os.replace

    def spy(src: str, dst: Any) -> None:
        seen.append(str(src))
        assert Path(dst) == tmp_path / "m.pt"
        real(src, dst)

    monkeypatch.setattr(storage.os, "replace", spy)
    atomic_torch_save(tmp_path / "m.pt", {"a": 1})
    atomic_torch_save(tmp_path / "m.pt", {"a": 2})  # again, into the folder that exists now
    assert all(Path(s).parent == tmp_path and Path(s).name.startswith(".m.pt.") and s.endswith(".tmp") for s in seen)
    assert len(seen) == 2 and torch.load(tmp_path / "m.pt", weights_only=True) == {"a": 2}


def test_clear_of_a_store_that_recorded_no_code(tmp_path: Path) -> None:
    store = PhaseStore(tmp_path / "c", HASH)  # no code marker
    store.save("dense", "done", {"x": 1})
    store.clear()
    assert not (tmp_path / "c").exists()
