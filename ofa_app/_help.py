"""The help formatter every subcommand shares (its own module, so commands need not import the CLI)."""

from __future__ import annotations

import argparse
import copy

__all__ = ["HelpFormatter", "busy_flags"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Every subcommand's ``--help``: examples kept as written, and each flag's default.

    A flag shows ``(default: X)`` unless its default says nothing (None, False, an empty
    value) or its help already speaks of its default; a flag without help text gets one that
    names its default.
    """

    @staticmethod
    def _says_nothing(action: argparse.Action) -> bool:
        default = action.default
        return (
            default is None
            or default is False
            or default is argparse.SUPPRESS
            or (isinstance(default, (str, tuple, list, dict)) and not default)
            or not (
                action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE)
            )
        )

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and not self._says_nothing(action):
            action = copy.copy(action)
            action.help = "(default: %(default)s)"
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if self._says_nothing(action) or "%(default)" in text or "(default" in text:
            return action.help
        return super()._get_help_string(action)


def busy_flags(parser: argparse.ArgumentParser, *, settle: float) -> None:
    """``--settle`` and ``--allow-busy``: what a command does when other jobs share the timing
    cores at its final measurement (``settle_s`` and ``allow_busy`` in ``args``)."""
    parser.add_argument(
        "--settle",
        dest="settle_s",
        type=float,
        default=settle,
        metavar="SECONDS",
        help="when other jobs shared the timing cores at the final measurement, wait up to "
        "this long for idle cores and measure again; if they stay busy, stop as too noisy",
    )
    parser.add_argument(
        "--allow-busy",
        action="store_true",
        help="when the cores stay busy, report the figures measured under load with a warning "
        "instead of stopping",
    )
