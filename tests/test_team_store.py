"""The team store: a profile pointed at PostgreSQL (``store = "postgresql://…"`` or IMM_STORE) runs the real imm
process against a real server; the password never comes from the config file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import run_imm
from imm.config import load_config
from imm.errors import ConfigError


def write_config(path: Path, store: str) -> Path:
    path.write_text(f'[profiles.default]\nstore = "{store}"\n', encoding="utf-8")
    return path


def test_every_migration_has_its_postgresql_form() -> None:
    from imm.data import pg_schema
    from imm.data.migrations import MIGRATIONS

    missing = [m.name for m in MIGRATIONS if not callable(getattr(pg_schema, f"migrate_{m.name}", None))]
    assert missing == []


def test_a_password_in_the_config_file_is_refused_without_showing_it(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", "postgresql://imm:hunter2@db.example/imm?sslmode=verify-full")
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert "hunter2" not in info.value.message
    assert info.value.message.startswith(f"{config}:2: key 'store' has an invalid value 'postgresql://imm:***@")
    assert "the store setting holds a password" in info.value.message
    result = run_imm("--config", str(config), "cache", "stats")
    assert result.exit_code == 2
    assert "hunter2" not in result.stdout + result.stderr


def test_a_password_as_a_url_parameter_is_refused_too(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", "postgresql://db.example/imm?password=hunter2")
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert "hunter2" not in info.value.message


def test_the_store_setting_keeps_tls_options_and_reads_the_environment(tmp_path: Path) -> None:
    url = "postgresql://imm_operator@db.example:6432/imm?sslmode=verify-full&sslrootcert=/etc/ssl/ca.pem"
    config = write_config(tmp_path / "config.toml", url)
    assert load_config(config).profile.store_target == url
    other = "postgresql://nightly@db2.example/imm?sslmode=require"
    assert load_config(config, env={"IMM_STORE": other}).profile.store_target == other


def test_only_postgresql_urls_are_a_store(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a postgresql:// URL"):
        load_config(tmp_path / "none.toml", env={"IMM_STORE": "mysql://db.example/imm"}, allow_missing=True)


def test_the_cli_runs_on_the_team_store(pg_cluster: object) -> None:
    url = pg_cluster.new_database()  # type: ignore[attr-defined]
    env = {"IMM_STORE": url}
    stats = run_imm("cache", "stats", "--output", "json", env=env)
    assert stats.exit_code == 0, stats.stderr
    assert json.loads(stats.stdout)["count"] == 0
    verify = run_imm("audit", "verify", env=env)
    assert verify.exit_code == 0, verify.stderr


def test_an_unreachable_store_is_one_line(tmp_path: Path) -> None:
    url = f"postgresql://nobody@/imm?host={tmp_path}&port=1&connect_timeout=2"
    result = run_imm("cache", "stats", env={"IMM_STORE": url})
    assert result.exit_code == 1
    text = " ".join(result.stderr.split())  # the console folds long lines
    assert text.startswith(f"Error: cannot reach the store postgresql://nobody@/imm?host={tmp_path}")
    assert "No such file or directory" in text
    assert "Traceback" not in result.stderr


def _without_sync_times(value: object) -> object:
    """The values that differ only because the two syncs ran a moment apart."""
    if isinstance(value, dict):
        return {k: _without_sync_times(v) for k, v in value.items() if k not in ("last_updated", "generated_at")}
    if isinstance(value, list):
        return [_without_sync_times(v) for v in value]
    return value


def test_one_tenant_reads_the_same_from_either_store(sim_profile: str, pg_cluster: object) -> None:
    """Sync the simulated tenant into the profile's SQLite file and into a PostgreSQL database: every read a user
    makes (list, search, show, the five reports, the audit log) says the same on both."""
    url = pg_cluster.new_database()  # type: ignore[attr-defined]
    assert run_imm("login").exit_code == 0
    stores = {"sqlite": {}, "postgresql": {"IMM_STORE": url}}
    for env in stores.values():
        synced = run_imm("sync", "-q", env=env)
        assert synced.exit_code == 0, synced.stderr
    reads = [
        ("list", "-o", "json"),
        ("list", "-o", "json", "--sort", "size", "--desc", "--limit", "25"),
        ("list", "-o", "json", "--hold-type", "litigation", "--sort", "company"),
        ("search", "an", "-o", "json"),
        ("search", "contoso.com", "-o", "json", "--limit", "7"),
        ("report", "summary", "--output", "json"),
        ("report", "costs", "--by", "department", "--output", "json"),
        ("report", "holds", "--output", "json"),
        ("report", "expiry", "--output", "json"),
        ("report", "eligibility", "--output", "json"),
    ]
    for args in reads:
        seen = {}
        for name, env in stores.items():
            result = run_imm(*args, env=env)
            assert result.exit_code == 0, (args, name, result.stderr)
            seen[name] = _without_sync_times(json.loads(result.stdout))
        if seen["sqlite"] != seen["postgresql"]:
            import difflib

            a = json.dumps(seen["sqlite"], indent=1, sort_keys=True).splitlines()
            b = json.dumps(seen["postgresql"], indent=1, sort_keys=True).splitlines()
            print("\n".join(list(difflib.unified_diff(a, b, lineterm=""))[:60]))
        assert seen["sqlite"] == seen["postgresql"], args
        if args[:2] == ("report", "summary"):  # inactive mailboxes only; the soft-deleted ones on their own row
            values = {r["metric"]: r["value"] for r in seen["postgresql"]["rows"]}
            listed = json.loads(run_imm("list", "-o", "json", env=stores["postgresql"]).stdout)
            soft = sum(1 for m in listed if m["lifecycle_state"] == "soft-deleted")
            assert (values["mailboxes"], values["soft_deleted"]) == (len(listed) - soft, soft), values
    first = json.loads(run_imm("list", "-o", "json", "--limit", "1").stdout)[0]
    shown = {
        name: _without_sync_times(json.loads(run_imm("show", first["identity"], "-o", "json", env=env).stdout))
        for name, env in stores.items()
    }
    assert shown["sqlite"] == shown["postgresql"]
    for env in stores.values():
        verify = run_imm("audit", "verify", env=env)
        assert verify.exit_code == 0, verify.stderr
        operations = json.loads(run_imm("audit", "list", "-o", "json", env=env).stdout)
        seen_rows = {(o["operation"], o["result"]) for o in operations}
        assert {("SYNC", "started"), ("SYNC", "success")} <= seen_rows, operations


def test_store_grants_leave_the_operator_unable_to_rewrite_audit_rows(pg_cluster: object) -> None:
    """`imm store grants --apply`: the server itself refuses the operator's UPDATE and DELETE of audit rows, while
    the operator reads and writes the store through imm (its own audit rows included) and verify passes."""
    import uuid

    import psycopg

    cluster: Any = pg_cluster
    suffix = uuid.uuid4().hex[:8]
    owner, operator = f"own_{suffix}", f"op_{suffix}"
    for role in (owner, operator):
        cluster.sql(f"CREATE ROLE {role} LOGIN")
    url = cluster.new_database()
    printed = run_imm("store", "grants", "--owner", owner, "--operator", operator, env={"IMM_STORE": url})
    assert printed.exit_code == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert f'GRANT SELECT, INSERT ON "public"."audit_log" TO "{operator}";' in lines
    assert f'REVOKE ALL ON "public"."audit_log" FROM "{operator}";' in lines
    applied = run_imm("store", "grants", "--owner", owner, "--operator", operator, "--apply", env={"IMM_STORE": url})
    assert applied.exit_code == 0, applied.stderr
    assert applied.stderr.startswith(f"Applied {len(lines)} statements: {owner} owns the store")

    database = url.split("@/", 1)[1].split("?", 1)[0]
    as_operator = {"IMM_STORE": cluster.url(database, user=operator)}
    for args in (("cache", "stats"), ("cache", "clear", "--yes"), ("audit", "verify")):
        result = run_imm(*args, env=as_operator)
        assert result.exit_code == 0, (args, result.stderr)
    with psycopg.connect(cluster.url(database, user=operator), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM audit_log").fetchone()[0] >= 1  # type: ignore[index]
        for statement in ("UPDATE audit_log SET details = '{}'", "DELETE FROM audit_log"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for table audit_log"):
                conn.execute(statement)  # type: ignore[arg-type]


def test_store_grants_need_a_team_store_and_plain_role_names(pg_cluster: object, tmp_path: Path) -> None:
    on_sqlite = run_imm("--db", str(tmp_path / "a.db"), "store", "grants", "--owner", "o", "--operator", "p")
    assert on_sqlite.exit_code == 2
    assert "is for a team store on PostgreSQL" in on_sqlite.stderr
    url = pg_cluster.new_database()  # type: ignore[attr-defined]
    bad = run_imm(
        "store", "grants", "--owner", 'x"; DROP TABLE audit_log; --', "--operator", "p", env={"IMM_STORE": url}
    )
    assert bad.exit_code == 2
    assert "is not a plain PostgreSQL name" in bad.stderr
    missing = run_imm("store", "grants", "--owner", "nobody_here", "--operator", "p", "--apply", env={"IMM_STORE": url})
    assert missing.exit_code == 1, missing.stderr
    assert "the grants were not applied (nothing changed)" in missing.stderr
    assert "Traceback" not in missing.stderr
