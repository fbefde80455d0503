"""DatabaseManager on real SQLite files and a real PostgreSQL server (the `db` fixture runs on both): storage
round trips, search, filters, lookups, transactions, threads and the errors a user can act on (corrupt, foreign,
locked, read-only, newer)."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from factories import NOW, make_mailbox, make_mailboxes
from imm.data import database, postgres
from imm.data.database import (
    COLUMNS,
    FTS_TABLE,
    DatabaseManager,
    MailboxFilter,
    fts_phrase,
    like_pattern,
)
from imm.data.models import InactiveMailbox
from imm.errors import ExitStatus, InputError, NotFoundError, StoreError


@pytest.fixture
def db(store_target: str) -> Iterator[DatabaseManager]:
    """The store on each dialect: an SQLite file, and a PostgreSQL database (the team store)."""
    manager = DatabaseManager(store_target)
    manager.initialize()
    yield manager
    manager.close()


@pytest.fixture
def file_db(tmp_path: Path) -> Iterator[DatabaseManager]:
    """An SQLite store, for the tests of a file's own behaviour (WAL, locks, corruption, read-only files)."""
    manager = DatabaseManager(tmp_path / "imm.db")
    manager.initialize()
    yield manager
    manager.close()


def ids(mailboxes: list[InactiveMailbox]) -> list[str]:
    return [m.identity for m in mailboxes]


def integrity_check(db: DatabaseManager) -> None:
    """FTS5 compares the index with the content it reads (raises when they differ); PostgreSQL's trigram index
    is the server's own, kept by every write."""
    if db.is_postgresql:
        return
    db.get_connection().execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rank) VALUES ('integrity-check', 1)")


# ------------------------------------------------------------------------------------------------ opening
def test_initialize_creates_private_wal_file_with_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "imm.db"
    db = DatabaseManager(path)
    db.initialize()
    conn = db.get_connection()
    assert path.exists()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.row_factory is sqlite3.Row
    assert conn.isolation_level is None
    db.close()


def test_table_has_a_column_per_model_field_in_order(db: DatabaseManager) -> None:
    if db.is_postgresql:  # its rowid column comes first (SQLite's is implicit)
        rows = db.get_connection().execute(
            "SELECT 0, column_name FROM information_schema.columns WHERE table_name = 'inactive_mailboxes' "
            "AND column_name <> 'rowid' ORDER BY ordinal_position"
        )
    else:
        rows = db.get_connection().execute("PRAGMA table_info(inactive_mailboxes)")
    columns = [r[1] for r in rows]
    assert columns == list(COLUMNS)
    assert columns == list(InactiveMailbox.__dataclass_fields__)


