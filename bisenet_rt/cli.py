"""`bisenet-rt` command line: a thin layer over the public functions, testable in-process via `main(argv)`.

Each subcommand lives in `bisenet_rt.commands.<name>` with `add_arguments(parser)` and `run(args) -> int`.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import logging
import os
import pkgutil
import signal
import sys
import threading
import traceback
from typing import Any, Iterator, Sequence

from . import __version__
from .errors import BisenetError

__all__ = ["main", "build_parser"]

#: Subcommands in the order `--help` lists them; others found in bisenet_rt.commands follow.
_ORDER = ("export", "build", "bench", "segment", "eval", "compare", "synth", "train", "export_triton")


def _command_modules() -> list:
    from . import commands

    found = {m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")}
    names = [n for n in _ORDER if n in found] + sorted(found - set(_ORDER))
    return [importlib.import_module(f"{commands.__name__}.{n}") for n in names]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="bisenet-rt", description="Real-time BiSeNetV2 semantic segmentation.",
                                     allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"bisenet-rt {__version__}")
    parser.add_argument("--debug", action="store_true", help=f"show the traceback behind an error (or set {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in _command_modules():
        name = getattr(module, "NAME", module.__name__.rsplit(".", 1)[1].replace("_", "-"))
        # allow_abbrev=False: a mistyped option (`--engines`) is an error, not taken for another (`--engines-dir`)
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__, allow_abbrev=False,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.epilog = "\n".join(part for part in (p.epilog, _examples(module)) if part)
        p.set_defaults(_run=module.run)
    return parser


def _examples(module: Any) -> str:
    """A subcommand's EXAMPLES (command lines, one per line; `#` lines explain), as its --help shows them."""
    lines = [line.strip() for line in getattr(module, "EXAMPLES", "").strip().splitlines() if line.strip()]
    return "examples:\n" + "\n".join(f"  {line}" for line in lines) if lines else ""


class _StderrHandler(logging.StreamHandler):
    """Writes each line to whatever sys.stderr is at that moment (callers of `main` may have swapped it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class _LineFormatter(logging.Formatter):
    """Progress as plain lines; warnings and errors say so."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def _show_library_logs() -> None:
    """The library logs what it does (logging.getLogger(__name__)); the CLI shows it on stderr, once."""
    logger = logging.getLogger("bisenet_rt")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_LineFormatter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


class _Terminated(KeyboardInterrupt):
    """SIGTERM (docker stop, systemd), handled like Ctrl-C: work stops cleanly, nothing is left half-written."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While a command runs, SIGTERM raises _Terminated in the main thread (if nobody else handles SIGTERM)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def terminate(signum: int, frame: Any) -> None:
        raise _Terminated()

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


#: Set (to anything but 0) to see the traceback behind an error message.
DEBUG_ENV = "BISENET_RT_DEBUG"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code. User errors print one line, never a traceback (--debug shows it)."""
    _show_library_logs()
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args._argv = argv  # the exact command, for reports
    debug = args.debug or os.environ.get(DEBUG_ENV, "0") not in ("", "0")
    try:
        with _sigterm_as_interrupt():
            return int(args._run(args) or 0)
    except _Terminated:
        print("bisenet-rt: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("bisenet-rt: interrupted", file=sys.stderr)
        return 130
    except BisenetError as exc:
        if debug:
            traceback.print_exc()
        print(f"bisenet-rt {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the file system refused: a folder named as a file, a read-only mount, a full disk
        if debug:
            traceback.print_exc()
        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            print(f"bisenet-rt {args.command}: error: disk full: {exc.filename or 'a file being written'}",
                  file=sys.stderr)
            return 1
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"bisenet-rt {args.command}: error: {where}{exc.strerror or exc}; check the path and its permissions",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
