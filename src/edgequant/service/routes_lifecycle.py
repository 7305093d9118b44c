"""Job lifecycle: list (filtered, paginated), delete, and live progress as Server-Sent Events.

``GET /jobs/{id}/events`` is a ``text/event-stream``: an ``event: progress`` with
``{"status", "stage", "percent"}`` whenever one of them changes (the store is read every
``EVENT_POLL_S``), a comment line every ``KEEPALIVE_S`` so proxies keep the connection, and one
final ``event: end`` with the whole job (``schemas.Job``) once it finished.  A stream lasts at most
``MAX_STREAM_S``; the client reconnects (EventSource does so by itself).  Polling ``GET /jobs/{id}``
works as before.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from edgequant.service.config import Conflict
from edgequant.service.routes_jobs import job_row
from edgequant.service.safety import remove_tree
from edgequant.service.schemas import Deleted, JobKind, JobList, JobStatus
from edgequant.service.store import FINISHED, JobStore, public_job

router = APIRouter()
EVENT_POLL_S = 0.25
KEEPALIVE_S = 10.0
MAX_STREAM_S = 3600.0


def _store(request: Request) -> JobStore:
    store: JobStore = request.app.state.store
    return store


@router.get("/jobs", response_model=JobList, summary="List jobs, newest first")
def list_jobs(
    request: Request,
    status: JobStatus | None = None,
    kind: JobKind | None = None,
    model: str | None = Query(default=None, max_length=64),
    limit: int = Query(default=50, ge=1, le=500),
    offset: int = Query(default=0, ge=0, le=10_000_000),
) -> dict[str, Any]:
    rows, total = _store(request).list_jobs(status=status, kind=kind, model=model, limit=limit, offset=offset)
    return {"jobs": [public_job(r) for r in rows], "total": total, "limit": limit, "offset": offset}


@router.delete("/jobs/{job_id}", response_model=Deleted, summary="Delete a finished job and its files")
def delete_job(request: Request, job_id: str) -> dict[str, Any]:
    store = _store(request)
    row = job_row(store, job_id)
    if row["status"] not in FINISHED or not store.delete(job_id):
        raise Conflict(
            f"job {job_id} is {row['status']}; only finished jobs can be deleted.", "cancel it first."
        )
    remove_tree(store.job_dir(job_id))
    remove_tree(store.job_dir(job_id, partial=True))
    return {"deleted": job_id}


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _stream(request: Request, store: JobStore, job_id: str) -> AsyncIterator[str]:
    last: tuple[Any, ...] | None = None
    started = last_sent = time.monotonic()
    yield "retry: 1000\n\n"
    while time.monotonic() - started < MAX_STREAM_S:
        row = store.get(job_id)
        if row is None:
            yield _event("end", {"job_id": job_id, "status": "deleted"})
            return
        job = public_job(row)
        state = (job["status"], job["progress"]["stage"], job["progress"]["percent"])
        if state != last:
            last, last_sent = state, time.monotonic()
            yield _event("progress", {"status": state[0], "stage": state[1], "percent": state[2]})
        if job["status"] in FINISHED:
            yield _event("end", job)
            return
        if time.monotonic() - last_sent > KEEPALIVE_S:
            last_sent = time.monotonic()
            yield ": keep-alive\n\n"
        if await request.is_disconnected():
            return
        await asyncio.sleep(EVENT_POLL_S)


@router.get(
    "/jobs/{job_id}/events",
    summary="Progress of a job as Server-Sent Events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}},
)
def job_events(request: Request, job_id: str) -> StreamingResponse:
    store = _store(request)
    job_row(store, job_id)
    return StreamingResponse(
        _stream(request, store, job_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


__all__ = ["router"]
