"""The ``org_holds`` and ``policies`` tables: org-wide holds and compliance policies as the last sync read them.

Rows are plain dictionaries (``imm.data`` knows nothing of the domain); :mod:`imm.domain.compliance` turns
``PolicyInfo`` into rows and back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imm.data.database import DatabaseManager

POLICY_COLUMNS = ("guid", "name", "kind", "locked", "enabled", "retention_days", "retention_action", "scope_all")


class OrgStateStore:
    """Reads and writes the org-wide state of one cache."""

    def __init__(self, db: DatabaseManager) -> None:
        self.db = db

    def org_holds(self) -> list[str]:
        rows = self.db.get_connection().execute("SELECT value FROM org_holds ORDER BY value")
        return [str(r[0]) for r in rows]

    def policy_rows(self) -> list[dict[str, Any]]:
        """Each cached policy's columns, with ``details`` as its JSON text."""
        names = (*POLICY_COLUMNS, "details")
        rows = self.db.get_connection().execute(f"SELECT {', '.join(names)} FROM policies")
        return [dict(zip(names, tuple(row), strict=True)) for row in rows]

    def save(self, org_holds: Iterable[str], policy_rows: Iterable[Mapping[str, Any]] | None, stamp: str) -> None:
        """Replace the org holds, and the policies unless ``policy_rows`` is None (then the last known stay)."""
        marks = ", ".join("?" for _ in POLICY_COLUMNS)
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM org_holds")
            conn.executemany(
                "INSERT INTO org_holds(value, fetched_at) VALUES (?, ?) ON CONFLICT(value) DO NOTHING",
                [(v, stamp) for v in org_holds],
            )
            if policy_rows is not None:
                conn.execute("DELETE FROM policies")
                conn.executemany(
                    f"INSERT INTO policies({', '.join(POLICY_COLUMNS)}, details, fetched_at) "
                    f"VALUES ({marks}, ?, ?) ON CONFLICT(guid) DO UPDATE SET "
                    + ", ".join(f"{c} = excluded.{c}" for c in (*POLICY_COLUMNS[1:], "details", "fetched_at")),
                    [
                        (
                            *(row.get(c) for c in POLICY_COLUMNS),
                            json.dumps(row.get("details") or {}, sort_keys=True),
                            stamp,
                        )
                        for row in policy_rows
                    ],
                )