# ------------------------------------------------------------------------------------------------ round trip
def test_round_trip_is_exact(db: DatabaseManager) -> None:
    original = make_mailbox(
        display_name='Zoë O\'Brien "Ops" 王伟',
        when_soft_deleted=datetime(2021, 3, 4, 5, 6, 7, 890123, tzinfo=UTC),
        litigation_hold_date=datetime(2020, 1, 1, tzinfo=UTC),
        holds_expire_on=datetime(2030, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        inactive_mailbox_retire_time=None,
        custom_attributes={"CustomAttribute5": "Fabrikam", "CustomAttribute6": "Ünïcode ✓"},
        hold_details=[
            {"kind": "litigation", "duration_days": None, "preserves": True, "ratio": 0.5, "nested": [1, [2, "x"]]},
            {"kind": "org-policy", "policy_name": "All mailboxes", "locked": False},
        ],
        email_addresses=["SMTP:a@contoso.com", "X500:/o=ExchangeLabs/cn=a", "smtp:a@b.c"],
        in_place_holds=["UniH1a2b", "mbx8f3b:2", "-mbx1234"],
        recovery_blockers=["auto-expanding-archive: has AuxArchive"],
        recovery_eligible=False,
        auto_expanding_archive=True,
        size_mb=1234.56,
        age_days=0,
        monthly_cost=0.0,
        operating_company=None,
        department="",
    )
    db.upsert_mailbox(original)
    assert db.get_mailbox(original.identity) == original
    assert db.get_all_mailboxes() == [original]
    again = db.get_mailbox(original.identity)
    assert again is not None and again.hold_details[0]["nested"] == [1, [2, "x"]]
    assert again.when_soft_deleted is not None and again.when_soft_deleted.tzinfo is UTC


def test_defaults_round_trip(db: DatabaseManager) -> None:
    bare = InactiveMailbox(identity="0f8fad5b-d9cb-469f-a165-70867728950e")
    db.upsert_mailbox(bare)
    assert db.get_mailbox(bare.identity) == bare


def test_datetimes_are_stored_as_utc_iso_text(db: DatabaseManager) -> None:
    plus_two = timezone(timedelta(hours=2))
    m = make_mailbox(
        when_soft_deleted=datetime(2024, 6, 1, 12, 0, tzinfo=plus_two),
        when_changed=datetime(2024, 6, 1, 12, 0),  # naive: taken as UTC
    )
    db.upsert_mailbox(m)
    row = (
        db.get_connection()
        .execute("SELECT when_soft_deleted, when_changed, hold_types, recovery_eligible FROM inactive_mailboxes")
        .fetchone()
    )
    assert tuple(row) == (
        "2024-06-01T10:00:00.000000+00:00",
        "2024-06-01T12:00:00.000000+00:00",
        '["litigation","org-policy"]',
        1,
    )
    back = db.get_mailbox(m.identity)
    assert back is not None
    assert back.when_soft_deleted == datetime(2024, 6, 1, 10, 0, tzinfo=UTC)
    assert back.when_soft_deleted.tzinfo is UTC
    assert back.when_changed == datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def test_upsert_replaces_and_counts(db: DatabaseManager) -> None:
    a = make_mailbox(display_name="Before")
    assert db.upsert_mailboxes([a, make_mailbox()]) == 2
    assert db.upsert_mailboxes([]) == 0
    a.display_name = "After"
    a.size_mb = 1.5
    assert db.upsert_mailboxes([a]) == 1
    assert db.count_mailboxes() == 2
    got = db.get_mailbox(a.identity)
    assert got is not None and (got.display_name, got.size_mb) == ("After", 1.5)
    assert ids(db.search_mailboxes("Before")) == []
    assert ids(db.search_mailboxes("After")) == [a.identity]
    integrity_check(db)


def test_duplicate_identity_in_one_batch_keeps_the_last(db: DatabaseManager) -> None:
    first = make_mailbox(identity="dup", display_name="First Name")
    last = make_mailbox(identity="dup", display_name="Last Name")
    assert db.upsert_mailboxes([first, last]) == 2
    assert db.get_all_mailboxes() == [last]
    assert ids(db.search_mailboxes("Last Name")) == ["dup"]
    assert db.search_mailboxes("First") == []
    integrity_check(db)


def test_get_all_is_in_identity_order_and_get_mailbox_ignores_case(db: DatabaseManager) -> None:
    boxes = make_mailboxes(25, seed=4)
    db.upsert_mailboxes(boxes)
    assert ids(db.get_all_mailboxes()) == sorted(ids(boxes))
    target = boxes[3]
    assert db.get_mailbox(target.identity.upper()) == target
    assert db.get_mailbox("nope") is None


# ------------------------------------------------------------------------------------------------ search
@pytest.fixture
def searchable(db: DatabaseManager) -> dict[str, InactiveMailbox]:
    def box(alias: str, display_name: str, company: str, department: str, **more: object) -> InactiveMailbox:
        return make_mailbox(
            alias=alias,
            display_name=display_name,
            operating_company=company,
            department=department,
            email_addresses=[],
            **more,
        )

    boxes = {
        "anna": box("anna.smith", "Anna Smith", "Contoso", "Sales"),
        "odd": box("odd", '100% "quoted" AND NEAR(x) *star* a-b o_k back\\slash', "Contoso", "R&D"),
        "upn": box("jdoe", "John Doe", "Contoso", "Legal", user_principal_name="john.doe@fabrikam.onmicrosoft.com"),
        "greek": box("alex", "Αλέξανδρος Παπαδόπουλος", "Fabrikam", "Finance"),
        "plain": box("bob", "Bob Jones", "Northwind", "HR"),
    }
    db.upsert_mailboxes(list(boxes.values()))
    return boxes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("smith", "anna"),
        ("SMITH", "anna"),
        ("anna.smith@contoso", "anna"),  # part of the address
        ("anna.smith", "anna"),  # the Name, found through the address that contains it
        ("fabrikam.onmicrosoft", "upn"),  # a UPN that differs from the address
        ("Northwind", "plain"),  # company
        ("Sales", "anna"),  # department
        ("R&D", "odd"),
        ("Παπαδόπουλος", "greek"),
        ("παπαδόπουλος", "greek"),  # Unicode case folding in the trigram index
        ("100%", "odd"),
        ('"quoted"', "odd"),
        ("AND", "odd"),
        ("NEAR(x)", "odd"),
        ("*star*", "odd"),
        ("a-b", "odd"),
        ("o_k", "odd"),
        ("back\\slash", "odd"),
        ("AND OR", ""),  # literal text, not operators
        ("smith OR jones", ""),
        ("jones*", ""),
        ("-mbx", ""),
        ("^anna", ""),
        ("zzz", ""),
    ],
)
def test_search_is_literal(
    db: DatabaseManager, searchable: dict[str, InactiveMailbox], text: str, expected: str
) -> None:
    found = {m.identity for m in db.search_mailboxes(text)}
    assert found == {searchable[k].identity for k in expected.split()}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("%", "odd"),  # a literal percent sign, not "anything"
        ("_", "odd"),  # a literal underscore, not "any character"
        ("\\", "odd"),
        ('"', "odd"),
        ("-", "odd"),
        ("jo", "upn plain"),  # John Doe / john.doe…, Bob Jones
        ("FA", "greek upn"),  # Fabrikam (company) / fabrikam.onmicrosoft.com (UPN)
        ("&", "odd"),
        ("Ω", ""),
    ],
)
def test_short_text_falls_back_to_escaped_like(
    db: DatabaseManager, searchable: dict[str, InactiveMailbox], text: str, expected: str
) -> None:
    found = {m.identity for m in db.search_mailboxes(text)}
    assert found == {searchable[k].identity for k in expected.split()}


