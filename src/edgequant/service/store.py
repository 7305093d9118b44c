"""The service's store directory and its SQLite job table.

Layout of ``--store DIR``::

    jobs.sqlite               one row per job (WAL mode; the server and its workers all write it)
    models/<name>/            one folder per model: <name>.onnx or <name>.pt, and record.json
    datasets/<name>/          one folder per dataset: data.npz or images/, and record.json
    jobs/<id>/                artifacts of a finished job; jobs/<id>.partial/ while it runs
    tmp/                      uploads in flight

Every status change is a conditional UPDATE (``... WHERE status = <expected>``), so a job that was
cancelled, or interrupted, can never be flipped to "succeeded" by a late worker.

Restart policy: a job that was running when the server stopped (SIGTERM, crash) is marked
``interrupted`` (it may have been half-way; nothing is resumed silently).  Queued jobs stay queued
and run after the restart: nothing of theirs had started, and their inputs are still in the store.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
ACTIVE = ("queued", "running")
FINISHED = ("succeeded", "failed", "cancelled", "interrupted")
RESTART_REASON = "interrupted by a server stop or restart while it ran; resubmit"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    dataset TEXT,
    recipe TEXT NOT NULL,
    status TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    stage TEXT NOT NULL DEFAULT '',
    error TEXT,
    report TEXT,
    created REAL NOT NULL,
    started REAL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, created);
"""


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")


