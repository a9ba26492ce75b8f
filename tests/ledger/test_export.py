"""`dbgov audit export`: OCSF and CEF as SIEMs read them, jsonl exact, bundles verifiable."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from dbgov.ledger.canonical import canonical_json
from dbgov.ledger.export import cef_escape_extension, cef_escape_header, cef_line
from dbgov.ledger.merkle import leaf_hash
from dbgov.ledger.note import Checkpoint, Signer, generate_signer, sign_note
from ledger.kit import LedgerKit, run_cli, synthetic_events

TS = "2025-03-01T10:00:00.250000Z"
EVENTS: list[dict[str, Any]] = [
    {
        "v": 1,
        "type": "connection.open",
        "id": "s1:1",
        "ts": TS,
        "session": "s1",
        "user": "bob",
        "groups": ["ml-engineers"],
        "target": "prod",
        "client": "10.1.2.3:51000",
        "tls": "TLSv1.3",
        "auth": "token",
        "protocol": "3.0",
    },
    {
        "v": 1,
        "type": "statement",
        "id": "s1:2",
        "ts": TS,
        "session": "s1",
        "user": "bob",
        "target": "prod",
        "sql": "UPDATE feature_store SET value = 1 WHERE customer_id = 7",
        "kinds": ["update"],
        "writes": ["public.feature_store"],
        "decision": {"verdict": "deny", "rule": "no-feature-tweaks", "reason": "needs approval"},
        "fingerprint": "abc123",
    },
    {
        "v": 1,
        "type": "statement.done",
        "id": "s1:3",
        "ts": TS,
        "session": "s1",
        "user": "bob",
        "target": "prod",
        "ref": "s1:2",
        "sqlstate": "42501",
        "duration_us": 2500,
    },
    {
        "v": 1,
        "type": "statement",
        "id": "s1:4",
        "ts": TS,
        "session": "s1",
        "user": "bob",
        "target": "prod",
        "sql": "SELECT * FROM customers",
        "kinds": ["select"],
        "reads": ["public.customers"],
        "decision": {"verdict": "allow"},
    },
    {
        "v": 1,
        "type": "statement.done",
        "id": "s1:5",
        "ts": TS,
        "session": "s1",
        "user": "bob",
        "target": "prod",
        "ref": "s1:4",
        "sqlstate": "00000",
        "rows": 5000,
    },
    {
        "v": 1,
        "type": "auth.failed",
        "id": "s2:1",
        "ts": TS,
        "session": "s2",
        "user": "mallory",
        "target": "prod",
        "reason": "bad_token",
        "message": "token expired",
        "client": "[::1]:40000",
        "tls": False,
    },
    {
        "v": 1,
        "type": "connection.close",
        "id": "s1:6",
        "ts": TS,
        "session": "s1",
        "user": "bob",
        "target": "prod",
        "reason": "client",
    },
    {"v": 1, "type": "approval.requested", "id": "a:1", "ts": TS, "user": "bob"},
]


@pytest.fixture
def kit(tmp_path: Path) -> LedgerKit:
    k = LedgerKit(tmp_path / "data")
    k.append(EVENTS)
    k.checkpoint()
    return k


def export(kit: LedgerKit, fmt: str, out: Path, *extra: str) -> list[str]:
    code = run_cli(
        "audit",
        "export",
        "--data-dir",
        str(kit.layout.root),
        "--format",
        fmt,
        "--out",
        str(out),
        *extra,
    )
    assert code == 0
    return out.read_text().splitlines()


def test_ocsf_statement_and_logins(kit: LedgerKit, tmp_path: Path) -> None:
    records = [json.loads(line) for line in export(kit, "ocsf", tmp_path / "o.jsonl")]
    assert [r["class_uid"] for r in records] == [3002, 6005, 6005, 3002, 3002, 0]
    for r in records:
        assert r["metadata"]["product"] == {
            "name": "dbgov",
            "vendor_name": "dbgov",
            "version": r["metadata"]["product"]["version"],
        }
        assert isinstance(r["metadata"]["version"], str)
        assert r["time"] == 1740823200250 and isinstance(r["time"], int)
        assert isinstance(r["severity_id"], int) and isinstance(r["activity_id"], int)
        assert r["type_uid"] == (r["class_uid"] * 100 + r["activity_id"] if r["class_uid"] else 99)
    login, denied, allowed, failed, logoff, other = records

    assert denied["category_uid"] == 6 and denied["class_name"] == "Datastore Activity"
    assert denied["activity_id"] == 2 and denied["activity_name"] == "Update"
    assert denied["actor"]["user"] == {"name": "bob", "groups": [{"name": "ml-engineers"}]}
    assert denied["actor"]["session"] == {"uid": "s1"}
    assert denied["src_endpoint"] == {"ip": "10.1.2.3", "port": 51000}
    assert denied["database"]["name"] == "prod"
    assert denied["table"] == {"name": "public.feature_store"}
    assert denied["query_info"]["query_string"].startswith("UPDATE feature_store")
    assert denied["status_id"] == 2 and denied["status"] == "Failure"
    assert denied["status_code"] == "42501" and denied["duration"] == 2
    assert denied["action_id"] == 2 and denied["disposition_id"] == 2
    assert denied["severity_id"] == 3
    assert denied["metadata"]["uid"] == "s1:2" and denied["metadata"]["sequence"] == 1
    assert allowed["activity_id"] == 1 and allowed["status_id"] == 1
    assert allowed["status_code"] == "00000" and allowed["table"]["name"] == "public.customers"

    assert login["category_uid"] == 3 and login["activity_id"] == 1
    assert login["status_id"] == 1 and login["user"]["name"] == "bob"
    assert login["src_endpoint"] == {"ip": "10.1.2.3", "port": 51000}
    assert login["service"] == {"name": "prod"} and login["is_cleartext"] is False
    assert login["auth_protocol_id"] == 99 and login["auth_protocol"]
    assert failed["status_id"] == 2 and failed["status"] == "Failure"
    assert failed["status_detail"] == "bad_token" and failed["user"]["name"] == "mallory"
    assert failed["src_endpoint"] == {"ip": "::1", "port": 40000}
    assert failed["is_cleartext"] is True and failed["severity_id"] == 3
    assert logoff["activity_id"] == 2 and logoff["activity_name"] == "Logoff"
    assert other["unmapped"]["dbgov"]["type"] == "approval.requested"


@pytest.mark.parametrize(
    ("text", "header", "extension"),
    [
        ("plain", "plain", "plain"),
        ("a|b", "a\\|b", "a|b"),
        ("a=b", "a=b", "a\\=b"),
        ("C:\\dir", "C:\\\\dir", "C:\\\\dir"),
        ("two\nlines\r\n", "two lines ", "two\\nlines\\r\\n"),
        ("\\=|", "\\\\=\\|", "\\\\\\=|"),
    ],
)
def test_cef_escaping(text: str, header: str, extension: str) -> None:
    assert cef_escape_header(text) == header
    assert cef_escape_extension(text) == extension


def _parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    """An independent reader: 7 fields split on unescaped pipes, then key=value pairs."""
    fields, cur, i = [], "", 0
    while len(fields) < 7:
        c = line[i]
        if c == "\\":
            cur += line[i + 1]
            i += 2
            continue
        if c == "|":
            fields.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    ext = line[i:]
    pairs: dict[str, str] = {}
    keys = list(re.finditer(r"(?:^| )([A-Za-z0-9]+)=", ext))
    for n, m in enumerate(keys):
        end = keys[n + 1].start() if n + 1 < len(keys) else len(ext)
        raw = ext[m.end() : end]
        value = re.sub(r"\\(.)", lambda g: {"n": "\n", "r": "\r"}.get(g.group(1), g.group(1)), raw)
        pairs[m.group(1)] = value
    return fields, pairs


def test_cef_lines_round_trip(kit: LedgerKit, tmp_path: Path) -> None:
    lines = export(kit, "cef", tmp_path / "e.cef")
    assert len(lines) == 6 and all(line.startswith("CEF:0|dbgov|dbgov|") for line in lines)
    header, ext = _parse_cef(lines[1])
    assert header[4:7] == ["statement", "statement deny", "7"]
    assert ext["suser"] == "bob" and ext["act"] == "deny" and ext["cs2"] == "no-feature-tweaks"
    assert ext["cs1"] == "UPDATE feature_store SET value = 1 WHERE customer_id = 7"
    assert ext["cs5"] == "42501" and ext["outcome"] == "failure" and ext["cn1"] == "1"
    tricky = {
        "type": "statement",
        "id": "x|1",
        "ts": TS,
        "user": "eve=admin\\",
        "sql": "SELECT 'a=b|c'\nFROM t",
        "decision": {"verdict": "allow"},
    }
    header, ext = _parse_cef(cef_line(9, tricky))
    assert ext["suser"] == "eve=admin\\" and ext["cs1"] == "SELECT 'a=b|c'\nFROM t"
    assert ext["externalId"] == "x|1" and "\n" not in cef_line(9, tricky)


def test_jsonl_is_the_leaf_data(kit: LedgerKit, tmp_path: Path) -> None:
    lines = tmp_path / "e.jsonl"
    export(kit, "jsonl", lines)
    leaves = kit.leaves()
    for n, line in enumerate(lines.read_bytes().splitlines()):
        prefix = b'{"index":%d,"event":' % n
        assert line.startswith(prefix) and line.endswith(b"}")
        body = line[len(prefix) : -1]
        assert leaf_hash(body) == leaves[n]
        assert json.loads(line)["event"] == EVENTS[n] and canonical_json(EVENTS[n]) == body


def test_since_until(kit: LedgerKit, tmp_path: Path) -> None:
    later = [
        dict(e, id=f"late:{n}", ts="2025-03-02T00:00:00.000000Z") for n, e in enumerate(EVENTS[:2])
    ]
    kit.append(later)
    lines = export(kit, "jsonl", tmp_path / "w.jsonl", "--since", "2025-03-01T12:00:00")
    assert [json.loads(x)["index"] for x in lines] == [8, 9]
    lines = export(kit, "jsonl", tmp_path / "u.jsonl", "--until", "2025-03-01T12:00:00")
    assert len(lines) == 8


# --- bundles ---------------------------------------------------------------------------


@pytest.fixture
def big(tmp_path: Path) -> LedgerKit:
    k = LedgerKit(tmp_path / "big")
    k.build(3000, 1000)
    return k


def _bundle(kit: LedgerKit, out: Path, *extra: str) -> None:
    code = run_cli(
        "audit",
        "export",
        "--data-dir",
        str(kit.layout.root),
        "--format",
        "bundle",
        "--out",
        str(out),
        *extra,
    )
    assert code == 0
    assert {p.name for p in out.iterdir()} == {
        "events.jsonl",
        "checkpoint.note",
        "proofs.json",
        "key.pub",
    }


def verify_bundle(
    kit: LedgerKit, path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, Any]:
    capsys.readouterr()
    code = run_cli(
        "audit", "verify", "--bundle", str(path), "--key", str(kit.signer.verifier), "--json"
    )
    return code, json.loads(capsys.readouterr().out)


def _swap_bodies(lines: list[bytes], a: int, b: int) -> list[bytes]:
    pa, pb = lines[a].split(b',"event":', 1), lines[b].split(b',"event":', 1)
    lines[a], lines[b] = pa[0] + b',"event":' + pb[1], pb[0] + b',"event":' + pa[1]
    return lines


def _edit(lines: list[bytes], n: int) -> list[bytes]:
    lines[n] = lines[n].replace(b'"prod"', b'"prud"')
    return lines


@pytest.mark.parametrize(
    ("tamper", "code", "index"),
    [
        (lambda ls: _edit(ls, 1234), 10, 1024),  # the tile holding #1234
        (lambda ls: ls[:777] + ls[778:], 11, 777),
        (lambda ls: _swap_bodies(ls, 100, 2900), 12, 100),
        (lambda ls: _swap_bodies(ls, 2950, 2990), 12, 2950),
        (lambda ls: ls[:2990], 13, 2990),
    ],
)
def test_bundle_tampering(
    big: LedgerKit,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tamper: Any,
    code: int,
    index: int,
) -> None:
    bundle = tmp_path / "bundle"
    _bundle(big, bundle)
    assert verify_bundle(big, bundle, capsys)[0] == 0
    events = bundle / "events.jsonl"
    events.write_bytes(b"".join(tamper(events.read_bytes().splitlines(keepends=True))))
    got, report = verify_bundle(big, bundle, capsys)
    assert (got, report["first_bad_index"]) == (code, index), report


def test_bundle_with_a_forged_checkpoint_or_junk(
    big: LedgerKit, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "bundle"
    _bundle(big, bundle)
    forged = tmp_path / "forged"
    shutil.copytree(bundle, forged)
    cp = Checkpoint.from_body(
        (forged / "checkpoint.note").read_bytes().partition(b"\n\n")[0] + b"\n"
    )
    skey, _ = generate_signer(big.origin)
    (forged / "checkpoint.note").write_bytes(sign_note(cp.body(), Signer.from_string(skey)))
    assert verify_bundle(big, forged, capsys)[0] == 14
    (forged / "proofs.json").write_text("{")
    (forged / "checkpoint.note").write_bytes((bundle / "checkpoint.note").read_bytes())
    assert verify_bundle(big, forged, capsys)[0] == 16
    assert run_cli("audit", "verify", "--bundle", str(bundle)) == 2, "--key is required"


def test_bundle_of_a_time_window(
    big: LedgerKit, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big.append(synthetic_events(500, seed=11))  # beyond the latest checkpoint: left out
    bundle = tmp_path / "window"
    _bundle(big, bundle, "--since", "2025-03-01T10:00:05", "--until", "2025-03-01T10:00:12")
    proof = json.loads((bundle / "proofs.json").read_text())
    assert proof["first"] % 256 == 0 and proof["end"] % 256 == 0 and proof["size"] == 3000
    assert 0 < proof["first"] < proof["end"] < 3000
    assert len(proof["tiles"]) == (proof["end"] - proof["first"]) // 256
    code, report = verify_bundle(big, bundle, capsys)
    assert code == 0 and report["events"] == proof["end"] - proof["first"]