def test_search_orders_by_display_name_and_limits(db: DatabaseManager) -> None:
    boxes = [make_mailbox(display_name=f"Team {c} Smith") for c in "dbca"]
    db.upsert_mailboxes(boxes)
    names = [m.display_name for m in db.search_mailboxes("Smith")]
    assert names == ["Team a Smith", "Team b Smith", "Team c Smith", "Team d Smith"]
    assert [m.display_name for m in db.search_mailboxes("smith", limit=2)] == ["Team a Smith", "Team b Smith"]


def test_limited_search_sorts_a_window_of_matches(db: DatabaseManager, monkeypatch: pytest.MonkeyPatch) -> None:
    for letter in "EDCBA":  # inserted in this order: rowids ascend from E to A
        db.upsert_mailbox(make_mailbox(display_name=f"{letter} Smith"))
    monkeypatch.setattr(database, "SEARCH_WINDOW", 3)
    # the first three matches in index order are E, D, C: the limit takes the first two of those by name
    assert [m.display_name for m in db.search_mailboxes("Smith", limit=2)] == ["C Smith", "D Smith"]
    assert [m.display_name for m in db.search_mailboxes("Smith", limit=4)] == [
        "B Smith",
        "C Smith",
        "D Smith",
        "E Smith",
    ]
    assert len(db.search_mailboxes("Smith")) == 5
    monkeypatch.setattr(database, "SEARCH_WINDOW", 2000)
    assert [m.display_name for m in db.search_mailboxes("Smith", limit=2)] == ["A Smith", "B Smith"]
    assert [m.display_name for m in db.search_mailboxes("Sm", limit=2)] == ["A Smith", "B Smith"]  # LIKE path
    assert db.search_mailboxes("Smith", limit=0) == []


def test_empty_search_text_is_an_input_error(db: DatabaseManager) -> None:
    with pytest.raises(InputError, match="the search text is empty"):
        db.search_mailboxes("")


def test_query_helpers_quote_literally() -> None:
    assert fts_phrase('a "b" c') == '"a ""b"" c"'
    assert like_pattern("50%_a\\b") == "%50\\%\\_a\\\\b%"


def test_direct_sql_writes_keep_the_index_in_step(db: DatabaseManager) -> None:
    """The triggers serve writers that bypass DatabaseManager."""
    conn = db.get_connection()
    conn.execute(
        "INSERT INTO inactive_mailboxes (identity, display_name, primary_smtp, name, user_principal_name, "
        "size_mb, archive_size_mb) VALUES ('x1', 'Direct Writer', 'dw@contoso.com', 'dw', 'dw@contoso.com', 1, 0)"
    )
    assert ids(db.search_mailboxes("Direct Wr")) == ["x1"]
    conn.execute("UPDATE inactive_mailboxes SET display_name = 'Renamed Row' WHERE identity = 'x1'")
    assert ids(db.search_mailboxes("Renamed")) == ["x1"]
    assert db.search_mailboxes("Direct") == []
    conn.execute("UPDATE inactive_mailboxes SET size_mb = 2 WHERE identity = 'x1'")  # not a searched column
    integrity_check(db)
    conn.execute("DELETE FROM inactive_mailboxes WHERE identity = 'x1'")
    assert db.search_mailboxes("Renamed") == []
    integrity_check(db)
    if not db.is_postgresql:  # SQLite's triggers are on again
        assert conn.execute("SELECT COUNT(*) FROM _imm_search_guard").fetchone()[0] == 0


