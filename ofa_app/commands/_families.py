"""What the CLI needs to know of a model family, chosen in one place: the data each command
loads for it, its default training schedule, its export options, and the flags only it takes.

Each family's CLI code lives in its own module (``_bert``, ``_cnn``), which registers its
adapter here with :func:`register_family`; this registry imports no family. Flags that another
family owns are refused with one line naming them (:func:`refuse_foreign_flags`).
"""

from __future__ import annotations

import argparse
from typing import Any, Protocol

from ofa._registry import Registry

__all__ = ["AppFamily", "app_family", "refuse_foreign_flags", "register_family"]


class AppFamily(Protocol):
    name: str
    title: str  # how messages name this family's supernets ("BERT-family", "CNN")
    # per command, the (dest, flag) pairs only this family takes
    flags: dict[str, tuple[tuple[str, str], ...]]
    hints: dict[str, str]  # per command, what to use instead when a foreign flag is refused

    def train_inputs(self, args: argparse.Namespace, supernet: Any) -> tuple[Any, ...]:
        """Teacher, train data, validation data, calibration data, the report's label, and the
        tokenizer to save beside the supernet (None where the family has none)."""
        ...

    def default_phases(self, args: argparse.Namespace, supernet: Any) -> tuple[Any, ...]: ...

    def search_data(self, args: argparse.Namespace, supernet: Any) -> tuple[Any, Any]:
        """Evaluation data and calibration data (None where the family needs none)."""
        ...

    def export_options(
        self, args: argparse.Namespace, supernet: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """``export.ExportConfig`` fields beyond ``onnx``, and the objects ``export.save``
        takes (tokenizer, fine-tune or calibration data)."""
        ...


_FAMILIES: Registry[AppFamily] = Registry("CLI adapter")


def register_family(family: AppFamily) -> AppFamily:
    """Make ``family`` the CLI adapter for supernets of ``family.name``."""
    return _FAMILIES.register(family)


def app_family(supernet: Any) -> AppFamily:
    """The CLI adapter of ``supernet``'s family."""
    name = supernet.family_name
    if name not in _FAMILIES:
        raise ValueError(
            f"the CLI has no adapter for model family {name!r} (known: {sorted(_FAMILIES)}): "
            "use the Python API, or register one with ofa_app.commands.register_family"
        )
    return _FAMILIES[name]


def _given(value: Any) -> bool:
    return value not in (None, False, 0, "none", (), [])


def refuse_foreign_flags(args: argparse.Namespace, command: str, family: AppFamily) -> None:
    """One line naming the flags given that only other families take, and what to do."""
    own = {dest for dest, _ in family.flags.get(command, ())}
    for other in _FAMILIES.values():
        if other is family:
            continue
        given = [
            flag
            for dest, flag in other.flags.get(command, ())
            if dest not in own and _given(getattr(args, dest, None))
        ]
        if given:
            hint = family.hints.get(command, "")
            raise ValueError(
                f"{', '.join(given)}: only for {other.title} supernets, and this supernet is "
                f"a {family.title}; drop {'it' if len(given) == 1 else 'them'}"
                + (f" ({hint})" if hint else "")
            )
