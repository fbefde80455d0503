"""No secret reaches a log: ``redact``, ``redact_data`` and the ``SecretFilter`` on real log records and files."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from imm.logs import SecretFilter, redact, redact_data, setup_logging

JWT = (
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL291dGxvb2sub2ZmaWNlMzY1LmNvbSJ9"
    ".c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU"
)
REFRESH = "0.AXkA1b2c3d4e5f6g7h8i9j0kLmNoPqRsTuVwXyZ-refresh_token_value_1234567890"
PASSWORD = "Pa55w0rd!Secret"
ASSERTION = "eyJhbGciOiJQUzI1NiIsIng1dCNTMjU2IjoiYWJjIn0.eyJpc3MiOiJhcHAifQ.sig-nature_value"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----"
SECRETS = [JWT, REFRESH, PASSWORD, ASSERTION, "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "opaque-bearer-token-xyz"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer opaque-bearer-token-xyz", "Authorization: Bearer ***"),
        (f"token {JWT} end", "token ***jwt*** end"),
        (f"refresh_token={REFRESH}&scope=x", "refresh_token=***&scope=x"),
        (f'{{"password": "{PASSWORD}", "user": "a"}}', '{"password": ***, "user": "a"}'),
        (f"client_assertion={ASSERTION}", "client_assertion=***"),
        (f"key:\n{KEY}\nafter", "key:\n***private-key***\nafter"),
        ("nothing secret here: admin@contoso.com", "nothing secret here: admin@contoso.com"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redact_data_masks_secret_keys_and_values_recursively() -> None:
    data = {
        "access_token": "abc",
        "Refresh-Token": "def",
        "nested": [{"password": PASSWORD, "note": f"Bearer {JWT}"}, ("client_secret", 1)],
        "count": 3,
        "identity": "anna@contoso.com",
    }
    assert redact_data(data) == {
        "access_token": "***",
        "Refresh-Token": "***",
        "nested": [{"password": "***", "note": "Bearer ***"}, ["client_secret", 1]],
        "count": 3,
        "identity": "anna@contoso.com",
    }


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(SecretFilter())
    logger = logging.getLogger("imm.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def test_filter_redacts_message_and_arguments(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.info("token response %s for %s", {"access_token": JWT, "refresh_token": REFRESH}, "anna@contoso.com")
    logger.debug("POST body: client_assertion=%s&password=%s", ASSERTION, PASSWORD)
    logger.warning("header Authorization: Bearer %s", "opaque-bearer-token-xyz")
    text = stream.getvalue()
    for secret in SECRETS:
        assert secret not in text
    assert text.splitlines() == [
        "INFO token response {'access_token': ***, 'refresh_token': ***} for anna@contoso.com",
        "DEBUG POST body: client_assertion=***&password=***",
        "WARNING header Authorization: Bearer ***",
    ]


def test_filter_redacts_exception_text_and_args(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    try:
        raise RuntimeError(f"token endpoint failed: refresh_token={REFRESH} assertion={ASSERTION}", JWT)
    except RuntimeError:
        logger.exception("sign-in failed with %s", f"Bearer {JWT}")
    text = stream.getvalue()
    for secret in SECRETS:
        assert secret not in text
    assert text.startswith("ERROR sign-in failed with Bearer ***\nTraceback (most recent call last):")
    assert "RuntimeError: ('token endpoint failed: refresh_token=*** assertion=***" in text
    assert "'***jwt***')" in text  # the second exception argument


def test_filter_keeps_a_malformed_record(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.info("two placeholders %s %s", f"Bearer {JWT}")  # one argument missing
    assert stream.getvalue() == "INFO two placeholders %s %s\n"


@pytest.fixture
def restore_imm_logging() -> Iterator[None]:
    yield
    for name in ("imm", "msal", "httpx", "httpcore"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if getattr(handler, "_imm", False):
                logger.removeHandler(handler)
                handler.close()


def test_setup_logging_file_has_no_secrets(
    tmp_path: Path, restore_imm_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    log_path = tmp_path / "log" / "profile.log"
    setup_logging(log_path, verbose=2)
    logging.getLogger("imm.auth").debug("acquired %s", {"access_token": JWT, "refresh_token": REFRESH})
    logging.getLogger("msal.token").warning("request body password=%s", PASSWORD)
    try:
        raise ValueError(f"bad assertion client_assertion={ASSERTION}")
    except ValueError:
        logging.getLogger("imm.auth").error("failed", exc_info=True)
    for handler in logging.getLogger("imm").handlers:
        handler.flush()
    text = log_path.read_text(encoding="utf-8")
    console = capsys.readouterr().err
    for secret in SECRETS:
        assert secret not in text
        assert secret not in console
    assert "acquired {'access_token': ***, 'refresh_token': ***}" in text
    assert "request body password=***" in text
    assert "ValueError: bad assertion client_assertion=***" in text


def test_log_file_is_owner_only_also_after_rotation(tmp_path: Path, restore_imm_logging: None) -> None:
    log_path = tmp_path / "log" / "profile.log"
    setup_logging(log_path)
    file_handler = next(h for h in logging.getLogger("imm").handlers if isinstance(h, logging.FileHandler))
    logging.getLogger("imm.sync").info("synced")
    assert log_path.stat().st_mode & 0o777 == 0o600
    file_handler.doRollover()  # type: ignore[attr-defined]
    logging.getLogger("imm.sync").info("synced again")
    assert log_path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "log" / "profile.log.1").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(("verbose", "traceback_on_console"), [(0, False), (2, True)])
def test_unexpected_error_traceback_goes_to_the_file_and_to_the_console_only_with_vv(
    tmp_path: Path,
    restore_imm_logging: None,
    capsys: pytest.CaptureFixture[str],
    verbose: int,
    traceback_on_console: bool,
) -> None:
    log_path = tmp_path / "profile.log"
    setup_logging(log_path, verbose=verbose)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("imm.cli").error("unexpected error", exc_info=True, extra={"file_only": True})
    for handler in logging.getLogger("imm").handlers:
        handler.flush()
    assert "Traceback" in log_path.read_text(encoding="utf-8")
    assert ("Traceback" in capsys.readouterr().err) is traceback_on_console


def test_an_error_logged_before_logging_is_set_up_prints_no_traceback() -> None:
    """The CLI logs an unexpected error's traceback before the configuration (and so logging) may have loaded:
    without a handler on "imm", Python's last-resort handler would print it on the console."""
    import subprocess
    import sys

    code = (
        "import logging, imm.cli.main\n"
        "try:\n    raise RuntimeError('boom')\n"
        "except RuntimeError:\n"
        "    logging.getLogger('imm').error('unexpected error', exc_info=True, extra={'file_only': True})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
