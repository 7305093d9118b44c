"""``python -m edgequant.service --host H --port P --store DIR [--api-key K] [--max-upload-mb N] [--workers N]``."""

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
        )
    except EdgeQuantError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
