"""Signed notes, checkpoints and cosignatures against the reference implementations.

Known answers are copied from golang.org/x/mod/sumdb/note (``note_test.go``: the
PeterNeumann and EnochRoot keys and notes, its malformed-note table and key
manglings), from the c2sp.org/signed-note verifier-key example, from
c2sp.org/tlog-checkpoint and tlog-cosignature (the behind-the-sofa example) and
from github.com/transparency-dev/formats ``note/note_cosigv1_test.go`` (keys of
types 0x01 and 0x04).
"""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from dbgov.ledger.merkle import EMPTY_ROOT, leaf_hash, root_from_leaves
from dbgov.ledger.note import (
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    MAX_NOTE_SIZE,
    BadSignatureError,
    Checkpoint,
    MalformedNoteError,
    NoteError,
    SignatureLine,
    Signer,
    UnknownKeyError,
    Verifier,
    cosign,
    generate_signer,
    key_id,
    open_note,
    parse_signature_line,
    sign_note,
    verify_cosignature,
    verify_note,
)

# --- golang.org/x/mod/sumdb/note note_test.go ----------------------------------

PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb"
    "6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33W"
    "Wd1RvMc+QQ=\n"
)

# --- c2sp.org/signed-note, verifier keys example ----------------------------------

SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ON"
    "ncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)

# --- c2sp.org/tlog-checkpoint and tlog-cosignature example ----------------------

SOFA_CHECKPOINT = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)
SOFA_LOG_SIG = (
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2"
    "q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
)
SOFA_WITNESS_SIG = (
    "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2"
    "oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
)

# --- transparency-dev/formats note/note_cosigv1_test.go ------------------------

COSIG_VKEY = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"  # type 0x04
PLUS_VKEY = "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6"  # '+' inside base64

# --- dbgov's own known answers (fixed seeds; frozen after cross-checking below) --

LOG_SEED = bytes(range(32))
WITNESS_SEED = bytes(range(32, 64))
LOG_NAME = "dbgov.example/ledger"
WITNESS_NAME = "witness.example/w1"
CHECKPOINT = Checkpoint(
    LOG_NAME, 8, bytes.fromhex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")
)
CHECKPOINT_BODY = b"dbgov.example/ledger\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n"


def go_note(*sigs: str) -> bytes:
    return (GO_TEXT + "\n" + "".join(sigs)).encode()


def log_signer() -> Signer:
    return Signer(LOG_NAME, LOG_SEED)


def witness_signer() -> Signer:
    return Signer(WITNESS_NAME, WITNESS_SEED, ALG_COSIGNATURE_V1)


# --- keys -----------------------------------------------------------------------


def test_go_keys_round_trip() -> None:
    signer = Signer.from_string(PETER_SKEY)
    assert signer.name == "PeterNeumann"
    assert signer.key_id.hex() == "c74f20a3"
    assert signer.alg == ALG_ED25519
    assert signer.to_string() == PETER_SKEY
    assert str(signer.verifier) == PETER_VKEY
    assert Verifier.from_string(PETER_VKEY) == signer.verifier
    assert str(Verifier.from_string(ENOCH_VKEY)) == ENOCH_VKEY


@pytest.mark.parametrize("vkey", [PETER_VKEY, ENOCH_VKEY, SPEC_VKEY, COSIG_VKEY, PLUS_VKEY])
def test_verifier_keys_of_other_implementations(vkey: str) -> None:
    verifier = Verifier.from_string(vkey)
    assert str(verifier) == vkey
    name, hex_id, _ = vkey.split("+", 2)
    assert key_id(name, verifier.alg, verifier.public_key).hex() == hex_id


def test_cosignature_key_type() -> None:
    assert Verifier.from_string(COSIG_VKEY).alg == ALG_COSIGNATURE_V1
    assert Verifier.from_string(PLUS_VKEY).alg == ALG_ED25519


