"""Bulk jobs: a validated plan (:mod:`imm.services.bulk_plan`) run as a resumable job, every item exactly once.

::

    engine = BulkEngine(db, session.audit)
    job = engine.create_job(plan, mode="execute", concurrency=10, user=session.user, tenant=session.tenant)
    outcome = engine.run(job.id, lambda: MailboxActions(db, session.connection, session.audit, profile))

How exactly-once holds (design §10):

1. The job and every item are written to the journal (``bulk_jobs``/``bulk_items``) before anything runs.
2. An item is marked ``running`` (committed) before its action starts, and gets its final status (committed)
   after. The action itself writes its write-ahead audit pair, with ``{"job_id", "line"}`` in the details.
3. After a Ctrl+C, a crash or SIGKILL, ``resume`` takes every item that is not final. ``pending`` items never
   started and simply run. ``running`` (and ``unknown``) items have an unknown outcome: they are reconciled against
   Exchange first (:meth:`MailboxActions.reconcile`, which also gives a dangling ``started`` audit row its result):
   done → ``already-done``; not done → run.
4. A job runs in one process at a time (a lock file next to the database that the OS releases when the process
   dies), so two resumes cannot both run an item.

``what-if`` (the default of ``imm bulk run``) runs each action's preview: imm reads Exchange and the cache, and
changes nothing (``-WhatIf`` is never sent). Concurrency is bounded by a worker pool of ``concurrency`` threads and,
below it, by the Exchange client's adaptive limiter: a 429 halves the requests in flight and is retried after
``Retry-After``, so throttling slows a job down without failing its items.

Recover rows need a password per item: generated here, written (with ``fsync``) to the ``--passwords-out`` file
(mode 0600) BEFORE the action runs, reused when a resume runs the item again, and written nowhere else.

A job-level ``BULK_OPERATION`` write-ahead audit pair records the plan (path, SHA-256, counts) and the totals; each
resume adds a ``BULK_RESUME`` pair; the dangling row of a killed run gets its ``interrupted`` result from the next
run of any job (or the resume).
"""

from __future__ import annotations

import csv
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imm.data.audit_logger import AuditResult, OperationType
from imm.data.jobs import (
    ALREADY_DONE,
    BLOCKED,
    COMPLETED,
    COMPLETED_WITH_ERRORS,
    ERRORS,
    EXECUTE,
    FAILED,
    INTERRUPTED,
    JOB_RUNNING,
    PENDING,
    PLANNED,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    UNFINISHED,
    UNKNOWN,
    WHAT_IF,
    WOULD_RUN,
    Item,
    Job,
    JobStore,
    new_job_id,
    stamp,
)
from imm.errors import BlockedError, ExitStatus, ImmError, InputError, StoreError
from imm.services.bulk_plan import RECOVER, RELEASE, RESTORE, Plan, csv_safe

if TYPE_CHECKING:
    from imm.data.audit_logger import AuditLogger
    from imm.data.database import DatabaseManager

log = logging.getLogger(__name__)

RESULT_COLUMNS = ("line", "action", "identity", "status", "message", "operation_id")
PASSWORD_COLUMNS = ("line", "identity", "upn", "password")
RECONCILE = frozenset({RUNNING, UNKNOWN, FAILED, BLOCKED})  # outcome unknown (or retried): check Exchange first
MAX_MESSAGE = 1000
# ActionResult.status -> item status
_RESULT_STATUS = {"success": SUCCEEDED, "failed": FAILED, "skipped": SKIPPED, "already-done": ALREADY_DONE}
ActionsFactory = Callable[[], Any]


DEFAULT_LEASE_SECONDS = 60.0  # a worker's claim on an item; renewed every third of it while the item runs
UNAVAILABLE_STOP = 5  # a job stops after this many items in a row (at least concurrency + 2) could not reach Exchange
_UNAVAILABLE_CODES = frozenset({"transient", "throttled"})


@dataclass(frozen=True)
class _Done:
    """What a worker reports for one item."""

    status: str  # "" when the item was not taken
    stop: ImmError | None = None  # an error that should stop the job
    unavailable: bool = False  # Exchange did not answer (counted towards stopping the job)
    message: str | None = None


class JobBusyError(ImmError):
    """Another imm process is running this job right now."""

    code = "job_busy"


# ------------------------------------------------------------------------------------------------ progress
@dataclass(frozen=True)
class BulkProgress:
    """What the progress bar shows: items finished in this run of ``total``, by status."""

    done: int
    total: int
    counts: dict[str, int]

    @property
    def errors(self) -> int:
        return sum(self.counts.get(s, 0) for s in ERRORS)


@dataclass
class RunOutcome:
    """What one run (or resume) of a job ended with."""

    job: Job
    counts: dict[str, int]  # the whole job's items by status
    processed: int  # items finished in this run
    interrupted: bool = False
    stop_error: ImmError | None = None  # why the run stopped early (sign-in, store)
    results_path: Path | None = None
    results_error: str | None = None
    duration: float = 0.0
    failures: list[Item] = field(default_factory=list)
    not_done: list[Item] = field(default_factory=list)  # tried, and left to do (e.g. Exchange did not answer)

    @property
    def errors(self) -> int:
        return sum(self.counts.get(s, 0) for s in ERRORS)

    @property
    def unfinished(self) -> int:
        return sum(self.counts.get(s, 0) for s in (PENDING, RUNNING))

    @property
    def exit_code(self) -> ExitStatus:
        """130 interrupted; 3 sign-in; 1 some items failed, were blocked or are unknown; 0 all ok."""
        if self.stop_error is not None and self.stop_error.exit_code == ExitStatus.SIGN_IN:
            return ExitStatus.SIGN_IN
        if self.interrupted:
            return ExitStatus.INTERRUPTED
        if self.stop_error is not None or self.errors or self.unfinished:
            return ExitStatus.FAILED
        return ExitStatus.OK


