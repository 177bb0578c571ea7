"""Subcommands of the ``ofa`` CLI: each module has ``add_parser(subparsers) -> (name, parser)``.

Modules import their heavy dependencies (and ``search`` / ``export``) inside ``run`` only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ofa.commands import convert, finetune, profile, quickstart
from ofa.commands import export as export_command
from ofa.commands import search as search_command
from ofa.commands import train as train_command

__all__ = ["COMMANDS"]

COMMANDS: list[Callable[[Any], Any]] = [
    quickstart.add_parser,
    convert.add_parser,
    finetune.add_parser,
    train_command.add_parser,
    export_command.add_parser,
    profile.add_parser,
    search_command.add_parser,
]
