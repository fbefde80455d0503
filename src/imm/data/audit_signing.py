"""Keying the audit log: an Ed25519 key per profile, signed rows, checkpoints and anchors, and external witnesses.

The hash chain (``imm.data.audit_chain``) detects a row edited, deleted or moved, but whoever can write the database
can recompute the whole chain. A key kept *outside* the database closes that gap:

- **Row signatures.** Once a log is keyed, imm signs every row it appends (the message is
  ``imm-audit/v1/row/<row_hash>``) and every prune checkpoint (``imm-audit/v1/checkpoint/<checkpoint_hash>``) in
  the same transaction; the signatures live in ``audit_signatures``. A row or checkpoint at or after the key's
  ``keyed_from`` ids without a valid signature was written by something that does not hold the key: a forged
  append with a correctly computed hash, a fake prune checkpoint, or a recomputed chain.
- **Anchors.** ``imm audit anchor`` signs the head of the log (row id, row hash, its time, the row count, the
  number of checkpoints) as a JSON document chained to the previous anchor, stores it in ``audit_anchors`` and
  appends it to a *witness* the database's writer cannot rewrite: an append-only JSON Lines file, syslog, or stdout
  for a pipeline. ``imm audit verify --anchors FILE`` checks the database against the witness: a truncated tail,
  a recomputed chain, an anchor missing on either side, a bad signature.

The key file (JSON, mode 0600, in ``audit-keys/`` beside the profile's database unless ``audit_key_path`` says
otherwise) holds the raw private and public keys (base64) and ``keyed_from``: the first row and checkpoint ids the
key signs. An OS keyring is not used: imm runs mostly on headless Linux hosts without one.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from imm.data.audit_chain import canonical_json
from imm.errors import InputError, StoreError

if TYPE_CHECKING:
    from imm.config import Profile

KEY_FORMAT = "imm-audit-key"
ANCHOR_FORMAT = "imm-audit-anchor"
ANCHOR_FIELDS = (
    "format",
    "version",
    "anchor_id",
    "timestamp",
    "tenant",
    "head_id",
    "head_hash",
    "head_timestamp",
    "row_count",
    "checkpoint_count",
    "prev_anchor_hash",
    "key_id",
)
WITNESS_STDOUT = ("-", "stdout")
WITNESS_SYSLOG = "syslog"


def row_message(row_hash: str) -> bytes:
    return f"imm-audit/v1/row/{row_hash}".encode()


def checkpoint_message(checkpoint_hash: str) -> bytes:
    return f"imm-audit/v1/checkpoint/{checkpoint_hash}".encode()


def anchor_hash(anchor: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of the anchor's fields (the signed message is that JSON text)."""
    return hashlib.sha256(anchor_message(anchor)).hexdigest()


