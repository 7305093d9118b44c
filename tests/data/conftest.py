"""Make the data-test helpers importable (``from data_helpers import ...``)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
