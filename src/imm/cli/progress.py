"""Progress display for long runs (sync, demo, bulk jobs) on stderr, and Ctrl+C that stops cleanly.

Imported only inside command functions (it loads Rich).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any, Self

_STAGES = {
    "policies": "Reading org-wide holds and policies",
    "listing": "Listing inactive mailboxes and policies",
    "analysing": "Re-analysing cached mailboxes",
    "fetching": "Fetching mailbox details",
    "done": "Done",
}


def _interval() -> float:
    """Seconds between progress lines off a terminal (``IMM_PROGRESS_INTERVAL``, default 10)."""
    import os

    try:
        return max(0.0, float(os.environ.get("IMM_PROGRESS_INTERVAL", "10")))
    except ValueError:
        return 10.0


class ProgressBar:
    """A Rich progress bar on stderr: counts, failures and time left. Off a terminal (cron, CI, a pipe) it logs a
    line instead (``imm.progress`` at INFO: in the log file, and on stderr with ``-v``), at each stage and every
    ``IMM_PROGRESS_INTERVAL`` seconds; nothing when disabled (``-q``).

    ``note`` prints a line above the bar (or on plain stderr) and is safe in a signal handler: with a bar the
    line is printed at the next update, never from inside the handler.
    """

    def __init__(self, description: str = "Starting", enabled: bool = True, *, rate: bool = False) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.enabled = enabled and self.console.is_terminal
        self.plain = enabled and not self.console.is_terminal  # periodic lines instead of a bar
        self._interval = _interval()
        self._last_line = 0.0
        self._last_key: Any = None
        self.description = description
        self._rate = rate
        self._progress: Any = None
        self._task: Any = None
        self._pending: list[str] = []

    def __enter__(self) -> Self:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            rate = [TextColumn("{task.fields[rate]}")] if self._rate else []
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                *rate,
                TextColumn("{task.fields[errors]}", style="red"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                refresh_per_second=8,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=None, rate="", errors="")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.__exit__(exc_type, exc, tb)
            self._progress = None

    def note(self, message: str) -> None:
        """A line above the bar (or on plain stderr); safe in a signal handler."""
        from imm.textsafe import terminal_safe

        message = terminal_safe(message)
        if self._progress is not None:
            self._pending.append(message)
        else:
            import os

            os.write(2, (message + "\n").encode("utf-8", "replace"))

    def line(self, key: Any, text: str, *, force: bool = False) -> None:
        """A progress log line off a terminal: when ``key`` (the stage) changes, or ``force``, or the interval
        passed."""
        if not self.plain:
            return
        now = time.monotonic()
        if not force and key == self._last_key and now - self._last_line < self._interval:
            return
        self._last_key, self._last_line = key, now
        import logging

        logging.getLogger("imm.progress").info("progress: %s", text)

    def _print_notes(self) -> None:
        while self._pending:
            self._progress.console.print(self._pending.pop(0), markup=False, highlight=False)


class SyncProgressBar(ProgressBar):
    """The sync's stages, each with its own counts, rate and estimate."""

    def __init__(self, enabled: bool = True) -> None:
        super().__init__("Starting", enabled, rate=True)
        self._stage = ""
        self._started = time.monotonic()

    def update(self, event: Any) -> None:
        """Takes an ``imm.services.sync.SyncProgress``."""
        if self._progress is None:
            stage = getattr(event, "stage", "")
            of = f"/{event.total:,}" if event.total else ""
            failed = f", {event.errors:,} failed" if event.errors else ""
            self.line(stage, f"{_STAGES.get(stage, stage)}: {event.done:,}{of}{failed}")
            return
        self._print_notes()
        stage = getattr(event, "stage", "")
        if stage != self._stage:
            if stage != "done":  # each stage has its own elapsed time and estimate
                self._progress.reset(self._task)
            self._stage = stage
            self._started = time.monotonic()
        total = event.total or None
        elapsed = max(time.monotonic() - self._started, 1e-6)
        rate = f"{event.done / elapsed:,.0f}/s" if stage == "fetching" and event.done else ""
        errors = f"{event.errors:,} failed" if event.errors else ""
        self._progress.update(
            self._task,
            description=_STAGES.get(stage, stage),
            completed=event.done,
            total=total if stage != "done" else max(event.done, 1),
            rate=rate,
            errors=errors,
        )


class BulkProgressBar(ProgressBar):
    """Items done of total, with the ones not done, for a bulk job."""

    def update(self, event: Any) -> None:
        """Takes an ``imm.services.bulk.BulkProgress``."""
        if self._progress is None:
            not_done = f", {event.errors:,} not done" if event.errors else ""
            key = "done" if event.done >= event.total else "items"
            self.line(key, f"{self.description}: {event.done:,}/{event.total:,} items{not_done}")
            return
        self._print_notes()
        errors = f"{event.errors:,} not done" if event.errors else ""
        self._progress.update(self._task, completed=event.done, total=max(event.total, 1), errors=errors)


@contextmanager
def interrupt_sets(cancel: threading.Event, say: Callable[[str], None] | None = None) -> Iterator[None]:
    """The first Ctrl+C sets ``cancel`` (the run stops at the next batch and keeps its work); a second one raises
    KeyboardInterrupt. Only in the main thread; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        if say is not None:
            say("Stopping: finishing the calls in flight and saving what was fetched (Ctrl+C again to abort)…")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
