"""Retry policy and adaptive concurrency for Exchange calls (design §5, exo-rest.md §4).

- :class:`RetryPolicy`: which failures are retried and how long to wait. The module retries 5 times with
  2000 ms·2^n; imm does the same for failures and counts 429s apart (10 by default: a 429 proves nothing ran,
  and the limiter already slows the client down). It adds jitter (a random factor in [0.5, 1]) so parallel
  workers do not retry in step, caps a wait at ``max_backoff``, and honours ``Retry-After`` (decimal seconds).
- :class:`AdaptiveLimiter`: the number of requests in flight, adapted to the tenant's budget. Exchange throttles
  on concurrent requests per tenant (the "maximum number of concurrent requests per tenant" reply), so when a
  throttled reply arrives while ``k`` of ours are still in flight (itself included; the tenant releases a request
  before its reply reaches us, so all it had in flight are among them), the budget is at most ``k - 1``. The limit
  drops to that estimate at once instead of halving blindly, but never below half of what it was when the burst
  began (another client of the same tenant may use part of the budget). Every ``limit`` successes add one back
  (none within ``decrease_interval`` of a decrease). Above the estimated budget an increase is a probe; each failed
  probe doubles the wait before the next one (2 intervals, then 4, … up to 64), so the limit settles at the budget
  from above (no oscillation between the budget and half of it) and still finds a budget that grew. Every HTTP
  request of a client passes through its limiter, so a thread pool of any size only queues there.
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
        self._burst_limit = self.maximum  # the limit when the current burst of throttling began
        self._budget: int | None = None  # the tenant's budget as last estimated from a throttled request
        self._failed_probes = 0
        self._probing = False  # the limit was raised above the estimated budget
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

    @property
    def budget(self) -> int | None:
        """The tenant's concurrency budget as estimated from the last throttled request (None: not throttled)."""
        return self._budget

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
    def slot(self) -> Iterator[int]:
        """Hold one slot; yields how many requests were in flight once it was taken (itself included)."""
        self.acquire()
        try:
            yield self._in_flight
        finally:
            self.release()

    def _probe_hold(self) -> float:
        return float(self.decrease_interval * 2 ** (min(self._failed_probes, 5) + 1))

    def succeeded(self) -> None:
        """Additive increase: one more slot after ``limit`` successes in a row (none within ``decrease_interval``
        of a decrease; above the estimated budget, only after the probe wait)."""
        with self._cond:
            if self._limit >= self.maximum:
                return
            since = time.monotonic() - self._last_decrease
            if since < self.decrease_interval:
                return
            if self._budget is not None and self._limit >= self._budget and since < self._probe_hold():
                return
            self._successes += 1
            if self._successes >= self._limit:
                self._successes = 0
                if self._budget is not None and self._limit > self._budget:
                    self._budget = self._limit  # the probe held: the budget is at least this
                    self._failed_probes = 0
                self._limit += 1
                self._probing = self._budget is not None and self._limit > self._budget
                self._cond.notify()

    def throttled(self, in_flight: int | None = None) -> bool:
        """A throttled request; ``in_flight``: how many of ours were in flight when its reply came (itself
        included). Without it the limit halves, once per ``decrease_interval``. True when the limit went down."""
        now = time.monotonic()
        with self._cond:
            self._successes = 0
            if self._probing:
                self._failed_probes += 1
                self._probing = False
            in_burst = now - self._last_decrease < self.decrease_interval
            if not in_burst:
                self._burst_limit = self._limit
            if in_flight is None:
                if in_burst:
                    return False
                target = self._limit // 2
            else:
                estimate = max(self.minimum, in_flight - 1)
                self._budget = estimate
                target = max(self._burst_limit // 2, min(self._limit, estimate))
            target = max(self.minimum, target)
            if target >= self._limit:
                return False
            self._limit = target
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
