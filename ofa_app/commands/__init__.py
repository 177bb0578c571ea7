"""Subcommands of the ``ofa`` CLI: each module has ``add_parser(subparsers) -> (name, parser)``.

Modules import their heavy dependencies (and ``search`` / ``export``) inside ``run`` only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# _bert, _cnn and _decoder register the families' CLI adapters
from ofa_app.commands import _bert, _cnn, _decoder, convert, finetune, profile, quickstart  # noqa: F401
from ofa_app.commands import export as export_command
from ofa_app.commands import search as search_command
from ofa_app.commands import train as train_command
from ofa_app.commands._families import register_family

__all__ = ["COMMANDS", "register_family"]

COMMANDS: list[Callable[[Any], Any]] = [
    quickstart.add_parser,
    convert.add_parser,
    finetune.add_parser,
    train_command.add_parser,
    export_command.add_parser,
    profile.add_parser,
    search_command.add_parser,
]
