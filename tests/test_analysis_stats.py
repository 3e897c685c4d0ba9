"""multirun_analysis statistics against values computed by hand on a small fixed table (no runs needed)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from multirun_analysis import (
    auc,
    compare,
    critical_sparsity,
    holm,
    paired_test,
    robustness,
    summarize,
)
from multirun_analysis.report import answer

# test accuracy of two init schemes, 3 seeds, levels 0 (dense), 0.5 and 0.9
ACC = {
    "A": {0.0: [0.90, 0.92, 0.94], 0.5: [0.91, 0.93, 0.92], 0.9: [0.80, 0.84, 0.82]},
    "B": {0.0: [0.89, 0.91, 0.93], 0.5: [0.85, 0.86, 0.90], 0.9: [0.70, 0.72, 0.77]},
}
T_975_DF2 = 4.302652729749464  # Student t quantile, 97.5%, 2 degrees of freedom (tables)


def table() -> pd.DataFrame:
    rows = []
    for init, levels in ACC.items():
        for level, accs in levels.items():
            for seed, acc in enumerate(accs):
                rows.append(
                    {
                        "dataset": "d",
                        "model": "m",
                        "experiment": None,  # as in results.json without an experiment: a NaN group key
                        "init": init,
                        "pruner": "magnitude",
                        "seed": seed,
                        "target_level": level,
                        "sparsity": level,
                        "test_acc": acc,
                    }
                )
    # the dense level appears in every one-shot run of a seed: a second copy must not count as a seed
    rows += [dict(r, run_dir="other run") for r in rows if r["target_level"] == 0.0]
    return pd.DataFrame(rows)


def test_summary_mean_std_ci_and_seed_count():
    s = summarize(table()).set_index(["init", "target_level"])
    a0 = s.loc[("A", 0.0)]
    assert a0["n_seeds"] == 3  # duplicates of the dense level averaged, not counted
    assert a0["mean"] == pytest.approx(0.92)
    assert a0["std"] == pytest.approx(0.02)  # deviations -.02, 0, .02 -> sqrt(.0008 / 2)
    half = T_975_DF2 * 0.02 / math.sqrt(3)
    assert (a0["ci_low"], a0["ci_high"]) == pytest.approx((0.92 - half, 0.92 + half))
    assert s.loc[("B", 0.9), "mean"] == pytest.approx(0.73)


def test_single_seed_has_no_spread():
    s = summarize(table().query("seed == 0"))
    assert (s["n_seeds"] == 1).all() and s["std"].isna().all() and s["ci_low"].isna().all()


def test_auc_and_critical_sparsity_by_hand():
    assert auc([0, 0.5, 0.9], [0.92, 0.92, 0.82]) == pytest.approx(0.46 + 0.348)  # two trapezoids
    assert auc([0.9, 0, 0.5], [0.82, 0.92, 0.92]) == pytest.approx(0.808)  # order does not matter
    assert critical_sparsity([0, 0.5, 0.9], [0.92, 0.92, 0.82]) == 0.5
    assert critical_sparsity([0, 0.5, 0.9], [0.91, 0.87, 0.73]) == 0.0
    assert critical_sparsity([0, 0.5, 0.9], [0.91, 0.87, 0.905]) == 0.9  # recovers: highest good level counts
    assert math.isnan(critical_sparsity([0.5, 0.9], [0.9, 0.8]))  # no dense level, no reference


def test_robustness_mean_curve_and_per_seed_spread():
    r = robustness(table()).set_index("init")
    assert r.loc["A", "auc"] == pytest.approx(0.808)
    assert r.loc["A", "auc_norm"] == pytest.approx(0.808 / 0.9)
    assert r.loc["A", "critical_sparsity"] == 0.5
    assert r.loc["B", "critical_sparsity"] == 0.0
    # per seed (own dense, 1 point): seed 0 and 1 keep 0.5; seed 2 drops .94 -> .92 at 0.5, so 0
    assert r.loc["A", "critical_seed_mean"] == pytest.approx(1 / 3)
    assert (r.loc["A", "critical_seed_min"], r.loc["A", "critical_seed_max"]) == (0.0, 0.5)
    seed_aucs = [0.25 * (a0 + a5) + 0.2 * (a5 + a9) for a0, a5, a9 in zip(*ACC["A"].values())]
    assert r.loc["A", "auc_seed_std"] == pytest.approx(np.std(seed_aucs, ddof=1))
    assert r.loc["A", "n_seeds"] == 3


def test_paired_test_by_hand():
    a, b = ACC["A"][0.9], ACC["B"][0.9]
    d = np.subtract(a, b)  # .10, .12, .05
    sd = math.sqrt(((0.01) ** 2 + (0.03) ** 2 + (0.04) ** 2) / 2)
    t = 0.09 / (sd / math.sqrt(3))
    p = 1 - t / math.sqrt(2 + t * t)  # two-sided p of Student t with 2 degrees of freedom, closed form
    out = paired_test(a, b)
    assert out["mean_diff"] == pytest.approx(d.mean())
    assert out["t"] == pytest.approx(t) and out["p_t"] == pytest.approx(p)
    assert out["p_wilcoxon"] == pytest.approx(0.25)  # exact: 3 positive differences, 2 of 8 sign patterns
    assert out["n_pairs"] == 3


def test_compare_tests_every_pair_per_level_with_holm():
    c = compare(table(), hue="init").set_index("target_level")
    assert list(c["higher"]) == ["A", "A", "A"] and list(c["lower"]) == ["B", "B", "B"]
    assert c.loc[0.9, "higher_mean"] == pytest.approx(0.82)
    p = [paired_test(ACC["A"][lv], ACC["B"][lv])["p"] for lv in (0.0, 0.5, 0.9)]
    assert list(c["p"]) == pytest.approx(p)
    assert list(c["p_holm"]) == pytest.approx(list(holm(p)))
    assert c.loc[0.9, "p_t"] == pytest.approx(0.0496, abs=1e-4) and c.loc[0.9, "test"] == "t"
    # dense: A - B = .01 on every seed (up to float noise): no variance for a t-test; the exact sign-flip
    # test gives 2 of 2^3 sign patterns, 0.25. Holm over .25, .082, .0496: the smallest times 3, the
    # second times 2, the largest times 1
    assert c.loc[0.0, "test"] == "sign-flip" and c.loc[0.0, "p"] == pytest.approx(0.25)
    assert math.isnan(c.loc[0.0, "p_t"]) and not bool(c.loc[0.0, "significant"])
    assert c.loc[0.9, "p_holm"] == pytest.approx(3 * c.loc[0.9, "p_t"]) and not bool(c.loc[0.9, "significant"])
    assert c.loc[0.5, "p_holm"] == pytest.approx(2 * c.loc[0.5, "p_t"])
    three = pd.concat([table(), table().query("init == 'B'").assign(init="C", test_acc=lambda d: d.test_acc - 0.1)])
    pairs = compare(three, hue="init")
    assert len(pairs) == 3 * 3  # A-B, A-C, B-C at each of 3 levels
    assert set(zip(pairs["higher"], pairs["lower"])) == {("A", "B"), ("A", "C"), ("B", "C")}


def test_holm_by_hand():
    # m = 4: sorted .01 .02 .03 .04 -> .04, .06, .06 (monotone), .04 -> .04 capped by the running max .06
    assert list(holm([0.03, 0.01, 0.04, 0.02])) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert list(holm([0.5, 0.6])) == pytest.approx([1.0, 1.0])  # capped at 1
    out = holm([0.01, math.nan, 0.02])  # NaN is neither adjusted nor counted in m
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)


def test_grouping_columns_are_arguments():
    df = table()
    df["train.lr"] = np.where(df["seed"] == 0, 0.1, 0.01)  # a column the defaults know nothing about
    s = summarize(df, by=["init", "train.lr"])
    assert set(s["train.lr"]) == {0.1, 0.01} and s["n_seeds"].max() == 2
    with pytest.raises(KeyError, match="not in the table"):
        summarize(df, by="nope")


def test_report_answer_names_groups_difference_and_holm():
    df = table()
    lines = "\n".join(answer(summarize(df), compare(df, hue="init"), "init", []))
    assert lines.startswith("- At 90% sparsity, **A** keeps 82.0% test accuracy (95% CI ")
    # Holm over the 3 levels' p: dense .25 (sign-flip), .082, and 90%'s .0496 the smallest, times 3
    assert "9.0 points above **B** (73.0%; not significant after Holm correction, p = 0.15, n = 3 seeds)" in lines


def test_summary_interval_of_an_accuracy_is_clipped():
    df = table()
    df.loc[(df["init"] == "A") & (df["target_level"] == 0.5), "test_acc"] = [0.99, 0.999, 0.70]
    s = summarize(df).set_index(["init", "target_level"]).loc[("A", 0.5)]
    assert s["ci_high"] == 1.0 and s["ci_low"] < s["mean"]  # the t interval would exceed 100%


def test_tradeoff_figure_axes_lines_and_baseline():
    from multirun_analysis import plot_tradeoff

    g = plot_tradeoff(table(), x="sparsity")
    ax = g.axes.flat[0]
    assert ax.get_xscale() == "linear" and ax.get_xlabel() == "sparsity (%)"
    assert ax.get_ylabel() == "test accuracy (%)"
    curves = [line for line in ax.get_lines() if len(line.get_xdata()) == 3]
    assert len(curves) == 2  # one per init, 3 levels each, in percent
    assert sorted(curves[0].get_xdata()) == pytest.approx([0, 50, 90])
    assert curves[0].get_color() != curves[1].get_color()
    assert g.legend.get_title().get_text() == "init"  # the one varying column is the hue
    stars = [line for line in ax.get_lines() if line.get_gid() == "dense"]
    assert len(stars) == 2 and all(line.get_xdata()[0] == 0 for line in stars)  # the dense baseline, marked
    bands = [c.get_paths()[0].vertices[:, 1] for c in ax.collections]
    assert bands and all(b.max() <= 100 for b in bands)  # an interval of 3 seeds never drawn above 100%
    with pytest.raises(ValueError, match="remaining"):
        plot_tradeoff(table(), x="log")


def test_critical_sparsity_counts_a_level_exactly_at_the_tolerance():
    """dense - tolerance is still good (>=): exact binary fractions, so no rounding decides it."""
    assert critical_sparsity([0, 0.5], [1.0, 0.75], tolerance=0.25) == 0.5
    assert critical_sparsity([0, 0.5], [1.0, 0.7421875], tolerance=0.25) == 0.0


def _sign_flip_by_hand(d) -> float:
    """Two-sided p of the mean of d over all 2^n sign patterns, enumerated (|mean| at least the observed)."""
    d = np.asarray(d, float)
    means = [abs(np.mean(np.multiply(signs, d))) for signs in itertools.product((1, -1), repeat=len(d))]
    return float(np.mean(np.asarray(means) >= abs(d.mean()) * (1 - 1e-12)))


def test_paired_test_with_every_seed_moved_by_the_same_amount():
    """Zero variance of the differences: no t-test (t would be infinite and p 0); the exact sign-flip test
    gives 2 of 2^n sign patterns. No shift at all is no evidence (NaN)."""
    a, b = [0.75, 0.5, 0.625, 0.875], [0.5, 0.25, 0.375, 0.625]  # each exactly 0.25 apart (binary fractions)
    up, down = paired_test(a, b), paired_test(b, a)
    assert up["test"] == "sign-flip" and up["mean_diff"] == 0.25 and math.isnan(up["t"]) and math.isnan(up["p_t"])
    assert up["p"] == pytest.approx(2 / 2**4) == _sign_flip_by_hand(np.subtract(a, b))  # 0.125, not 0
    assert down["p"] == pytest.approx(0.125) and down["mean_diff"] == -0.25
    assert up["p_wilcoxon"] == pytest.approx(0.125)  # exact Wilcoxon: the same 2 of 16 patterns
    same = paired_test(a, a)
    assert same["test"] == "" and math.isnan(same["p"]) and math.isnan(same["p_wilcoxon"])
    ten = paired_test(np.full(10, 0.5), np.full(10, 0.25))
    assert ten["p"] == pytest.approx(2 / 2**10)  # the bound for n seeds, never smaller


def test_paired_differences_equal_up_to_float_noise_are_constant():
    """Every seed exactly one test example (1/67) apart, with the float noise subtraction leaves (sd ~1e-17):
    scipy's t-test calls that p ~ 1e-30; it is the constant case, p = 2/2^4."""
    a = np.array([60, 55, 58, 62]) / 67
    b = a - np.array([1e-16, -1e-16, 0.0, 2e-16]) - 1 / 67
    d = a - b
    assert 0 < np.ptp(d) < 1e-15  # the noise is really there
    assert stats.ttest_rel(a, b).pvalue < 1e-10  # what a plain t-test reports for it
    out = paired_test(a, b)
    assert out["test"] == "sign-flip" and out["p"] == pytest.approx(0.125) and math.isnan(out["p_t"])
    assert out["mean_diff"] == pytest.approx(1 / 67)
    noise = paired_test(a, a + np.array([1e-17, 0.0, -1e-17, 0.0]))  # no shift beyond noise: nothing to test
    assert math.isnan(noise["p"]) and math.isnan(noise["p_wilcoxon"])


