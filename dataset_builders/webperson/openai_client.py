"""A small client for OpenAI-compatible chat-completions endpoints (vLLM, SGLang, TGI, ... servers).

HTTP through ``httpx`` (one pooled client), bounded concurrency (a thread pool), a timeout per request,
and retries (``tenacity``, via :mod:`.retry`) with exponential backoff on timeouts, connection errors,
HTTP 408, 409, 425, 429 and 5xx, waiting what ``Retry-After`` asks for when it is sent. Other HTTP
errors (400, 401, 404, ...) and malformed answers fail at once. Failures come back as :class:`EndpointError`
values from :meth:`OpenAIChatClient.complete_many`, so one bad request never stops a batch.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import httpx

from .retry import TryAgain, retry_after, retry_call

__all__ = ["EndpointError", "OpenAIChatClient"]

_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class EndpointError(RuntimeError):
    """A chat request that failed for good: ``kind`` is ``timeout``, ``connection``, ``http_NNN`` or
    ``bad_response``; ``attempts`` the number of requests sent."""

    def __init__(self, kind: str, detail: str, attempts: int) -> None:
        super().__init__(f"{kind} after {attempts} attempt(s): {detail}")
        self.kind = kind
        self.detail = detail
        self.attempts = attempts


class OpenAIChatClient:
    """Send chat-completion requests to ``{base_url}/chat/completions``.

    Args:
        base_url: e.g. ``http://localhost:8000/v1`` (what ``vllm serve`` offers).
        model: the served model name.
        api_key: sent as a bearer token when given (vLLM's ``--api-key``).
        timeout: seconds per request; max_retries: extra attempts after the first.
        backoff: first retry delay in seconds (doubling, at most ``max_backoff``); a ``Retry-After``
            sent with the failed answer replaces it (also at most ``max_backoff``).
        concurrency: requests in flight at once in :meth:`complete_many`.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        concurrency: int = 16,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.concurrency = max(1, concurrency)
        self.stats: Counter = Counter()
        self._lock = threading.Lock()
        # no cap on connections: the caller's threads (``concurrency`` in complete_many) bound them
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=self.concurrency)
        self._http = httpx.Client(timeout=timeout, limits=limits)

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    def _post(self, payload: dict[str, Any]) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else None
        return self._http.post(self.url, json=payload, headers=headers)

    def complete(self, messages: list[dict[str, Any]], **params: Any) -> str:
        """The assistant text for ``messages`` (``params``: ``temperature``, ``max_tokens``, ``seed``, ...).

        Raises:
            EndpointError: after the retries are spent, or at once for a non-retryable failure.
        """
        payload = {"model": self.model, "messages": messages, **params}
        try:
            return retry_call(
                lambda attempt: self._attempt(payload, attempt),
                retries=self.max_retries,
                backoff=self.backoff,
                max_backoff=self.max_backoff,
                on_retry=lambda _: self._count("retries"),
            )
        except EndpointError:
            self._count("errors")
            raise

    def _attempt(self, payload: dict[str, Any], attempt: int) -> str:
        """One request: the answer's text, :class:`TryAgain` for a retryable failure, or
        :class:`EndpointError` for a final one."""
        self._count("requests")
        try:
            response = self._post(payload)
        except httpx.TimeoutException as error:
            detail = f"no answer within {self.timeout} s ({error})"
            raise TryAgain(EndpointError("timeout", detail, attempt)) from None
        except (httpx.RequestError, OSError) as error:
            detail = f"{type(error).__name__}: {error}"
            if isinstance(error, httpx.ConnectError):  # "[Errno 111] Connection refused", ...
                detail = str(error)
            raise TryAgain(EndpointError("connection", detail, attempt)) from None
        if not response.is_success:
            failure = EndpointError(f"http_{response.status_code}", _body(response), attempt)
            if response.status_code not in _RETRY_STATUS:
                raise failure
            raise TryAgain(failure, retry_after(response.headers.get("Retry-After")))
        try:
            answer = json.loads(response.content)
        except ValueError as error:  # not JSON, or not UTF-8
            raise EndpointError("bad_response", f"not JSON: {error}", attempt) from None
        return _content(answer, attempt)

    def complete_many(
        self, conversations: Sequence[list[dict[str, Any]]], params: Sequence[dict[str, Any]] | None = None
    ) -> list[str | EndpointError]:
        """Complete each conversation, ``concurrency`` at a time; results in input order, failures as
        :class:`EndpointError` values."""
        params = list(params) if params is not None else [{} for _ in conversations]

        def one(index: int) -> str | EndpointError:
            try:
                return self.complete(conversations[index], **params[index])
            except EndpointError as error:
                return error

        if self.concurrency == 1 or len(conversations) <= 1:
            return [one(i) for i in range(len(conversations))]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(conversations))) as pool:
            return list(pool.map(one, range(len(conversations))))


def _content(answer: Any, attempt: int) -> str:
    try:
        content = answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise EndpointError(
            "bad_response", f"no choices[0].message.content in {str(answer)[:200]}", attempt
        ) from None
    if not isinstance(content, str):
        raise EndpointError("bad_response", f"content is {type(content).__name__}", attempt)
    return content


def _body(response: httpx.Response) -> str:
    return response.content.decode("utf-8", "replace")[:300]
