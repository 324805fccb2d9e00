"""What a look-ahead drew for a window (a collect's first wave, the directory's buckets), kept for that window's
round. A look-ahead to the next window may come before the current window's round (rounds fall at another
moment of each window), so the draw for each of the two is kept, and nothing older."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class DrawnAhead(Generic[T]):
    def __init__(self) -> None:
        self._drawn: dict[int, T] = {}

    def put(self, window: int, drawn: T) -> None:
        """Keep `drawn` for `window`, beside the draw for the window before, whose round may not have come yet."""
        self._drawn = {w: kept for w, kept in self._drawn.items() if w == window - 1}
        self._drawn[window] = drawn

    def take(self, window: int) -> T | None:
        """The draw for `window`, once; a draw for an earlier window goes, one for a later one stays."""
        drawn = self._drawn.pop(window, None)
        self._drawn = {w: kept for w, kept in self._drawn.items() if w > window}
        return drawn
