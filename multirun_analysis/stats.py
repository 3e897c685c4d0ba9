"""Statistics over seeds: per-level summaries with t confidence intervals, robustness, paired comparisons.

Every function takes the tidy table of `load_runs` (or any DataFrame with the same columns) and names its
grouping columns as arguments. Seeds are the unit of replication: rows of the same condition, seed and
level are first averaged into one (the dense level appears in every one-shot run of a seed, and merged
sweeps may repeat a run), so n always counts distinct seeds.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from multirun_analysis.loading import CHOICES

LEVEL, SEED = "target_level", "seed"


def condition_columns(df: pd.DataFrame) -> list[str]:
    """The columns that define one condition (a curve): the config choices, the level's branch and the
    label of the other differing settings (`load_sweep` makes these name exactly one condition_key)."""
    return [c for c in (*CHOICES, "branch", "condition") if c in df.columns]


def curve_columns(df: pd.DataFrame) -> list[str]:
    """condition_columns with the `condition` label split into its keys (train.lr, ...: the table's
    attrs["conditions"], set by load_sweep), so that one of
    them can be compared (hue) while the others stay context. Falls back to the label where the keys do
    not pin one condition_key down (a value that printed like another's: the label carries the hash)."""
    cols = [c for c in condition_columns(df) if c != "condition"]
    cols += [c for c in df.attrs.get("conditions", []) if c in df.columns and c not in cols]
    if "condition_key" in df and not df.empty:
        if df.groupby(cols, dropna=False)["condition_key"].nunique().max() > 1:
            cols.append("condition")
    elif "condition" in df:
        cols.append("condition")
    return cols


def varying(df: pd.DataFrame, among: Sequence[str] | None = None) -> list[str]:
    """The condition columns (or `among`) that take more than one value in `df`: what a study compares.

    Order: the choices (dataset, model, init, pruner, train, experiment), branch, then each differing
    setting key (train.lr, ...) on its own, and the joined `condition` label only where those keys do not
    tell the conditions apart (`curve_columns`).
    """
    cols = [c for c in curve_columns(df) if among is None or c in among]
    return [c for c in cols if df[c].map(str).nunique() > 1]


def _by(df: pd.DataFrame, by: str | Sequence[str] | None) -> list[str]:
    cols = condition_columns(df) if by is None else [by] if isinstance(by, str) else list(by)
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise KeyError(f"columns {missing} are not in the table; it has {list(df.columns)}")
    return cols


def per_seed(
    df: pd.DataFrame, metric: str = "test_acc", by: str | Sequence[str] | None = None
) -> pd.DataFrame:
    """One row per (by..., seed, target_level): `metric` averaged over duplicate rows (n_rows counts them)."""
    cols = _by(df, by)
    keys = [*cols, SEED, LEVEL]
    out = (
        df.dropna(subset=[metric])
        .groupby(keys, dropna=False, sort=True)[metric]
        .agg(["mean", "size"])
        .reset_index()
        .rename(columns={"mean": metric, "size": "n_rows"})
    )
    return out


def t_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float, float]:
    """(mean, std, ci_low, ci_high): Student t interval of the mean, std with n-1; NaN spread for n < 2."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    std = float(values.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def summarize(
    df: pd.DataFrame,
    metric: str = "test_acc",
    by: str | Sequence[str] | None = None,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Per group and target level: mean, std, ci_low, ci_high (t interval) and n_seeds of `metric`.

    The interval of an accuracy (a metric named *acc, a fraction) is clipped to [0, 1].

    by: grouping columns (default: dataset, model, init, pruner, train, experiment, condition). Also
    carries mean_sparsity (the measured sparsity, averaged) when the table has it.
    """
    cols = _by(df, by)
    seeds = per_seed(df, metric, cols)
    rows = []
    for key, group in seeds.groupby([*cols, LEVEL], dropna=False, sort=True):
        mean, std, lo, hi = t_interval(group[metric].to_numpy(), confidence)
        if metric.endswith("acc"):  # an interval of few seeds can overshoot what an accuracy can be
            lo, hi = max(lo, 0.0), min(hi, 1.0)
        rows.append(
            {
                **dict(zip([*cols, LEVEL], key)),
                "metric": metric,
                "mean": mean,
                "std": std,
                "ci_low": lo,
                "ci_high": hi,
                "n_seeds": len(group),
                "seeds": ",".join(map(str, group[SEED])),
            }
        )
    out = pd.DataFrame(rows)
    if not out.empty and "sparsity" in df.columns:
        measured = (
            df.groupby([*cols, LEVEL], dropna=False)["sparsity"].mean().rename("mean_sparsity").reset_index()
        )
        out = out.merge(measured, on=[*cols, LEVEL], how="left")
    return out


