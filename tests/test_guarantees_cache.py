"""The dense cache's key and entries (prune_lab/cache.py), in process: what the key covers, by hand.

The key is a sha256 of `dense_basis` plus phase and epochs; here it is recomputed from its definition,
and every part of the basis (code digests, targets, machine facts, bookkeeping trimmed) is checked.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import sys
import threading
import time
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from filelock import FileLock

import prune_lab
from prune_lab import cache as cache_module
from prune_lab.cache import (
    FORMAT,
    DenseCache,
    _files_digest,
    _installed,
    _module_of,
    _targets,
    dense_basis,
    load_once,
    source_digest,
    target_code,
)
from prune_lab.errors import UserError

CONFIG = {"seed": 3, "sparsity": 0.5, "threads": 4, "pruner": {"_target_": "prune_lab.pruners.schedules.OneShot"},
          "dataset": {"_target_": "prune_lab.data.penguins.Penguins", "data_dir": "/a", "download": False,
                      "val_size": 50},
          "model": {"_target_": "prune_lab.models.mlp.MLP", "hidden": [8]},
          "init": {"_target_": "prune_lab.init.PyTorchDefault"},
          "train": {"lr": 0.01, "epochs": 3, "finetune_epochs": 2, "checkpoint_every_s": 10,
                    "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True}}}


def test_source_digest_is_a_sha256_of_every_source_file_and_its_name():
    root = Path(prune_lab.__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    assert source_digest() == h.hexdigest()[:16]


def test_targets_are_found_anywhere_in_the_tree():
    tree = {"_target_": "a.A", "x": {"_target_": "b.B", "y": [{"_target_": "c.C"}, 3, [{"_target_": "d.D"}]]},
            "z": {"_target_": 5}, "w": "e.E"}
    assert sorted(_targets(tree)) == ["a.A", "b.B", "c.C", "d.D"]
    assert list(_targets([{"_target_": "f.F"}])) == ["f.F"]
    assert list(_targets("g.G")) == []


def test_module_of_is_the_longest_imported_prefix():
    import prune_lab.models.mlp

    assert _module_of("prune_lab.models.mlp.MLP") is prune_lab.models.mlp
    assert _module_of("os.path.join") is sys.modules["os.path"]
    assert _module_of("prune_lab.no_such_module.X") is prune_lab
    assert _module_of("no_such_top_level.X") is None


def test_installed_means_a_site_or_dist_packages_folder():
    assert _installed(Path("/v/lib/python3.11/site-packages/torch/__init__.py"))
    assert _installed(Path("/usr/lib/python3/dist-packages/yaml/__init__.py"))
    assert not _installed(Path("/home/me/site-packages-notes/x.py"))


def test_files_digest_covers_names_and_contents_in_any_order_up_to_the_limit(tmp_path: Path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("A = 1\n")
    b.write_text("B = 2\n")
    h = hashlib.sha256()
    for path in (a, b):
        h.update(str(path).encode())
        h.update(path.read_bytes())
    assert _files_digest([b, a]) == _files_digest([a, b]) == h.hexdigest()[:16]
    many = [tmp_path / f"m{i}.py" for i in range(cache_module.MAX_USER_FILES)]
    for path in many:
        path.write_text("")
    assert _files_digest(many) is not None  # exactly the limit is still hashed
    assert _files_digest([*many, a]) is None
    assert cache_module.MAX_USER_FILES == 500


def test_target_code_by_where_the_code_lives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert target_code("prune_lab.models.mlp.MLP") == "prune_lab"
    torch_version = importlib.metadata.version("torch")
    assert target_code("torch.optim.Adam") == f"torch:torch=={torch_version}"
    assert target_code("no_such_top_level.X") is None
    # A user's package: every .py below it, subpackages included.
    pkg = tmp_path / "userpkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "net.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("userpkg.sub.net")
    monkeypatch.setitem(sys.modules, "userpkg", sys.modules["userpkg"])
    before = target_code("userpkg.sub.net.Net")
    assert before == f"userpkg:{_files_digest(list(pkg.rglob('*.py')))}"
    (pkg / "sub" / "net.py").write_text("X = 2\n")
    assert target_code("userpkg.sub.net.Net") != before
    # A plain module: the .py files beside it (not below).
    mods = tmp_path / "mods"
    (mods / "deeper").mkdir(parents=True)
    (mods / "plain_mod.py").write_text("")
    (mods / "deeper" / "other.py").write_text("")
    monkeypatch.syspath_prepend(str(mods))
    importlib.import_module("plain_mod")
    assert target_code("plain_mod.Net") == f"plain_mod:{_files_digest([mods / 'plain_mod.py'])}"
    for name in ("userpkg", "userpkg.sub", "userpkg.sub.net", "plain_mod"):
        monkeypatch.delitem(sys.modules, name)


def test_a_module_shipped_by_several_distributions_names_them_all(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(importlib.metadata, "packages_distributions", lambda: {"torch": ["torch", "numpy"]})
    expected = f"torch:numpy=={importlib.metadata.version('numpy')},torch=={importlib.metadata.version('torch')}"
    assert target_code("torch.optim.Adam") == expected


def test_code_that_cannot_be_known_gives_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    namespace = types.ModuleType("ns_pkg")  # no __file__: a namespace package, a notebook class, ...
    monkeypatch.setitem(sys.modules, "ns_pkg", namespace)
    assert target_code("ns_pkg.X") is None
    fake = types.ModuleType("fake_installed")  # installed, but by no distribution
    fake.__file__ = str(tmp_path / "site-packages" / "fake_installed" / "__init__.py")
    monkeypatch.setitem(sys.modules, "fake_installed", fake)
    assert target_code("fake_installed.X") is None
    main = types.ModuleType("__main__")
    main.__file__ = str(tmp_path / "script.py")
    monkeypatch.setitem(sys.modules, "__main__", main)
    assert target_code("__main__.Net") is None
    crowded = tmp_path / "crowded"
    crowded.mkdir()
    for i in range(cache_module.MAX_USER_FILES + 1):
        (crowded / f"f{i}.py").write_text("")
    module = types.ModuleType("crowded_mod")
    module.__file__ = str(crowded / "f0.py")
    monkeypatch.setitem(sys.modules, "crowded_mod", module)
    assert target_code("crowded_mod.X") is None


def test_dense_basis_holds_exactly_what_dense_training_depends_on():
    basis = dense_basis(CONFIG, torch.device("cpu"), 4)
    assert basis == {
        "format": FORMAT, "seed": 3, "device": "cpu", "threads": 4, "torch": torch.__version__,
        "code": source_digest(),
        "targets": {"prune_lab.data.penguins.Penguins": "prune_lab", "prune_lab.models.mlp.MLP": "prune_lab",
                    "prune_lab.init.PyTorchDefault": "prune_lab",
                    "torch.optim.Adam": f"torch:torch=={importlib.metadata.version('torch')}"},
        "dataset": {"_target_": "prune_lab.data.penguins.Penguins", "val_size": 50},
        "model": {"_target_": "prune_lab.models.mlp.MLP", "hidden": [8]},
        "init": {"_target_": "prune_lab.init.PyTorchDefault"},
        "train": {"lr": 0.01, "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True}},
    }
    assert dense_basis(CONFIG, "cuda:1", 1)["device"] == "cuda"
    assert CONFIG["train"]["epochs"] == 3, "the config itself is not trimmed"


def test_dense_basis_refuses_a_target_whose_code_is_unknown():
    config = json.loads(json.dumps(CONFIG))
    config["model"]["_target_"] = "no_such_top_level.Net"
    with pytest.raises(LookupError, match="no_such_top_level.Net"):
        dense_basis(config, "cpu", 1)


def test_the_key_is_the_sha256_of_the_basis_phase_and_epochs(tmp_path: Path):
    cache = DenseCache(tmp_path, {"seed": 1, "b": [1, 2]})
    identity = {"seed": 1, "b": [1, 2], "phase": "dense", "epochs": 3}
    expected = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]
    assert cache.key("dense", 3) == expected and len(expected) == 32
    assert cache.key("dense", 4) != expected and cache.key("warmup", 3) != expected
    assert DenseCache(tmp_path, {"b": [1, 2], "seed": 1}).key("dense", 3) == expected, "key order does not matter"


def test_a_new_cache_folder_is_made_and_probed_without_leaving_files(tmp_path: Path):
    folder = tmp_path / "a" / "b"
    cache = DenseCache(folder, {"x": 1})
    assert folder.is_dir() and list(folder.iterdir()) == []
    assert cache.basis == {"x": 1} and cache.folder == folder
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match=r"^cache_dir=.*file/sub is not a writable folder \(.*\); set cache_dir to "
                                        r"another folder, or cache_dir=null to train every dense network$"):
        DenseCache(tmp_path / "file" / "sub", {})
    # A folder that exists but takes no files (even for root): the probe is written in the folder itself.
    with pytest.raises(UserError, match=r"^cache_dir=/proc is not a writable folder"):
        DenseCache(Path("/proc"), {})


@pytest.mark.parametrize("off", [None, "", "null", "None", " FALSE "])
def test_open_is_off_when_cache_dir_is_null(off, tmp_path: Path):
    assert DenseCache.open(off, CONFIG, torch.device("cpu"), 1) is None


def test_open_builds_the_basis_or_turns_sharing_off_with_a_note(tmp_path: Path, capsys: pytest.CaptureFixture):
    cache = DenseCache.open(str(tmp_path / "c"), CONFIG, torch.device("cpu"), 2)
    assert cache is not None and cache.basis == dense_basis(CONFIG, "cpu", 2) and cache.folder == tmp_path / "c"
    config = json.loads(json.dumps(CONFIG))
    config["init"]["_target_"] = "no_such_top_level.Init"
    assert DenseCache.open(str(tmp_path / "c"), config, torch.device("cpu"), 2) is None
    err = capsys.readouterr().err
    assert err == ("prune_lab: the dense cache is off for this run: the code of no_such_top_level.Init cannot be "
                   "located, so a cached network could be stale\n")


def test_store_then_load_round_trips_with_a_manifest(tmp_path: Path):
    cache = DenseCache(tmp_path, {"x": 1})
    state = {"model": {"w": torch.arange(4.0)}, "history": [{"epoch": 1}]}
    cache.store("k", state, {"x": 1, "phase": "dense"})
    data = (tmp_path / "k.pt").read_bytes()
    manifest = json.loads((tmp_path / "k.json").read_text())
    assert manifest == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                        "identity": {"x": 1, "phase": "dense"}}
    loaded = cache.load("k")
    assert torch.equal(loaded["model"]["w"], state["model"]["w"]) and loaded["history"] == state["history"]
    assert cache._paths("k") == (tmp_path / "k.pt", tmp_path / "k.json", tmp_path / "k.lock")


def test_missing_partial_and_corrupt_entries_load_as_none(tmp_path: Path, capsys: pytest.CaptureFixture):
    cache = DenseCache(tmp_path, {})
    assert cache.load("absent") is None
    cache.store("k", {"model": {}}, {})
    (tmp_path / "k.json").write_text("[1, 2]")  # not a manifest
    assert cache.load("k") is None
    (tmp_path / "k.json").write_text("{not json")
    assert cache.load("k") is None
    (tmp_path / "k.json").write_text(json.dumps({"sha256": "0" * 64}))
    capsys.readouterr()
    assert cache.load("k") is None
    assert f"ignoring a corrupt dense-cache entry {tmp_path / 'k.pt'}" in capsys.readouterr().err


def test_fetch_or_train_trains_once_then_hits(tmp_path: Path):
    cache = DenseCache(tmp_path, {"x": 1})
    calls = []

    def train():
        calls.append(1)
        return {"model": {"w": torch.ones(2)}, "history": []}

    first = cache.fetch_or_train("dense", 2, train)
    assert first.hit is False and first.key == cache.key("dense", 2) and len(calls) == 1
    assert torch.equal(first.state["model"]["w"], torch.ones(2))
    manifest = json.loads((tmp_path / f"{first.key}.json").read_text())
    assert manifest["identity"] == {"x": 1, "phase": "dense", "epochs": 2}
    second = cache.fetch_or_train("dense", 2, train)
    assert second.hit is True and second.key == first.key and len(calls) == 1
    assert torch.equal(second.state["model"]["w"], torch.ones(2))
    assert not cache.fetch_or_train("dense", 3, train).hit and len(calls) == 2


def test_a_job_waiting_on_the_lock_reads_what_the_holder_trained(tmp_path: Path, capsys: pytest.CaptureFixture):
    cache = DenseCache(tmp_path, {"x": 2})
    key = cache.key("dense", 1)
    held = threading.Event()

    def holder():  # another job (a thread here) holds the lock while it trains and stores the entry
        lock = FileLock(str(tmp_path / f"{key}.lock"))
        lock.acquire()
        held.set()
        time.sleep(0.3)
        cache.store(key, {"model": {"w": torch.full((2,), 7.0)}}, {})
        lock.release()

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait()
    outcome = cache.fetch_or_train("dense", 1, lambda: pytest.fail("the waiter must not train"))
    thread.join()
    assert outcome.hit is True and outcome.key == key
    assert torch.equal(outcome.state["model"]["w"], torch.full((2,), 7.0))
    assert f"another job is training this dense network (cache key {key}); waiting for it" in capsys.readouterr().err


def test_without_a_working_lock_it_trains_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture):
    def no_locks(self, *args, **kwargs):
        raise OSError(37, "No locks available")

    monkeypatch.setattr(FileLock, "acquire", no_locks)
    cache = DenseCache(tmp_path, {"x": 3})
    outcome = cache.fetch_or_train("dense", 1, lambda: {"model": {"w": torch.zeros(1)}})
    assert outcome.hit is False and torch.equal(outcome.state["model"]["w"], torch.zeros(1))
    assert cache.load(outcome.key) is not None
    manifest = json.loads((tmp_path / f"{outcome.key}.json").read_text())
    assert manifest["identity"] == {"x": 3, "phase": "dense", "epochs": 1}
    assert f"cannot lock {tmp_path / (outcome.key + '.lock')}" in capsys.readouterr().err


def test_a_complete_entry_is_read_without_waiting_for_the_lock(tmp_path: Path, capsys: pytest.CaptureFixture):
    """Readers never queue behind a job that holds the lock (training another entry under the same key)."""
    cache = DenseCache(tmp_path, {"x": 4})
    key = cache.key("dense", 1)
    cache.store(key, {"model": {"w": torch.ones(1)}}, {})
    held, done = threading.Event(), threading.Event()

    def holder():
        lock = FileLock(str(tmp_path / f"{key}.lock"))
        lock.acquire()
        held.set()
        done.wait(timeout=5)
        lock.release()

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait()
    start = time.monotonic()
    outcome = cache.fetch_or_train("dense", 1, lambda: pytest.fail("an entry exists: nothing to train"))
    waited = time.monotonic() - start
    done.set()
    thread.join()
    assert outcome.hit is True and outcome.key == key and waited < 4
    assert "waiting" not in capsys.readouterr().err


@dataclass(frozen=True)
class CountingSet:
    name: str
    loads: list

    def __hash__(self) -> int:
        return hash(self.name)

    def load(self):
        self.loads.append(self.name)
        return object()


def test_load_once_memoises_equal_hashable_datasets_only():
    loads: list = []
    a = CountingSet("a", loads)
    first = load_once(a)
    assert load_once(CountingSet("a", loads)) is first and loads == ["a"]
    assert load_once(CountingSet("b", loads)) is not first and loads == ["a", "b"]

    class Unhashable:
        __hash__ = None

        def load(self):
            loads.append("u")
            return 1

    load_once(Unhashable())
    load_once(Unhashable())
    assert loads[-2:] == ["u", "u"]