def test_index_stays_consistent_through_changes(db: DatabaseManager) -> None:
    boxes = make_mailboxes(300, seed=9)
    db.upsert_mailboxes(boxes)
    for m in boxes[:100]:
        m.display_name = m.display_name + " Renamed"
        m.department = "Changed Dept"
    for m in boxes[100:150]:
        m.size_mb += 1  # changes nothing searched
    db.upsert_mailboxes(boxes[:150] + make_mailboxes(20, seed=10))
    assert db.delete_mailboxes([m.identity for m in boxes[200:250]] + ["missing"]) == 50
    integrity_check(db)
    assert len(db.search_mailboxes("Changed Dept")) == 100
    assert db.count_mailboxes() == 270
    db.vacuum()
    integrity_check(db)
    assert len(db.search_mailboxes("Renamed")) == 100


# ------------------------------------------------------------------------------------------------ filters
@pytest.fixture
def filtered(db: DatabaseManager) -> dict[str, InactiveMailbox]:
    boxes = {
        "a": make_mailbox(
            display_name="Alpha",
            operating_company="Contoso",
            department="Sales",
            hold_types=["litigation"],
            when_soft_deleted=NOW - timedelta(days=10),
            size_mb=100.0,
            archive_size_mb=0.0,
            recovery_eligible=True,
            releasable=False,
            monthly_cost=3.0,
            tenant="t1",
        ),
        "b": make_mailbox(
            display_name="bravo",
            operating_company="contoso",
            department="Legal",
            hold_types=["ediscovery", "org-policy"],
            when_soft_deleted=NOW - timedelta(days=400),
            size_mb=500.0,
            archive_size_mb=600.0,
            recovery_eligible=False,
            releasable=False,
            monthly_cost=9.0,
            tenant="t1",
        ),
        "c": make_mailbox(
            display_name="Charlie",
            operating_company="Fabrikam",
            department=None,
            hold_types=["litigation", "delay"],
            when_soft_deleted=NOW - timedelta(days=3000),
            size_mb=2048.0,
            archive_size_mb=0.0,
            recovery_eligible=True,
            releasable=True,
            monthly_cost=5.0,
            tenant="t2",
        ),
        "d": make_mailbox(
            display_name="delta",
            operating_company=None,
            department="Sales",
            hold_types=[],
            when_soft_deleted=None,
            size_mb=0.0,
            archive_size_mb=0.0,
            recovery_eligible=False,
            releasable=True,
            monthly_cost=1.0,
            tenant="t2",
        ),
    }
    db.upsert_mailboxes(list(boxes.values()))
    return boxes


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (MailboxFilter(), "abcd"),
        (MailboxFilter(company="CONTOSO"), "ab"),
        (MailboxFilter(department="sales"), "ad"),
        (MailboxFilter(company="contoso", department="Legal"), "b"),
        (MailboxFilter(hold_type="litigation"), "ac"),
        (MailboxFilter(hold_type="Delay"), "c"),
        (MailboxFilter(hold_type="lit"), ""),  # whole kinds only
        (MailboxFilter(older_than_days=365, now=NOW), "bc"),
        (MailboxFilter(older_than_days=400, now=NOW), "c"),  # exactly 400 days is not older than 400
        (MailboxFilter(older_than_days=0, now=NOW), "abc"),
        (MailboxFilter(min_size_mb=1100), "bc"),  # b: 500 + 600 archive
        (MailboxFilter(max_size_mb=100), "ad"),
        (MailboxFilter(min_size_mb=100, max_size_mb=1100), "ab"),
        (MailboxFilter(recovery_eligible=True), "ac"),
        (MailboxFilter(recovery_eligible=False), "bd"),
        (MailboxFilter(releasable=True), "cd"),
        (MailboxFilter(releasable=False, recovery_eligible=True), "a"),
        (MailboxFilter(tenant="T2"), "cd"),
    ],
)
def test_filters(
    db: DatabaseManager, filtered: dict[str, InactiveMailbox], filters: MailboxFilter, expected: str
) -> None:
    got = db.query_mailboxes(filters, sort="identity")
    assert ids(got) == sorted(filtered[k].identity for k in expected)
    assert db.count_mailboxes(filters) == len(expected)