def manglings(key: str) -> list[str]:
    """note_test.go TestNewVerifier/TestNewSigner: every proper substring, every byte + 1."""
    out = [key[i:j] for i in range(len(key) + 1) for j in range(i + 1, len(key) + 1)]
    out.remove(key)
    out += [key[:i] + chr(ord(key[i]) + 1) + key[i + 1 :] for i in range(len(key))]
    return out


def test_mangled_verifier_keys_are_refused() -> None:
    bad = [
        *manglings(PETER_VKEY),
        # wrong length key, with adjusted key hash; unknown algorithm, with adjusted key hash
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ]
    for vkey in bad:
        with pytest.raises(ValueError):
            Verifier.from_string(vkey)
            pytest.fail(f"accepted verifier key {vkey!r}")


def test_mangled_signer_keys_are_refused() -> None:
    for skey in manglings(PETER_SKEY):
        with pytest.raises(ValueError):
            Signer.from_string(skey)
            pytest.fail(f"accepted signer key {skey!r}")


@pytest.mark.parametrize("name", ["", "a b", "a+b", "tab\there", "nbsp\u00a0", "new\nline", "\x01"])
def test_invalid_key_names(name: str) -> None:
    with pytest.raises(ValueError, match="invalid key name"):
        Signer(name, LOG_SEED)


def test_generate_signer() -> None:
    skey, vkey = generate_signer("EnochRoot")
    signer, verifier = Signer.from_string(skey), Verifier.from_string(vkey)
    assert signer.verifier == verifier
    assert verify_note(sign_note(b"hi\n", signer), [verifier]) == (b"hi\n", ["EnochRoot"])
    wskey, wvkey = generate_signer("w", ALG_COSIGNATURE_V1)
    assert Signer.from_string(wskey).alg == Verifier.from_string(wvkey).alg == ALG_COSIGNATURE_V1


def test_signer_repr_does_not_leak_the_seed() -> None:
    signer = Signer.from_string(PETER_SKEY)
    seed_b64 = PETER_SKEY.rsplit("+", 1)[1]
    assert seed_b64 not in repr(signer)
    assert seed_b64 not in str(signer)
    assert PETER_VKEY in repr(signer)


# --- signing and opening --------------------------------------------------------


def test_go_sign_known_answer() -> None:
    assert sign_note(GO_TEXT.encode(), Signer.from_string(PETER_SKEY)) == go_note(PETER_SIG)


def test_go_open() -> None:
    peter, enoch = Verifier.from_string(PETER_VKEY), Verifier.from_string(ENOCH_VKEY)
    note = go_note(PETER_SIG, ENOCH_SIG)
    assert verify_note(note, [peter]) == (GO_TEXT.encode(), ["PeterNeumann"])
    assert verify_note(note, [peter, enoch]) == (GO_TEXT.encode(), ["PeterNeumann", "EnochRoot"])
    assert verify_note(note, [enoch, enoch]) == (GO_TEXT.encode(), ["EnochRoot"])
    with pytest.raises(UnknownKeyError, match=r"EnochRoot\+af0cfe78, PeterNeumann\+c74f20a3"):
        verify_note(note, [])


def test_go_repeated_signatures_count_once() -> None:
    peter = Verifier.from_string(PETER_VKEY)
    note = go_note(PETER_SIG, PETER_SIG, ENOCH_SIG, ENOCH_SIG)
    assert verify_note(note, [peter]) == (GO_TEXT.encode(), ["PeterNeumann"])


def test_go_invalid_signature() -> None:
    tampered = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(BadSignatureError, match=r"PeterNeumann\+c74f20a3"):
        verify_note(go_note(tampered), [Verifier.from_string(PETER_VKEY)])


