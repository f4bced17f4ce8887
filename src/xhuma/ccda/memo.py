"""The converter's memo caches, each registered where it is declared, so that ``clear_all`` needs no list.

The caches hold only values derived from constants or from the input (serialised attribute sets, dates, units,
fixed entry frames): a conversion gives the same bytes with them filled or empty. They exist for speed;
``bench/convert_bench.py`` empties them to measure a first conversion ("cold").
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
K = TypeVar("K")
V = TypeVar("V")

_CLEARERS: list[Callable[[], None]] = []


def memo(maxsize: int | None = None) -> Callable[[F], F]:
    """``functools.lru_cache(maxsize)``, registered for ``clear_all`` (``None``: unbounded, for frames built from
    the template registry's constants)."""

    def decorate(function: F) -> F:
        cached = lru_cache(maxsize=maxsize)(function)
        _CLEARERS.append(cached.cache_clear)
        return cached  # type: ignore[return-value]

    return decorate


def memo_dict(cache: dict[K, V]) -> dict[K, V]:
    """A hand-managed dict cache, registered for ``clear_all``: ``_CACHE = memo_dict({})``."""
    _CLEARERS.append(cache.clear)
    return cache


def clear_all() -> None:
    """Empty every registered cache (for measurement: a first conversion in a fresh process pays for them)."""
    for clear in _CLEARERS:
        clear()