def test_paired_differences_that_vary_keep_the_t_test():
    """Differences of 1, 2, 1 and 3 test examples: real variance, the t-test decides (scipy's own p)."""
    a = np.array([60, 55, 58, 62]) / 67
    b = a - np.array([1, 2, 1, 3]) / 67
    out = paired_test(a, b, resolution=1 / 67)
    assert out["test"] == "t" and out["p"] == out["p_t"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert out["p_sign_flip"] == pytest.approx(_sign_flip_by_hand(a - b))
    one_example = paired_test(a, a - np.array([1, 1, 1, 2]) / 67, resolution=1 / 67)  # spread = the resolution
    assert one_example["test"] == "t"
    # a spread below the resolution is no difference in test examples: the constant case
    below = paired_test(a, a - (np.array([1, 1, 1, 1]) + np.array([0, 0.3, 0, 0.1])) / 67, resolution=1 / 67)
    assert below["test"] == "sign-flip" and below["p"] == pytest.approx(0.125)


def test_constant_gap_is_not_called_significant_by_the_report():
    """Four seeds, each 1.5 points apart: the answer says p = 0.12 (exact sign-flip), not p < 0.001."""
    rows = [{"init": init, "pruner": "magnitude", "seed": seed, "target_level": 0.5, "test_acc": acc}
            for seed, base in enumerate([0.80, 0.82, 0.78, 0.81])
            for init, acc in (("A", base + 0.015), ("B", base))]
    df = pd.DataFrame(rows)
    c = compare(df, hue="init", by=["init"])
    assert c.loc[0, "p_holm"] == pytest.approx(0.125) and not c.loc[0, "significant"]
    line = "\n".join(answer(summarize(df, by=["init"]), c, "init", []))
    assert "1.5 points above **B**" in line
    assert "not significant after Holm correction (exact sign-flip test" in line and "p = 0.12, n = 4 seeds" in line


def _missing_seed_table(a: list[float], b: list[float]) -> pd.DataFrame:
    """init A with len(a) seeds, B with len(b) (seeds 0.. in order), one pruned level, as load_sweep has it."""
    rows = [{"dataset": "d", "model": "m", "init": init, "pruner": "magnitude", "seed": seed, "target_level": 0.5,
             "test_acc": acc, "run_dir": f"run-{init}-{seed}"}
            for init, accs in (("A", a), ("B", b)) for seed, acc in enumerate(accs)]
    return pd.DataFrame(rows)


def test_a_missing_seed_words_the_gap_over_the_shared_seeds():
    """A has a 4th seed B lacks: the gap beside the paired test is over the 3 shared seeds (2.0 points), not
    the difference of all-seed means (5.75); where the shared seeds reverse the order, the words follow."""
    df = _missing_seed_table([0.80, 0.81, 0.79, 0.95], [0.78, 0.80, 0.76])
    c = compare(df, hue="init", by=["init"]).iloc[0]
    assert (c["higher"], c["lower"], c["n_pairs"], c["higher_seeds"], c["lower_seeds"]) == ("A", "B", 3, 4, 3)
    assert c["higher_mean"] == pytest.approx(0.80) and c["lower_mean"] == pytest.approx(0.78)
    assert c["mean_diff"] == pytest.approx(0.02)
    line = "\n".join(answer(summarize(df, by=["init"]), compare(df, hue="init", by=["init"]), "init", []))
    assert "**A** keeps 83.8% test accuracy" in line  # its mean over all its 4 seeds, n = 4
    assert "2.0 points above **B** on the 3 seed(s) both have (78.0% over its 3 seeds; " in line
    assert "5.7 points" not in line and "5.8 points" not in line
    reversed_ = _missing_seed_table([0.78, 0.79, 0.77, 0.99], [0.80, 0.80, 0.79])  # A higher only by its 4th seed
    c = compare(reversed_, hue="init", by=["init"]).iloc[0]
    assert (c["higher"], c["lower"]) == ("B", "A") and c["mean_diff"] == pytest.approx(0.05 / 3)
    line = "\n".join(answer(summarize(reversed_, by=["init"]), compare(reversed_, hue="init", by=["init"]),
                            "init", []))
    assert "**A** keeps 83.2%" in line and "1.7 points below **B** on the 3 seed(s) both have" in line


def test_report_tables_show_paired_numbers_plain_names_and_even_precision(tmp_path):
    """The comparisons table's means are over the shared seeds (higher - lower = the difference); the
    robustness table has plain column names; every % column has two decimals."""
    from multirun_analysis import Sweep, write_report

    df = _missing_seed_table([0.80, 0.81, 0.79, 0.95], [0.78, 0.80, 0.76])
    dense = df.assign(target_level=0.0, test_acc=lambda d: d.test_acc + 0.1)
    runs = pd.concat([dense, df], ignore_index=True).assign(sparsity=lambda d: d.target_level)
    report = write_report(Sweep(runs, pd.DataFrame(columns=["target_level"]), pd.DataFrame(
        columns=["sweep", "run", "run_dir", "status", "reason"])), tmp_path / "out", hue="init").read_text()
    section = report.split("### Pairwise comparisons")[1].split("###")[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    head = [h.strip() for h in table[0].strip("|").split("|")]
    row = dict(zip(head, (v.strip() for v in table[3].strip("|").split("|"))))  # 50%: the second data row
    assert row["sparsity (%)"] == "50.00" and row["paired seeds (of higher, lower)"] == "3 (4, 3)"
    assert (row["higher mean (%)"], row["lower mean (%)"], row["paired difference (points)"]) == \
        ("80.00", "78.00", "2.00")
    robust = report.split("### Robustness")[1].split("## ")[0]
    assert "average test accuracy up to the highest sparsity (%)" in robust and "highest sparsity (%)" in robust
    assert "mean over the range" not in report and "range up to" not in report
    per_level = report.split("### test_acc per level")[1].split("###")[0]
    rows = [line.strip("|").split("|") for line in per_level.splitlines() if line.startswith("| ")][1:]
    sds = [r[-2].strip() for r in rows]  # the sd column, in points
    assert len(sds) == 4 and all(len(v.split(".")[1]) == 2 for v in sds), sds