@pytest.mark.parametrize(
    "note",
    [
        GO_TEXT.encode(),
        (GO_TEXT + "\n").encode(),
        go_note(PETER_SIG[:-1]),
        b"\x01" + go_note(PETER_SIG),
        b"\xff" + go_note(PETER_SIG),
        go_note(
            "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdng"
            "otpRZb6KE6RyyBwJnAM="
        ),
        go_note(PETER_SIG, "Unexpected line.\n"),
        go_note(PETER_SIG * 101),
    ],
)
def test_go_malformed_notes(note: bytes) -> None:
    with pytest.raises(MalformedNoteError):
        verify_note(note, [Verifier.from_string(PETER_VKEY)])


def test_spec_example_note() -> None:
    verifier = Verifier.from_string(SPEC_VKEY)
    assert verify_note(SPEC_NOTE.encode(), [verifier]) == (
        b"This is an example message.\n",
        ["example.com/foo"],
    )


def peter_line(name: str = "PeterNeumann", blob: str | None = None) -> str:
    blob = blob or PETER_SIG.split(" ")[2].strip()
    return f"— {name} {blob}\n"


@pytest.mark.parametrize(
    ("note", "message"),
    [
        (go_note("- PeterNeumann AAAAAAAA\n"), "does not start with '— '"),
        (go_note("—PeterNeumann AAAAAAAA\n"), "does not start with '— '"),
        (go_note(peter_line(name="Peter+Neumann")), "invalid key name"),
        (go_note(peter_line(name="")), "invalid key name"),
        (go_note(peter_line(blob="not*base64")), "not base64"),
        (go_note(peter_line(blob="AAAAAA==")), "has 4 bytes, want at least 5"),
        (go_note("— PeterNeumann\n"), "has no signature"),
        (go_note("— PeterNeumann \n"), "has no signature"),
        (go_note(PETER_SIG, "\n"), "MUST end with a newline|does not start"),
        (go_note(PETER_SIG).replace(b"\n", b"\r\n", 1), "control character U\\+000D"),
        (go_note(PETER_SIG).replace(b"you", b"y\xc3u", 1), "not valid UTF-8"),
        (b"x" * (MAX_NOTE_SIZE + 1), "over the 1048576 limit"),
    ],
)
def test_malformed_note_messages(note: bytes, message: str) -> None:
    with pytest.raises(MalformedNoteError, match=message):
        verify_note(note, [Verifier.from_string(PETER_VKEY)])


def test_note_text_may_contain_blank_lines() -> None:
    text = b"first\n\nsecond\n\n"
    signer = log_signer()
    assert verify_note(sign_note(text, signer), [signer.verifier]) == (text, [LOG_NAME])


def test_sign_note_refuses_what_open_would_refuse() -> None:
    signer = log_signer()
    with pytest.raises(MalformedNoteError, match="end with a newline"):
        sign_note(b"no newline", signer)
    with pytest.raises(MalformedNoteError, match="control character"):
        sign_note(b"bell\x07\n", signer)
    with pytest.raises(ValueError, match="at least one signer"):
        sign_note(b"text\n")
    with pytest.raises(ValueError, match="use cosign"):
        sign_note(CHECKPOINT_BODY, witness_signer())


def test_ambiguous_verifiers_are_refused() -> None:
    class Impostor(Verifier):  # a key whose ID collides with Peter's (2**32 work in reality)
        __slots__ = ()

        @property
        def key_id(self) -> bytes:
            return bytes.fromhex("c74f20a3")

    impostor = Impostor("PeterNeumann", ALG_ED25519, bytes(32))
    with pytest.raises(ValueError, match=r"ambiguous verifiers.*PeterNeumann\+c74f20a3"):
        verify_note(go_note(PETER_SIG), [Verifier.from_string(PETER_VKEY), impostor])


# --- checkpoints ----------------------------------------------------------------


def test_checkpoint_body() -> None:
    assert CHECKPOINT.body() == CHECKPOINT_BODY
    assert Checkpoint.from_body(CHECKPOINT_BODY) == CHECKPOINT
    with_extensions = Checkpoint(LOG_NAME, 0, EMPTY_ROOT, ("ext one", "two"))
    assert with_extensions.body() == (
        b"dbgov.example/ledger\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\next one\ntwo\n"
    )
    assert Checkpoint.from_body(with_extensions.body()) == with_extensions