def anchor_message(anchor: Mapping[str, Any]) -> bytes:
    return canonical_json({name: anchor.get(name) for name in ANCHOR_FIELDS}).encode("utf-8")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def key_id_of(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


class PublicKey:
    """Verifies signatures; what an auditor needs (``imm audit key`` prints it)."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._key = Ed25519PublicKey.from_public_bytes(raw)
        self.key_id = key_id_of(raw)

    @property
    def b64(self) -> str:
        return _b64(self.raw)

    def verifies(self, message: bytes, signature: str | None) -> bool:
        if not signature:
            return False
        try:
            self._key.verify(base64.b64decode(signature, validate=True), message)
        except (InvalidSignature, ValueError, TypeError):
            return False
        return True


class AuditKey(PublicKey):
    """The profile's signing key, loaded from (or created in) its key file."""

    def __init__(self, private: Ed25519PrivateKey, path: Path, keyed_from: Mapping[str, int]) -> None:
        from cryptography.hazmat.primitives import serialization

        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        super().__init__(raw)
        self._private = private
        self.path = path
        self.keyed_from_row = int(keyed_from.get("row_id", 1))
        self.keyed_from_checkpoint = int(keyed_from.get("checkpoint_id", 1))

    def sign(self, message: bytes) -> str:
        return _b64(self._private.sign(message))

    @classmethod
    def load(cls, path: Path) -> AuditKey | None:
        """The key in ``path``, or None when there is none. A damaged file is a one-line error."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read the audit key {path}: {exc.strerror or exc}") from None
        try:
            data = json.loads(text)
            if data.get("format") != KEY_FORMAT or data.get("algorithm") != "Ed25519":
                raise ValueError("not an imm audit key")
            private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(data["private_key"], validate=True))
            keyed_from = {k: int(v) for k, v in dict(data.get("keyed_from") or {}).items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreError(
                f"the audit key {path} is damaged ({exc})",
                hint="restore it from your backup; without it signed rows cannot be verified",
            ) from None
        return cls(private, path, keyed_from)

    @classmethod
    def create(cls, path: Path, *, row_id: int, checkpoint_id: int, created_at: str) -> AuditKey:
        """A new key file (0600, written once: an existing key is never replaced)."""
        from cryptography.hazmat.primitives import serialization

        private = Ed25519PrivateKey.generate()
        raw_private = private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        raw_public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        document = {
            "format": KEY_FORMAT,
            "version": 1,
            "algorithm": "Ed25519",
            "key_id": key_id_of(raw_public),
            "public_key": _b64(raw_public),
            "private_key": _b64(raw_private),
            "created_at": created_at,
            "keyed_from": {"row_id": row_id, "checkpoint_id": checkpoint_id},
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise InputError(f"an audit key already exists at {path}") from None
        except OSError as exc:
            raise InputError(f"cannot create the audit key {path}: {exc.strerror or exc}") from None
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(document, indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return cls(private, path, document["keyed_from"])  # type: ignore[arg-type]


@dataclass(frozen=True)
class AuditKeying:
    """Where the profile's key lives, where anchors are witnessed, and whether every change is anchored."""

    key_path: Path
    witness: str | None = None  # a JSON Lines file path, "syslog", or "-"/"stdout"
    auto_anchor: bool = False

    @staticmethod
    def default_key_path(database_path: Path) -> Path:
        return database_path.parent / "audit-keys" / f"{database_path.name}.key.json"

    @classmethod
    def from_profile(cls, profile: Profile) -> AuditKeying:
        key_path = profile.audit_key_path or cls.default_key_path(profile.database_path)
        return cls(key_path, profile.audit_witness or None, profile.audit_auto_anchor)


def append_witness(witness: str, anchor: Mapping[str, Any]) -> None:
    """Append one anchor line to the witness; a failure is a one-line error (the anchor is then not recorded)."""
    line = json.dumps(dict(anchor), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if witness in WITNESS_STDOUT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        return
    if witness == WITNESS_SYSLOG:
        import syslog

        syslog.openlog("imm-audit", 0, syslog.LOG_AUTH)
        syslog.syslog(syslog.LOG_NOTICE, line)
        return
    path = Path(os.path.expanduser(witness))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StoreError(f"cannot append the anchor to the witness {path}: {exc.strerror or exc}") from None


def read_witness(path: Path) -> list[dict[str, Any]]:
    """The anchors of a witness file (JSON Lines), in file order; a line that is not an anchor is an error."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--anchors {path}: {exc.strerror or exc}") from None
    anchors: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            raise InputError(f"--anchors {path}:{number}: not a JSON line") from None
        if not isinstance(value, dict) or value.get("format") != ANCHOR_FORMAT:
            raise InputError(f"--anchors {path}:{number}: not an imm audit anchor")
        value["_line"] = number
        anchors.append(value)
    return anchors


@dataclass(frozen=True)
class KeyFinding:
    """The first signature problem found (``problem`` None when all is well) and what the signatures cover."""

    problem: str | None = None
    bad_table: str | None = None
    bad_id: int | None = None
    signed_rows: int = 0
    uncovered_rows: int = 0
    anchors_checked: int = 0


def check_signatures(
    key: PublicKey,
    keyed_from_row: int,
    keyed_from_checkpoint: int,
    rows: Iterable[tuple[int, str]],
    checkpoints: Iterable[Mapping[str, Any]],
    anchors: Iterable[Mapping[str, Any]],
    signatures: Mapping[tuple[str, int], str],
    row_hashes: Mapping[int, str],
) -> KeyFinding:
    """Every row and checkpoint from ``keyed_from`` on must carry a valid signature; every stored anchor must be
    validly signed, chained, and (unless pruned since) match the row it names. Rows after the last row a signature
    or anchor covers are counted as uncovered (a row's hash covers every row before it)."""
    for cp in checkpoints:
        cid = int(cp["id"])
        if cid < keyed_from_checkpoint:
            continue
        if not key.verifies(checkpoint_message(str(cp["checkpoint_hash"])), signatures.get(("checkpoint", cid))):
            what = "has no signature" if ("checkpoint", cid) not in signatures else "has a bad signature"
            return KeyFinding(
                f"checkpoint {cid} {what}: it was not written by imm with this profile's audit key (a fake prune)",
                "audit_checkpoints",
                cid,
            )
    checkpoints = list(checkpoints)
    first_kept = int(checkpoints[-1]["first_kept_id"]) if checkpoints else 1
    covered_through = 0
    signed = 0
    for rid, rhash in rows:
        sig = signatures.get(("row", rid))
        if rid < keyed_from_row and sig is None:
            continue
        if not key.verifies(row_message(rhash), sig):
            what = "has no signature" if sig is None else "has a bad signature"
            return KeyFinding(
                f"row {rid} {what}: it was not written by imm with this profile's audit key "
                "(a forged row, or the chain was recomputed)",
                "audit_log",
                rid,
            )
        signed += 1
        covered_through = rid
    prev = None
    checked = 0
    for anchor in anchors:
        aid = int(anchor["anchor_id"])
        if not key.verifies(anchor_message(anchor), anchor.get("signature")):
            return KeyFinding(f"anchor {aid} has a bad signature", "audit_anchors", aid)
        if prev is not None and anchor.get("prev_anchor_hash") != prev:
            return KeyFinding(f"anchor {aid} does not link to the anchor before it", "audit_anchors", aid)
        head = int(anchor["head_id"])
        stored = row_hashes.get(head)
        if stored is None and head >= first_kept:
            return KeyFinding(f"row {head}, which anchor {aid} signed, is missing: rows were cut", "audit_log", head)
        if stored is not None and stored != anchor.get("head_hash"):
            return KeyFinding(
                f"row {head} no longer has the hash anchor {aid} signed: the chain was recomputed", "audit_log", head
            )
        covered_through = max(covered_through, head)
        prev = anchor_hash(anchor)
        checked += 1
    uncovered = sum(1 for rid in row_hashes if rid > covered_through)
    return KeyFinding(signed_rows=signed, uncovered_rows=uncovered, anchors_checked=checked)


def check_witness(
    key: PublicKey,
    witness: list[dict[str, Any]],
    stored: Mapping[int, Mapping[str, Any]],
    row_hashes: Mapping[int, str],
    checkpoints: Sequence[Mapping[str, Any]],
) -> tuple[str | None, int | None]:
    """The database against the anchors of an external witness: (problem, row or anchor id) or (None, None).

    Names which check failed: a bad signature, an anchor missing from the witness or from the database, a
    truncated tail, a recomputed chain, rows deleted under an anchor."""
    ids = sorted(row_hashes)
    last_row = ids[-1] if ids else None
    first_kept = int(checkpoints[-1]["first_kept_id"]) if checkpoints else 1
    previous: Mapping[str, Any] | None = None
    for anchor in witness:
        aid = int(anchor.get("anchor_id") or 0)
        where = f"anchor {aid} (witness line {anchor['_line']})"
        if not key.verifies(anchor_message(anchor), anchor.get("signature")):
            return f"bad signature: {where} is not signed by this profile's audit key", aid
        if previous is not None:
            expected = int(previous["anchor_id"]) + 1
            if aid != expected:
                missing = f"anchor {expected}" if aid == expected + 1 else f"anchors {expected}-{aid - 1}"
                return f"missing anchor: {missing} missing from the witness file before {where}", expected
            if anchor.get("prev_anchor_hash") != anchor_hash(previous):
                return f"missing anchor: {where} does not link to the anchor before it in the witness", aid
        head = int(anchor["head_id"])
        if head >= first_kept:
            if last_row is None or head > last_row:
                ends = f"the log ends at row {last_row}" if last_row is not None else "the log has no rows"
                return f"truncated tail: row {head}, which {where} signed, is missing ({ends})", head
            if head not in row_hashes:
                return f"rows deleted: row {head}, which {where} signed, is missing", head
            if row_hashes[head] != anchor.get("head_hash"):
                return f"recomputed chain: row {head} has a different hash than {where} signed", head
            pruned_since = sum(
                int(cp["pruned_count"]) for cp in checkpoints if int(cp["id"]) > int(anchor["checkpoint_count"])
            )
            present = bisect.bisect_right(ids, head)
            expected_rows = int(anchor["row_count"]) - pruned_since
            if present != expected_rows:
                return (
                    f"rows deleted: {where} counted {expected_rows} rows up to row {head}, the database has {present}",
                    head,
                )
        own = stored.get(aid)
        if own is None:
            return f"missing anchor: {where} is missing from the database", aid
        if own.get("anchor_hash") != anchor_hash(anchor):
            return f"missing anchor: {where} differs from anchor {aid} in the database (replaced)", aid
        previous = anchor
    last_witnessed = int(previous["anchor_id"]) if previous is not None else 0
    later = sorted(aid for aid in stored if aid > last_witnessed)
    if later:
        return (
            f"missing anchor: anchor {later[0]} of the database is missing from the witness file "
            f"(the witness ends {f'at anchor {last_witnessed}' if last_witnessed else 'with no anchor'})",
            later[0],
        )
    return None, None