@pytest.mark.parametrize(
    ("sort", "descending", "expected"),
    [
        ("name", False, "abcd"),  # Alpha, bravo, Charlie, delta: case ignored
        ("name", True, "dcba"),
        ("size", True, "cbad"),  # 2048, 1100, 100, 0
        ("size", False, "dabc"),
        ("cost", False, "dacb"),
        ("age", False, "abcd"),  # the most recently deleted first; no deletion date last
        ("deleted", False, "dcba"),
        ("company", False, "dabc"),  # NULL, Contoso, contoso, Fabrikam (ties by identity)
        ("monthly_cost", True, "bcad"),  # any column name works too
        ("display-name", False, "abcd"),
    ],
)
def test_sorting(
    db: DatabaseManager, filtered: dict[str, InactiveMailbox], sort: str, descending: bool, expected: str
) -> None:
    got = db.query_mailboxes(sort=sort, descending=descending)
    if sort == "company":  # Contoso/contoso tie: broken by identity
        tie = sorted([filtered["a"].identity, filtered["b"].identity])
        assert ids(got) == [filtered["d"].identity, *tie, filtered["c"].identity]
        return
    assert ids(got) == [filtered[k].identity for k in expected]


def test_limit_and_offset(db: DatabaseManager, filtered: dict[str, InactiveMailbox]) -> None:
    assert ids(db.query_mailboxes(limit=2)) == [filtered["a"].identity, filtered["b"].identity]
    assert ids(db.query_mailboxes(limit=2, offset=2)) == [filtered["c"].identity, filtered["d"].identity]
    assert ids(db.query_mailboxes(offset=3)) == [filtered["d"].identity]
    assert db.query_mailboxes(limit=0) == []
    with pytest.raises(InputError):
        db.query_mailboxes(offset=-1)


def test_unknown_sort_is_an_input_error(db: DatabaseManager) -> None:
    with pytest.raises(InputError, match="cannot sort by 'colour': use one of name, smtp, company"):
        db.query_mailboxes(sort="colour")
    with pytest.raises(InputError):
        db.query_mailboxes(sort="name; DROP TABLE inactive_mailboxes")


# ------------------------------------------------------------------------------------------------ lookups
@pytest.fixture
def people(db: DatabaseManager) -> dict[str, InactiveMailbox]:
    boxes = {
        "ann": make_mailbox(alias="ann", display_name="Ann Lee", user_principal_name="ann.lee@contoso.onmicrosoft.com"),
        "ann2": make_mailbox(alias="ann2", display_name="Ann Lee"),
        "bo": make_mailbox(alias="bo", display_name="Bo Ek"),
    }
    db.upsert_mailboxes(list(boxes.values()))
    return boxes


def test_find_by_each_kind_of_identity(db: DatabaseManager, people: dict[str, InactiveMailbox]) -> None:
    ann = people["ann"]
    assert db.find_mailbox(ann.identity) == ann
    assert db.find_mailbox(ann.identity.upper()) == ann
    assert db.find_mailbox("{" + ann.identity + "}") == ann
    assert db.find_mailbox("ANN@contoso.com") == ann  # primary SMTP, any case
    assert db.find_mailbox(" ann@contoso.com ") == ann
    assert db.find_mailbox("ann@contoso.onmicrosoft.com") == ann  # a secondary address
    assert db.find_mailbox("Ann.Lee@contoso.onmicrosoft.com") == ann  # the UPN
    assert db.find_mailbox(ann.distinguished_name.lower()) == ann
    assert db.find_mailbox(ann.legacy_exchange_dn) == ann
    assert db.find_mailbox("ann") == ann  # Name
    assert db.find_mailbox("bo ek") == people["bo"]  # display name


def test_find_ambiguous_lists_candidates(db: DatabaseManager, people: dict[str, InactiveMailbox]) -> None:
    with pytest.raises(InputError) as info:
        db.find_mailbox("Ann Lee")
    first, second = sorted([people["ann"], people["ann2"]], key=lambda m: m.identity)
    assert info.value.message == (
        f"'Ann Lee' matches 2 mailboxes: {first.identity} ({first.primary_smtp}); "
        f"{second.identity} ({second.primary_smtp})"
    )
    assert info.value.code == "ambiguous_identity"
    assert info.value.exit_code == ExitStatus.USAGE


