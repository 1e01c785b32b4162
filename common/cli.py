"""The command line shared by both modules' `hub run`: input options and the device switch."""
from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from .errors import PaddleHubVideoError

T = TypeVar("T")


def parse_bool(text: str) -> bool:
    """`True`/`False` as the published modules read them (a Python literal), plus 1/0/yes/no."""
    lowered = text.strip().lower()
    if lowered in {"1", "yes", "true", "y"}:
        return True
    if lowered in {"0", "no", "false", "n"}:
        return False
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = None
    if not isinstance(value, bool):
        raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")
    return value


def build_parser(module_name: str, description: str, top_k: int, threshold: float) -> argparse.ArgumentParser:
    """`hub run <module_name>` options: --input_path / --input_file, --use_gpu, --top_k, --threshold."""
    parser = argparse.ArgumentParser(prog=f"hub run {module_name}", description=description)
    inputs = parser.add_argument_group("input (at least one)")
    inputs.add_argument("--input_path", type=str, help="a video file")
    inputs.add_argument("--input_file", type=str, help="a text file listing videos, one path per line")
    parser.add_argument("--use_gpu", type=parse_bool, default=False, help="True to run on GPU 0 (default False)")
    # PaddleHub's own `hub run` offered --batch_size for video modules; accepted so old scripts keep
    # working. Videos always go through one at a time (the next one decodes meanwhile).
    parser.add_argument("--batch_size", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--top_k", type=int, default=top_k, help=f"labels kept per video (default {top_k})")
    parser.add_argument(
        "--threshold", type=float, default=threshold, help=f"minimum probability kept (default {threshold})"
    )
    return parser


def read_path_list(list_file: str | Path) -> list[str]:
    """Video paths from a list file: one per line, blank lines and `#` comments skipped, spaces kept."""
    text = Path(list_file).read_text(encoding="utf-8")
    lines = (line.rstrip("\r") for line in text.split("\n"))
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def input_paths(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The videos named by --input_path and --input_file; a usage error if there are none."""
    paths = [args.input_path] if args.input_path else []
    if args.input_file:
        try:
            paths += read_path_list(args.input_file)
        except (OSError, UnicodeDecodeError) as exc:
            parser.error(f"cannot read --input_file {args.input_file}: {exc}")
    if not paths:
        parser.error("give a video with --input_path, or a list of videos with --input_file")
    return paths


def run_reporting_errors(module_name: str, call: Callable[[], T], failures: Callable[[T], Sequence[str]]) -> T:
    """Run a `hub run` job and end it as a command-line tool should.

    All videos answered: return the results (PaddleHub prints them, exit status 0). Some videos
    failed: print the results all the same (the same list, each failed video in its place with its
    empty result), one line per failure on stderr, and exit with status 1. A fatal error (no
    weights, no GPU, bad arguments) becomes one clear line on stderr and exit status 1 instead of a
    traceback (PaddleHub's CLI lets exceptions through). `failures(results)` gives the reasons.
    """
    try:
        results = call()
    except (PaddleHubVideoError, ValueError) as exc:
        print(f"hub run {module_name}: error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    reasons = list(failures(results))
    if reasons:
        print(results, flush=True)  # what PaddleHub's `hub run` prints on success
        for reason in reasons:
            print(f"hub run {module_name}: error: {reason}", file=sys.stderr)
        print(f"hub run {module_name}: {len(reasons)} of {len(results)} videos failed", file=sys.stderr, flush=True)
        raise SystemExit(1)
    return results
