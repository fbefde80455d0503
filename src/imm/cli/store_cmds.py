"""``imm store grants``: the roles of a team store on PostgreSQL (see :mod:`imm.data.pg_roles`).

The owner owns the schema (migrations, ``audit prune``); the operator is what admins, workers and the nightly sync
connect as, and may only INSERT and SELECT audit rows: the server itself refuses their UPDATE and DELETE.
"""

from __future__ import annotations

import click

from imm.cli.context import app


@click.group()
def store() -> None:
    """The team store on PostgreSQL: the owner and operator roles.

    \b
    Examples:
      imm store grants --owner imm_owner --operator imm_operator          # print the SQL
      imm store grants --owner imm_owner --operator imm_operator --apply  # run it (as the owner or a superuser)
    """


@store.command()
@click.option("--owner", required=True, metavar="ROLE", help="The role that owns the store (migrations, prune).")
@click.option("--operator", required=True, metavar="ROLE", help="The role admins, workers and sync connect as.")
@click.option("--apply", "apply_", is_flag=True, help="Run the statements now instead of printing them.")
def grants(owner: str, operator: str, apply_: bool) -> None:
    """The GRANT and REVOKE statements that give each role exactly its share (idempotent).

    Both roles must exist (CREATE ROLE … LOGIN). Printed as SQL to review or run with psql; --apply runs them in
    one transaction on the profile's store, connected as a role that may (the owner of the tables or a superuser).

    \b
    Examples:
      imm store grants --owner imm_owner --operator imm_operator > grants.sql
      IMM_STORE=postgresql://imm_owner@db/imm imm store grants --owner imm_owner --operator imm_operator --apply
    """
    from imm.data.pg_roles import grant_statements
    from imm.data.postgres import DatabaseError
    from imm.errors import InputError, StoreError

    obj = app()
    db = obj.database()
    if not db.is_postgresql:
        raise InputError(
            "imm store grants is for a team store on PostgreSQL; this profile's store is a SQLite file",
            hint='set store = "postgresql://…" in the profile (or IMM_STORE)',
        )
    conn = db.get_connection()
    database, schema = conn.execute("SELECT current_database(), current_schema()").fetchone()
    tables = [str(r[0]) for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
    try:
        statements = grant_statements(str(database), str(schema), tables, owner, operator)
    except ValueError as exc:
        raise InputError(str(exc), hint="use the role's plain name (letters, digits, _)") from None
    if not apply_:
        for statement in statements:
            click.echo(statement + ";")
        return
    try:
        with db.transaction() as tx:
            for statement in statements:
                tx.execute(statement)
    except DatabaseError as exc:
        raise StoreError(
            f"the grants were not applied (nothing changed): {exc}",
            hint="create both roles first, and run --apply as the tables' owner or a superuser",
        ) from None
    click.echo(f"Applied {len(statements)} statements: {owner} owns the store, {operator} operates it.", err=True)
