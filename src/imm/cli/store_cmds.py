"""``imm store``: the team store's roles (``grants``, see :mod:`imm.data.pg_roles`), ``check`` (either store) and
``migrate`` (an SQLite file into a team store).

The owner owns the schema (migrations, ``audit prune``); the operator is what admins, workers and the nightly sync
connect as, and may only INSERT and SELECT audit rows: the server itself refuses their UPDATE and DELETE.
"""

from __future__ import annotations

import click

from imm.cli.context import app
from imm.cli.output import output_options


@click.group()
def store() -> None:
    """The store: check it, move an SQLite file into a team store, the team store's owner and operator roles.

    \b
    Examples:
      imm store check                                                      # reachable, schema, grants
      imm store migrate --to postgresql://imm_owner@db/imm                 # copy this profile's file in
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


_MARKS = {"ok": "ok", "warning": "warn", "failed": "FAIL", "skipped": "-"}


@store.command()
@output_options
def check(output: str, query: str | None) -> None:
    """Check the profile's store without changing it: exit 0 when every check passes (warnings allowed), 1 when
    one fails.

    PostgreSQL: the connection (role, database, server version, TLS), the schema version against the one this
    imm expects, the role connected as (owner or operator) and whether the server refuses it UPDATE and DELETE
    of audit rows, every table's grants, the append-only triggers and pg_trgm. SQLite: the file, the schema
    version and SQLite's integrity_check. Nothing is created or migrated.

    \b
    Examples:
      imm store check
      IMM_STORE=postgresql://imm_operator@db/imm imm store check -o json
    """
    from imm.cli.output import render_object
    from imm.data.store_check import check_store
    from imm.textsafe import terminal_safe

    obj = app()
    report = check_store(obj.profile.store_target)
    if output != "table" or query:
        render_object(report.as_dict(), output, query)
    else:
        click.echo(f"Store: {terminal_safe(report.store)}")
        width = max(len(c.name) for c in report.checks)
        for c in report.checks:
            click.echo(f"  {_MARKS[c.status]:<4}  {c.name:<{width}}  {terminal_safe(c.detail)}")
            if c.hint and c.status in ("warning", "failed"):
                click.echo(f"  {'':<4}  {'':<{width}}  hint: {terminal_safe(c.hint)}")
        failed = sum(1 for c in report.checks if c.status == "failed")
        click.echo("All checks passed." if not failed else f"{failed} check{'s' if failed != 1 else ''} failed.")
    if not report.ok:
        raise click.exceptions.Exit(1)


@store.command()
@click.option("--to", "to", required=True, metavar="URL", help="The empty PostgreSQL store: postgresql://OWNER@host/db")
@output_options
def migrate(to: str, output: str, query: str | None) -> None:
    """Copy this profile's SQLite file into an empty team store: the inventory, the audit log (ids and hashes
    unchanged), bulk jobs and restore tracking.

    The audit chain is verified on the file before anything is written and on PostgreSQL after; the copy is one
    transaction, refused (nothing written) when the store already holds rows. The file is left as it is. Connect
    as the store's owner (it creates the schema and writes the audit checkpoints). Then point the profile at the
    store (imm config set store URL).

    \b
    Examples:
      imm store migrate --to "postgresql://imm_owner@db.contoso.internal/imm?sslmode=verify-full"
      imm --profile contoso store migrate --to postgresql://imm_owner@db/imm -o json
    """
    from pathlib import Path

    from imm.cli.output import render_object
    from imm.data.audit_logger import AuditLogger
    from imm.data.audit_signing import AuditKeying
    from imm.data.database import DatabaseManager, store_error
    from imm.data.postgres import DatabaseError, check_store_url, display_url, is_store_url
    from imm.data.store_migrate import migrate_store
    from imm.errors import InputError, StoreError
    from imm.textsafe import terminal_safe

    obj = app()
    profile = obj.profile
    if not is_store_url(to):
        raise InputError("--to takes the team store's postgresql:// URL", hint="--to postgresql://OWNER@host/db")
    url = check_store_url(to, source="--to")
    if profile.store:
        raise InputError(
            f"this profile's store is already a team store ({display_url(profile.store)}): there is no file to move",
            hint="imm store migrate copies a profile's SQLite file; use a profile (or --db PATH) that has one",
        )
    path = Path(profile.store_target)
    if not path.is_file():
        raise InputError(f"there is no store file at {path} to migrate", hint="check --profile, --db or IMM_DB")
    keying = AuditKeying.from_profile(profile)
    source = obj.database()
    target = DatabaseManager(url, local_path=profile.database_path)
    try:
        target.initialize()
        result = migrate_store(
            source,
            target,
            AuditLogger(source, tenant=profile.tenant_id, keying=keying),
            AuditLogger(target, tenant=profile.tenant_id, keying=keying),
        )
    except DatabaseError as exc:  # the transaction rolled back: nothing is in the team store
        shown = display_url(url)
        if exc.sqlstate == "42501":
            raise StoreError(
                f"imm store migrate runs only as the team store's owner: the server refused ({exc}); nothing was "
                "copied",
                hint="--to postgresql://OWNER@… (the role that owns the tables; imm store check names the role)",
                code="store_permission",
            ) from None
        raise store_error(exc, shown) or StoreError(
            f"the copy into {shown} failed ({exc}): nothing was copied", code="store_migrate"
        ) from None
    finally:
        target.close()
    if output != "table" or query:
        render_object(result.as_dict(), output, query)
    else:
        click.echo(f"Copied {terminal_safe(result.source)} into {terminal_safe(result.target)}:")
        width = max(len(t) for t in result.tables)
        for table, count in result.tables.items():
            click.echo(f"  {table:<{width}}  {count:>9,}")
        if result.audit_rows:
            click.echo(
                f"Audit log verified before and after: {result.audit_rows} rows (ids {result.audit_first_id}-"
                f"{result.audit_last_id}), {result.checkpoints} checkpoints, ids and hashes unchanged; head row "
                f"{result.audit_last_id} {result.head_hash}."
            )
        else:
            click.echo(f"Audit log verified before and after: no rows ({result.checkpoints} checkpoints).")
    profile_option = f"--profile {profile.name} " if obj.profile_name else ""
    click.echo(
        f"The file is left as it was. To use the team store: imm {profile_option}config set store "
        f"'{terminal_safe(display_url(url))}', then imm store check (daily work connects as the operator role: "
        "imm store grants).",
        err=True,
    )
