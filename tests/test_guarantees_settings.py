"""Bookkeeping keys (prune_lab/bookkeeping.py) and the one type check for settings (prune_lab/validate.py)."""

from __future__ import annotations

import dataclasses
from typing import Optional, Union

import pytest

from prune_lab import bookkeeping
from prune_lab.bookkeeping import (
    condition_config,
    experiment_config,
    flatten,
    is_bookkeeping,
    normalize_key,
    override_dirname_excludes,
    without,
)
from prune_lab.errors import UserError
from prune_lab.validate import _kinds, check_fields, check_range, check_value

# --- bookkeeping.py -------------------------------------------------------------------------------


@pytest.mark.parametrize(("override", "key"), [("+train/x", "train.x"), ("++a.b", "a.b"), ("~c", "c"),
                                               ("dataset.data_dir", "dataset.data_dir"), ("d/e/f", "d.e.f"),
                                               ("X.y", "X.y"), ("+XX", "XX")])
def test_normalize_key(override: str, key: str):
    assert normalize_key(override) == key


def test_is_bookkeeping_reads_the_one_list(monkeypatch: pytest.MonkeyPatch):
    assert is_bookkeeping("+dataset/data_dir") and is_bookkeeping("threads")
    assert not is_bookkeeping("train.lr") and not is_bookkeeping("dataset")
    monkeypatch.setattr(bookkeeping, "BOOKKEEPING", ("train.lr",))
    assert is_bookkeeping("train.lr") and not is_bookkeeping("threads")
    assert override_dirname_excludes("experiment") == ["train.lr", "experiment"]


def test_without_removes_dotted_keys_from_a_deep_copy():
    config = {"a": {"b": {"c": 1, "d": 2}, "e": 3}, "f": 4, "g": [1]}
    out = without(config, ["a.b.c", "f", "x.y.z", "a.e.deeper", "g.h"])
    assert out == {"a": {"b": {"d": 2}, "e": 3}, "g": [1]}
    assert config == {"a": {"b": {"c": 1, "d": 2}, "e": 3}, "f": 4, "g": [1]}, "the input is untouched"
    out["a"]["b"]["d"] = 9
    assert config["a"]["b"]["d"] == 2


def test_experiment_and_condition_configs():
    config = {"seed": 1, "sparsity": 0.5, "threads": 4, "device": "cpu", "cache_dir": "/c",
              "keep_checkpoints": True, "pruner": {"sparsity": 0.5, "rate": 0.2},
              "dataset": {"data_dir": "/d", "download": True, "verify_md5": False, "n": 3},
              "train": {"checkpoint_every_s": 5, "lr": 0.1}}
    experiment = {"seed": 1, "sparsity": 0.5, "pruner": {"sparsity": 0.5, "rate": 0.2}, "dataset": {"n": 3},
                  "train": {"lr": 0.1}}
    assert experiment_config(config) == experiment
    assert condition_config(config) == {"pruner": {"rate": 0.2}, "dataset": {"n": 3}, "train": {"lr": 0.1}}
    assert override_dirname_excludes() == list(bookkeeping.BOOKKEEPING)


def test_flatten_gives_dotted_keys_and_lists_as_sorted_json():
    config = {"a": {"b": 1, "c": {"d": "x"}}, "l": [{"z": 1, "y": 2}], "t": (1, 2), "n": None}
    assert flatten(config) == {"a.b": 1, "a.c.d": "x", "l": '[{"y": 2, "z": 1}]', "t": "[1, 2]", "n": None}
    assert flatten({"b": 1}, "p.") == {"p.b": 1}


# --- validate.py --------------------------------------------------------------------------------


def test_kinds_of_plain_annotations():
    assert _kinds(int) == (int,) and _kinds(float) == (float,) and _kinds(bool) == (bool,) and _kinds(str) == (str,)
    assert _kinds(type(None)) == (type(None),)
    assert _kinds(Optional[int]) == (int, type(None))  # noqa: UP045 (typing.Optional is what some configs use)
    assert _kinds(int | None) == (int, type(None))
    assert _kinds(Union[int, str]) == (int, str)  # noqa: UP007
    assert _kinds(list) is None and _kinds(list[int]) is None and _kinds(Union[int, list]) is None  # noqa: UP007
    assert _kinds(None) is None


def test_check_value_accepts_what_fits():
    assert check_value(None, (int, type(None)), "k") is None
    assert check_value(True, (bool,), "k") is True
    assert check_value(3, (int,), "k") == 3 and type(check_value(3, (int,), "k")) is int
    assert type(check_value(3, (float,), "k")) is float and check_value(3, (float,), "k") == 3.0
    assert type(check_value(3, (int, float), "k")) is int
    assert check_value(0.5, (float,), "k") == 0.5
    assert check_value("a", (str,), "k") == "a"


@pytest.mark.parametrize(("value", "kinds", "message"), [
    (True, (int,), r"^k=True must be a whole number, e.g. 10$"),
    (False, (float,), r"^k=False must be a number, e.g. 0.01$"),
    (1, (bool,), r"^k=1 must be true or false$"),
    (1.5, (int,), r"^k=1.5 must be a whole number, e.g. 10$"),
    (float("nan"), (float,), r"^k=nan must be a number"),
    (float("inf"), (float,), r"^k=inf must be a number"),
    ("x", (int, type(None)), r"^k='x' must be a whole number, e.g. 10 \(or null\)$"),
    ("x", (int, float), r"^k='x' must be a whole number, e.g. 10 or a number, e.g. 0.01$"),
    (None, (int,), r"^k=None must be a whole number"),
    (1, (str,), r"^k=1 must be a word$"),
    (1, (list,), r"^k=1 must be list$"),
])
def test_check_value_refuses_what_does_not_fit(value, kinds, message):
    with pytest.raises(UserError, match=message):
        check_value(value, kinds, "k")


@dataclasses.dataclass
class Settings:
    n: int = 1
    x: float = 0.5
    flag: bool = False
    name: str | None = None
    other: list = dataclasses.field(default_factory=list)


def test_check_fields_checks_every_plain_field_and_converts_ints_to_floats():
    s = Settings(n=2, x=1, flag=True, name="a", other=["anything"])
    check_fields(s, "group")
    assert type(s.x) is float and s.x == 1.0 and s.n == 2 and s.flag is True and s.name == "a"
    with pytest.raises(UserError, match=r"^group.n=True must be a whole number"):
        check_fields(Settings(n=True), "group")
    with pytest.raises(UserError, match=r"^flag=1 must be true or false$"):
        check_fields(Settings(flag=1), "")
    with pytest.raises(UserError, match=r"^group.name=3 must be a word \(or null\)$"):
        check_fields(Settings(name=3), "group")


def test_check_range_bounds_are_inclusive_and_the_message_names_them():
    check_range(0, "k", low=0)
    check_range(5, "k", high=5)
    check_range(-1e9, "k")
    with pytest.raises(UserError, match=r"^k=-1 must be in \[0, inf\], e.g. k=1$"):
        check_range(-1, "k", low=0, example="k=1")
    with pytest.raises(UserError, match=r"^k=6 must be in \[-inf, 5\]$"):
        check_range(6, "k", high=5)
    with pytest.raises(UserError, match=r"^k=0.5 must be in \[1, 2\]$"):
        check_range(0.5, "k", low=1, high=2)
    with pytest.raises(UserError, match=r"^k=3 must be in \[1, 2\]$"):
        check_range(3, "k", low=1, high=2)