def test_find_not_found(db: DatabaseManager, people: dict[str, InactiveMailbox]) -> None:
    with pytest.raises(NotFoundError) as info:
        db.find_mailbox("ghost@contoso.com")
    assert info.value.message == "no mailbox 'ghost@contoso.com' in the cache"
    assert info.value.exit_code == ExitStatus.NOT_FOUND
    with pytest.raises(InputError, match="empty mailbox identity"):
        db.find_mailbox("   ")


def test_find_in_empty_cache_says_so(db: DatabaseManager) -> None:
    with pytest.raises(NotFoundError) as info:
        db.find_mailbox("x")
    assert info.value.hint == "the cache is empty: run `imm sync` (or `imm demo`)"


# ------------------------------------------------------------------------------------------------ clear, stats
def test_clear_cache_keeps_history(db: DatabaseManager) -> None:
    db.upsert_mailboxes(make_mailboxes(30, seed=2))
    with db.transaction() as conn:
        conn.execute("INSERT INTO org_holds VALUES ('mbxabc:2', '2026-01-01')")
        conn.execute("INSERT INTO policies (guid, name, fetched_at) VALUES ('g1', 'P', '2026-01-01')")
        conn.execute("INSERT INTO sync_runs (started_at, mode, status) VALUES ('2026-01-01', 'full', 'completed')")
        conn.execute("INSERT INTO meta VALUES ('k', 'v')")
    assert db.clear_cache() == 30
    conn = db.get_connection()
    counts = {
        t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
        for t in ("inactive_mailboxes", "org_holds", "policies", "sync_runs", "meta")
    }
    assert counts == {"inactive_mailboxes": 0, "org_holds": 0, "policies": 0, "sync_runs": 1, "meta": 1}
    assert db.search_mailboxes("Smith") == [] and db.search_mailboxes("u2") == []
    integrity_check(db)
    if not db.is_postgresql:
        triggers = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        assert {
            "inactive_mailboxes_fts_insert",
            "inactive_mailboxes_fts_update",
            "inactive_mailboxes_fts_delete",
        } <= triggers
    db.upsert_mailbox(make_mailbox(display_name="After Clear"))
    assert len(db.search_mailboxes("After Clear")) == 1


def test_cache_stats(db: DatabaseManager) -> None:
    empty = db.get_cache_stats()
    assert {k: empty[k] for k in ("count", "oldest", "newest", "oldest_deleted", "newest_deleted", "last_sync")} == {
        "count": 0,
        "oldest": None,
        "newest": None,
        "oldest_deleted": None,
        "newest_deleted": None,
        "last_sync": None,
    }
    t1, t2 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    d1, d2 = datetime(2015, 5, 5, tzinfo=UTC), datetime(2025, 5, 5, tzinfo=UTC)
    db.upsert_mailboxes(
        [make_mailbox(last_updated=t1, when_soft_deleted=d2), make_mailbox(last_updated=t2, when_soft_deleted=d1)]
    )
    with db.transaction() as conn:
        conn.execute(
            "INSERT INTO sync_runs (started_at, finished_at, mode, status, fetched, changed, removed, errors) "
            "VALUES ('2026-02-01T10:00:00+00:00', '2026-02-01T10:05:00+00:00', 'full', 'completed', 2, 2, 0, 0)"
        )
    stats = db.get_cache_stats()
    path = db.db_path
    if db.is_postgresql:
        expected_size = db.get_connection().execute("SELECT pg_database_size(current_database())").fetchone()[0]
    else:
        expected_size = path.stat().st_size + (
            Path(f"{path}-wal").stat().st_size if Path(f"{path}-wal").exists() else 0
        )
    assert stats == {
        "path": db.display_path,
        "count": 2,
        "oldest": t1,
        "newest": t2,
        "oldest_deleted": d1,
        "newest_deleted": d2,
        "size_bytes": expected_size,
        "last_sync": {
            "id": 1,
            "started_at": datetime(2026, 2, 1, 10, 0, tzinfo=UTC),
            "finished_at": datetime(2026, 2, 1, 10, 5, tzinfo=UTC),
            "mode": "full",
            "status": "completed",
            "fetched": 2,
            "changed": 2,
            "removed": 0,
            "errors": 0,
        },
    }


# ------------------------------------------------------------------------------------------------ transactions
def test_transaction_commits_or_rolls_back(db: DatabaseManager) -> None:
    with db.transaction() as conn:
        conn.execute("INSERT INTO meta VALUES ('a', '1')")
    with pytest.raises(RuntimeError), db.transaction() as conn:
        conn.execute("INSERT INTO meta VALUES ('b', '2')")
        raise RuntimeError("boom")
    rows = db.get_connection().execute("SELECT key FROM meta ORDER BY key").fetchall()
    assert [r[0] for r in rows] == ["a"]
    assert not db.get_connection().in_transaction


