"""Compiling a kernel with numba: without the GIL, cached on disk where numba finds a writable place."""
from __future__ import annotations

import logging
from typing import Any, Callable

__all__ = ["compiled"]

_log = logging.getLogger(__name__)


def compiled(function: Callable[..., None]) -> Any:
    """`function` compiled by numba (nogil, so the backends' threads run it side by side). numba caches the machine
    code next to this package or in the user's cache folder (NUMBA_CACHE_DIR overrides); where neither is
    writable it compiles at every start instead of failing."""
    from numba import njit

    try:
        return njit(nogil=True, cache=True)(function)
    except RuntimeError as exc:  # numba: "cannot cache function ...: no locator available"
        _log.info("numba cannot cache %s (%s); it is compiled at every start", function.__name__, exc)
        return njit(nogil=True)(function)