# ----------------------------------------------------------------------------------------------- passwords
class PasswordFile:
    """Recover passwords: one CSV row per item (line, identity, upn, password) in a file only its owner can read.

    A row is written and synced to disk BEFORE the item's recover runs, so a crash never loses the password of a
    mailbox that was created. On resume the item's earlier password is used again (one password per item).
    """

    def __init__(self, path: Path, *, new: bool) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.known: dict[int, tuple[str, str]] = {}  # line -> (upn, password)
        if path.is_dir():
            raise InputError(f"--passwords-out {path} is a folder; give a file name")
        if not path.parent.is_dir():
            raise InputError(f"--passwords-out {path}: the folder {path.parent} does not exist")
        exists = path.exists() and path.stat().st_size > 0
        if new and exists:
            raise InputError(
                f"--passwords-out {path} already exists; choose a new file",
                hint="a passwords file belongs to one job, so passwords of two jobs never mix",
            )
        if exists:
            self._read()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            raise InputError(f"--passwords-out {path}: cannot be written ({exc.strerror or exc})") from None
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8", newline="")
        self._writer = csv.writer(self._file, lineterminator="\n")
        if not exists:
            self._writer.writerow(PASSWORD_COLUMNS)
            self._sync()

    def _read(self) -> None:
        try:
            with self.path.open(encoding="utf-8", newline="") as handle:
                for row in csv.DictReader(handle):
                    line = str(row.get("line") or "")
                    if line.isdigit() and row.get("password"):
                        self.known[int(line)] = (str(row.get("upn") or ""), str(row["password"]))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise InputError(f"--passwords-out {self.path}: cannot be read back ({exc})") from None

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def password_for(self, line: int, identity: str, upn: str) -> str:
        """The item's password: the one written earlier for this line and UPN, else a new one, written first."""
        from imm.services.actions import generate_password

        with self._lock:
            earlier = self.known.get(line)
            if earlier is not None and earlier[0].lower() == upn.lower():
                return earlier[1]
            password = generate_password()
            self._writer.writerow([line, identity, upn, password])
            self._sync()
            self.known[line] = (upn, password)
            return password

    def close(self) -> None:
        self._file.close()


