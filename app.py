"""Serve the interactive matting page (needs ``pip install -e ".[app]"``).

    python app.py                      # http://127.0.0.1:7860, this machine only
    python app.py --port 8000 --checkpoints-dir /data/checkpoints

Checkpoints are looked for in ``--checkpoints-dir`` and, once ``tools/quickstart.py`` has run,
in ``output/quickstart``; any other file can be given by path in the page. See docs/app.md.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the interactive matting page.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on")
    parser.add_argument(
        "--checkpoints-dir", default="checkpoints", help="folder scanned for checkpoint files"
    )
    args = parser.parse_args(argv)
    # The page needs no usage reporting; keep the app off the network.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        from diffmatte.app.ui import launch
    except ImportError as err:
        print(f'error: {err.name}: not installed; run pip install -e ".[app]"', file=sys.stderr)
        return 2
    launch(args.host, args.port, args.checkpoints_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
