"""Draw the reliability figure (docs/reliability.md) from the fault-injection suite's recorded outcomes.

    PRUNE_LAB_FAULT_REPORT=docs/reliability_outcomes.json python -m pytest -m faults tests/test_faults.py
    python docs/reliability_figure.py            # -> docs/img/reliability.png

Every case of tests/test_faults.py is one row: whether it healed by itself (no relaunch, or the same command
once more), needed the one-line fix its error named, or lost work (failed, or never recorded).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
KINDS = ("heals, no relaunch", "heals on one relaunch", "one-line fix, then one relaunch", "loses work / fails")
COLORS = ("#1a9850", "#91cf60", "#fdae61", "#d73027")


def kind(outcome: dict) -> str:
    if outcome["outcome"] == "heals":
        return KINDS[0] if outcome["relaunches"] == 0 else KINDS[1]
    if outcome["outcome"] == "one-line fix":
        return KINDS[2]
    return KINDS[3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outcomes", nargs="?", type=Path, default=HERE / "reliability_outcomes.json")
    parser.add_argument("--out", type=Path, default=HERE / "img" / "reliability.png")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    outcomes = json.loads(args.outcomes.read_text())
    rows = sorted(outcomes, key=lambda o: (KINDS.index(kind(o)), o["fault"] or o["case"]))
    counts = {k: sum(kind(o) == k for o in outcomes) for k in KINDS}

    sns.set_theme(style="whitegrid", font_scale=0.85)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.32 * len(rows) + 1.6),
                                      gridspec_kw={"width_ratios": [1, 2.2]})
    left.barh(list(KINDS)[::-1], [counts[k] for k in KINDS][::-1], color=list(COLORS)[::-1])
    for y, k in enumerate(list(KINDS)[::-1]):
        left.text(counts[k] + 0.1, y, str(counts[k]), va="center")
    left.set_xlabel("cases")
    left.set_xlim(0, max(counts.values()) + 2)
    left.set_title(f"{len(outcomes)} fault cases tried")

    labels = [o["fault"] or o["case"] for o in rows]
    right.barh(range(len(rows)), [1] * len(rows), color=[COLORS[KINDS.index(kind(o))] for o in rows])
    right.set_yticks(range(len(rows)), labels)
    right.invert_yaxis()
    right.set_xticks([])
    right.grid(False)
    for y, o in enumerate(rows):
        right.text(0.5, y, kind(o), ha="center", va="center", fontsize=7, color="black")
    right.set_title("each case (tests/test_faults.py)")
    fig.suptitle(f"Faults injected on purpose: {counts[KINDS[0]] + counts[KINDS[1]]} heal by themselves, "
                 f"{counts[KINDS[2]]} need the one-line fix, {counts[KINDS[3]]} lose work", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=130)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