def test_spec_checkpoint_parses() -> None:
    checkpoint = Checkpoint.from_body(SOFA_CHECKPOINT.encode())
    assert checkpoint.origin == "example.com/behind-the-sofa"
    assert checkpoint.size == 20852163
    assert base64.b64encode(checkpoint.root) == b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
    assert checkpoint.extensions == ()


def test_spec_cosigned_checkpoint_is_rejected_without_trusted_keys() -> None:
    note = (SOFA_CHECKPOINT + "\n" + SOFA_LOG_SIG + SOFA_WITNESS_SIG).encode()
    with pytest.raises(UnknownKeyError, match=r"example.com/behind-the-sofa\+.*witness"):
        open_note(note, [log_signer().verifier])


def test_spec_cosignature_line_layout() -> None:
    # tlog-cosignature example: the witness signed "cosignature/v1\ntime 1679315147\n..."
    line = parse_signature_line(SOFA_WITNESS_SIG)
    assert line.name == "witness.example.com/w1"
    assert len(line.key_id) == 4
    assert len(line.signature) == 8 + 64
    assert int.from_bytes(line.signature[:8], "big") == 1679315147
    assert str(line) == SOFA_WITNESS_SIG


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"origin\n8\n", "2 lines"),
        (b"origin\n08\n" + CHECKPOINT_BODY.split(b"\n")[2] + b"\n", "canonical decimal"),
        (b"origin\n-1\nAAAA\n", "canonical decimal"),
        (b"origin\n+1\nAAAA\n", "canonical decimal"),
        (b"origin\n1 \nAAAA\n", "canonical decimal"),
        (b"origin\n18446744073709551616\n" + b"A" * 43 + b"=\n", "not a uint64"),
        (b"origin\n1\nnot base64!\n", "not base64"),
        (b"origin\n1\n" + base64.b64encode(bytes(31)) + b"\n", "31 bytes"),
        (b"origin\n1\n" + b"A" * 42 + b"B=\n", "canonical form"),  # unused bits set
        (CHECKPOINT_BODY + b"\n", "MUST be non-empty"),
        (CHECKPOINT_BODY + b"ext\n\n", "MUST be non-empty"),
        (CHECKPOINT_BODY[:-1], "end with a newline"),
        (b"\n1\n" + base64.b64encode(bytes(32)) + b"\n", "non-empty"),
        (b"\xff\n1\n" + base64.b64encode(bytes(32)) + b"\n", "UTF-8"),
    ],
)
def test_malformed_checkpoints(body: bytes, message: str) -> None:
    with pytest.raises(MalformedNoteError, match=message):
        Checkpoint.from_body(body)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"origin": ""}, "non-empty"),
        ({"origin": "a\nb"}, "without newlines"),
        ({"size": -1}, "not a uint64"),
        ({"size": 1 << 64}, "not a uint64"),
        ({"root": bytes(31)}, "31 bytes"),
        ({"extensions": ("",)}, "non-empty"),
        ({"extensions": ("a\nb",)}, "without newlines"),
    ],
)
def test_checkpoint_validation(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"origin": LOG_NAME, "size": 1, "root": bytes(32), **kwargs}
    with pytest.raises(ValueError, match=message):
        Checkpoint(**args)  # type: ignore[arg-type]


# A checkpoint note for the 8-leaf RFC 6962 test tree, signed with a fixed seed.
# Frozen after checking it independently (test_checkpoint_note_cross_check).
CHECKPOINT_NOTE = (
    CHECKPOINT_BODY
    + "\n— dbgov.example/ledger {}\n".format(
        "mFEPhZ5w49ZF/RdI4em4z/+5ePIy+9EBVeaP1MoQDJK9S1HaFNk88+GBDm4IobZ+3cAIbRyGL9JFsdW5PLZltIHd/gU="
    ).encode()
)