def auc(levels: Sequence[float], values: Sequence[float]) -> float:
    """Trapezoid area under values(levels), levels in sparsity (0..1); NaN with fewer than two levels."""
    x, y = np.asarray(levels, float), np.asarray(values, float)
    order = np.argsort(x)
    return float(np.trapezoid(y[order], x[order])) if len(x) >= 2 else math.nan


def critical_sparsity(levels: Sequence[float], values: Sequence[float], tolerance: float = 0.01) -> float:
    """The highest level whose value is at least the dense value (level 0) minus `tolerance`; NaN without dense.

    Every level is checked, not only a prefix: a curve that dips and recovers keeps its highest good level.
    """
    x, y = np.asarray(levels, float), np.asarray(values, float)
    if not (x == 0).any():
        return math.nan
    dense = y[x == 0].mean()
    return float(x[y >= dense - tolerance].max())


def robustness_per_seed(
    df: pd.DataFrame, metric: str = "test_acc", by: str | Sequence[str] | None = None, tolerance: float = 0.01
) -> pd.DataFrame:
    """One row per group and seed: the seed's own area under the curve (`auc`) and critical sparsity.

    A seed missing one of its group's levels would be measured over another range, so it is left out.
    """
    cols = _by(df, by)
    seeds = per_seed(df, metric, cols)
    in_group = seeds.groupby(cols, dropna=False)[LEVEL].transform("nunique")
    in_seed = seeds.groupby([*cols, SEED], dropna=False)[LEVEL].transform("nunique")
    per = [
        {
            **dict(zip([*cols, SEED], key)),
            "auc": auc(one[LEVEL], one[metric]),
            "critical": critical_sparsity(one[LEVEL], one[metric], tolerance),
        }
        for key, one in seeds[in_seed == in_group].groupby([*cols, SEED], dropna=False, sort=True)
    ]
    return pd.DataFrame(per, columns=[*cols, SEED, "auc", "critical"])


