"""A registry of adapters by name: what each package keeps per model family."""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    """Adapters keyed by their ``name``, in registration order (the order lookups try them).

    ``what`` names the adapters in errors ("model family", "search adapter"...).
    """

    def __init__(self, what: str, adapters: tuple[T, ...] = ()) -> None:
        super().__init__()
        self.what = what
        for adapter in adapters:
            self.register(adapter)

    def register(self, adapter: T, *, before: str | None = None) -> T:
        """Add ``adapter`` under ``adapter.name`` (ahead of ``before`` when given). The same
        adapter class again is a no-op; another one under a taken name is refused."""
        name: str = adapter.name  # type: ignore[attr-defined]
        known = self.get(name)
        if known is not None:
            if type(known) is type(adapter):
                return known
            raise ValueError(f"a {self.what} named {name!r} is already registered")
        if before is not None and before not in self:
            raise ValueError(f"before={before!r} names no registered {self.what}: {sorted(self)}")
        items = list(self.items())
        at = len(items) if before is None else [n for n, _ in items].index(before)
        items.insert(at, (name, adapter))
        self.clear()
        self.update(items)
        return adapter

    def named(self, name: str) -> T:
        """The adapter registered under ``name``; ValueError naming the known ones otherwise."""
        if name not in self:
            raise ValueError(f"unknown {self.what} {name!r}; known: {sorted(self)}")
        return self[name]
