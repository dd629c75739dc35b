"""A bounded, insertion-ordered cache of replies by request id (the idempotency store)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

V = TypeVar("V")


class ReplyCache(Generic[V]):
    """Keeps the last ``capacity`` replies; a retried request id gets its first reply back."""

    def __init__(self, capacity: int = 1024):
        if capacity < 1:
            raise ValueError("reply cache capacity must be >= 1")
        self.capacity = capacity
        self._items: OrderedDict[str, V] = OrderedDict()

    def get(self, request_id: str) -> V | None:
        """The cached reply for ``request_id``, or ``None``."""
        return self._items.get(request_id)

    def put(self, request_id: str, reply: V) -> None:
        """Store ``reply``; evicts the oldest entry beyond capacity."""
        self._items[request_id] = reply
        self._items.move_to_end(request_id)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
