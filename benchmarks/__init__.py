"""prune_lab's benchmarks: `python -m benchmarks` prints a table of ratios measured side by side and writes
benchmarks/results/YYYY-MM-DD-<device>.json and .md. See benchmarks/__main__.py for the options."""
