"""The ``ofa`` command line: one subcommand per stage.

Every subcommand accepts ``--config FILE`` (YAML or JSON whose keys are the flags' names, with
``-`` or ``_``), equivalent to giving the flags; flags on the command line win. Bad input exits
with code 2 and one line on stderr; ``--debug`` shows the traceback instead.

The command line is the one place in ``ofa`` that reaches into ``search`` and ``export``; it
imports them only when their subcommand runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ofa_app._help import HelpFormatter

__all__ = ["main", "UsageError", "HelpFormatter"]

logger = logging.getLogger("ofa_app.cli")


class UsageError(ValueError):
    """Bad command-line input; reported as one line with exit code 2."""


_USER_ERRORS = (
    ValueError,
    TypeError,
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    KeyError,
)


def _registrars() -> list[Callable[[Any], None]]:
    """Each returns the ``add_parser(subparsers)`` of one command module, imported lazily."""
    from ofa_app.commands import COMMANDS

    return COMMANDS


def _load_config(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"config file {path} does not exist")
    text = file.read_text()
    try:
        if file.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as error:  # noqa: BLE001 - any parse error is the user's file
        raise UsageError(f"config file {path} does not parse: {error}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise UsageError(f"config file {path} must hold a mapping of flag names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="ofa",
        description="Once-for-all supernets: convert, train, search under a latency budget, export.",
        epilog="Example: ofa quickstart",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parsers: dict[str, argparse.ArgumentParser] = {}
    for add in _registrars():
        name, subparser = add(sub)
        subparser.formatter_class = HelpFormatter  # every subcommand shows its flags' defaults
        subparser.add_argument("--config", help="YAML or JSON file of flag values")
        subparser.add_argument("--debug", action="store_true", help="show tracebacks")
        subparser.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
        parsers[name] = subparser
    return parser, parsers


def _apply_config(subparser: argparse.ArgumentParser, config_path: str) -> None:
    """Make the file's values the subcommand's defaults; flags given on the line still win."""
    values = _load_config(config_path)
    known = {action.dest for action in subparser._actions}
    unknown = sorted(set(values) - known - {"config", "debug", "verbose"})
    if unknown:
        raise UsageError(f"config file {config_path} has unknown keys {unknown}")
    subparser.set_defaults(**values)
    for action in subparser._actions:  # a value from the file satisfies a required flag
        if action.dest in values:
            action.required = False


def _config_path(argv: Sequence[str]) -> str | None:
    for index, arg in enumerate(argv):
        if arg == "--config" and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, parsers = build_parser()
    command = next((a for a in argv if not a.startswith("-")), None)
    config_path = _config_path(argv)
    if command in parsers and config_path is not None:
        try:
            _apply_config(parsers[command], config_path)
        except UsageError as error:
            if "--debug" in argv:
                raise
            print(f"ofa {command}: error: {error}", file=sys.stderr)
            return 2
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse printed its one line (or --help): return its code
        return exit_.code if isinstance(exit_.code, int) else 2
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"ofa {args.command}: interrupted", file=sys.stderr)
        return 130
    except _USER_ERRORS as error:
        if args.debug:
            raise
        message = (
            str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        )
        if isinstance(error, KeyError):
            message = f"missing key {message}"
        print(f"ofa {args.command}: error: {message}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - one line unless --debug
        if args.debug:
            raise
        print(
            f"ofa {args.command}: failed: {type(error).__name__}: {error}".splitlines()[0],
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
