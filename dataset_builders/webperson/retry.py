"""The retry policy of the WebPerson builder's HTTP calls, on ``tenacity``.

Shared by the OpenAI-compatible chat client (:mod:`.openai_client`) and the built-in URL downloader
(:mod:`.sources`), so both retry the same way: an attempt returns its value, raises :class:`TryAgain`
for a failure worth another try (a timeout, a refused connection, HTTP 429 or 5xx), or raises anything
else to fail at once. Between tries tenacity waits the delay the server asked for (``Retry-After``) or
else an exponential backoff, both capped.
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from typing import Callable, TypeVar

import tenacity

__all__ = ["TryAgain", "retry_after", "retry_call"]

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
    exponential = tenacity.wait_exponential(multiplier=backoff, max=max_backoff)

    def wait(state: tenacity.RetryCallState) -> float:
        after = getattr(state.outcome.exception(), "after", None) if state.outcome else None
        return min(max_backoff, after) if after is not None else exponential(state)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TryAgain),
        stop=tenacity.stop_after_attempt(max(0, retries) + 1),
        wait=wait,
        sleep=lambda seconds: time.sleep(seconds),  # looked up per call: tests patch time.sleep
        before_sleep=(lambda state: on_retry(state.attempt_number)) if on_retry else None,
        reraise=True,
    )
    try:
        for try_ in retrying:
            with try_:
                return attempt(try_.retry_state.attempt_number)
    except TryAgain as failure:
        raise failure.error from None
    raise AssertionError("unreachable: tenacity stops by returning or raising")  # pragma: no cover


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from an HTTP ``Retry-After`` value (delay seconds or an HTTP date); ``None`` when
    absent or unreadable."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
