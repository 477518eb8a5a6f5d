"""The ``listenable`` command line: a file per command, one shared set of model, mask and
device options (:mod:`listenable.cli.common`). It prints (with progress bars); the library
only logs.

Exit status: 0 success, 1 when any clip failed (the others are still processed),
2 for usage errors (bad options, a model spec that cannot be loaded). User errors are one
line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from listenable.errors import ListenableError, UsageError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    from listenable.cli import analyze, evaluate, explain, scenes, score, shortcut, train

    parser = argparse.ArgumentParser(
        prog="listenable", description="Listen to what an audio classifier heard."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (explain, scenes, train, score, analyze, evaluate, shortcut):
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    warnings.simplefilter("default")
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ListenableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. an unwritable --out, a folder given as a file
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
