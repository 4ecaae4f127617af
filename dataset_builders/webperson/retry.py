"""Retries with exponential backoff: the one retry loop of the WebPerson builder.

Used by the OpenAI-compatible chat client (:mod:`.openai_client`) and the built-in URL downloader
(:mod:`.sources`). An attempt returns its value, raises :class:`TryAgain` for a failure worth another
try (a timeout, a refused connection, HTTP 429 or 5xx), or raises anything else to fail at once.
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

__all__ = ["TryAgain", "retry_call"]

T = TypeVar("T")


class TryAgain(Exception):
    """Raised by an attempt whose failure is worth another try.

    Args:
        error: what :func:`retry_call` raises when no tries are left.
        after: the delay in seconds that the other side asked for (HTTP ``Retry-After``); ``None``:
            the backoff delay.
    """

    def __init__(self, error: BaseException, after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.after = after


def retry_call(
    attempt: Callable[[int], T],
    *,
    retries: int,
    backoff: float,
    max_backoff: float,
    on_retry: Callable[[int], None] | None = None,
) -> T:
    """Call ``attempt(1)``, ``attempt(2)``, ... until one returns, and return its value.

    Args:
        attempt: called with the attempt number (1 for the first); raises :class:`TryAgain` when the
            call may be repeated, any other exception to fail at once.
        retries: attempts after the first (a negative number counts as 0).
        backoff: the delay before the first retry in seconds, doubled before each further one; a
            :class:`TryAgain` with ``after`` asks for that delay instead. Either is at most
            ``max_backoff``.
        on_retry: called with the number of the failed attempt before each retry (e.g. to count it).

    Raises:
        the ``error`` of the last :class:`TryAgain` when ``retries + 1`` attempts have failed.
    """
    number = 1
    while True:
        try:
            return attempt(number)
        except TryAgain as failure:
            if number > retries:
                raise failure.error from None
            if on_retry is not None:
                on_retry(number)
            delay = failure.after if failure.after is not None else backoff * 2 ** (number - 1)
            time.sleep(min(max_backoff, delay))
        number += 1
