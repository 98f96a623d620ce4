"""``python -m service.picture [--url URL] --model NAME [--version V] [--output PNG] TEXT``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from service.picture.client import PictureError, fetch_explanation
from service.picture.drawing import save_png


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m service.picture",
        description="Draw the attention behind one prediction of a running attention-serve as a PNG.",
    )
    parser.add_argument("text", help="the text to explain")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the service (default %(default)s)")
    parser.add_argument("--model", required=True, help="model name, e.g. sentiment")
    parser.add_argument("--version", help="model version (default: the newest serving)")
    parser.add_argument("--output", type=Path, default=Path("attention.png"), help="PNG to write (%(default)s)")
    parser.add_argument("--truncate", action="store_true", help="cut a text longer than the model's maximum")
    parser.add_argument("--dpi", type=int, default=150, help="resolution (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the service")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("ATTENTION_SERVE_API_KEY"),
        help="bearer key, if the service needs one (default: $ATTENTION_SERVE_API_KEY)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        explanation = fetch_explanation(
            args.url, args.model, args.version, args.text,
            api_key=args.api_key, truncate=args.truncate, timeout_s=args.timeout,
        )  # fmt: skip
    except PictureError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        width, height = save_png(explanation, args.output, args.dpi)
    except ImportError as error:
        print(f"error: drawing needs matplotlib (pip install 'attention-serve[explain]'): {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"error: could not write {args.output}: {error.strerror or error}", file=sys.stderr)
        return 1
    print(f"wrote {args.output} ({width}×{height} px): {explanation.label}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
