"""A GUID is accepted in every form Exchange prints it: ``D`` (dashes; ExchangeGuid), ``N`` (32 hex digits, as in
InPlaceHolds values), ``B`` (braces), ``P`` (parentheses), upper case, ``urn:uuid:`` (.NET ``Guid.ToString``
formats)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from action_support import ActEnv, make_env
from imm.domain.parsing import canonical_guid

GUID = "0f8fad5b-d9cb-469f-a165-70867728950e"


@pytest.mark.parametrize(
    "text",
    [
        GUID,
        GUID.upper(),
        GUID.replace("-", ""),
        GUID.replace("-", "").upper(),
        "{" + GUID + "}",
        "(" + GUID + ")",
        f"urn:uuid:{GUID}",
        f"  {GUID}  ",
    ],
)
def test_every_form_reads_as_one_guid(text: str) -> None:
    assert canonical_guid(text) == GUID


@pytest.mark.parametrize("text", ["", "anna@contoso.com", GUID[:-1], GUID + "0", "Legal hold 2024", None])
def test_what_is_not_a_guid_is_none(text: str | None) -> None:
    assert canonical_guid(text) is None


@pytest.fixture(scope="module")
def act(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ActEnv]:
    yield from make_env(tmp_path_factory.mktemp("guids"), mailboxes=20, seed=3)


def test_imm_show_takes_every_guid_form(act: ActEnv) -> None:
    guid = sorted(row["identity"] for row in act.rows("SELECT identity FROM inactive_mailboxes"))[0]
    forms = [guid, guid.replace("-", ""), guid.replace("-", "").upper(), "{" + guid.upper() + "}", f"({guid})"]
    for form in forms:
        result, data = act.json("show", form)
        assert result.exit_code == 0, (form, result.stderr)
        assert data["identity"] == guid


def test_an_action_resolves_a_guid_without_dashes(act: ActEnv) -> None:
    guid = sorted(row["identity"] for row in act.rows("SELECT identity FROM inactive_mailboxes"))[1]
    result = act.run("holds", "show", guid.replace("-", ""), "--refresh")
    assert result.exit_code == 0, result.stderr
    assert guid in result.stdout or guid.upper() in result.stdout.upper()
