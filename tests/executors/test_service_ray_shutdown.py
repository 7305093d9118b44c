"""SIGTERM of ``serve --executor ray`` (a local Ray instance started by the server) is a clean shutdown:
uvicorn's handler stays in place after ray.init, so the log has no SystemExit/CancelledError traceback
and no Ray stack dump (review finding 20)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))
from service_helpers import Server


def test_sigterm_of_a_ray_service_shuts_down_without_a_traceback(tmp_path: Path) -> None:
    server = Server(tmp_path / "store", "--workers", "1", "--executor", "ray", "--log-level", "info")
    server.start(timeout=120.0)
    try:
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGTERM)  # the server alone, as a process manager would
        code = server.proc.wait(timeout=60)
    finally:
        server.stop()
    log = server.log.read_text()
    assert "Application shutdown complete" in log, log[-3000:]
    assert "Traceback" not in log and "SystemExit" not in log and "SIGTERM received" not in log, log[-3000:]
    assert code in (0, -signal.SIGTERM), log[-3000:]  # uvicorn re-raises the signal it handled
