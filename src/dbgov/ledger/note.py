"""Signed checkpoints: C2SP signed-note, tlog-checkpoint and tlog-cosignature with Ed25519.

The ledger commits to its Merkle tree head by signing a checkpoint (origin, size,
root) in the signed-note format that Go's sumdb, Sigstore and Tessera logs use,
so standard tooling and witnesses can check dbgov's log. Witnesses add
timestamped cosignatures; an auditor trusts a checkpoint only once enough known
keys have signed it, then proves consistency before accepting a newer one.

Formats (text is UTF-8; ``—`` is U+2014 EM DASH):

- note (c2sp.org/signed-note): ``text`` ending in a newline, a blank line, then
  one or more lines ``— <key name> base64(key ID || signature)``.
- checkpoint (c2sp.org/tlog-checkpoint): the note text
  ``<origin>\\n<size>\\n<base64 root>\\n`` plus optional extension lines.
- cosignature (c2sp.org/tlog-cosignature, Ed25519 ``cosignature/v1``): a note
  signature line whose signature is ``timestamp (u64 big-endian) || Ed25519
  signature`` over ``cosignature/v1\\ntime <timestamp>\\n`` + the checkpoint text.
- keys (golang.org/x/mod/sumdb/note): verifier ``<name>+<hex key ID>+base64(type
  || public key)``, signer ``PRIVATE+KEY+<name>+<hex key ID>+base64(type || seed)``;
  key ID = ``SHA-256(name || 0x0A || type || public key)[:4]``, type 0x01 for
  note signatures and 0x04 for cosignatures.

Everything is pure: the caller supplies keys, bytes and, for cosignatures, the
timestamp.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "ALG_COSIGNATURE_V1",
    "ALG_ED25519",
    "MAX_NOTE_SIZE",
    "MAX_SIGNATURES",
    "BadSignatureError",
    "Checkpoint",
    "MalformedNoteError",
    "NoteError",
    "SignatureLine",
    "Signer",
    "UnknownKeyError",
    "Verifier",
    "cosign",
    "generate_signer",
    "key_id",
    "open_note",
    "parse_signature_line",
    "sign_note",
    "verify_cosignature",
    "verify_note",
]

ALG_ED25519: Final = 0x01
"""signed-note §Signature types: Ed25519 signatures over the note text."""
ALG_COSIGNATURE_V1: Final = 0x04
"""signed-note §Signature types: timestamped Ed25519 witness cosignatures."""

MAX_NOTE_SIZE: Final = 1 << 20
"""Notes above 1 MiB are refused before any parsing."""
MAX_SIGNATURES: Final = 100
"""signed-note: verifiers SHOULD limit signatures but MUST accept at least 16."""

_EM_DASH_PREFIX: Final = "\u2014 "
_COSIGNATURE_HEADER: Final = b"cosignature/v1\ntime "
_MAX_TIMESTAMP: Final = (1 << 63) - 1
_ED25519_SIG_SIZE: Final = 64
_HASH_SIZE: Final = 32
_KEY_ALGS: Final = (ALG_ED25519, ALG_COSIGNATURE_V1)
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")


class NoteError(Exception):
    """A note or cosignature was not accepted."""


class MalformedNoteError(NoteError):
    """The bytes are not a well-formed note, checkpoint or signature line."""


class UnknownKeyError(NoteError):
    """No signature is from a key the caller trusts (signed-note: the note MUST be rejected)."""


class BadSignatureError(NoteError):
    """A signature from a trusted key does not verify: the note was tampered with."""


def key_id(name: str, alg: int, public_key: bytes) -> bytes:
    """``SHA-256(name || 0x0A || alg || public key)[:4]`` (signed-note §Signatures)."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public_key).digest()[:4]


