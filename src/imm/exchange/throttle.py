"""Retry policy and adaptive concurrency for Exchange calls (design §5, exo-rest.md §4).

- :class:`RetryPolicy`: which failures are retried and how long to wait. The module retries 5 times with
  2000 ms·2^n; imm does the same for failures and counts 429s apart (10 by default: a 429 proves nothing ran,
  and the limiter already slows the client down). It adds jitter (a random factor in [0.5, 1]) so parallel
  workers do not retry in step, caps a wait at ``max_backoff``, and honours ``Retry-After`` (decimal seconds).
- :class:`AdaptiveLimiter`: the number of requests in flight, adapted AIMD-style. A 429 halves the limit (at most
  once per ``decrease_interval`` so that one burst of 429s counts once); every ``limit`` successes add one back
  (none within ``decrease_interval`` of a decrease), up to the configured maximum. Every HTTP request of a
  client passes through its limiter, so a thread pool of any size only queues there.
- :class:`ClientStats`: counters for the benchmark and for diagnostics.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any

# 408 Request Timeout is transient too: ExoHelper retries it (RequestTimeout in Invoke-ExoCommand.ps1).
RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})  # 401 is handled apart (one token refresh)


@dataclass
class RetryPolicy:
    max_retries: int = 5  # failures (5xx, resets, transient exceptions)
    max_throttle_retries: int = 10  # 429s, counted apart
    backoff_base: float = 2.0  # seconds; wait n = base * 2^n * jitter
    max_backoff: float = 60.0
    max_retry_after: float = 300.0  # a Retry-After longer than this is cut to it
    jitter: tuple[float, float] = (0.5, 1.0)
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based) when the service gave no Retry-After."""
        low, high = self.jitter
        return float(min(self.max_backoff, self.backoff_base * (2**attempt)) * self.rng.uniform(low, high))

    def wait_for(self, attempt: int, retry_after: float | None) -> float:
        """Retry-After when given (a small jitter on top spreads the workers), else the exponential backoff."""
        if retry_after is not None:
            return min(self.max_retry_after, retry_after) * self.rng.uniform(1.0, 1.1)
        return self.backoff(attempt)


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in (decimal) seconds; an HTTP date is turned into seconds from now; junk gives None."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        seconds = moment.timestamp() - time.time()
    if seconds != seconds or seconds < 0:  # NaN or negative
        return 0.0
    return seconds


@dataclass
class ClientStats:
    """Counters of one client (thread-safe through :meth:`add`)."""

    calls: int = 0  # invoke() calls
    requests: int = 0  # HTTP requests sent (pages, retries and redirects included)
    pages: int = 0  # continuation pages fetched
    retries: int = 0
    throttled: int = 0  # 429 replies
    server_errors: int = 0  # 5xx replies
    connection_errors: int = 0
    token_refreshes: int = 0
    max_in_flight: int = 0
    limit_decreases: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}


class AdaptiveLimiter:
    """Bounded, AIMD-adapted concurrency: ``with limiter.slot(): send()``; ``throttled()`` on a 429."""

    def __init__(self, maximum: int, *, minimum: int = 1, decrease_interval: float = 1.0) -> None:
        self.maximum = max(1, int(maximum))
        self.minimum = max(1, min(int(minimum), self.maximum))
        self.decrease_interval = decrease_interval
        self._limit = self.maximum
        self._in_flight = 0
        self._successes = 0
        self._last_decrease = float("-inf")
        self._cond = threading.Condition()
        self.max_in_flight = 0
        self.min_limit_seen = self.maximum
        self.decreases = 0

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def acquire(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._in_flight >= self._limit:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            return True

    def release(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify()

    @contextmanager
    def slot(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def succeeded(self) -> None:
        """Additive increase: one more slot after ``limit`` successes in a row (none within ``decrease_interval``
        of a decrease, so the limit settles under the service's budget instead of probing it at once)."""
        with self._cond:
            if self._limit >= self.maximum or time.monotonic() - self._last_decrease < self.decrease_interval:
                return
            self._successes += 1
            if self._successes >= self._limit:
                self._successes = 0
                self._limit += 1
                self._cond.notify()

    def throttled(self) -> bool:
        """Multiplicative decrease on a 429; returns True when the limit went down."""
        now = time.monotonic()
        with self._cond:
            self._successes = 0
            if now - self._last_decrease < self.decrease_interval or self._limit <= self.minimum:
                return False
            self._limit = max(self.minimum, self._limit // 2)
            self._last_decrease = now
            self.decreases += 1
            self.min_limit_seen = min(self.min_limit_seen, self._limit)
            return True


def sleep(seconds: float, cancel: threading.Event | None = None) -> None:
    """Wait ``seconds`` (interruptible by ``cancel``)."""
    if seconds <= 0:
        return
    if cancel is not None:
        cancel.wait(seconds)
    else:
        time.sleep(seconds)
