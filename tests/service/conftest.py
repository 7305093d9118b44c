"""Fixtures of the service tests: one shared real server (2 workers, 1 MB upload limit)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from service_helpers import Server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("svc") / "store", "--workers", "2", "--max-upload-mb", "1")
    srv.start()
    yield srv
    srv.stop()
