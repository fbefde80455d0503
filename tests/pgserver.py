"""A throwaway PostgreSQL cluster for the tests and benchmarks (initdb + pg_ctl on a temporary folder).

The server listens only on a Unix socket in its own folder (no TCP port to collide with), trusts local
connections, and skips fsync (a test cluster: speed over durability). PostgreSQL refuses to run as root: as
root, the cluster belongs to the ``postgres`` account (Debian's package creates it) and is started with
``runuser``. ``IMM_TEST_POSTGRESQL=required`` (set by ``.ci/run``) makes a missing server a failure, not a skip.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

REQUIRED = os.environ.get("IMM_TEST_POSTGRESQL", "").lower() == "required"
TEMPLATE = "imm_template"


class PgUnavailable(Exception):
    """No PostgreSQL server binaries here, or the cluster would not start."""


def find_bindir() -> Path:
    explicit = os.environ.get("IMM_PG_BINDIR")
    candidates = [explicit] if explicit else sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise PgUnavailable("no PostgreSQL server binaries (initdb, pg_ctl) found: apt-get install postgresql")


class PgCluster:
    """One cluster for a test session; :meth:`new_database` clones a migrated template for each test."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.base = Path(tempfile.mkdtemp(prefix="imm-pg-"))
        self.data = self.base / "data"
        self.socket_dir = self.base
        self.port = 5432
        self.user = "postgres"
        self._as_root = os.geteuid() == 0
        os.chmod(self.base, 0o755)
        if self._as_root:
            shutil.chown(self.base, "postgres", "postgres")

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=self.base)

    def start(self) -> PgCluster:
        init = self._run(
            "initdb", "-D", str(self.data), "-U", self.user, "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "-N"
        )
        if init.returncode != 0:
            raise PgUnavailable(f"initdb failed: {init.stderr.strip()[-400:]}")
        options = (
            f"-k {self.socket_dir} -p {self.port} -c listen_addresses='' -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=200 -c shared_buffers=64MB"
        )
        started = self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.base / "log"), "-w", "start")
        if started.returncode != 0:
            log = (self.base / "log").read_text(errors="replace")[-600:] if (self.base / "log").exists() else ""
            raise PgUnavailable(f"pg_ctl start failed: {started.stderr.strip()[-300:]} {log}")
        self._make_template()
        return self

    def url(self, database: str = "postgres", user: str | None = None) -> str:
        return f"postgresql://{user or self.user}@/{database}?host={self.socket_dir}&port={self.port}"

    def sql(self, statement: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(statement)  # type: ignore[arg-type]

    def _make_template(self) -> None:
        from imm.data.database import DatabaseManager

        self.sql(f"CREATE DATABASE {TEMPLATE}")
        db = DatabaseManager(self.url(TEMPLATE))
        try:
            db.initialize()
        finally:
            db.close()

    def new_database(self) -> str:
        """A fresh migrated database (a copy of the template); returns its URL."""
        name = "t_" + uuid.uuid4().hex[:16]
        self.sql(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.split("@/", 1)[1].split("?", 1)[0]
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)
