"""``python -m edgequant.service --host H --port P --store DIR [options]`` (see ``edgequant serve --help``)."""

from __future__ import annotations

import argparse
import sys

from edgequant.errors import EdgeQuantError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgequant.service", description="EdgeQuant REST service")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--store", required=True, help="directory for the job database and uploads")
    parser.add_argument("--api-key", default=None, help="require X-API-Key (default: $EDGEQUANT_API_KEY)")
    parser.add_argument("--max-upload-mb", type=float, default=200.0)
    parser.add_argument("--workers", type=int, default=2, help="job worker processes")
    parser.add_argument("--job-timeout", type=float, default=1800.0, help="seconds per job")
    parser.add_argument("--worker-memory-mb", type=int, default=8192, help="RLIMIT_AS of each worker")
    parser.add_argument("--max-queued", type=int, default=64, help="queued jobs at most (429 beyond)")
    parser.add_argument("--retention-days", type=float, default=None, help="delete finished jobs older")
    parser.add_argument(
        "--executor", default="local", help="local worker processes, or ray (jobs as Ray tasks)"
    )
    parser.add_argument("--ray-address", default=None, help="Ray cluster (default: start a local instance)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    from edgequant.service import serve

    try:
        serve(
            args.host,
            args.port,
            args.store,
            api_key=args.api_key,
            max_upload_mb=args.max_upload_mb,
            workers=args.workers,
            log_level=args.log_level,
            job_timeout_s=args.job_timeout,
            worker_memory_mb=args.worker_memory_mb,
            max_queued=args.max_queued,
            retention_days=args.retention_days,
            executor=args.executor,
            ray_address=args.ray_address,
        )
    except EdgeQuantError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
