"""``edgequant serve`` refuses a port in use and an unusable store with one line, exit 2, and creates
nothing (it binds the port and checks the store before the store or its database exist)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from service_helpers import SRC, free_port


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    cmd = [sys.executable, "-m", "edgequant", "serve", "--log-level", "warning", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and not proc.stdout.strip(), proc
    return lines[0]


def test_port_in_use_is_one_line_and_creates_no_store(tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        line = one_line(serve("--port", str(port), "--store", str(tmp_path / "store6")))
    finally:
        holder.close()
    assert line.startswith(f"error: cannot listen on 127.0.0.1:{port}: ") and "--port" in line, line
    assert not (tmp_path / "store6").exists()


def test_store_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    line = one_line(serve("--port", str(free_port()), "--store", "/proc/nope/"))
    assert line.startswith("error: cannot create the store directory '/proc/nope': "), line
    assert not Path("/proc/nope").exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = one_line(serve("--port", str(free_port()), "--store", str(blocker / "store")))
    assert (
        line == f"error: cannot use --store '{blocker / 'store'}': '{blocker}' is not a directory. "
        "Fix: pass a --store directory you can write."
    ), line