def test_checkpoint_note_known_answer() -> None:
    assert sign_note(CHECKPOINT.body(), log_signer()) == CHECKPOINT_NOTE
    assert open_note(CHECKPOINT_NOTE, [log_signer().verifier]) == (CHECKPOINT, [LOG_NAME])


def test_checkpoint_note_cross_check() -> None:
    """Verify the frozen note without dbgov's parser: split, decode, check key ID and signature."""
    text, _, sig_line = CHECKPOINT_NOTE.decode().rpartition("\n\n")
    assert text + "\n" == CHECKPOINT_BODY.decode()
    match = re.fullmatch(r"— (\S+) (\S+)\n", sig_line)
    assert match and match.group(1) == LOG_NAME
    raw = base64.b64decode(match.group(2))
    public = log_signer().verifier.public_key
    assert raw[:4] == hashlib.sha256(LOG_NAME.encode() + b"\n\x01" + public).digest()[:4]
    Ed25519PublicKey.from_public_bytes(public).verify(raw[4:], CHECKPOINT_BODY)
    # And the root really is the 8-leaf RFC 6962 test tree.
    inputs = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    assert root_from_leaves([leaf_hash(bytes.fromhex(x)) for x in inputs]) == CHECKPOINT.root


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"\n8\n", b"\n9\n"),  # size
        (b"XcnaeacG", b"XcnaeacH"),  # root
        (b"dbgov.example/ledger\n8", b"dbgov.example/ledgeR\n8"),  # origin
    ],
)
def test_tampered_checkpoint_is_rejected(old: bytes, new: bytes) -> None:
    tampered = CHECKPOINT_NOTE.replace(old, new, 1)
    assert tampered != CHECKPOINT_NOTE
    with pytest.raises(BadSignatureError):
        open_note(tampered, [log_signer().verifier])


def test_wrong_key_is_unknown() -> None:
    impostor = Signer(LOG_NAME, bytes(32))  # same name, different key, so a different key ID
    with pytest.raises(UnknownKeyError):
        open_note(CHECKPOINT_NOTE, [impostor.verifier])
    forged = sign_note(CHECKPOINT_BODY, impostor)
    with pytest.raises(UnknownKeyError):
        open_note(forged, [log_signer().verifier])


def test_signature_moved_to_other_name_is_unknown() -> None:
    renamed = CHECKPOINT_NOTE.replace(
        b"\xe2\x80\x94 dbgov.example/ledger", "— other.example/log".encode()
    )
    with pytest.raises(UnknownKeyError):
        open_note(renamed, [log_signer().verifier])


def test_open_note_requires_a_checkpoint() -> None:
    signer = log_signer()
    with pytest.raises(MalformedNoteError, match="canonical decimal"):
        open_note(sign_note(b"hello\nworld\nagain\n", signer), [signer.verifier])


def test_note_errors_share_a_base() -> None:
    for error in (MalformedNoteError, UnknownKeyError, BadSignatureError):
        assert issubclass(error, NoteError)


# --- cosignatures ---------------------------------------------------------------

TIMESTAMP = 1_700_000_000
# Frozen after checking it independently (test_cosignature_cross_check).
COSIGNATURE_LINE = (
    "— witness.example/w1 "
    "IDJKvgAAAABlU/EAhU5cgWDJBBTNVV3ybaJXElIfjdW9xKbjVFz0GwrvkAiWoV3+MzvepMxy2XUTVdU51xILECckblKP"
    "Ligq/wUqAw==\n"
).encode()


def test_cosignature_known_answer() -> None:
    line = cosign(CHECKPOINT_BODY, witness_signer(), TIMESTAMP)
    assert line == COSIGNATURE_LINE
    assert verify_cosignature(CHECKPOINT_BODY, line, witness_signer().verifier) == TIMESTAMP