def _check_name(name: str) -> None:
    # signed-note §Format: "Key names MUST be non-empty and MUST NOT contain any
    # Unicode spaces or plus (U+002B) characters." Controls are refused too, as
    # no note may carry them.
    if not name or "+" in name or any(c.isspace() or c < " " for c in name):
        raise ValueError(f"invalid key name {name!r}: it must be non-empty, without spaces or '+'")


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


@dataclass(frozen=True, slots=True)
class Verifier:
    """A trusted public key: checks note signatures (0x01) or cosignatures (0x04)."""

    name: str
    alg: int
    public_key: bytes

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.alg not in _KEY_ALGS:
            raise ValueError(f"unsupported signature type 0x{self.alg:02x} for key {self.name!r}")
        if len(self.public_key) != 32:
            raise ValueError(f"Ed25519 public key has {len(self.public_key)} bytes, want 32")

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.alg, self.public_key)

    @classmethod
    def from_string(cls, vkey: str) -> Verifier:
        """Parse ``<name>+<hex key ID>+base64(type || public key)``; the ID MUST match."""
        parts = vkey.split("+", 2)
        if len(parts) != 3 or not _HEX8.fullmatch(parts[1]):
            raise ValueError("malformed verifier key: want <name>+<8 hex digits>+<base64 key>")
        name, hex_id, material = parts
        try:
            raw = _b64decode(material)
        except (binascii.Error, UnicodeEncodeError):
            raise ValueError(f"malformed verifier key {name!r}: key is not base64") from None
        if not raw:
            raise ValueError(f"malformed verifier key {name!r}: empty key")
        verifier = cls(name, raw[0], raw[1:])
        if verifier.key_id != bytes.fromhex(hex_id):
            raise ValueError(
                f"verifier key {name!r}: key ID {hex_id} does not match the key "
                f"(want {verifier.key_id.hex()})"
            )
        return verifier

    def __str__(self) -> str:
        material = base64.b64encode(bytes([self.alg]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{material}"

    def verify(self, text: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (without its key ID) signs the note ``text``."""
        message = text
        if self.alg == ALG_COSIGNATURE_V1:
            if len(signature) != 8 + _ED25519_SIG_SIZE:
                return False
            timestamp = int.from_bytes(signature[:8], "big")
            if timestamp > _MAX_TIMESTAMP:
                return False
            message = _cosigned_message(timestamp, text)
            signature = signature[8:]
        elif len(signature) != _ED25519_SIG_SIZE:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


class Signer:
    """A private Ed25519 key with its name; ``str()`` never shows the seed."""

    __slots__ = ("_key", "_seed", "verifier")

    def __init__(self, name: str, seed: bytes, alg: int = ALG_ED25519) -> None:
        if len(seed) != 32:
            raise ValueError(f"Ed25519 seed has {len(seed)} bytes, want 32")
        self._seed = seed
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        public = self._key.public_key().public_bytes_raw()
        self.verifier: Final = Verifier(name, alg, public)

    @property
    def name(self) -> str:
        return self.verifier.name

    @property
    def alg(self) -> int:
        return self.verifier.alg

    @property
    def key_id(self) -> bytes:
        return self.verifier.key_id

    @classmethod
    def from_string(cls, skey: str) -> Signer:
        """Parse ``PRIVATE+KEY+<name>+<hex key ID>+base64(type || seed)``; the ID MUST match."""
        parts = skey.split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"] or not _HEX8.fullmatch(parts[3]):
            raise ValueError(
                "malformed signer key: want PRIVATE+KEY+<name>+<8 hex digits>+<base64 key>"
            )
        _, _, name, hex_id, material = parts
        try:
            raw = _b64decode(material)
        except (binascii.Error, UnicodeEncodeError):
            raise ValueError(f"malformed signer key {name!r}: key is not base64") from None
        if not raw:
            raise ValueError(f"malformed signer key {name!r}: empty key")
        signer = cls(name, raw[1:], raw[0])
        if signer.key_id != bytes.fromhex(hex_id):
            raise ValueError(
                f"signer key {name!r}: key ID {hex_id} does not match the key "
                f"(want {signer.key_id.hex()})"
            )
        return signer

    def to_string(self) -> str:
        """The secret signer key string. It MUST be kept secret."""
        material = base64.b64encode(bytes([self.alg]) + self._seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.key_id.hex()}+{material}"

    def sign(self, message: bytes) -> bytes:
        """Raw Ed25519 signature of ``message``."""
        return self._key.sign(message)

    def __repr__(self) -> str:
        return f"Signer({self.verifier})"


def generate_signer(name: str, alg: int = ALG_ED25519) -> tuple[str, str]:
    """A fresh key pair as ``(signer key string, verifier key string)``.

    Use ``alg=ALG_COSIGNATURE_V1`` for a witness key.
    """
    seed = Ed25519PrivateKey.generate().private_bytes_raw()
    signer = Signer(name, seed, alg)
    return signer.to_string(), str(signer.verifier)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's signed tree head (c2sp.org/tlog-checkpoint §Note text)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin:
            raise ValueError("checkpoint origin MUST be non-empty")
        for line in (self.origin, *self.extensions):
            if not line or any(c < " " for c in line):
                raise ValueError(
                    f"checkpoint line {line!r} MUST be non-empty, without newlines or controls"
                )
        if not 0 <= self.size < 1 << 64:
            raise ValueError(f"checkpoint size {self.size} is not a uint64")
        if len(self.root) != _HASH_SIZE:
            raise ValueError(f"checkpoint root has {len(self.root)} bytes, want {_HASH_SIZE}")

    def body(self) -> bytes:
        """The note text: ``<origin>\\n<size>\\n<base64 root>\\n`` and extension lines."""
        lines = [
            self.origin,
            str(self.size),
            base64.b64encode(self.root).decode(),
            *self.extensions,
        ]
        return ("\n".join(lines) + "\n").encode()

    @classmethod
    def from_body(cls, text: bytes) -> Checkpoint:
        """Parse a checkpoint note text, strictly: the result re-encodes to ``text``."""
        try:
            decoded = text.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedNoteError("checkpoint is not valid UTF-8") from None
        if not decoded.endswith("\n"):
            raise MalformedNoteError("checkpoint text MUST end with a newline")
        lines = decoded[:-1].split("\n")
        if len(lines) < 3:
            raise MalformedNoteError(
                f"checkpoint has {len(lines)} lines, want origin, size and root hash"
            )
        origin, size_line, root_line, *extensions = lines
        # tlog-checkpoint: size is ASCII decimal "with no leading zeroes".
        if not _DECIMAL.fullmatch(size_line):
            raise MalformedNoteError(f"checkpoint size {size_line!r} is not a canonical decimal")
        try:
            root = _b64decode(root_line)
        except (binascii.Error, UnicodeEncodeError):
            raise MalformedNoteError(f"checkpoint root {root_line!r} is not base64") from None
        try:
            checkpoint = cls(origin, int(size_line), root, tuple(extensions))
        except ValueError as exc:
            raise MalformedNoteError(str(exc)) from None
        if checkpoint.body() != text:  # e.g. non-canonical base64
            raise MalformedNoteError("checkpoint text is not in canonical form")
        return checkpoint


@dataclass(frozen=True, slots=True)
class SignatureLine:
    """One parsed ``— <name> base64(key ID || signature)`` line."""

    name: str
    key_id: bytes
    signature: bytes

    def __str__(self) -> str:
        blob = base64.b64encode(self.key_id + self.signature).decode()
        return f"{_EM_DASH_PREFIX}{self.name} {blob}\n"


def parse_signature_line(line: str) -> SignatureLine:
    """Parse one signature line, with or without its final newline."""
    line = line.removesuffix("\n")
    if not line.startswith(_EM_DASH_PREFIX):
        raise MalformedNoteError(f"signature line {line[:40]!r} does not start with '— '")
    name, sep, blob = line[len(_EM_DASH_PREFIX) :].partition(" ")
    if not sep or not blob:
        raise MalformedNoteError(f"signature line {line[:40]!r} has no signature")
    try:
        _check_name(name)
    except ValueError as exc:
        raise MalformedNoteError(str(exc)) from None
    try:
        raw = _b64decode(blob)
    except (binascii.Error, UnicodeEncodeError):
        raise MalformedNoteError(f"signature by {name!r} is not base64") from None
    if len(raw) < 5:
        raise MalformedNoteError(f"signature by {name!r} has {len(raw)} bytes, want at least 5")
    return SignatureLine(name, raw[:4], raw[4:])


def _check_note_text(data: bytes, what: str) -> str:
    # signed-note §Format: "Signed notes MUST be valid UTF-8 and MUST NOT contain
    # any ASCII control characters (those below U+0020) other than newline."
    if len(data) > MAX_NOTE_SIZE:
        raise MalformedNoteError(f"{what} is {len(data)} bytes, over the {MAX_NOTE_SIZE} limit")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedNoteError(f"{what} is not valid UTF-8 at byte {exc.start}") from None
    control = _CONTROL.search(text)
    if control:
        raise MalformedNoteError(
            f"{what} contains control character U+{ord(control.group()):04X} "
            f"at character {control.start()}"
        )
    return text


def sign_note(text: bytes, *signers: Signer) -> bytes:
    """Sign note ``text`` (e.g. ``Checkpoint.body()``) with Ed25519 (type 0x01) signers."""
    if not signers:
        raise ValueError("sign_note needs at least one signer")
    _check_note_text(text, "note text")
    if not text.endswith(b"\n"):
        raise MalformedNoteError("note text MUST end with a newline")
    lines = []
    for signer in signers:
        if signer.alg != ALG_ED25519:
            raise ValueError(
                f"signer {signer.name!r} has type 0x{signer.alg:02x}; "
                "sign_note makes 0x01 signatures, use cosign() for cosignatures"
            )
        lines.append(str(SignatureLine(signer.name, signer.key_id, signer.sign(text))))
    note = text + b"\n" + "".join(lines).encode()
    if len(note) > MAX_NOTE_SIZE:
        raise MalformedNoteError(f"signed note would be {len(note)} bytes, over {MAX_NOTE_SIZE}")
    return note


def verify_note(note: bytes, verifiers: Iterable[Verifier]) -> tuple[bytes, list[str]]:
    """Verify ``note``; return its text and the names of the keys that signed it.

    Per signed-note §Signatures, signatures from unknown keys (name and key ID
    not both matching a verifier) are ignored; a signature from a known key
    that fails makes the whole note rejected (``BadSignatureError``); a note
    with no signature from a known key is rejected (``UnknownKeyError``).
    Cosignature verifiers (type 0x04) check witness lines in the same pass.
    """
    decoded = _check_note_text(note, "note")
    split = decoded.rfind("\n\n")
    if split < 0:
        raise MalformedNoteError("note has no blank line before its signatures")
    text, block = decoded[: split + 1], decoded[split + 2 :]
    if not block.endswith("\n"):
        raise MalformedNoteError("note signature block MUST end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNoteError(
            f"note has {len(lines)} signatures, over the {MAX_SIGNATURES} limit"
        )
    known = _verifier_map(verifiers)
    text_bytes = text.encode()
    names: list[str] = []
    seen: set[tuple[str, bytes]] = set()
    sigs = [parse_signature_line(line) for line in lines]
    for sig in sigs:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            continue
        if not verifier.verify(text_bytes, sig.signature):
            raise BadSignatureError(
                f"invalid signature by {sig.name}+{sig.key_id.hex()}: the note was altered"
            )
        if (sig.name, sig.key_id) not in seen:
            seen.add((sig.name, sig.key_id))
            names.append(sig.name)
    if not names:
        raise UnknownKeyError(
            "note has no signature from a trusted key; it is signed by "
            + ", ".join(sorted({f"{s.name}+{s.key_id.hex()}" for s in sigs}))
        )
    return text_bytes, names


def open_note(note: bytes, verifiers: Iterable[Verifier]) -> tuple[Checkpoint, list[str]]:
    """``verify_note``, then parse the text as a checkpoint."""
    text, names = verify_note(note, verifiers)
    return Checkpoint.from_body(text), names


def _verifier_map(verifiers: Iterable[Verifier]) -> dict[tuple[str, bytes], Verifier]:
    known: dict[tuple[str, bytes], Verifier] = {}
    for v in verifiers:
        k = (v.name, v.key_id)
        if known.setdefault(k, v) != v:
            raise ValueError(
                f"ambiguous verifiers: two different keys for {v.name}+{v.key_id.hex()}"
            )
    return known


# --- cosignatures (c2sp.org/tlog-cosignature, Ed25519 cosignature/v1) ---------


def _cosigned_message(timestamp: int, text: bytes) -> bytes:
    # tlog-cosignature §Ed25519 signed message: "cosignature/v1", then
    # "time <timestamp>", then the whole checkpoint text.
    return _COSIGNATURE_HEADER + str(timestamp).encode() + b"\n" + text


def cosign(checkpoint_body: bytes, signer: Signer, timestamp: int) -> bytes:
    """One cosignature line ``— <name> base64(key ID || timestamp || signature)\\n``.

    ``signer`` MUST be a type 0x04 witness key; ``timestamp`` is POSIX seconds
    and MUST NOT exceed 2**63 - 1. Append the line to the signed checkpoint
    note to publish it.
    """
    if signer.alg != ALG_COSIGNATURE_V1:
        raise ValueError(
            f"signer {signer.name!r} has type 0x{signer.alg:02x}, cosignatures need a 0x04 key"
        )
    if not 0 <= timestamp <= _MAX_TIMESTAMP:
        raise ValueError(f"cosignature timestamp {timestamp} is outside 0..2**63-1")
    _check_note_text(checkpoint_body, "checkpoint")
    Checkpoint.from_body(checkpoint_body)  # only checkpoints are cosigned
    signature = signer.sign(_cosigned_message(timestamp, checkpoint_body))
    return str(
        SignatureLine(signer.name, signer.key_id, timestamp.to_bytes(8, "big") + signature)
    ).encode()


def verify_cosignature(checkpoint_body: bytes, line: bytes, verifier: Verifier) -> int:
    """Check one cosignature ``line`` over ``checkpoint_body``; return its timestamp.

    Raises ``UnknownKeyError`` if the line is not from ``verifier``,
    ``BadSignatureError`` if it does not verify, ``MalformedNoteError`` otherwise.
    """
    if verifier.alg != ALG_COSIGNATURE_V1:
        raise ValueError(f"verifier {verifier.name!r} is not a cosignature (0x04) key")
    _check_note_text(checkpoint_body, "checkpoint")
    try:
        decoded = line.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedNoteError("cosignature line is not valid UTF-8") from None
    sig = parse_signature_line(decoded)
    if (sig.name, sig.key_id) != (verifier.name, verifier.key_id):
        raise UnknownKeyError(
            f"cosignature by {sig.name}+{sig.key_id.hex()} is not from "
            f"{verifier.name}+{verifier.key_id.hex()}"
        )
    if len(sig.signature) != 8 + _ED25519_SIG_SIZE:
        raise MalformedNoteError(
            f"cosignature by {sig.name} has {len(sig.signature)} bytes, want 72"
        )
    if not verifier.verify(checkpoint_body, sig.signature):
        raise BadSignatureError(f"invalid cosignature by {sig.name}+{sig.key_id.hex()}")
    return int.from_bytes(sig.signature[:8], "big")
