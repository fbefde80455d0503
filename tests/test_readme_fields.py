"""README "What the analysis says": its JSON field list is the JSON the code writes (issue 12, Done when)."""

from __future__ import annotations

import re
from pathlib import Path

from imm.services.inventory_view import JSON_FIELDS

README = Path(__file__).resolve().parents[1] / "README.md"


def _paragraph(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"**{title}**")
    return text[start : text.index("\n\n", start)]


def test_the_json_field_list_names_every_field_and_no_other() -> None:
    listed = set(re.findall(r"`([a-z_]+)`", _paragraph("JSON fields")))
    sizes = set(re.findall(r"`([a-z_]+)`", _paragraph("Sizes")))  # "sizes (above, …)" refers to these
    assert set(JSON_FIELDS) <= listed | sizes, sorted(set(JSON_FIELDS) - listed - sizes)
    assert listed <= set(JSON_FIELDS), sorted(listed - set(JSON_FIELDS))
