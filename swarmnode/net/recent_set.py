"""A bounded set of the most recently added items, for what a long-running node remembers of its peers."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable


class RecentSet:
    """The last `capacity` items added (frame digests, signers, peers met): memory stays bounded however long a node
    runs."""

    def __init__(self, capacity: int) -> None:
        self._items: OrderedDict[bytes | str, None] = OrderedDict()
        self._capacity = capacity

    def add(self, item: bytes | str) -> None:
        self._items[item] = None
        self._items.move_to_end(item)
        if len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def update(self, items: Iterable[bytes | str]) -> None:
        for item in items:
            self.add(item)

    def __contains__(self, item: bytes | str) -> bool:
        return item in self._items

    def __len__(self) -> int:
        return len(self._items)