# ------------------------------------------------------------------------------------------------ job lock
class JobLock:
    """An exclusive lock on one job (a lock file next to the database), released by the OS when the process dies."""

    def __init__(self, path: Path, *, shared: bool = False) -> None:
        self.path = path
        self.shared = shared  # ``bulk work``: any number of workers at once, never beside a run or resume
        self._fd: int | None = None

    def acquire(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(
                f"cannot create the job lock {self.path} ({exc.strerror or exc}): the database's folder must be "
                "writable"
            ) from None
        if not _try_lock(fd, shared=self.shared):
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            _unlock(self._fd, shared=self.shared)
            os.close(self._fd)
            self._fd = None

    def held_elsewhere(self) -> bool:
        """True when another process holds the lock right now."""
        if not self.path.exists():
            return False
        if self.acquire():
            self.release()
            return False
        return True


def _try_lock(fd: int, *, shared: bool = False) -> bool:
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt

        if shared:  # no shared file locks: workers rely on their leases alone
            return True
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl

    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _unlock(fd: int, *, shared: bool = False) -> None:
    if sys.platform == "win32":  # pragma: no cover
        import msvcrt

        if shared:
            return
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------------------ helpers
def worker_id() -> str:
    """This worker's name in leases and audit rows: ``host:pid:random`` (unique across machines and restarts)."""
    import socket

    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def default_results_path(plan_path: Path | str, job_id: str) -> Path:
    """``<plan folder>/<plan name>.<job id>.results.csv``."""
    plan = Path(plan_path)
    return plan.with_name(f"{plan.stem}.{job_id}.results.csv")


def check_writable_file(path: Path, option: str) -> None:
    """InputError unless ``path`` can be created or replaced (its folder exists and is writable; not a folder)."""
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder; give a file name")
    folder = path.parent
    if not folder.is_dir():
        raise InputError(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise InputError(f"{option} {path}: the folder {folder} is not writable", hint=f"choose another {option}")


def preview_message(preview: Any) -> str:
    """One line for a what-if result: the preview's summary, and the consequence when it removes the last hold."""
    parts = [str(line) for line in getattr(preview, "summary", [])]
    if getattr(preview, "removes_last_hold", False) and getattr(preview, "consequence", ""):
        parts.append(str(preview.consequence))
    return _clip("; ".join(parts))


def _clip(text: str) -> str:
    one_line = " ".join(str(text).split())
    return one_line if len(one_line) <= MAX_MESSAGE else one_line[: MAX_MESSAGE - 1] + "…"


def _blocked_message(exc: BlockedError) -> str:
    blockers = getattr(exc, "blockers", None) or []
    return _clip(exc.message + (": " + "; ".join(str(b) for b in blockers) if blockers else ""))


def write_results(items: list[Item], path: Path) -> None:
    """The results CSV (one line per plan row), written to a temporary file and moved into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(RESULT_COLUMNS)
            for item in items:
                writer.writerow(
                    [
                        item.line_no,
                        item.action,
                        csv_safe(item.identity),
                        item.status,
                        csv_safe(item.message),
                        item.operation_id or "",
                    ]
                )
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------------------------- engine
class BulkEngine:
    """Creates, runs and resumes the bulk jobs of one database. ``audit`` carries the signed-in user."""

    def __init__(self, db: DatabaseManager, audit: AuditLogger, *, clock: Callable[[], datetime] | None = None) -> None:
        self.db = db
        self.audit = audit
        self.store = JobStore(db, clock)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._local = threading.local()
        self._confirmed: Callable[[int], Collection[str]] = lambda _line: ()
        self._on_preview: Callable[[Item, Any], None] | None = None
        self._held: set[int] = set()  # a worker's items in flight (their leases are renewed)
        self._held_lock = threading.Lock()

    # ----- jobs -----
    def create_job(
        self,
        plan: Plan,
        *,
        mode: str,
        concurrency: int,
        user: str | None = None,
        tenant: str | None = None,
        results_path: Path | None = None,
        passwords_path: Path | None = None,
    ) -> Job:
        """Write the job and every item (``pending``) to the journal; nothing runs yet."""
        if mode not in (WHAT_IF, EXECUTE):
            raise ValueError(f"unknown mode {mode!r}")
        now = self.store.now()
        job_id = new_job_id(self._clock())
        job = Job(
            id=job_id,
            created_at=now,
            updated_at=now,
            finished_at=None,
            plan_path=str(plan.path.resolve()),
            plan_sha256=plan.sha256,
            status=PLANNED,
            mode=mode,
            concurrency=int(concurrency),
            user=user,
            tenant=tenant,
            totals={PENDING: len(plan.rows)},
            results_path=str((results_path or default_results_path(plan.path, job_id)).resolve()),
            passwords_path=str(passwords_path.resolve()) if passwords_path else None,
        )
        items = [
            Item(job_id, row.line, row.action, row.identity, row.mailbox_guid, row.label, dict(row.params))
            for row in plan.rows
        ]
        self.store.create(job, items)
        return job

    def lock_path(self, job_id: str) -> Path:
        return Path(f"{self.db.db_path}.{job_id}.lock")

    @contextmanager
    def locked(self, job_id: str, *, shared: bool = False) -> Iterator[None]:
        """Hold the job's lock (JobBusyError when another process runs it). ``shared``: a worker's (``bulk work``),
        held by any number of workers at once but never beside a run or resume of the job on this machine."""
        lock = JobLock(self.lock_path(job_id), shared=shared)
        if not lock.acquire():
            if shared:
                raise JobBusyError(
                    f"bulk job {job_id} is being run or resumed by another imm process right now",
                    hint=f"wait for it to finish; `imm bulk status {job_id}` shows its progress",
                )
            raise JobBusyError(
                f"bulk job {job_id} is running in another imm process right now",
                hint=f"wait for it to finish; `imm bulk status {job_id}` shows its progress",
            )
        try:
            yield
        finally:
            lock.release()

    def check_not_busy(self, job_id: str) -> None:
        """JobBusyError when another process runs the job right now (here, or a worker anywhere: a live lease)."""
        if JobLock(self.lock_path(job_id)).held_elsewhere():
            raise JobBusyError(
                f"bulk job {job_id} is running in another imm process right now",
                hint=f"wait for it to finish; `imm bulk status {job_id}` shows its progress",
            )
        self._check_no_workers(job_id)

    def _check_no_workers(self, job_id: str) -> None:
        leased = self.store.live_leases(job_id)
        if leased:
            raise JobBusyError(
                f"bulk job {job_id} is being worked on: {leased:,} item(s) are leased to `imm bulk work` processes",
                hint=f"let the workers finish it (or join them: imm bulk work {job_id}); a killed worker's lease "
                "expires on its own",
            )

    def effective_status(self, job: Job) -> str:
        """The job's status, with a ``running`` job whose process is gone (no lock held here, no worker's live
        lease anywhere) shown as ``interrupted``."""
        if (
            job.status == JOB_RUNNING
            and not JobLock(self.lock_path(job.id)).held_elsewhere()
            and not self.store.live_leases(job.id)
        ):
            return INTERRUPTED
        return job.status

    def close_interrupted_runs(self, *, except_job: str | None = None) -> list[str]:
        """Give the job-level rows (BULK_OPERATION, BULK_RESUME) of every job whose process died their
        ``interrupted`` result, as the next sync does for a killed sync, so ``imm audit list --incomplete`` shows only
        what is truly open. The items stay as the journal has them: a resume reconciles each with Exchange. Returns
        the ids of the jobs whose rows were closed; ``except_job`` is the one this run is about to take."""
        closed: list[str] = []
        for job in self.store.jobs():
            if job.id == except_job or self.effective_status(job) != INTERRUPTED:
                continue
            if self._close_dangling(job):
                closed.append(job.id)
        return closed

    def _close_dangling(self, job: Job) -> bool:
        """Close the job-level rows a killed run of ``job`` left without a result; True if there were any."""
        counts: dict[str, int] | None = None
        for row in self.audit.get_operations(identity=job.id, incomplete=True):
            if row.operation in (OperationType.BULK_OPERATION, OperationType.BULK_RESUME) and row.operation_id:
                counts = counts if counts is not None else self.store.counts(job.id)
                self.audit.finish(
                    row.operation_id,
                    AuditResult.INTERRUPTED,
                    {"job_id": job.id, "totals": counts},
                    "the run's process ended without recording a result (killed or crashed); closed by the next "
                    f"run, `imm bulk resume {job.id}` finishes the job",
                )
        return counts is not None

    def remaining(self, job: Job, *, retry_failed: bool = False) -> list[Item]:
        """The items a run (or resume) of ``job`` would take."""
        statuses = set(UNFINISHED) | ({FAILED, BLOCKED} if retry_failed else set())
        return self.store.items(job.id, statuses)

    # ----- running -----
    def run(
        self,
        job_id: str,
        actions_factory: ActionsFactory,
        *,
        concurrency: int | None = None,
        cancel: threading.Event | None = None,
        progress: Callable[[BulkProgress], None] | None = None,
        passwords: PasswordFile | None = None,
        retry_failed: bool = False,
        results_path: Path | None = None,
        confirmed: Callable[[int], Collection[str]] | None = None,
        on_preview: Callable[[Item, Any], None] | None = None,
        in_flight_seconds: float = 0.0,
        on_wait: Callable[[str], None] | None = None,
    ) -> RunOutcome:
        """Run every unfinished item of the job (the first run, or a resume). ``actions_factory`` builds one
        ``MailboxActions`` per worker thread. The first Ctrl+C should set ``cancel``: no new item starts and the
        ones in flight finish; a second raises KeyboardInterrupt here (the journal stays consistent).

        ``confirmed(line)``: per plan line, the consequences (``last-hold``, ``unlimited-litigation``, ``ediscovery``)
        the person confirmed; an executed release whose fresh plan has any other is blocked (none confirmed when
        not given). ``on_preview(item, preview)`` sees each what-if preview (``bulk run --show-cmdlets``).

        ``in_flight_seconds`` (the profile's request timeout): an item an earlier run left ``running`` or
        ``unknown`` whose start is younger than this may still have its call in flight in Exchange (a killed
        process's request runs on), so the run waits until it is that old before reconciling it (``on_wait`` is
        told why; Ctrl+C ends the wait and the run)."""
        self._confirmed = confirmed or (lambda _line: ())
        self._on_preview = on_preview
        with self.locked(job_id):
            self._check_no_workers(job_id)
            self.close_interrupted_runs(except_job=job_id)
            job = self.store.get(job_id)
            outcome = self._run_locked(
                job,
                actions_factory,
                concurrency=concurrency or job.concurrency,
                cancel=cancel or threading.Event(),
                progress=progress,
                passwords=passwords,
                retry_failed=retry_failed,
                results_path=results_path,
                in_flight_seconds=in_flight_seconds,
                on_wait=on_wait,
            )
        if outcome.job.status in (COMPLETED, COMPLETED_WITH_ERRORS):
            self.lock_path(job_id).unlink(missing_ok=True)  # made again if the job is ever resumed
        return outcome

    def work(
        self,
        job_id: str,
        actions_factory: ActionsFactory,
        *,
        concurrency: int | None = None,
        cancel: threading.Event | None = None,
        progress: Callable[[BulkProgress], None] | None = None,
        passwords: PasswordFile | None = None,
        results_path: Path | None = None,
        confirmed: Callable[[int], Collection[str]] | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        in_flight_seconds: float = 0.0,
        worker: str | None = None,
    ) -> RunOutcome:
        """``imm bulk work JOB``: one of any number of workers (processes, machines) sharing the job. Each claims
        items with a lease (``JobStore.claim_next``) and runs them through the same ``_work`` as a run; a thread
        renews the leases of the items in flight every third of ``lease_seconds``. An item whose worker died
        keeps its lease until it expires; it is claimed again only ``in_flight_seconds`` (the request timeout)
        after that (the dead worker's last call may still be running in Exchange), then reconciled with Exchange
        before anything is sent again, exactly as a resume does, and the dead worker's ``BULK_WORK`` row is closed
        as ``interrupted``. A worker ends when nothing is left that may come back to it (every item final, or
        left ``unknown``/``failed``/``blocked`` for ``bulk resume``); the last one marks the job completed."""
        self._confirmed = confirmed or (lambda _line: ())
        self._on_preview = None
        worker = worker or worker_id()
        cancel = cancel or threading.Event()
        with self.locked(job_id, shared=True):
            self.close_interrupted_runs(except_job=job_id)
            job = self.store.get(job_id)
            started = time.monotonic()
            counts_now = self.store.counts(job.id)
            left = sum(counts_now.get(s, 0) for s in (PENDING, RUNNING))
            if job.mode == EXECUTE and passwords is None and self._recover_left(job):
                raise InputError(
                    f"job {job.id} has recover rows: their new passwords need --passwords-out FILE",
                    hint="the file is created with mode 0600 and holds one password per mailbox this worker recovers",
                )
            operation_id = self._begin_audit(job, [], concurrency or job.concurrency, worker=worker,
                                             lease_seconds=lease_seconds, left=left)  # fmt: skip
            self.store.add_run(job.id)
            job = self.store.get(job.id)
            state: dict[str, Any] = {"done": 0, "stop": None}
            counts: dict[str, int] = {}
            closed: set[str] = set()
            workers = max(1, concurrency or job.concurrency)

            def claim() -> Item | None:
                stale = stamp(self._clock() - timedelta(seconds=max(0.0, in_flight_seconds)))
                found = self.store.claim_next(job.id, worker, lease_seconds=lease_seconds, stale_before=stale)
                if not found:
                    return None
                item = found[0]
                with self._held_lock:
                    self._held.add(item.line_no)
                gone = item.lease_owner
                if item.status == RUNNING and gone and gone != worker and gone not in closed:
                    closed.add(gone)
                    self._close_dead_worker(job, gone, worker, item.line_no)
                return item

            def more() -> bool:
                now = self.store.counts(job.id)
                return any(now.get(s) for s in (PENDING, RUNNING))

            stop_renewing = threading.Event()
            renewer = threading.Thread(
                target=self._renew_leases, args=(job.id, worker, lease_seconds, stop_renewing), daemon=True,
                name="imm-bulk-lease",
            )  # fmt: skip
            renewer.start()
            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="imm-bulk")
            try:
                self._loop(
                    job, claim, left, pool, actions_factory, workers, cancel, progress, passwords, counts, state,
                    worker=worker, more=more, poll_seconds=min(1.0, max(0.05, lease_seconds / 4)),
                )  # fmt: skip
            except KeyboardInterrupt:
                pool.shutdown(wait=False, cancel_futures=True)
                stop_renewing.set()
                self._finalize(job, operation_id, started, state, interrupted=True, worker=worker)
                raise
            pool.shutdown(wait=True)
            stop_renewing.set()
            renewer.join(timeout=5)
            return self._finalize(
                job, operation_id, started, state, interrupted=cancel.is_set(), worker=worker,
                results_path=results_path,
            )  # fmt: skip

    def _recover_left(self, job: Job) -> bool:
        return any(i.action == RECOVER for i in self.store.items(job.id, (PENDING, RUNNING)))

    def _renew_leases(self, job_id: str, worker: str, lease_seconds: float, stop: threading.Event) -> None:
        """Every third of the lease: extend the leases of this worker's items in flight."""
        while not stop.wait(lease_seconds / 3):
            with self._held_lock:
                lines = set(self._held)
            try:
                self.store.renew(job_id, worker, lines, lease_seconds)
            except Exception:  # the store is away: the items' finish will tell; the lease may lapse meanwhile
                log.warning("bulk job %s: renewing the leases of worker %s failed", job_id, worker, exc_info=True)

    def _close_dead_worker(self, job: Job, gone: str, by: str, line: int) -> None:
        """Give the ``BULK_WORK`` row of a worker whose lease expired (it was killed or lost the store) its
        ``interrupted`` result, once (the check and the row in one store transaction)."""
        with self.db.transaction():
            for row in self.audit.get_operations(identity=job.id, incomplete=True):
                if row.operation == OperationType.BULK_WORK and row.details.get("worker") == gone and row.operation_id:
                    self.audit.finish(
                        row.operation_id,
                        AuditResult.INTERRUPTED,
                        {"job_id": job.id, "worker": gone, "reclaimed_by": by, "line": line},
                        f"worker {gone} ended without recording a result (killed, or cut off from the store): its "
                        f"lease on line {line} expired and worker {by} reconciles the item",
                    )

    def _run_locked(
        self,
        job: Job,
        actions_factory: ActionsFactory,
        *,
        concurrency: int,
        cancel: threading.Event,
        progress: Callable[[BulkProgress], None] | None,
        passwords: PasswordFile | None,
        retry_failed: bool,
        results_path: Path | None,
        in_flight_seconds: float = 0.0,
        on_wait: Callable[[str], None] | None = None,
    ) -> RunOutcome:
        started = time.monotonic()
        todo = self.remaining(job, retry_failed=retry_failed)
        needs_passwords = job.mode == EXECUTE and any(i.action == RECOVER for i in todo)
        if needs_passwords and passwords is None:
            raise InputError(
                f"job {job.id} has recover rows: their new passwords need --passwords-out FILE",
                hint="the file is created with mode 0600 and holds one password per recovered mailbox",
            )
        operation_id = self._begin_audit(job, todo, concurrency)
        updates: dict[str, Any] = {"status": JOB_RUNNING, "runs": job.runs + 1, "concurrency": concurrency}
        if job.audit_operation_id is None:
            updates["audit_operation_id"] = operation_id
        if results_path is not None:
            updates["results_path"] = str(results_path.resolve())
        if passwords is not None:
            updates["passwords_path"] = str(passwords.path.resolve())
        self.store.update_job(job.id, **updates)
        job = self.store.get(job.id)
        counts: dict[str, int] = {}
        state = {"done": 0, "stop": None}
        if job.mode == EXECUTE:
            self._wait_for_in_flight(todo, in_flight_seconds, cancel, on_wait)
        pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="imm-bulk")
        queue = iter(todo)
        try:
            self._loop(
                job, lambda: next(queue, None), len(todo), pool, actions_factory, concurrency, cancel, progress,
                passwords, counts, state,
            )  # fmt: skip
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            self._finalize(job, operation_id, started, state, interrupted=True)
            raise
        pool.shutdown(wait=True)
        return self._finalize(job, operation_id, started, state, interrupted=cancel.is_set())

    def _wait_for_in_flight(
        self, todo: list[Item], seconds: float, cancel: threading.Event, on_wait: Callable[[str], None] | None
    ) -> None:
        """Wait until every ``running``/``unknown`` item whose change was sent (its ``started`` audit row has no
        result) started at least ``seconds`` ago: before then its call (sent by a process that was killed or
        interrupted) may still be running in Exchange, and reconciling it now could find nothing, run it again and
        audit the first attempt as not made."""
        if seconds <= 0:
            return
        now = self._clock()
        ends = []
        for item in todo:
            if item.status not in (RUNNING, UNKNOWN) or not item.started_at:
                continue
            try:
                begun = datetime.fromisoformat(item.started_at).astimezone(UTC)
            except ValueError:
                continue
            if begun + timedelta(seconds=seconds) <= now or not self._sent(item):
                continue
            ends.append(begun + timedelta(seconds=seconds))
        young = [end for end in ends if end > now]
        if not young:
            return
        wait_for = (max(young) - now).total_seconds()
        if on_wait is not None:
            on_wait(
                f"Waiting {wait_for:.0f} s before checking {len(young):,} item(s) whose call may still be in flight "
                f"in Exchange (started less than the request timeout, {seconds:g} s, ago)…"
            )
        log.info("waiting %.1f s for %d item(s) possibly in flight", wait_for, len(young))
        cancel.wait(wait_for)

    def _sent(self, item: Item) -> bool:
        """Did a run send this item's change (a write-ahead ``started`` row of its job line without a result)?"""
        return any(
            row.details.get("job_id") == item.job_id and row.details.get("line") == item.line_no
            for row in self.audit.get_operations(identity=item.mailbox_guid, incomplete=True)
        )

    def _loop(
        self,
        job: Job,
        source: Callable[[], Item | None],
        total: int,
        pool: ThreadPoolExecutor,
        actions_factory: ActionsFactory,
        concurrency: int,
        cancel: threading.Event,
        progress: Callable[[BulkProgress], None] | None,
        passwords: PasswordFile | None,
        counts: dict[str, int],
        state: dict[str, Any],
        *,
        worker: str | None = None,
        more: Callable[[], bool] | None = None,
        poll_seconds: float = 1.0,
    ) -> None:
        """Keep ``concurrency`` items in flight, each taken from ``source`` (None: nothing to take now). A run's
        source is its list of items, claimed in ``_work``; a worker's (``worker``) claims them itself, and while
        ``more()`` (other workers still hold items that may come back) it polls every ``poll_seconds``."""
        running: set[Future[_Done]] = set()
        unavailable_in_a_row = 0
        give_up_after = max(UNAVAILABLE_STOP, concurrency + 2)

        def fill() -> None:
            while len(running) < concurrency and not cancel.is_set() and state["stop"] is None:
                item = source()
                if item is None:
                    return
                running.add(pool.submit(self._work, job, item, actions_factory, passwords, worker))

        def report() -> None:
            if progress is not None:
                progress(BulkProgress(state["done"], total, dict(counts)))

        fill()
        report()
        while True:
            if not running:
                if cancel.is_set() or state["stop"] is not None or more is None or not more():
                    break
                cancel.wait(poll_seconds)
                fill()
                report()
                continue
            finished, _ = wait(running, timeout=0.25, return_when=FIRST_COMPLETED)
            for future in finished:
                running.discard(future)
                try:
                    done = future.result()
                except ImmError as exc:  # the journal itself failed (e.g. a store error)
                    done = _Done(UNKNOWN, exc)
                if done.status:
                    counts[done.status] = counts.get(done.status, 0) + 1
                    state["done"] += 1
                unavailable_in_a_row = unavailable_in_a_row + 1 if done.unavailable else 0
                stop = done.stop
                if stop is None and unavailable_in_a_row >= give_up_after:
                    stop = ImmError(
                        f"Exchange Online did not answer for {unavailable_in_a_row} items in a row "
                        f"(last: {done.message})",
                        hint="check the connection and the service health, then resume the job",
                        code="exchange_unavailable",
                    )
                if stop is not None and state["stop"] is None:
                    state["stop"] = stop
                    log.error("bulk job %s stops: %s", job.id, stop.message)
            fill()
            report()

    def _actions(self, factory: ActionsFactory) -> Any:
        actions = getattr(self._local, "actions", None)
        if actions is None or getattr(self._local, "factory", None) is not factory:
            actions = factory()
            self._local.actions, self._local.factory = actions, factory
        return actions

    def _work(
        self, job: Job, item: Item, factory: ActionsFactory, passwords: PasswordFile | None, worker: str | None = None
    ) -> _Done:
        """One item, in a worker thread: claim (commit) → reconcile if its outcome is unknown → action → final
        status (commit). A worker's item (``worker``) was claimed already, with its lease (``item.status`` is the
        status it was claimed from)."""
        if worker is None and not self.store.claim(job.id, item.line_no, [item.status]):
            return _Done("")  # no longer in the state it was read in (cannot happen under the job lock)
        try:
            return self._work_claimed(job, item, factory, passwords, worker)
        finally:
            if worker is not None:
                with self._held_lock:
                    self._held.discard(item.line_no)

    def _work_claimed(
        self, job: Job, item: Item, factory: ActionsFactory, passwords: PasswordFile | None, worker: str | None
    ) -> _Done:
        context = {"job_id": job.id, "line": item.line_no}
        status, message, operation_id, stop, unavailable = UNKNOWN, None, None, None, False
        try:
            actions = self._actions(factory)
            found = None
            if job.mode == EXECUTE and item.status in RECONCILE:
                params = {"identity": item.mailbox_guid, **item.params}
                found = actions.reconcile(item.action, params, operation_context=context)
            if found is not None:
                status, message = ALREADY_DONE, found.message
                operation_id = found.operation_id or self.store.item_success_operation(job.id, item.line_no)
            elif job.mode == WHAT_IF:
                preview = self._preview(actions, item)
                if self._on_preview is not None:
                    self._on_preview(item, preview)
                status = SKIPPED if getattr(preview, "nothing_to_do", False) else WOULD_RUN
                message = preview_message(preview)
                actions.record_unchanged(preview, AuditResult.PREVIEW, None, context)  # as a single --what-if
            else:
                allowed = frozenset(self._confirmed(item.line_no))
                result = self._execute(actions, item, context, passwords, allowed)
                status = _RESULT_STATUS.get(result.status, FAILED)
                message, operation_id = _clip(result.message), result.operation_id
                code = (getattr(result, "details", None) or {}).get("error_code")
                if status == FAILED and code in _UNAVAILABLE_CODES:
                    # the change call itself outlasted every retry: it may have run; a resume reconciles it
                    status, unavailable = UNKNOWN, True
        except BlockedError as exc:
            status, message = BLOCKED, _blocked_message(exc)
            preview = getattr(exc, "preview", None)
            if preview is not None and not getattr(exc, "audited", False):  # as a single run audits it
                actions.record_unchanged(preview, AuditResult.FAILURE, exc.message, context)
        except ImmError as exc:
            status, message, unavailable = self._classify(exc, item.status)
            if exc.exit_code == ExitStatus.SIGN_IN or isinstance(exc, StoreError):
                stop = exc
        except Exception as exc:  # an imm defect: the outcome is unknown, so a resume reconciles it
            log.error("bulk job %s line %d: unexpected error", job.id, item.line_no, exc_info=True)
            status, message = UNKNOWN, _clip(f"unexpected {type(exc).__name__}: {exc}")
        if not self.store.finish(job.id, item.line_no, status, message, operation_id, owner=worker):
            # this worker's lease expired (it was cut off from the store) and another took the item over: that
            # one reconciles it with Exchange, so it is counted there, once
            log.warning("bulk job %s line %d: the lease was taken over; its result is the new holder's", job.id,
                        item.line_no)  # fmt: skip
            return _Done("", stop, unavailable, message)
        return _Done(status, stop, unavailable, message)

    @staticmethod
    def _classify(exc: ImmError, claimed_from: str) -> tuple[str, str, bool]:
        """(status, message, Exchange unavailable) for an error an action raised (before any change: the actions
        return the failures of their change calls). ``failed`` when Exchange refused; an item whose preflight could
        not reach Exchange goes back to ``pending``; ``unknown`` when the outcome cannot be told."""
        from imm.exchange.errors import AmbiguousOutcomeError, ThrottledError, TransientError

        if exc.exit_code == ExitStatus.SIGN_IN:
            return UNKNOWN, _clip(f"sign-in needed: {exc.message}"), False
        if isinstance(exc, AmbiguousOutcomeError | StoreError):
            return UNKNOWN, _clip(exc.message), False
        if isinstance(exc, TransientError | ThrottledError):
            status = PENDING if claimed_from == PENDING else UNKNOWN
            return status, _clip(f"not done, Exchange did not answer: {exc.message}"), True
        return FAILED, _clip(exc.message), False

    @staticmethod
    def _preview(actions: Any, item: Item) -> Any:
        p, guid = item.params, item.mailbox_guid
        if item.action == RECOVER:
            return actions.preview_recover(guid, p["upn"], p["name"], p.get("display_name"))
        if item.action == RESTORE:
            return actions.preview_restore(
                guid, p["target"], archive=bool(p.get("archive")), target_folder=p.get("target_folder")
            )
        if item.action == RELEASE:
            return actions.preview_release(guid, p["type"])
        return actions.preview_set_duration(guid, p.get("days"))

    @staticmethod
    def _execute(
        actions: Any, item: Item, context: dict[str, Any], passwords: PasswordFile | None, allowed: frozenset[str]
    ) -> Any:
        p, guid = item.params, item.mailbox_guid
        if item.action == RECOVER:
            if passwords is None:  # checked before the run starts
                raise InputError("recover needs --passwords-out FILE")
            password = passwords.password_for(item.line_no, guid, p["upn"])
            return actions.recover(
                guid, p["upn"], p["name"], password, display_name=p.get("display_name"), operation_context=context
            )
        if item.action == RESTORE:
            return actions.restore(
                guid,
                p["target"],
                archive=bool(p.get("archive")),
                target_folder=p.get("target_folder"),
                operation_context=context,
            )
        if item.action == RELEASE:
            return actions.release(guid, p["type"], operation_context=context, allowed_consequences=allowed)
        return actions.set_duration(guid, p.get("days"), operation_context=context)

    # ----- audit and the end of a run -----
    def _begin_audit(
        self,
        job: Job,
        todo: list[Item],
        concurrency: int,
        *,
        worker: str | None = None,
        lease_seconds: float = 0.0,
        left: int = 0,
    ) -> str:
        """The run's write-ahead row: BULK_OPERATION the first time, BULK_RESUME after, BULK_WORK for each worker.
        A job-level row that an earlier run left without a result (it was killed) gets its ``interrupted`` result
        first."""
        counts = self.store.counts(job.id)
        self._close_dangling(job)
        if worker is not None:
            return self.audit.begin(
                OperationType.BULK_WORK,
                job.id,
                {
                    "job_id": job.id,
                    "mode": job.mode,
                    "worker": worker,
                    "lease_seconds": lease_seconds,
                    "items": left,
                    "by_status": counts,
                    "concurrency": concurrency,
                    "bulk_operation_id": job.audit_operation_id,
                },
            )
        if job.audit_operation_id is None:
            by_action: dict[str, int] = {}
            for item in todo:
                by_action[item.action] = by_action.get(item.action, 0) + 1
            return self.audit.begin(
                OperationType.BULK_OPERATION,
                job.id,
                {
                    "job_id": job.id,
                    "mode": job.mode,
                    "plan_path": job.plan_path,
                    "plan_sha256": job.plan_sha256,
                    "items": len(todo),
                    "actions": by_action,
                    "concurrency": concurrency,
                },
            )
        return self.audit.begin(
            OperationType.BULK_RESUME,
            job.id,
            {
                "job_id": job.id,
                "mode": job.mode,
                "resume": job.runs,
                "items": len(todo),
                "to_reconcile": sum(1 for i in todo if i.status in RECONCILE),
                "by_status": counts,
                "concurrency": concurrency,
                "bulk_operation_id": job.audit_operation_id,
            },
        )

    def _finalize(
        self,
        job: Job,
        operation_id: str,
        started: float,
        state: dict[str, Any],
        *,
        interrupted: bool,
        worker: str | None = None,
        results_path: Path | None = None,
    ) -> RunOutcome:
        counts = self.store.counts(job.id)
        stop: ImmError | None = state["stop"]
        unfinished = sum(counts.get(s, 0) for s in (PENDING, RUNNING))
        errors = sum(counts.get(s, 0) for s in ERRORS)
        if interrupted or stop is not None or unfinished:
            status = INTERRUPTED
        else:
            status = COMPLETED_WITH_ERRORS if errors else COMPLETED
        others = worker is not None and status == INTERRUPTED and self.store.live_leases(job.id) > 0
        finished_at = self.store.now() if status in (COMPLETED, COMPLETED_WITH_ERRORS) else None
        if others:  # other workers go on with the job: it stays running
            self.store.update_job(job.id, totals=counts)
        else:
            self.store.update_job(job.id, status=status, totals=counts, finished_at=finished_at)
        job = self.store.get(job.id)
        outcome = RunOutcome(
            job, counts, state["done"], interrupted=interrupted, stop_error=stop, duration=time.monotonic() - started
        )
        items = self.store.items(job.id)
        outcome.failures = [i for i in items if i.status in ERRORS]
        outcome.not_done = [i for i in items if i.status in (PENDING, RUNNING) and i.message]
        target = results_path or (Path(job.results_path) if job.results_path else None)
        if target is not None and (worker is None or finished_at is not None):  # a worker: once the job is done
            outcome.results_path = target
            try:
                write_results(items, outcome.results_path)
            except OSError as exc:
                outcome.results_error = f"{outcome.results_path}: {exc.strerror or exc}"
                log.error("could not write the results file %s", outcome.results_error)
        if status == INTERRUPTED:
            result = AuditResult.CANCELLED
        elif job.mode == WHAT_IF:
            result = AuditResult.PREVIEW
        else:
            result = AuditResult.PARTIAL if errors else AuditResult.SUCCESS
        details: dict[str, Any] = {"worker": worker} if worker is not None else {}
        details |= {
            "job_id": job.id,
            "mode": job.mode,
            "status": job.status,
            "totals": counts,
            "processed": state["done"],
            "duration_seconds": round(outcome.duration, 3),
        }
        error = None
        if stop is not None:
            error = f"stopped: {stop.message}"
        elif interrupted:
            error = "interrupted by the user"
        elif unfinished:
            error = f"not finished: {unfinished} left to do (Exchange did not answer for them)"
        self.audit.finish(operation_id, result, details, error)
        return outcome

    # ----- reading -----
    def status(self, job_id: str) -> tuple[Job, dict[str, int]]:
        job = self.store.get(job_id)
        job.status = self.effective_status(job)
        return job, self.store.counts(job.id)

    def list_jobs(self, limit: int | None = None) -> list[tuple[Job, dict[str, int]]]:
        jobs = self.store.jobs(limit)
        counts = self.store.counts_by_job([j.id for j in jobs])
        out = []
        for job in jobs:
            job.status = self.effective_status(job)
            out.append((job, counts.get(job.id, {})))
        return out


SUMMARY_ORDER = (SUCCEEDED, ALREADY_DONE, WOULD_RUN, SKIPPED, FAILED, BLOCKED, UNKNOWN, RUNNING, PENDING)


@dataclass
class PlanConsequences:
    """What the release rows of a plan (or of a job's remaining items) would do that needs a typed confirmation,
    by the cached copy of each mailbox: per line its consequences, and per consequence the labels of its rows."""

    lines: dict[int, frozenset[str]] = field(default_factory=dict)
    labels: dict[str, list[str]] = field(default_factory=dict)

    def rows_with(self, kinds: Collection[str]) -> int:
        """How many rows have at least one of ``kinds``."""
        return sum(1 for found in self.lines.values() if found & set(kinds))

    def confirmed(self, kinds: Collection[str], flagged: Collection[str]) -> Callable[[int], frozenset[str]]:
        """Per line, what a person confirmed: the counted ``kinds`` of that row, and every ``flagged`` one."""
        allowed, typed = frozenset(flagged), frozenset(kinds)

        def of(line: int) -> frozenset[str]:
            return (self.lines.get(line, frozenset()) & typed) | allowed

        return of


def count_consequences(actions: Any, rows: Iterable[tuple[int, str, str, Mapping[str, Any], str]]) -> PlanConsequences:
    """:class:`PlanConsequences` of ``rows`` (line, action, ExchangeGuid, parameters, label); ``actions`` is a
    ``MailboxActions`` (no Exchange session needed: the cache is read)."""
    out = PlanConsequences()
    for line, action, guid, params, label in rows:
        if action != RELEASE:
            continue
        found = frozenset(actions.cached_release_consequences(guid, str(params.get("type") or "")))
        if found:
            out.lines[line] = found
            for kind in found:
                out.labels.setdefault(kind, []).append(label)
    return out


def summary_counts(counts: Mapping[str, int]) -> str:
    """``990 succeeded, 10 failed, 5 pending``: done first, then what went wrong, then what is left."""
    return ", ".join(f"{counts[s]:,} {s}" for s in SUMMARY_ORDER if counts.get(s)) or "no items"
