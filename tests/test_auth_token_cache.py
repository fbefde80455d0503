"""The persisted token cache: file modes, a damaged file set aside, the plaintext warning once, msal's saved
discovery. Real msal and msal-extensions against the served simulator."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import make_simulator
from imm.auth import AuthenticationError, Authenticator
from imm.auth.token_cache import PLAINTEXT_WARNING
from imm.simulator import Simulator

TENANT = "6f1b7c2e-3d4a-4b5c-9e8f-0a1b2c3d4e5f"
CLIENT = "fb78d390-0c51-40cd-8e17-fdbfab77341b"
ADMIN = "admin@contoso.onmicrosoft.com"


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Simulator]:
    with make_simulator(tmp_path, mailboxes=0, auto_approve_after=0.0) as served:
        yield served


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def authenticator(sim: Simulator, cache: Path, warnings: list[str], **options: Any) -> Authenticator:
    return Authenticator(
        CLIENT,
        TENANT,
        cache,
        authority_host=sim.base_url,
        scopes=[f"{sim.base_url}/.default"],
        ca_bundle=sim.ca_path,
        prompt=lambda message: None,
        warn=warnings.append,
        **options,
    )


def test_new_cache_is_private(sim: Simulator, tmp_path: Path) -> None:
    cache = tmp_path / "home" / "tokens" / "default.json"
    warnings: list[str] = []
    auth = authenticator(sim, cache, warnings, private_cache_folder=True)
    auth.authenticate()
    assert mode(cache.parent) == 0o700
    assert mode(cache) == 0o600
    for path in cache.parent.iterdir():
        assert mode(path) & 0o077 == 0, path
    assert sorted(p.name for p in cache.parent.iterdir()) == [
        "default.json",
        "default.json.http.json",
        "default.json.plaintext-notice",
    ]
    assert auth.cache_location == cache and auth.cache_encrypted is False


def test_existing_world_readable_cache_is_fixed(sim: Simulator, tmp_path: Path) -> None:
    folder = tmp_path / "tokens"
    folder.mkdir()
    os.chmod(folder, 0o755)
    cache = folder / "c.json"
    cache.write_text("{}")
    os.chmod(cache, 0o644)
    authenticator(sim, cache, [], private_cache_folder=True).authenticate()
    assert mode(folder) == 0o700 and mode(cache) == 0o600


def test_a_folder_the_user_chose_is_left_alone_but_the_file_is_fixed(sim: Simulator, tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    os.chmod(folder, 0o755)
    cache = folder / "c.json"
    cache.write_text("{}")
    os.chmod(cache, 0o644)
    authenticator(sim, cache, []).authenticate()
    assert mode(folder) == 0o755 and mode(cache) == 0o600


@pytest.mark.parametrize(
    "content",
    [
        '{"AccessToken": {"x": ',
        "[1, 2, 3]",
        "\udcff not text",
        # valid JSON of the wrong shape: msal itself would fail on these with a TypeError
        '{"AccessToken": 5}',
        '{"AccessToken": []}',
        '{"RefreshToken": {"x": 5}}',
    ],
)
def test_damaged_cache_is_set_aside_and_sign_in_proceeds(sim: Simulator, tmp_path: Path, content: str) -> None:
    cache = tmp_path / "tokens" / "c.json"
    cache.parent.mkdir()
    cache.write_bytes(content.encode("utf-8", "surrogateescape"))
    warnings: list[str] = []
    auth = authenticator(sim, cache, warnings)
    auth.authenticate()
    aside = list(cache.parent.glob("c.json.corrupt-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes() == content.encode("utf-8", "surrogateescape")
    assert mode(aside[0]) == 0o600
    damaged = [w for w in warnings if "was damaged" in w]
    assert len(damaged) == 1
    assert damaged[0].startswith(f"The token cache {cache} was damaged (")
    assert damaged[0].endswith(f"it was set aside as {aside[0].name}. Sign in again.")
    assert json.loads(cache.read_text())["Account"]
    assert auth.account() is not None and auth.account()["username"] == ADMIN  # type: ignore[index]


def test_plaintext_warning_is_shown_once(sim: Simulator, tmp_path: Path) -> None:
    cache = tmp_path / "tokens" / "c.json"
    warnings: list[str] = []
    first = authenticator(sim, cache, warnings)
    if first.cache_encrypted:  # a machine with a working keyring: nothing to warn about
        assert warnings == []
        return
    first.authenticate()
    authenticator(sim, cache, warnings).get_token()
    authenticator(sim, cache, warnings).logout()
    assert warnings == [PLAINTEXT_WARNING.format(path=cache)]
    assert warnings[0] == (
        f"The token cache {cache} is stored unencrypted (no system keyring is available here); "
        "it is readable only by you (mode 0600)."
    )
    marker = cache.with_name("c.json.plaintext-notice")
    assert marker.is_file() and mode(marker) == 0o600


def test_a_folder_in_place_of_the_cache_file_is_an_error(sim: Simulator, tmp_path: Path) -> None:
    cache = tmp_path / "c.json"
    auth = authenticator(sim, cache, [])
    cache.mkdir()
    with pytest.raises(AuthenticationError) as caught:
        auth.authenticate()
    assert caught.value.error_code == "token_cache_error" and caught.value.exit_code == 3
    assert caught.value.message.startswith(f"Cannot use the token cache {cache}:")


def test_unreadable_cache_is_an_error_not_set_aside(sim: Simulator, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    cache = tmp_path / "c.json"
    cache.write_text("{}")
    os.chmod(cache, 0o000)
    with pytest.raises(AuthenticationError) as caught:
        authenticator(sim, cache, []).authenticate()
    assert caught.value.error_code == "token_cache_error"
    assert not list(tmp_path.glob("c.json.corrupt-*"))


def test_saved_discovery_spares_a_request_and_a_damaged_one_is_ignored(sim: Simulator, tmp_path: Path) -> None:
    cache = tmp_path / "c.json"
    authenticator(sim, cache, []).authenticate()
    saved = cache.with_name("c.json.http.json")
    entries = json.loads(saved.read_text())["entries"]
    assert [e["key"].split(" ")[0] for e in entries] == ["GET"]
    assert ".well-known/openid-configuration" in entries[0]["key"] and entries[0]["status"] == 200
    authenticator(sim, cache, []).get_token()
    assert sim.identity.counters["discovery"] == 1
    saved.write_text("{ not json")
    authenticator(sim, cache, []).get_token()
    assert sim.identity.counters["discovery"] == 2
    assert json.loads(saved.read_text())["entries"]
