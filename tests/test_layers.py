"""The layering rule (ARCHITECTURE.md): dependencies point down, nothing points up, and each Exchange value has
one reader (imm.domain.parsing)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "imm"

# What each package may not import (a higher layer, or the simulator).
FORBIDDEN = {
    "services": ("imm.cli",),
    "session": ("imm.cli", "imm.services"),
    "domain": ("imm.cli", "imm.services", "imm.session", "imm.exchange", "imm.auth"),
    # data and exchange may use the domain's pure readers (design: CLI → services → domain ← data/exchange)
    "data": ("imm.cli", "imm.services", "imm.session", "imm.exchange", "imm.auth"),
    "exchange": ("imm.cli", "imm.services", "imm.session", "imm.data"),
    "auth": ("imm.cli", "imm.services", "imm.session", "imm.domain", "imm.data", "imm.exchange"),
    "serialise": ("imm.cli", "imm.services", "imm.session", "imm.domain", "imm.data", "imm.exchange"),
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _modules(layer: str) -> list[Path]:
    folder = SRC / layer
    return sorted(folder.rglob("*.py")) if folder.is_dir() else [SRC / f"{layer}.py"]


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_layer_imports_a_higher_one(layer: str) -> None:
    upward = [
        f"{path.relative_to(SRC)} imports {name}"
        for path in _modules(layer)
        for name in _imports(path)
        if name.startswith(FORBIDDEN[layer]) and any(name == f or name.startswith(f + ".") for f in FORBIDDEN[layer])
    ]
    assert upward == []


def test_no_module_outside_the_simulator_imports_it_except_the_commands_that_start_it() -> None:
    allowed = {"cli/simulator_cmds.py", "cli/demo_cmd.py", "services/demo.py"}
    found = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if "simulator" not in path.relative_to(SRC).parts[:1]
        and any(n.startswith("imm.simulator") for n in _imports(path))
    ]
    assert sorted(set(found) - allowed) == []


def test_readers_of_exchange_values_live_only_in_domain_parsing() -> None:
    """No module besides imm.domain.parsing (and the simulator, which must not share imm's readings) defines its
    own boolean, duration, GUID or list reader."""
    copies = {"_truthy", "_duration_days", "_norm_guid", "_as_list", "_as_bool", "_parse_bool", "_to_bool"}
    found = [
        f"{path.relative_to(SRC)}: {node.name}"
        for path in SRC.rglob("*.py")
        if path.relative_to(SRC).parts[0] != "simulator"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef) and node.name in copies
    ]
    assert found == []
