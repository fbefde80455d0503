"""imm.domain.parsing: Exchange value formats, exact values and round trips."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imm.domain.parsing import (
    format_size,
    mailbox_location_kinds,
    normalise_guid,
    parse_bool,
    parse_datetime,
    parse_size,
    parse_timespan_days,
    strip_prefix_guid,
)
from imm.errors import ExitStatus, InputError

# ------------------------------------------------------------------------------------------------------ sizes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("16.09 MB (16,873,043 bytes)", 16_873_043),
        ("0 B (0 bytes)", 0),
        ("1.234 GB (1,324,567,890 bytes)", 1_324_567_890),
        ("99 GB (106,300,440,576 bytes)", 106_300_440_576),
        ("512 B (512 bytes)", 512),
        ("1 B (1 byte)", 1),
        ("  16.09 MB (16,873,043 bytes)  ", 16_873_043),
        ("Unlimited", None),
        ("unlimited", None),
        ("", None),
        ("   ", None),
        (None, None),
        (0, 0),
        (16_873_043, 16_873_043),
        (1024.4, 1024),
        ("16873043", 16_873_043),
        ("16,873,043", 16_873_043),
        ("5GB", 5 * 1024**3),
        ("5 gb", 5 * 1024**3),
        ("1.5 GB", 1_610_612_736),
        ("1,5 GB", 1_610_612_736),
        ("500MB", 500 * 1024**2),
        ("2 KB", 2048),
        ("2 KiB", 2048),
        ("3 TB", 3 * 1024**4),
        ("1 PB", 1024**5),
        ("10 B", 10),
        ("7 bytes", 7),
    ],
)
def test_parse_size(text: object, expected: int | None) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "bad", ["lots", "5 XB", "GB", "-5 GB", "1.2.3 MB", True, -1, float("nan"), float("inf"), "¹", "٣ GB"]
)
def test_parse_size_rejects_garbage_with_one_line(bad: object) -> None:
    with pytest.raises(InputError) as err:
        parse_size(bad)
    assert err.value.message.startswith("not a size: ")
    assert "\n" not in err.value.message
    assert err.value.exit_code is ExitStatus.USAGE


def test_parse_size_message_names_the_value() -> None:
    with pytest.raises(InputError) as err:
        parse_size("lots")
    assert err.value.message == (
        "not a size: 'lots' (expected e.g. '16.09 MB (16,873,043 bytes)', '5 GB' or 'Unlimited')"
    )


_UNITS = ("B", "KB", "MB", "GB", "TB")


def exchange_size_string(n: int, decimals: int) -> str:
    """Written here independently of imm and the simulator: ``<value> <unit> (<n with commas> bytes)``."""
    unit = 0
    while unit < len(_UNITS) - 1 and n >= 1024 ** (unit + 1):
        unit += 1
    value = n / 1024**unit
    number = str(n) if unit == 0 else f"{value:.{decimals}f}"
    if "." in number:
        number = number.rstrip("0").rstrip(".")
    return f"{number} {_UNITS[unit]} ({n:,} bytes)"


@given(st.integers(min_value=0, max_value=2**53), st.integers(min_value=0, max_value=3))
def test_size_strings_round_trip(n: int, decimals: int) -> None:
    assert parse_size(exchange_size_string(n, decimals)) == n


@given(st.integers(min_value=0, max_value=2**60))
def test_plain_byte_counts_round_trip(n: int) -> None:
    assert parse_size(n) == n
    assert parse_size(str(n)) == n
    assert parse_size(f"{n:,}") == n


@given(st.integers(min_value=0, max_value=2**50))
def test_format_size_parses_back_within_its_rounding(n: int) -> None:
    parsed = parse_size(format_size(n))
    assert parsed is not None
    assert abs(parsed - n) <= max(1, n) * 0.005 + 1


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (None, "Unlimited"),
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1 KB"),
        (16_873_043, "16.09 MB"),
        (1.5 * 1024**3, "1.5 GB"),
    ],
)
def test_format_size(n: float | None, text: str) -> None:
    assert format_size(n) == text


# ------------------------------------------------------------------------------------------------------ dates


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2022-09-21T08:07:47.0000000+00:00", datetime(2022, 9, 21, 8, 7, 47, tzinfo=UTC)),
        ("2022-09-21T08:07:47.1234567+00:00", datetime(2022, 9, 21, 8, 7, 47, 123456, tzinfo=UTC)),
        ("2022-09-21T08:07:47Z", datetime(2022, 9, 21, 8, 7, 47, tzinfo=UTC)),
        ("2022-09-21T08:07:47.0000000Z", datetime(2022, 9, 21, 8, 7, 47, tzinfo=UTC)),
        ("2022-09-21T10:07:47+02:00", datetime(2022, 9, 21, 8, 7, 47, tzinfo=UTC)),
        ("2022-09-21T03:07:47-05:00", datetime(2022, 9, 21, 8, 7, 47, tzinfo=UTC)),
        ("2022-09-21T08:07:47", datetime(2022, 9, 21, 8, 7, 47, tzinfo=UTC)),
        ("2022-09-21", datetime(2022, 9, 21, tzinfo=UTC)),
        ("/Date(1663747667000)/", datetime(2022, 9, 21, 8, 7, 47, tzinfo=UTC)),
        ("/Date(1663747667123+0000)/", datetime(2022, 9, 21, 8, 7, 47, 123000, tzinfo=UTC)),
        ("/Date(-86400000)/", datetime(1969, 12, 31, tzinfo=UTC)),
        ("9/21/2022 8:07:47 AM", datetime(2022, 9, 21, 8, 7, 47, tzinfo=UTC)),
        ("9/21/2022 8:07:47 PM", datetime(2022, 9, 21, 20, 7, 47, tzinfo=UTC)),
        ("9/21/2022 12:00:00 AM", datetime(2022, 9, 21, 0, 0, 0, tzinfo=UTC)),
        ("9/21/2022 12:30:00 PM", datetime(2022, 9, 21, 12, 30, 0, tzinfo=UTC)),
        ("9/21/2022", datetime(2022, 9, 21, tzinfo=UTC)),
        ("0001-01-01T00:00:00", None),
        ("0001-01-01T00:00:00.0000000+00:00", None),
        ("", None),
        ("  ", None),
        (None, None),
        (1663747667, datetime(2022, 9, 21, 8, 7, 47, tzinfo=UTC)),
        (datetime(2022, 9, 21, 8, 7, 47), datetime(2022, 9, 21, 8, 7, 47, tzinfo=UTC)),
        (
            datetime(2022, 9, 21, 10, 7, 47, tzinfo=timezone(timedelta(hours=2))),
            datetime(2022, 9, 21, 8, 7, 47, tzinfo=UTC),
        ),
    ],
)
def test_parse_datetime(value: object, expected: datetime | None) -> None:
    parsed = parse_datetime(value)
    assert parsed == expected
    if parsed is not None:
        assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "bad", ["yesterday", "2022-13-01", "13/45/2022", "/Date(abc)/", "/Date(99999999999999999999)/", 10**20, True]
)
def test_parse_datetime_rejects_garbage(bad: object) -> None:
    with pytest.raises(InputError) as err:
        parse_datetime(bad)
    assert err.value.message.startswith("not a date: ")


@given(st.text(max_size=40))
def test_parse_datetime_never_raises_anything_but_input_error(text: str) -> None:
    try:
        parsed = parse_datetime(text)
    except InputError:
        return
    assert parsed is None or parsed.tzinfo is UTC


@given(st.text(max_size=40))
def test_parse_size_and_timespan_never_raise_anything_but_input_error(text: str) -> None:
    for parse in (parse_size, parse_timespan_days, parse_bool):
        try:
            parse(text)
        except InputError:
            pass


_MOMENTS = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))


@given(_MOMENTS)
def test_exchange_date_strings_round_trip(moment: datetime) -> None:
    ticks = f"{moment.microsecond:06d}0"  # .NET writes seven fractional digits
    base = moment.strftime("%Y-%m-%dT%H:%M:%S.") + ticks
    assert parse_datetime(base + "+00:00") == moment
    assert parse_datetime(base + "Z") == moment
    millis = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    epoch_ms = (millis - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    assert parse_datetime(f"/Date({epoch_ms})/") == millis


# ------------------------------------------------------------------------------------------------- timespans


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("365.00:00:00", 365),
        ("2555.00:00:00", 2555),
        ("00:00:00", 0),
        ("01:30:00", 0),
        ("1.12:00:00", 1),
        ("30.23:59:59", 30),
        ("14.00:00:00.5000000", 14),
        ("-1.00:00:00", -1),
        ("Unlimited", None),
        ("unlimited", None),
        ("", None),
        (None, None),
        (365, 365),
        (365.9, 365),
        ("365", 365),
        (timedelta(days=7, hours=5), 7),
        ("P365D", 365),
        ("P2W", 14),
        ("PT48H", 2),
    ],
)
def test_parse_timespan_days(value: object, expected: int | None) -> None:
    assert parse_timespan_days(value) == expected


@pytest.mark.parametrize("bad", ["forever", "1 year", "P", "12:", True])
def test_parse_timespan_rejects_garbage(bad: object) -> None:
    with pytest.raises(InputError) as err:
        parse_timespan_days(bad)
    assert err.value.message.startswith("not a duration: ")


@given(st.integers(min_value=0, max_value=100_000), st.integers(0, 23), st.integers(0, 59), st.integers(0, 59))
def test_timespans_round_trip(days: int, hours: int, minutes: int, seconds: int) -> None:
    clock = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    text = f"{days}.{clock}" if days else clock
    assert parse_timespan_days(text) == days


# ----------------------------------------------------------------------------------------------------- bools


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        ("True", True),
        ("False", False),
        ("true", True),
        ("$true", True),
        ("$False", False),
        ("1", True),
        ("0", False),
        ("yes", True),
        ("No", False),
        (1, True),
        (0, False),
    ],
)
def test_parse_bool(value: object, expected: bool) -> None:
    assert parse_bool(value) is expected


def test_parse_bool_default_and_garbage() -> None:
    assert parse_bool(None) is False
    assert parse_bool(None, True) is True
    assert parse_bool("", True) is True
    with pytest.raises(InputError) as err:
        parse_bool("maybe")
    assert err.value.message == "not a true/false value: 'maybe'"


# ------------------------------------------------------------------------------------------------- hold GUIDs

GUID = "7cfb30345d454ac0a989ab3041051209"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (f"mbx{GUID}:2", GUID),
        (f"mbx{GUID}:1", GUID),
        (f"skp{GUID}:3", GUID),
        (f"grp{GUID}:3", GUID),
        (f"-mbx{GUID}", GUID),
        (f"UniH{GUID}", GUID),
        ("UniH7cfb3034-5d45-4ac0-a989-ab3041051209", GUID),
        (f"cld{GUID}", GUID),
        (GUID, GUID),
        (GUID.upper(), GUID),
        ("7cfb3034-5d45-4ac0-a989-ab3041051209", GUID),
        ("{7CFB3034-5D45-4AC0-A989-AB3041051209}", GUID),
        (f"  mbx{GUID.upper()}:2 ", GUID),
        ("mystery:2", "mystery"),
        ("", ""),
    ],
)
def test_strip_prefix_guid(raw: str, expected: str) -> None:
    assert strip_prefix_guid(raw) == expected


def test_normalise_guid() -> None:
    assert normalise_guid("{7CFB3034-5D45-4AC0-A989-AB3041051209}") == GUID
    assert normalise_guid(None) == ""


# ------------------------------------------------------------------------------------------ mailbox locations

DB = "5f6a7b8c-1111-2222-3333-444455556666"


def test_mailbox_location_kinds_from_exchange_strings() -> None:
    values = [
        f"1;0d4bf2b3-0a7e-4d41-a3f3-3f2a8b1c1d01;Primary;contoso.onmicrosoft.com;{DB}",
        f"1;0d4bf2b3-0a7e-4d41-a3f3-3f2a8b1c1d02;MainArchive;contoso.onmicrosoft.com;{DB}",
        f"1;0d4bf2b3-0a7e-4d41-a3f3-3f2a8b1c1d03;AuxArchive;contoso.onmicrosoft.com;{DB}",
        f"1;0d4bf2b3-0a7e-4d41-a3f3-3f2a8b1c1d04;AuxArchive;contoso.onmicrosoft.com;{DB}",
    ]
    assert mailbox_location_kinds(values) == ["Primary", "MainArchive", "AuxArchive", "AuxArchive"]


def test_mailbox_location_kinds_is_lenient() -> None:
    values = [
        "auxprimary;1;x",  # known token anywhere, any case
        "2;guid;ComponentShared",
        "1;guid;FutureKind;domain",  # unknown kind: third field
        "no-kind-here",  # nothing to take
        "",
    ]
    assert mailbox_location_kinds(values) == ["AuxPrimary", "ComponentShared", "FutureKind"]
    assert mailbox_location_kinds(f"1;g;Primary;d;{DB}") == ["Primary"]
    assert mailbox_location_kinds(None) == []
    assert mailbox_location_kinds([]) == []
