"""In a terminal a run shows a live bar inside its epochs (tqdm, with an ETA); into a file or a pipe, only lines.

The terminal is a real pseudo-terminal (pty): the run's stdout and stderr are its slave end, as in a shell.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

from conftest import run_cli

ARGS = ["device=cpu", "threads=1", "train.epochs=40", "train.batch_size=8"]  # 25 steps an epoch, 1500 in all


def run_in_terminal(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 40 rows, 120 columns
    proc = subprocess.Popen([sys.executable, "-m", "prune_lab", *args], cwd=cwd, stdin=slave, stdout=slave,
                            stderr=slave, env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120", **(env or {})})
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=300), b"".join(chunks).decode(errors="replace")


def test_a_terminal_gets_a_live_bar_with_eta_and_the_lines(tmp_path: Path) -> None:
    rc, out = run_in_terminal([*ARGS, f"hydra.run.dir={tmp_path / 'run'}", f"cache_dir={tmp_path / 'cache'}"],
                              tmp_path)
    assert rc == 0, out[-3000:]
    assert "\r" in out  # redrawn in place
    bars = re.findall(r"dense:\s+\d+%\|.*?\| *(\d+)/1000 \[[0-9:]+<([0-9:]+)", out)  # steps done/total [elapsed<ETA
    assert len(bars) >= 5, out[-3000:]
    assert [int(done) for done, _ in bars] == sorted(int(done) for done, _ in bars)  # it moves forward
    assert "step/s, loss " in out and re.search(r"finetune:\s+\d+%.*?\| *\d+/500 ", out)
    assert re.search(r"dense\s+1/40\s+train loss", out) and "level pruned: sparsity" in out  # lines too
    assert (tmp_path / "run" / "results.json").is_file()


def test_no_bar_without_a_terminal_or_with_tqdm_disabled(tmp_path: Path) -> None:
    proc = run_cli(*ARGS, f"hydra.run.dir={tmp_path / 'a'}", f"cache_dir={tmp_path / 'cache'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "\r" not in proc.stdout + proc.stderr and "step/s" not in proc.stdout + proc.stderr
    assert re.search(r"dense\s+1/40\s+train loss", proc.stdout + proc.stderr)
    rc, out = run_in_terminal([*ARGS, f"hydra.run.dir={tmp_path / 'b'}", "cache_dir=null"], tmp_path,
                              env={"TQDM_DISABLE": "1"})
    assert rc == 0 and not re.search(r"dense:\s+\d+%", out), out[-3000:]