def test_cosignature_cross_check() -> None:
    """The signed message of tlog-cosignature §Ed25519 signed message, built by hand."""
    line = parse_signature_line(COSIGNATURE_LINE.decode())
    public = witness_signer().verifier.public_key
    assert line.key_id == hashlib.sha256(WITNESS_NAME.encode() + b"\n\x04" + public).digest()[:4]
    assert line.signature[:8] == TIMESTAMP.to_bytes(8, "big")
    message = b"cosignature/v1\ntime 1700000000\n" + CHECKPOINT_BODY
    Ed25519PublicKey.from_public_bytes(public).verify(line.signature[8:], message)


def test_cosigned_note_opens_with_log_and_witness_keys() -> None:
    note = CHECKPOINT_NOTE + COSIGNATURE_LINE
    log, witness = log_signer().verifier, witness_signer().verifier
    assert open_note(note, [log, witness]) == (CHECKPOINT, [LOG_NAME, WITNESS_NAME])
    assert open_note(note, [log]) == (CHECKPOINT, [LOG_NAME])
    assert open_note(note, [witness]) == (CHECKPOINT, [WITNESS_NAME])


def test_cosignature_is_not_a_plain_signature() -> None:
    # The same Ed25519 key as a type 0x01 verifier has another key ID: the line is unknown.
    plain = Verifier(WITNESS_NAME, ALG_ED25519, witness_signer().verifier.public_key)
    with pytest.raises(UnknownKeyError):
        open_note(CHECKPOINT_NOTE.split(b"\n\n")[0] + b"\n\n" + COSIGNATURE_LINE, [plain])
    with pytest.raises(ValueError, match="not a cosignature"):
        verify_cosignature(CHECKPOINT_BODY, COSIGNATURE_LINE, plain)


def test_tampered_cosignatures_are_rejected() -> None:
    witness = witness_signer().verifier
    other_body = Checkpoint(LOG_NAME, 9, CHECKPOINT.root).body()
    with pytest.raises(BadSignatureError):
        verify_cosignature(other_body, COSIGNATURE_LINE, witness)
    raw = bytearray(base64.b64decode(COSIGNATURE_LINE.split(b" ")[2]))
    raw[11] ^= 1  # the timestamp's last byte
    retimed = str(SignatureLine(WITNESS_NAME, bytes(raw[:4]), bytes(raw[4:]))).encode()
    with pytest.raises(BadSignatureError):
        verify_cosignature(CHECKPOINT_BODY, retimed, witness)
    with pytest.raises(BadSignatureError):
        open_note(CHECKPOINT_NOTE + retimed, [witness])
    with pytest.raises(MalformedNoteError, match="want 72"):
        truncated = str(SignatureLine(WITNESS_NAME, bytes(raw[:4]), bytes(raw[4:40]))).encode()
        verify_cosignature(CHECKPOINT_BODY, truncated, witness)


def test_cosignature_from_another_witness_is_unknown() -> None:
    other = Signer("witness.example/w2", bytes(32), ALG_COSIGNATURE_V1)
    with pytest.raises(UnknownKeyError, match=r"is not from witness\.example/w2"):
        verify_cosignature(CHECKPOINT_BODY, COSIGNATURE_LINE, other.verifier)


def test_cosign_argument_checks() -> None:
    with pytest.raises(ValueError, match="need a 0x04 key"):
        cosign(CHECKPOINT_BODY, log_signer(), TIMESTAMP)
    with pytest.raises(ValueError, match="outside"):
        cosign(CHECKPOINT_BODY, witness_signer(), 1 << 63)
    with pytest.raises(ValueError, match="outside"):
        cosign(CHECKPOINT_BODY, witness_signer(), -1)
    with pytest.raises(MalformedNoteError):
        cosign(b"not a checkpoint\n", witness_signer(), TIMESTAMP)
    assert (
        verify_cosignature(
            CHECKPOINT_BODY,
            cosign(CHECKPOINT_BODY, witness_signer(), (1 << 63) - 1),
            witness_signer().verifier,
        )
        == (1 << 63) - 1
    )