def test_nested_transaction_is_a_savepoint(db: DatabaseManager) -> None:
    with db.transaction() as conn:
        conn.execute("INSERT INTO meta VALUES ('outer', '1')")
        with pytest.raises(ValueError), db.transaction() as inner:
            inner.execute("INSERT INTO meta VALUES ('inner', '2')")
            raise ValueError("inner fails")
        with db.transaction() as inner:
            inner.execute("INSERT INTO meta VALUES ('inner2', '3')")
    rows = db.get_connection().execute("SELECT key FROM meta ORDER BY key").fetchall()
    assert [r[0] for r in rows] == ["inner2", "outer"]


def test_transaction_takes_the_write_lock_at_once(file_db: DatabaseManager, tmp_path: Path) -> None:
    other = sqlite3.connect(tmp_path / "imm.db", timeout=0, isolation_level=None)
    try:
        with file_db.transaction():
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()


def test_each_thread_has_its_own_connection(db: DatabaseManager) -> None:
    db.upsert_mailboxes(make_mailboxes(50, seed=5))
    seen: dict[str, object] = {}
    counts: list[int] = []
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            seen[name] = db.get_connection()
            counts.append(len(db.get_all_mailboxes()))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert counts == [50, 50, 50, 50]
    assert len({id(c) for c in seen.values()} | {id(db.get_connection())}) == 5
    db.close()
    with pytest.raises((sqlite3.ProgrammingError, postgres.DatabaseError)):
        seen["t0"].execute("SELECT 1")  # type: ignore[attr-defined]
    assert db.count_mailboxes() == 50  # a fresh connection after close


# ------------------------------------------------------------------------------------------------ errors
def test_garbage_file_is_refused_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "imm.db"
    garbage = b"this is not a database\n" * 200
    path.write_bytes(garbage)
    db = DatabaseManager(path)
    with pytest.raises(StoreError) as info:
        db.initialize()
    assert info.value.message == (
        f"{path} is not a valid imm database: move it aside (it is kept) and run `imm sync` to rebuild the cache"
    )
    assert info.value.exit_code == ExitStatus.FAILED
    db.close()
    assert path.read_bytes() == garbage


def test_truncated_database_is_refused(tmp_path: Path, file_db: DatabaseManager) -> None:
    file_db.upsert_mailboxes(make_mailboxes(200, seed=1))
    file_db.close()
    path = tmp_path / "imm.db"
    copy = tmp_path / "copy.db"
    data = path.read_bytes()
    copy.write_bytes(data[:100] + b"\xff" * 4000 + data[4100:8192])
    with pytest.raises(StoreError, match="is not a valid imm database"):
        DatabaseManager(copy).initialize()


def test_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError) as info:
        DatabaseManager(path).initialize()
    assert info.value.message.startswith(f"{path} is not a valid imm database (it holds other tables: customers)")
    conn = sqlite3.connect(path)
    assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["customers"]
    conn.close()


def test_locked_by_another_process(tmp_path: Path, file_db: DatabaseManager) -> None:
    holder = sqlite3.connect(tmp_path / "imm.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        waiting = DatabaseManager(tmp_path / "imm.db", busy_timeout=0.1)
        waiting.initialize()  # reading the schema is fine under WAL
        with pytest.raises(StoreError) as info:
            waiting.upsert_mailbox(make_mailbox())
        assert info.value.message == (
            f"{tmp_path / 'imm.db'} is locked by another process (another imm?); wait for it to finish or close it"
        )
        assert info.value.code == "store_locked"
        with pytest.raises(StoreError, match="locked by another process"), waiting.transaction():
            pass
        waiting.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    file_db.upsert_mailbox(make_mailbox())  # free again


def test_newer_schema_is_refused(store_target: str, db: DatabaseManager) -> None:
    with db.transaction() as conn:
        conn.execute("INSERT INTO _imm_migrations (name, applied_at) VALUES ('0099_future', '2030-01-01')")
    db.close()
    with pytest.raises(StoreError) as info:
        DatabaseManager(store_target).initialize()
    assert info.value.message == (
        f"{db.display_path} was created by a newer imm (unknown migrations: 0099_future): upgrade imm, "
        "or use another file with --db PATH"
    )


def test_read_only_uri(tmp_path: Path, file_db: DatabaseManager) -> None:
    file_db.upsert_mailbox(make_mailbox(display_name="Read Only"))
    file_db.close()
    uri = f"file:{tmp_path / 'imm.db'}?mode=ro"
    ro = DatabaseManager(uri)
    ro.initialize()  # fully migrated: nothing to write
    assert [m.display_name for m in ro.search_mailboxes("Read Only")] == ["Read Only"]
    with pytest.raises(StoreError) as info:
        ro.upsert_mailbox(make_mailbox())
    assert info.value.message == (
        f"{uri} cannot be written (read-only file or folder): make it writable, or choose another file with "
        "--db PATH or IMM_DB"
    )
    ro.close()
    blank = DatabaseManager(f"file:{tmp_path / 'blank.db'}?mode=rwc")
    blank.initialize()
    blank.close()
    never = DatabaseManager(f"file:{tmp_path / 'missing.db'}?mode=ro")
    with pytest.raises(StoreError, match="cannot be written"):
        never.initialize()


def _immutable(path: Path, on: bool) -> bool:
    """chattr +i / -i: read-only even for root (tests run as root). False when the file system refuses."""
    proc = subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True)
    return proc.returncode == 0


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[list[Path]]:
    marked: list[Path] = []
    yield marked
    for path in reversed(marked):
        _immutable(path, False)


