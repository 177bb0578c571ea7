"""JSON round trip shared by every frozen config and subnet class."""

from __future__ import annotations

import json
from typing import Any, TypeVar

__all__ = ["JsonMixin"]

T = TypeVar("T", bound="JsonMixin")


class JsonMixin:
    """``to_json`` / ``from_json`` for classes that define ``to_dict`` / ``from_dict``."""

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        raise NotImplementedError

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls: type[T], text: str) -> T:
        return cls.from_dict(json.loads(text))
