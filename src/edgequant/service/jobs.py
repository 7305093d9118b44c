"""The job manager: a pool of worker processes fed from the SQLite queue, with cancellation.

``workers`` processes are started with the ``spawn`` context (no forked copies of the server's
threads or sockets).  A dispatcher thread in the server hands the oldest queued job to an idle
worker after claiming it (``queued -> running``, conditional), and watches the workers' pipes and
process sentinels:

* a worker reports a job id back when it is done (it wrote the final status itself);
* a worker that dies while running a job (crash, out of memory) fails that job with its exit code
  and is replaced by a fresh process.

Cancellation: a queued job is marked cancelled at once and never dispatched.  A running job is
marked cancelled first, then its worker is killed (SIGKILL), its ``jobs/<id>.partial/`` folder
removed, and the worker replaced.  Because every status change is conditional, whichever of
"finished" and "cancelled" lands first wins, and the loser changes nothing.

Limits: a job running longer than ``job_timeout_s`` has its worker killed and fails with
ResourceLimit; each worker sets its own RLIMIT_AS (``worker.worker_main``).  Finished jobs older
than ``retention_days`` are deleted with their folders (checked once a minute).

Stop and restart (see ``store``): on SIGTERM the server's shutdown marks running jobs
``interrupted`` and kills the workers; a crash leaves them running in the table, and the next start
marks them ``interrupted``.  Queued jobs stay queued and run after the restart.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from edgequant.service.safety import remove_tree
from edgequant.service.store import JobStore
from edgequant.service.worker import worker_main

log = logging.getLogger(__name__)
_CTX = mp.get_context("spawn")


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    job: str | None = None


class JobManager:
    """Owns the worker processes; thread-safe ``submit_wakeup`` and ``cancel``."""

    def __init__(
        self,
        store: JobStore,
        workers: int,
        *,
        job_timeout_s: float = 1800.0,
        memory_mb: int = 8192,
        retention_days: float | None = None,
        ray_address: str | None = None,
    ) -> None:
        self.store = store
        self.ray_address = ray_address  # jobs run as Ray tasks (service.ray_jobs) when set
        self.n = workers
        self.job_timeout_s, self.memory_mb, self.retention_days = job_timeout_s, memory_mb, retention_days
        self._next_sweep = 0.0
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._workers: list[_Worker] = []
        self._dead: list[_Worker] = []  # killed by cancel(); their pipes are closed by the dispatcher thread
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        interrupted = self.store.mark_interrupted()
        if interrupted:
            log.warning("marked %d job(s) interrupted: %s", len(interrupted), ", ".join(interrupted))
        for leftover in (self.store.root / "jobs").glob("*.partial"):
            remove_tree(leftover)
        for leftover in (self.store.root / "tmp").iterdir():
            remove_tree(leftover)
        with self._lock:
            self._workers = [self._spawn() for _ in range(self.n)]
        self._thread = threading.Thread(target=self._loop, name="edgequant-dispatch", daemon=True)
        self._thread.start()

    def _spawn(self) -> _Worker:
        parent, child = _CTX.Pipe()
        proc = _CTX.Process(
            target=worker_main,
            args=(child, str(self.store.root), os.getpid(), self.memory_mb, self.ray_address),
            name="edgequant-worker",
            daemon=True,
        )
        proc.start()
        child.close()
        return _Worker(proc, parent)

    def _kill(self, worker: _Worker) -> None:
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(timeout=10)
        worker.conn.close()

    def stop(self) -> None:
        """Stop dispatching, mark running jobs interrupted, kill the workers (SIGTERM ends here)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            interrupted = self.store.mark_interrupted()
            for worker in self._workers:
                self._kill(worker)
            self._workers = []
        for job_id in interrupted:
            remove_tree(self.store.job_dir(job_id, partial=True))
        if interrupted:
            log.warning("stopping: marked %d running job(s) interrupted", len(interrupted))

    def wakeup(self) -> None:
        self._wake.set()

    def cancel(self, job_id: str) -> str:
        """Cancel a job; returns its status afterwards (unchanged if it had already finished)."""
        now = time.time()
        error = {"error": "Cancelled", "detail": "cancelled by request", "hint": ""}
        if self.store.transition(
            job_id, ("queued",), "cancelled", stage="cancelled", finished=now, error=error
        ):
            return "cancelled"
        with self._lock:
            if self.store.transition(
                job_id, ("running",), "cancelled", stage="cancelled", finished=now, error=error
            ):
                for i, worker in enumerate(self._workers):
                    if worker.job == job_id:
                        worker.process.kill()
                        worker.process.join(timeout=10)
                        self._dead.append(worker)
                        self._workers[i] = self._spawn()
                remove_tree(self.store.job_dir(job_id, partial=True))
                remove_tree(self.store.job_dir(job_id))
                self._wake.set()
                return "cancelled"
        row = self.store.get(job_id)
        return str(row["status"]) if row else "unknown"

    def _dispatch(self) -> None:
        with self._lock:
            idle = [w for w in self._workers if w.job is None and w.process.is_alive()]
            if not idle:
                return
            for job_id in self.store.next_queued():
                if not idle:
                    break
                if not self.store.transition(
                    job_id, ("queued",), "running", started=time.time(), stage="starting"
                ):
                    continue
                worker = idle.pop(0)
                worker.job = job_id
                try:
                    worker.conn.send(job_id)
                except OSError as exc:
                    self._fail(job_id, f"could not hand the job to a worker: {exc}")
                    worker.job = None

    def _fail(self, job_id: str, detail: str, error_name: str = "WorkerDied", hint: str = "") -> None:
        error = {
            "error": error_name,
            "detail": detail,
            "hint": hint or "resubmit; if it repeats, report the model.",
        }
        self.store.transition(
            job_id, ("running",), "failed", error=error, stage="failed", finished=time.time()
        )
        remove_tree(self.store.job_dir(job_id, partial=True))

    def _reap(self, ready: list[Any]) -> None:
        with self._lock:
            for i, worker in enumerate(self._workers):
                if worker.conn in ready:
                    try:
                        while worker.conn.poll():
                            done = worker.conn.recv()
                            if done == worker.job:
                                worker.job = None
                    except (EOFError, OSError):
                        pass
                if not worker.process.is_alive():
                    if worker.job is not None:
                        self._fail(
                            worker.job, f"the worker process died (exit code {worker.process.exitcode})."
                        )
                    self._kill(worker)
                    self._workers[i] = self._spawn()

    def _enforce_timeout(self) -> None:
        now = time.time()
        with self._lock:
            for i, worker in enumerate(self._workers):
                if worker.job is None:
                    continue
                row = self.store.get(worker.job)
                started = row.get("started") if row else None
                if started is None or now - float(started) <= self.job_timeout_s:
                    continue
                job_id = worker.job
                worker.process.kill()
                worker.process.join(timeout=10)
                self._dead.append(worker)
                self._workers[i] = self._spawn()
                self._fail(
                    job_id,
                    f"the job ran longer than this server's limit of {self.job_timeout_s:g} s and was stopped.",
                    "ResourceLimit",
                    "use fewer calibration samples or a smaller model, or ask for a longer --job-timeout.",
                )

    def _sweep(self) -> None:
        if self.retention_days is None or time.monotonic() < self._next_sweep:
            return
        keep_s = self.retention_days * 86400.0
        self._next_sweep = time.monotonic() + min(60.0, max(0.5, keep_s / 4))
        for job_id in self.store.expired(time.time() - keep_s):
            if self.store.delete(job_id):
                remove_tree(self.store.job_dir(job_id))
                log.info("retention: deleted job %s", job_id)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._enforce_timeout()
                self._sweep()
                with self._lock:
                    for dead in self._dead:
                        dead.conn.close()
                    self._dead.clear()
                self._dispatch()
                with self._lock:
                    handles: list[Any] = [w.conn for w in self._workers] + [
                        w.process.sentinel for w in self._workers
                    ]
                ready = wait(handles, timeout=0.1)
                self._reap(list(ready))
                if self._wake.wait(timeout=0.0 if ready else 0.05):
                    self._wake.clear()
            except Exception:
                log.exception("job dispatcher error")
                time.sleep(0.5)

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "workers": len(self._workers),
                "busy": sum(1 for w in self._workers if w.job is not None),
                "alive": sum(1 for w in self._workers if w.process.is_alive()),
            }