def test_read_only_folder(tmp_path: Path, immutable: list[Path]) -> None:
    folder = tmp_path / "locked-folder"
    folder.mkdir()
    if not _immutable(folder, True):
        pytest.skip("chattr +i is not available here (needed to make a folder read-only for root)")
    immutable.append(folder)
    with pytest.raises(StoreError) as info:
        DatabaseManager(folder / "imm.db").initialize()
    assert info.value.message == (
        f"{folder / 'imm.db'} is in a read-only location: choose a writable one with --db PATH or IMM_DB"
    )
    with pytest.raises(StoreError, match="read-only location"):
        DatabaseManager(folder / "deeper" / "imm.db").initialize()


def test_read_only_file(tmp_path: Path, immutable: list[Path]) -> None:
    path = tmp_path / "imm.db"
    db = DatabaseManager(path)
    db.initialize()
    db.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    if not _immutable(path, True):
        pytest.skip("chattr +i is not available here (needed to make a file read-only for root)")
    immutable.append(path)
    ro = DatabaseManager(path)
    ro.initialize()  # nothing to migrate: opens for reading
    assert ro.count_mailboxes() == 0
    with pytest.raises(StoreError) as info:
        ro.upsert_mailbox(make_mailbox())
    assert info.value.message == (
        f"{path} cannot be written (read-only file or folder): make it writable, or choose another file with "
        "--db PATH or IMM_DB"
    )
    ro.close()


def test_a_folder_or_an_impossible_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as info:
        DatabaseManager(tmp_path).initialize()
    assert info.value.message == f"{tmp_path} is a folder: give the database file's path with --db PATH or IMM_DB"
    blocker = tmp_path / "a-file"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(StoreError) as info:
        DatabaseManager(blocker / "imm.db").initialize()
    assert info.value.message == (
        f"{blocker / 'imm.db'} cannot be created ({blocker} is not a folder): choose another file with --db PATH "
        "or IMM_DB"
    )


def test_a_row_edited_outside_imm_is_named(db: DatabaseManager) -> None:
    good, bad = make_mailbox(), make_mailbox()
    db.upsert_mailboxes([good, bad])
    db.get_connection().execute(
        "UPDATE inactive_mailboxes SET hold_types = '[broken' WHERE identity = ?", (bad.identity,)
    )
    with pytest.raises(StoreError) as info:
        db.get_all_mailboxes()
    assert info.value.message.startswith(
        f"{db.display_path}: the cached mailbox {bad.identity} holds unreadable data ("
    )
    assert info.value.message.endswith("): run `imm sync --full` to rewrite it, or `imm cache clear`")
    assert db.get_mailbox(good.identity) == good


def test_a_long_writer_limits_its_own_page_cache(tmp_path: Path) -> None:
    db = DatabaseManager(tmp_path / "cache.db")
    db.initialize()
    assert db.get_connection().execute("PRAGMA cache_size").fetchone()[0] == -65536
    db.limit_page_cache(16_384)
    assert db.get_connection().execute("PRAGMA cache_size").fetchone()[0] == -16_384
    other: list[int] = []
    thread = threading.Thread(
        target=lambda: other.append(db.get_connection().execute("PRAGMA cache_size").fetchone()[0])
    )
    thread.start()
    thread.join()
    assert other == [-65536]  # another thread's connection keeps the default
    db.close()