class JobStore:
    """Thread-safe access to the jobs table of one store directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("models", "datasets", "jobs", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(root / "jobs.sqlite", timeout=30.0, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._db.commit()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._db
                self._db.commit()
            except BaseException:
                self._db.rollback()
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def model_dir(self, name: str) -> Path:
        return self.root / "models" / name

    def dataset_dir(self, name: str) -> Path:
        return self.root / "datasets" / name

    def job_dir(self, job_id: str, partial: bool = False) -> Path:
        return self.root / "jobs" / (f"{job_id}.partial" if partial else job_id)

    def create(self, kind: str, model: str, dataset: str | None, recipe: dict[str, Any]) -> str:
        job_id = uuid.uuid4().hex
        with self._tx() as db:
            db.execute(
                "INSERT INTO jobs (id, kind, model, dataset, recipe, status, stage, created) "
                "VALUES (?, ?, ?, ?, ?, 'queued', 'queued', ?)",
                (job_id, kind, model, dataset, json.dumps(recipe), time.time()),
            )
        return job_id

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else dict(row)

    def next_queued(self) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY created").fetchall()
        return [r["id"] for r in rows]

    def count_active(self, model: str | None = None, dataset: str | None = None) -> int:
        """Queued or running jobs (of ``model`` / on ``dataset`` when given)."""
        where, args = "status IN ('queued', 'running')", []
        if model is not None:
            where, args = where + " AND model = ?", [model]
        if dataset is not None:  # as calibration data, or as a compare's evaluation data
            where = where + " AND (dataset = ? OR json_extract(recipe, '$.eval_dataset') = ?)"
            args = [*args, dataset, dataset]
        with self._lock:
            row = self._db.execute(f"SELECT COUNT(*) AS n FROM jobs WHERE {where}", args).fetchone()
        return int(row["n"])

    def count_status(self, status: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) AS n FROM jobs WHERE status = ?", (status,)).fetchone()
        return int(row["n"])

    def list_jobs(
        self, *, status: str | None, kind: str | None, model: str | None, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """Jobs newest first, filtered; (page, total matching)."""
        where, args = [], []
        for column, value in (("status", status), ("kind", kind), ("model", model)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            total = int(self._db.execute(f"SELECT COUNT(*) AS n FROM jobs {clause}", args).fetchone()["n"])
            rows = self._db.execute(
                f"SELECT * FROM jobs {clause} ORDER BY created DESC LIMIT ? OFFSET ?", (*args, limit, offset)
            ).fetchall()
        return [dict(r) for r in rows], total

    def delete(self, job_id: str) -> bool:
        """Delete a finished job's row (its folder is the caller's); False if it is active or absent."""
        marks = ", ".join("?" for _ in FINISHED)
        with self._tx() as db:
            cur = db.execute(f"DELETE FROM jobs WHERE id = ? AND status IN ({marks})", (job_id, *FINISHED))
        return cur.rowcount == 1

    def expired(self, older_than: float) -> list[str]:
        """Ids of finished jobs that finished before ``older_than`` (epoch seconds)."""
        marks = ", ".join("?" for _ in FINISHED)
        with self._lock:
            rows = self._db.execute(
                f"SELECT id FROM jobs WHERE status IN ({marks}) AND finished < ?", (*FINISHED, older_than)
            ).fetchall()
        return [r["id"] for r in rows]

    def transition(self, job_id: str, old: tuple[str, ...], new: str, **values: Any) -> bool:
        """Set ``status = new`` (and ``values``) only if the status is one of ``old``; True if it was."""
        sets = ["status = ?"]
        args: list[Any] = [new]
        for key, value in values.items():
            if key not in ("progress", "stage", "error", "report", "started", "finished"):
                raise KeyError(key)
            sets.append(f"{key} = ?")
            args.append(json.dumps(value) if key in ("error", "report") else value)
        marks = ", ".join("?" for _ in old)
        with self._tx() as db:
            cur = db.execute(
                f"UPDATE jobs SET {', '.join(sets)} WHERE id = ? AND status IN ({marks})",
                (*args, job_id, *old),
            )
        return cur.rowcount == 1

    def set_progress(self, job_id: str, progress: float, stage: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET progress = ?, stage = ? WHERE id = ? AND status = 'running'",
                (max(0.0, min(1.0, progress)), stage, job_id),
            )

    def mark_interrupted(self) -> list[str]:
        """Every running job becomes ``interrupted`` (RESTART_REASON); returns their ids."""
        error = {"error": "Interrupted", "detail": RESTART_REASON, "hint": "submit the job again."}
        with self._tx() as db:
            ids = [r["id"] for r in db.execute("SELECT id FROM jobs WHERE status = 'running'")]
            db.execute(
                "UPDATE jobs SET status = 'interrupted', stage = 'interrupted', error = ?, finished = ? "
                "WHERE status = 'running'",
                (json.dumps(error), time.time()),
            )
        return ids


def _summary(job_id: str, report: dict[str, Any] | None) -> dict[str, Any] | None:
    if not report:
        return None
    artifacts = list(report.get("artifacts", []))
    html = "report.html" if "report.html" in artifacts else None
    recommended = (report.get("recommendation") or {}).get("method") if "methods" in report else None
    return {
        "method": report.get("method"),
        "recommended": recommended,
        "sizes": report.get("sizes") if isinstance(report.get("sizes"), dict) else None,
        "metrics": report.get("metrics") if isinstance(report.get("metrics"), dict) else None,
        "warnings": [str(w) for w in report.get("warnings", []) if isinstance(w, str)],
        "artifacts": artifacts,
        "report_html": f"/api/v1/jobs/{job_id}/artifacts/{html}" if html else None,
    }


def public_job(row: dict[str, Any]) -> dict[str, Any]:
    """The JSON view of a job row (``schemas.Job``) for GET /jobs/{id}."""
    fraction = round(float(row["progress"]), 4)
    report = json.loads(row["report"]) if row["report"] else None
    return {
        "job_id": row["id"],
        "kind": row["kind"],
        "model": row["model"],
        "dataset": row["dataset"],
        "status": row["status"],
        "progress": {"fraction": fraction, "percent": round(100 * fraction, 1), "stage": row["stage"]},
        "recipe": json.loads(row["recipe"]),
        "created": _iso(row["created"]),
        "started": _iso(row["started"]),
        "finished": _iso(row["finished"]),
        "error": json.loads(row["error"]) if row["error"] else None,
        "summary": _summary(row["id"], report),
        "report": report,
    }
