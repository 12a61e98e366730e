"""What a part tells its observers: the metrics, the traces and the logs watch the parts, never steer them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

E = TypeVar("E")


class Events(Generic[E]):
    """The events of one part, told to each observer in the order they subscribed.

    Synchronously and in the part's own context (its task, its current span):
    an observer must be quick and must not raise.
    """

    def __init__(self) -> None:
        self._observers: list[Callable[[E], None]] = []

    def subscribe(self, observer: Callable[[E], None]) -> Callable[[], None]:
        """Tell ``observer`` of every event from now on; returns the function that stops it."""
        self._observers.append(observer)
        return lambda: self._observers.remove(observer)

    def emit(self, event: E) -> None:
        for observer in self._observers:
            observer(event)
