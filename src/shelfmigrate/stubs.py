"""Inert stand-ins for objects whose class is not allowed to be loaded.

A :class:`Stub` records what a pickle said about an object (the dotted class
name, constructor arguments, BUILD state, list and dict items) without
importing or calling anything.  Typed JSON writes it in the ``$class`` form.
"""

from __future__ import annotations

import reprlib
from typing import Any


class Stub:
    """An object of class ``name`` that was recorded, never instantiated."""

    __slots__ = ("name", "args", "state", "listitems", "dictitems")

    def __init__(
        self,
        name: str,
        args: tuple[Any, ...] | list[Any] | None = None,
        state: Any = None,
        listitems: list[Any] | None = None,
        dictitems: list[tuple[Any, Any]] | None = None,
    ):
        self.name = name
        self.args = args
        self.state = state
        self.listitems = listitems
        self.dictitems = dictitems

    def _fields(self) -> tuple[Any, ...]:
        args = None if self.args is None else list(self.args)
        items = None if self.dictitems is None else [list(p) for p in self.dictitems]
        return (self.name, args, self.state, self.listitems, items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Stub):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, like the containers it mimics

    def __reduce_ex__(self, protocol: object) -> object:
        # Pickling a stub would write a reference to this module, not the original class.
        raise TypeError(
            f"{self.name} is a stub (its class was never loaded); it cannot be pickled again"
        )

    @reprlib.recursive_repr()
    def __repr__(self) -> str:
        parts = [repr(self.name)]
        for field in ("args", "state", "listitems", "dictitems"):
            value = getattr(self, field)
            if value is not None:
                parts.append(f"{field}={value!r}")
        return f"Stub({', '.join(parts)})"