def robustness(
    df: pd.DataFrame,
    metric: str = "test_acc",
    by: str | Sequence[str] | None = None,
    tolerance: float = 0.01,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Per group: area under the metric-sparsity curve and critical sparsity, from the mean curve and per seed.

    auc: trapezoid area of the mean curve over the group's levels (x = target sparsity); auc_norm divides
      it by the x range (a mean metric over the range, comparable across groups with the same levels).
    auc_seed_mean/std: the same per seed, over seeds that have every level of the group.
    critical_sparsity: highest level whose mean is within `tolerance` (metric units; 0.01 = 1 point of
      accuracy) of the dense mean; critical_seed_mean/std/min/max: the same per seed (its own dense).
    """
    cols = _by(df, by)
    per_df = robustness_per_seed(df, metric, cols, tolerance)
    spread = (
        per_df.groupby(cols, dropna=False)
        .agg(
            auc_seed_mean=("auc", "mean"),
            auc_seed_std=("auc", "std"),
            critical_seed_mean=("critical", "mean"),
            critical_seed_std=("critical", "std"),
            critical_seed_min=("critical", "min"),
            critical_seed_max=("critical", "max"),
            n_seeds=(SEED, "nunique"),
        )
        .reset_index()
    )
    rows = []
    for key, group in summarize(df, metric, cols, confidence).groupby(cols, dropna=False, sort=True):
        levels, means = group[LEVEL].to_numpy(), group["mean"].to_numpy()
        span = levels.max() - levels.min()
        area = auc(levels, means)
        rows.append(
            {
                **dict(zip(cols, key)),
                "metric": metric,
                "levels": len(levels),
                "max_level": levels.max(),
                "dense_mean": means[levels == 0].mean() if (levels == 0).any() else math.nan,
                "auc": area,
                "auc_norm": area / span if span else math.nan,
                "critical_sparsity": critical_sparsity(levels, means, tolerance),
            }
        )
    out = pd.DataFrame(rows).merge(spread, on=cols, how="left")  # NaN keys (no experiment) match NaN
    out["n_seeds"] = out["n_seeds"].fillna(0).astype(int)
    return out


# Differences whose spread is below this share of the values' magnitude are float noise (a sum of
# fractions k/N differs from its exact value by ~1e-16): far below any test set's resolution (1e-5 at
# 100,000 examples), far above rounding.
NOISE = 1e-9
# Up to 2^16 sign patterns are enumerated (exact); more seeds are sampled (99,999 random sign flips).
EXACT_UP_TO = 16


def sign_flip(d: Sequence[float]) -> float:
    """Two-sided p of the paired sign-flip (permutation) test of the mean of the differences `d`.

    Under no difference each d_i is as likely to be +d_i as -d_i: scipy's `permutation_test` with
    permutation_type="samples" swaps a and b within pairs, i.e. flips signs; exact (all 2^n patterns) up
    to EXACT_UP_TO pairs. n constant nonzero differences give 2/2^n, the smallest p n seeds can give.
    """
    d = np.asarray(d, float)
    exact = len(d) <= EXACT_UP_TO
    result = stats.permutation_test(
        (d, np.zeros_like(d)), lambda x, y, axis: np.mean(x - y, axis=axis), permutation_type="samples",
        vectorized=True, n_resamples=np.inf if exact else 99_999, rng=0,
    )
    return float(result.pvalue)


def paired_test(a: Sequence[float], b: Sequence[float], resolution: float | None = None) -> dict[str, float | str]:
    """Paired test of a - b (same seeds, same order): the t-test, or the exact sign-flip test where the
    t-test is degenerate; the Wilcoxon signed-rank test beside it. NaN where nothing can be tested.

    resolution: the metric's smallest step (1 / test-set size for an accuracy), where known. Differences
    whose spread is below half of it (a grid of k/N: the same number of test examples on every seed), or
    below float noise (NOISE times the values' magnitude) when it is not given, have no variance to test:
    t would be infinite and its p 0, and scipy returns p ~ 1e-30 for noise-sized variance. They are
    tested by the sign-flip test of their common value, whose p is 2/2^n for n seeds (0.125 for 4), or
    not at all where that value is 0 (within the same bound).

    Returns n_pairs, mean_diff, test ("t" or "sign-flip", "" where none), p (the p of that test: what
    Holm and the report use), t and p_t (the t-test; NaN where degenerate), p_sign_flip (the sign-flip
    test of the differences, always where n >= 1) and p_wilcoxon. With n pairs the t-test has n-1
    degrees of freedom and assumes normal differences; the exact two-sided Wilcoxon test cannot reach
    p < 0.05 with fewer than 6 pairs, nor the sign-flip test with fewer than 6.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = a - b
    n = len(d)
    out: dict[str, float | str] = {
        "n_pairs": n,
        "mean_diff": float(d.mean()) if n else math.nan,
        "test": "",
        "p": math.nan,
        "t": math.nan,
        "p_t": math.nan,
        "p_sign_flip": math.nan,
        "p_wilcoxon": math.nan,
    }
    if n < 2:  # one seed: a difference, nothing to test it against
        return out
    scale = max(float(np.abs(a).max()), float(np.abs(b).max()))
    floor = resolution / 2 if resolution else NOISE * scale  # below this, two numbers are one
    constant = np.ptp(d) < floor if resolution else np.ptp(d) <= floor
    if constant:  # one value, up to resolution or noise: test it as exactly that value
        if abs(out["mean_diff"]) < floor or out["mean_diff"] == 0:
            return out  # no shift at all: no evidence either way
        d = np.full(n, out["mean_diff"])
        out["p_sign_flip"] = sign_flip(d)
        out.update(test="sign-flip", p=out["p_sign_flip"])
    else:
        out["p_sign_flip"] = sign_flip(d)
        if n >= 2:
            t = stats.ttest_rel(a, b)
            out.update(test="t", p=float(t.pvalue), t=float(t.statistic), p_t=float(t.pvalue))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about small n; the caveat is in the report
        out["p_wilcoxon"] = float(stats.wilcoxon(d).pvalue)
    return out


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment (Holm 1979) of a family of p-values, by statsmodels' `multipletests`;
    NaN stays NaN and is not counted in the family.

    The i-th smallest of m p-values is multiplied by m - i + 1 (i from 1), made non-decreasing in that
    order and capped at 1; rejecting where the adjusted p < alpha keeps the family-wise error <= alpha.
    """
    from statsmodels.stats.multitest import multipletests  # lazy: statsmodels is slow to import

    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


def compare(
    df: pd.DataFrame,
    hue: str = "init",
    metric: str = "test_acc",
    by: str | Sequence[str] | None = None,
    alpha: float = 0.05,
    resolution: float | None = None,
) -> pd.DataFrame:
    """Every pair of `hue` values at each level of each context, paired by seed, Holm-corrected.

    by: the context columns (default: the condition columns without `hue`). One row per context x level
    x pair. Everything in a row is over the pair's shared seeds (a seed missing in one group is left out
    of both), so that the difference is the one tested: higher/lower (higher: the value with the higher
    mean over those seeds; ties and pairs without a shared seed keep the order of the means over all
    seeds), higher_mean, lower_mean, n_pairs, mean_diff (higher_mean - lower_mean, >= 0), then
    higher_seeds/lower_seeds (each group's own seed count at the level), the columns of `paired_test`
    (test, p, t, p_t, p_sign_flip, p_wilcoxon; `resolution` is passed on), p_holm (p adjusted by Holm
    over every test in the table: all levels, pairs and contexts are one family) and significant
    (p_holm < alpha).
    """
    context = [c for c in _by(df, by) if c != hue]
    seeds = per_seed(df, metric, [*context, hue])
    rows = []
    for key, group in seeds.groupby([*context, LEVEL], dropna=False, sort=True):
        means = group.groupby(hue, dropna=False)[metric].mean().sort_values(ascending=False, kind="stable")
        counts = group.groupby(hue, dropna=False)[SEED].nunique()
        wide = group.pivot_table(index=SEED, columns=hue, values=metric, dropna=False)
        for i, first in enumerate(means.index):
            for second in means.index[i + 1 :]:
                pair = wide[[first, second]].dropna()
                hi, lo = (second, first) if pair[second].mean() > pair[first].mean() else (first, second)
                rows.append(
                    {
                        **dict(zip([*context, LEVEL], key)),
                        "metric": metric,
                        "hue": hue,
                        "higher": hi,
                        "higher_mean": pair[hi].mean() if len(pair) else math.nan,
                        "lower": lo,
                        "lower_mean": pair[lo].mean() if len(pair) else math.nan,
                        "higher_seeds": int(counts[hi]),
                        "lower_seeds": int(counts[lo]),
                        "n_groups": len(means),
                        **paired_test(pair[hi], pair[lo], resolution),
                    }
                )
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["p_holm"] = holm(out["p"])
    out["significant"] = out["p_holm"] < alpha
    return out
