"""The roles of a team store and what each may do (``imm store grants``, ``imm store check``).

Two roles (PostgreSQL's own access control, enforced by the server for every machine):

- the **owner** owns the schema: it runs the migrations (a newer imm's first open) and is the only role that may
  prune the audit log (DELETE on ``audit_log``, INSERT on ``audit_checkpoints``);
- the **operator** is what admins, workers and the nightly sync connect as: it reads everything and writes the
  cache, jobs and restore tracking, and may only INSERT and SELECT audit rows, signatures and anchors: never
  UPDATE or DELETE them (the server refuses: ``permission denied for table audit_log``).

The triggers of :mod:`imm.data.pg_schema` refuse UPDATE and DELETE of audit rows for every role as a second line;
the owner could drop them, which is why ``imm audit verify`` checks the hashes and relies on neither.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Table → what the operator may do. Tables not named here get OPERATOR_DEFAULT.
OPERATOR_PRIVILEGES: dict[str, tuple[str, ...]] = {
    "audit_log": ("SELECT", "INSERT"),
    "audit_signatures": ("SELECT", "INSERT"),
    "audit_anchors": ("SELECT", "INSERT"),
    "audit_checkpoints": ("SELECT",),
    "audit_prune_guard": ("SELECT",),
    "audit_sequence": ("SELECT", "INSERT", "UPDATE"),  # kept by the insert trigger (the highest id ever used)
    "audit_export_cursors": ("SELECT", "INSERT", "UPDATE"),
    "_imm_migrations": ("SELECT",),
}
OPERATOR_DEFAULT = ("SELECT", "INSERT", "UPDATE", "DELETE")
ALL_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


def role_name(text: str, what: str) -> str:
    """A role name safe to put in SQL (letters, digits, ``_``, ``$``), quoted; else ValueError."""
    if not _NAME.match(text):
        raise ValueError(f"the {what} role '{text}' is not a plain PostgreSQL name (letters, digits, _)")
    return '"' + text + '"'


def operator_privileges(table: str) -> tuple[str, ...]:
    return OPERATOR_PRIVILEGES.get(table, OPERATOR_DEFAULT)


def grant_statements(database: str, schema: str, tables: Iterable[str], owner: str, operator: str) -> list[str]:
    """The statements that make ``owner`` own the store and give ``operator`` exactly its share (idempotent)."""
    db, sch = role_name(database, "database"), role_name(schema, "schema")
    own, op = role_name(owner, "owner"), role_name(operator, "operator")
    statements = [
        f"GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {own}, {op}",
        f"GRANT USAGE, CREATE ON SCHEMA {sch} TO {own}",
        f"GRANT USAGE ON SCHEMA {sch} TO {op}",
    ]
    for table in sorted(tables):
        name = f"{sch}.{role_name(table, 'table')}"
        statements.append(f"ALTER TABLE {name} OWNER TO {own}")
        statements.append(f"REVOKE ALL ON {name} FROM {op}")
        statements.append(f"GRANT {', '.join(operator_privileges(table))} ON {name} TO {op}")
    statements.append(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {sch} TO {op}")
    return statements
