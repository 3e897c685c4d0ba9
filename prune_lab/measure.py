"""`python -m prune_lab.measure RUN_DIR [...]`: measure a finished run's saved levels after the fact.

Training records the cheap payoff of every level (FLOPs, parameters, bytes). The costly part, the slim
export and CPU latency timings, is measured here on demand: for every level whose ticket the run kept
(`keep_tickets=true`: tickets/<index>-<name>.pt), else for the final level (model.pt). The numbers go to
`<run>/payoff.json` (written atomically; results.json is never changed) and are printed as a table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from prune_lab.api import Run, load_run
from prune_lab.errors import UserError
from prune_lab.payoff import MEASURES, measure_payoff
from prune_lab.results import now
from prune_lab.storage import atomic_write_json

PAYOFF = "payoff.json"


def saved_levels(run: Run) -> list[tuple[int, str, dict[str, torch.Tensor]]]:
    """(level index, level name, state_dict) of every saved level: the tickets, else the final model."""
    tickets = sorted((run.path / "tickets").glob("*.pt"))
    if not tickets:
        return [(len(run.levels) - 1, run.levels[-1]["name"], run.state_dict())]
    out = []
    for path in tickets:
        ticket = torch.load(path, map_location="cpu", weights_only=True)
        out.append((int(ticket["index"]), str(ticket["level"]), ticket["state_dict"]))
    return out


def measure_run(run_dir: str | Path, measure: str = "latency", allow: tuple[str, ...] = ()) -> dict[str, Any]:
    """Measure every saved level of a finished run; the record written to payoff.json. `allow`: module prefixes
    of your own model code the run's record may name (prune_lab.api.TRUSTED_TARGETS are always allowed)."""
    run = load_run(run_dir)
    model = run.model(allow)
    sample = run.sample_input(allow)
    levels = []
    for index, name, state in saved_levels(run):
        model.load_state_dict(state)
        levels.append({"level_record": index, "name": name, **measure_payoff(model.eval(), sample, measure)})
    record = {"measure": measure, "measured_at": now(), "torch_threads": torch.get_num_threads(), "levels": levels}
    atomic_write_json(run.path / PAYOFF, record)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prune_lab.measure", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="finished run folders")
    parser.add_argument("--measure", choices=MEASURES, default="latency",
                        help="slim: the slim export's size; latency (default): also CPU timings")
    parser.add_argument("--allow", action="append", default=[], metavar="PREFIX",
                        help="a module prefix of your own model code (e.g. my_lab.models.) the run may name")
    args = parser.parse_args(argv)
    try:
        for run_dir in args.runs:
            record = measure_run(run_dir, args.measure, tuple(args.allow))
            print(f"{run_dir}: {len(record['levels'])} level(s) -> {Path(run_dir) / PAYOFF}")
            for level in record["levels"]:
                fields = {k: v for k, v in level.items() if k not in ("level_record", "name")}
                print(f"  {level['name']:<12} " + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                            for k, v in fields.items()))
    except UserError as e:
        print(f"prune_lab.measure: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
