"""The mutation score per module from `mutmut results --all true` on stdin (`make mutation` pipes it here).

Killed means a test failed (or timed out) with the mutant in place; every other outcome counts against the
score, "no tests" included. Exits 1 when the total is under --min (percent). Not a test module.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter, defaultdict

CAUGHT = {"killed", "timeout", "segfault", "caught by type check"}
NOT_MUTANTS = {"skipped"}  # excluded by the tool itself, not counted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--min", type=float, default=90.0, help="lowest acceptable total score, in percent")
    args = parser.parse_args()
    counts: dict[str, Counter] = defaultdict(Counter)
    for line in sys.stdin:
        name, sep, status = line.strip().rpartition(": ")
        if not sep:
            continue
        module = re.split(r"\.x_|\.x\u01c1", name.strip())[0]  # mutmut names: module.x_func / module.xǁClassǁmethod
        counts[module][status.strip()] += 1
    total_caught = total = 0
    print(f"{'module':<32} {'killed':>7} {'total':>6} {'score':>7}  other outcomes")
    for module, c in sorted(counts.items()):
        caught = sum(c[s] for s in CAUGHT)
        n = sum(v for s, v in c.items() if s not in NOT_MUTANTS)
        others = ", ".join(f"{s}: {v}" for s, v in sorted(c.items()) if s not in CAUGHT | NOT_MUTANTS)
        print(f"{module:<32} {caught:>7} {n:>6} {100 * caught / max(n, 1):>6.1f}%  {others}")
        total_caught, total = total_caught + caught, total + n
    score = 100 * total_caught / max(total, 1)
    print(f"{'total':<32} {total_caught:>7} {total:>6} {score:>6.1f}%")
    if total == 0:
        print("no mutants found: run `mutmut run` first", file=sys.stderr)
        return 1
    if score < args.min:
        print(f"mutation score {score:.1f}% is under {args.min:g}%: `mutmut browse` shows the survivors",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
