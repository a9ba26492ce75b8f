"""``dbgov audit export``: the ledger in the formats SIEMs and auditors ingest.

Three streaming formats, one event per line, in ledger order:

- ``jsonl``: ``{"index":N,"event":<canonical body>}``. The body bytes are copied
  verbatim (RFC 8785 canonical JSON, the exact Merkle leaf data), so a line's
  leaf hash is recomputable without re-encoding anything. A body that is not
  JSON (an integrated corrupt journal line) is written as
  ``{"index":N,"event_b64":"..."}``.
- ``ocsf``: OCSF 1.3.0 events (schema.ocsf.io). A ``statement`` becomes Datastore
  Activity (class_uid 6005, category 6 Application Activity) with its outcome
  (``status_id``, ``status_code`` = SQLSTATE) taken from the matching
  ``statement.done`` (found by ``ref``), which is therefore not exported on its
  own; ``connection.open`` and ``auth.failed`` become Authentication (3002,
  category 3 Identity & Access Management) Logon success or failure, and
  ``connection.close`` a Logoff. Any other type is an OCSF Base Event (class 0)
  with the dbgov event under ``unmapped``, so nothing is dropped silently.
  ``metadata.sequence`` is the ledger index and ``metadata.uid`` the event id.
- ``cef``: ArcSight Common Event Format,
  ``CEF:0|dbgov|dbgov|<version>|<event type>|<name>|<severity 0-10>|<extension>``.
  Header fields escape ``\\`` and ``|`` with a backslash (newlines become spaces);
  extension values escape ``\\`` and ``=``, and encode CR/LF as ``\\r``/``\\n``.

``--since``/``--until`` filter on the event's ``ts`` (UTC ISO 8601, compared as
text, half-open ``[since, until)``). The verifiable ``bundle`` format is in
``bundle.py``.
"""

from __future__ import annotations

import base64
import datetime
import json
import sqlite3
from collections.abc import Iterator
from typing import IO, Any, Final

from dbgov import __version__
from dbgov.store.sqlite import LedgerStore, ts_window

__all__ = [
    "FORMATS",
    "cef_escape_extension",
    "cef_escape_header",
    "cef_line",
    "export",
    "iter_rows",
    "jsonl_line",
    "ocsf_event",
]

FORMATS: Final = ("jsonl", "ocsf", "cef")
OCSF_VERSION: Final = "1.3.0"
_BATCH: Final = 1000

_SEVERITY: Final = {0: "Unknown", 1: "Informational", 2: "Low", 3: "Medium", 4: "High"}
_STATUS: Final = {0: "Unknown", 1: "Success", 2: "Failure"}

# Datastore Activity (6005) activity_id: 1 Read, 2 Update, 6 Create, 7 Delete, 99 Other.
_DATASTORE_ACTIVITY: Final = {1: "Read", 2: "Update", 6: "Create", 7: "Delete", 99: "Other"}
_KIND_ACTIVITY: Final = {
    **dict.fromkeys(("select", "copy_to", "fetch", "explain", "show"), 1),
    **dict.fromkeys(("update", "merge", "alter_table", "alter_other", "rename", "comment"), 2),
    **dict.fromkeys(("insert", "copy_from", "create_table", "create_table_as"), 6),
    **dict.fromkeys(("create_matview", "create_index", "create_view", "create_schema"), 6),
    **dict.fromkeys(("create_sequence", "create_type", "create_other"), 6),
    **dict.fromkeys(("delete", "truncate", "drop"), 7),
}
_ACTIVITY_RANK: Final = (7, 2, 6, 1)  # for a batch of statements: the most destructive wins

# Authentication (3002) auth_protocol_id: 4 OpenID, 99 Other (with auth_protocol text).
_AUTH_PROTOCOL: Final = {
    "oidc": (4, "OpenID"),
    "token": (99, "dbgov token (JWT)"),
    "scram": (99, "SCRAM-SHA-256"),
    "cert": (99, "TLS client certificate"),
}


# --- reading ---------------------------------------------------------------------------


def iter_rows(
    store: LedgerStore,
    since: str | None = None,
    until: str | None = None,
    *,
    start: int = 0,
    end: int | None = None,
) -> Iterator[tuple[int, bytes]]:
    """``(index, body)`` in ledger order, filtered on ``ts`` and the index range."""
    where: list[str] = ["idx >= ?"]
    args: list[object] = [start]
    if end is not None:
        where.append("idx < ?")
        args.append(end)
    clauses, window_args = ts_window(since, until)
    where += clauses
    args += window_args
    cursor = store.conn.execute(
        f"SELECT idx, body FROM events WHERE {' AND '.join(where)} ORDER BY idx",
        args,
    )
    while rows := cursor.fetchmany(_BATCH):
        for idx, body in rows:
            yield int(idx), bytes(body)


def jsonl_line(index: int, body: bytes) -> bytes:
    """``{"index":N,"event":<body>}`` with the body bytes verbatim (see the module docstring)."""
    try:
        json.loads(body)
    except ValueError:
        return b'{"index":%d,"event_b64":"%s"}\n' % (index, base64.b64encode(body))
    return b'{"index":%d,"event":%s}\n' % (index, body)


def export(
    store: LedgerStore,
    fmt: str,
    out: IO[bytes],
    since: str | None = None,
    until: str | None = None,
) -> int:
    """Write the events in ``fmt`` to ``out``; returns the number of lines written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; want one of {', '.join(FORMATS)}")
    written = 0
    if fmt == "jsonl":
        for index, body in iter_rows(store, since, until):
            out.write(jsonl_line(index, body))
            written += 1
        return written
    context = _Context(store)
    batch: list[tuple[int, dict[str, Any]]] = []
    for index, body in iter_rows(store, since, until):
        try:
            event = json.loads(body)
        except ValueError:
            event = {"type": "corrupt", "body": body.decode("utf-8", "replace")}
        if not isinstance(event, dict):
            event = {"type": "corrupt", "body": event}
        batch.append((index, event))
        if len(batch) >= _BATCH:
            written += _write_batch(context, fmt, batch, out)
            batch = []
    return written + _write_batch(context, fmt, batch, out)


def _write_batch(
    context: _Context, fmt: str, batch: list[tuple[int, dict[str, Any]]], out: IO[bytes]
) -> int:
    context.prefetch([ev for _, ev in batch])
    written = 0
    for index, event in batch:
        if event.get("type") == "statement.done":
            continue  # folded into its statement
        if fmt == "ocsf":
            record = ocsf_event(index, event, context.done(event), context.opened(event))
            out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode())
        else:
            out.write(cef_line(index, event, context.done(event), context.opened(event)).encode())
        out.write(b"\n")
        written += 1
    return written


class _Context:
    """Looks up each statement's ``statement.done`` and each session's ``connection.open``."""

    def __init__(self, store: LedgerStore) -> None:
        self.conn: sqlite3.Connection = store.conn
        self._done: dict[str, dict[str, Any]] = {}
        self._open: dict[str, dict[str, Any]] = {}

    def prefetch(self, events: list[dict[str, Any]]) -> None:
        self._done = {}
        refs = [str(e["id"]) for e in events if e.get("type") == "statement" and "id" in e]
        for ev in self._bodies("statement.done", "ref", refs):
            self._done.setdefault(str(ev.get("ref")), ev)
        if len(self._open) > 10_000:
            self._open = {}
        sessions = {str(e["session"]) for e in events if e.get("session")} - set(self._open)
        for ev in self._bodies("connection.open", "session", sorted(sessions)):
            self._open.setdefault(str(ev.get("session")), ev)

    def _bodies(self, type_: str, column: str, keys: list[str]) -> Iterator[dict[str, Any]]:
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            rows = self.conn.execute(
                f"SELECT body FROM events WHERE type = ? AND {column} IN "
                f"({','.join('?' * len(part))}) ORDER BY idx",
                (type_, *part),
            )
            for (body,) in rows:
                try:
                    ev = json.loads(body)
                except ValueError:
                    continue
                # The column is an unauthenticated copy: trust only the body.
                if isinstance(ev, dict) and ev.get("type") == type_ and ev.get(column) in part:
                    yield ev

    def done(self, event: dict[str, Any]) -> dict[str, Any] | None:
        if event.get("type") != "statement":
            return None
        return self._done.get(str(event.get("id")))

    def opened(self, event: dict[str, Any]) -> dict[str, Any] | None:
        session = event.get("session")
        return self._open.get(str(session)) if session else None


# --- OCSF ------------------------------------------------------------------------------


def _epoch_ms(ts: object) -> int:
    if not isinstance(ts, str):
        return 0
    try:
        t = datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return 0
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.UTC)
    return int(t.timestamp() * 1000)


def _endpoint(client: object) -> dict[str, Any] | None:
    if not isinstance(client, str) or not client:
        return None
    host, sep, port = client.rpartition(":")
    if not sep or not port.isdigit():
        return {"ip": client}
    return {"ip": host.strip("[]"), "port": int(port)}


def _user(event: dict[str, Any], opened: dict[str, Any] | None) -> dict[str, Any]:
    user: dict[str, Any] = {"name": str(event.get("user") or "")}
    groups = event.get("groups") or (opened or {}).get("groups")
    if isinstance(groups, list) and groups:
        user["groups"] = [{"name": str(g)} for g in groups]
    return user


def _base(
    index: int,
    event: dict[str, Any],
    class_uid: int,
    class_name: str,
    category: tuple[int, str],
    activity: tuple[int, str],
    severity_id: int,
) -> dict[str, Any]:
    return {
        "class_uid": class_uid,
        "class_name": class_name,
        "category_uid": category[0],
        "category_name": category[1],
        "activity_id": activity[0],
        "activity_name": activity[1],
        "type_uid": class_uid * 100 + activity[0],
        "type_name": f"{class_name}: {activity[1]}",
        "time": _epoch_ms(event.get("ts")),
        "severity_id": severity_id,
        "severity": _SEVERITY[severity_id],
        "metadata": {
            "version": OCSF_VERSION,
            "product": {"name": "dbgov", "vendor_name": "dbgov", "version": __version__},
            "log_name": "dbgov ledger",
            "uid": str(event.get("id", "")),
            "sequence": index,
            "original_time": str(event.get("ts", "")),
        },
    }


def _decision(event: dict[str, Any]) -> dict[str, Any]:
    decision = event.get("decision")
    return decision if isinstance(decision, dict) else {}


def _statement_activity(kinds: object) -> int:
    found = {_KIND_ACTIVITY.get(str(k), 99) for k in kinds} if isinstance(kinds, list) else set()
    return next((a for a in _ACTIVITY_RANK if a in found), 99)


def ocsf_event(
    index: int,
    event: dict[str, Any],
    done: dict[str, Any] | None = None,
    opened: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One dbgov event as an OCSF 1.3.0 event (see the module docstring for the mapping)."""
    type_ = event.get("type")
    if type_ == "statement":
        return _ocsf_statement(index, event, done, opened)
    if type_ in ("connection.open", "auth.failed", "connection.close"):
        return _ocsf_authentication(index, event, opened)
    record = _base(index, event, 0, "Base Event", (0, "Uncategorized"), (99, "Other"), 1)
    record["type_uid"] = 99
    record["message"] = f"dbgov {type_}"
    record["unmapped"] = {"dbgov": event}
    return record


def _ocsf_statement(
    index: int, event: dict[str, Any], done: dict[str, Any] | None, opened: dict[str, Any] | None
) -> dict[str, Any]:
    activity = _statement_activity(event.get("kinds"))
    decision = _decision(event)
    verdict = str(decision.get("verdict", ""))
    severity = {"allow": 1, "approval": 2, "deny": 3}.get(verdict, 1)
    record = _base(
        index,
        event,
        6005,
        "Datastore Activity",
        (6, "Application Activity"),
        (activity, _DATASTORE_ACTIVITY[activity]),
        severity,
    )
    actor: dict[str, Any] = {"user": _user(event, opened)}
    if event.get("session"):
        actor["session"] = {"uid": str(event["session"])}
    record["actor"] = actor
    src = _endpoint((opened or {}).get("client"))
    record["src_endpoint"] = src if src else {"uid": str(event.get("session", ""))}
    record["database"] = {"name": str(event.get("target", "")), "type": "PostgreSQL"}
    tables = [str(t) for t in (event.get("writes") or []) + (event.get("reads") or [])]
    if tables:
        record["table"] = {"name": tables[0]}
    query: dict[str, Any] = {"query_string": str(event.get("sql", ""))}
    if event.get("fingerprint"):
        query["uid"] = str(event["fingerprint"])
    record["query_info"] = query
    action = {"allow": (1, "Allowed"), "deny": (2, "Denied")}.get(verdict, (99, "Other"))
    record["action_id"], record["action"] = action
    disposition = {"allow": (1, "Allowed"), "deny": (2, "Blocked")}.get(verdict, (99, "Other"))
    record["disposition_id"], record["disposition"] = disposition
    status_id = 0
    if done is not None:
        sqlstate = str(done.get("sqlstate") or "00000")
        status_id = 1 if sqlstate == "00000" else 2
        record["status_code"] = sqlstate
        if isinstance(done.get("duration_us"), int):
            record["duration"] = done["duration_us"] // 1000
    record["status_id"], record["status"] = status_id, _STATUS[status_id]
    what = ",".join(str(k) for k in event.get("kinds") or []) or "statement"
    record["message"] = (
        f"{event.get('user')} {what} on {event.get('target')}: {verdict or 'unknown'}"
        + (f" by rule {decision['rule']}" if decision.get("rule") else "")
    )
    extra: dict[str, Any] = {
        k: event[k] for k in ("kinds", "reads", "writes", "params", "search_path") if k in event
    }
    extra["decision"] = decision
    if done is not None:
        extra["done"] = {k: done[k] for k in ("id", "rows", "tags", "masked") if k in done}
    record["unmapped"] = {"dbgov": extra}
    return record


def _ocsf_authentication(
    index: int, event: dict[str, Any], opened: dict[str, Any] | None
) -> dict[str, Any]:
    type_ = event.get("type")
    failed = type_ == "auth.failed"
    activity = (2, "Logoff") if type_ == "connection.close" else (1, "Logon")
    record = _base(
        index,
        event,
        3002,
        "Authentication",
        (3, "Identity & Access Management"),
        activity,
        3 if failed else 1,
    )
    user = _user(event, opened if type_ == "connection.close" else None)
    record["user"] = user
    record["actor"] = {"user": user}
    client = event.get("client") or (opened or {}).get("client")
    src = _endpoint(client)
    if src:
        record["src_endpoint"] = src
    record["service"] = {"name": str(event.get("target", ""))}
    if event.get("session"):
        record["session"] = {"uid": str(event["session"])}
    record["is_remote"] = True
    method = event.get("auth") or (opened or {}).get("auth")
    protocol = _AUTH_PROTOCOL.get(str(method)) if method else None
    record["auth_protocol_id"], record["auth_protocol"] = protocol or (0, "Unknown")
    tls = event.get("tls") if "tls" in event else (opened or {}).get("tls")
    if tls is not None:
        record["is_cleartext"] = not tls
    status_id = 2 if failed else 1
    record["status_id"], record["status"] = status_id, _STATUS[status_id]
    if failed:
        record["status_detail"] = str(event.get("reason", ""))
        record["message"] = f"login of {event.get('user')} failed: {event.get('message', '')}"
    elif type_ == "connection.close":
        record["message"] = f"{event.get('user')} logged off ({event.get('reason', '')})"
    else:
        record["message"] = f"{event.get('user')} logged on to {event.get('target')}"
    return record


# --- CEF -------------------------------------------------------------------------------


def cef_escape_header(value: object) -> str:
    """A CEF header field: backslash and pipe escaped, line breaks flattened to spaces."""
    text = str(value).replace("\\", "\\\\").replace("|", "\\|")
    return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


def cef_escape_extension(value: object) -> str:
    """A CEF extension value: backslash and equals escaped, CR/LF as ``\\r``/``\\n``."""
    text = str(value).replace("\\", "\\\\").replace("=", "\\=")
    return text.replace("\r", "\\r").replace("\n", "\\n")


def cef_line(
    index: int,
    event: dict[str, Any],
    done: dict[str, Any] | None = None,
    opened: dict[str, Any] | None = None,
) -> str:
    """One event as a CEF:0 line (without the newline)."""
    type_ = str(event.get("type", ""))
    decision = _decision(event)
    verdict = str(decision.get("verdict", ""))
    if type_ == "statement":
        name = f"statement {verdict or 'unknown'}"
        severity = {"allow": 3, "approval": 5, "deny": 7}.get(verdict, 3)
    elif type_ == "auth.failed":
        name, severity = "login failed", 6
    elif type_ == "connection.open":
        name, severity = "login", 1
    elif type_ == "connection.close":
        name, severity = "logout", 1
    else:
        name, severity = type_, 2
    src = _endpoint(event.get("client") or (opened or {}).get("client")) or {}
    ext: list[tuple[str, object]] = [
        ("rt", _epoch_ms(event.get("ts"))),
        ("externalId", event.get("id")),
        ("cn1Label", "ledgerIndex"),
        ("cn1", index),
        ("suser", event.get("user")),
        ("src", src.get("ip")),
        ("spt", src.get("port")),
        ("destinationServiceName", event.get("target")),
        ("act", verdict or None),
        ("reason", decision.get("reason") or event.get("reason")),
        ("cs1Label", "sql" if event.get("sql") else None),
        ("cs1", event.get("sql")),
        ("cs2Label", "rule" if decision.get("rule") else None),
        ("cs2", decision.get("rule")),
        ("cs3Label", "session" if event.get("session") else None),
        ("cs3", event.get("session")),
        ("cs4Label", "fingerprint" if event.get("fingerprint") else None),
        ("cs4", event.get("fingerprint")),
    ]
    if done is not None:
        sqlstate = str(done.get("sqlstate") or "00000")
        ext += [
            ("outcome", "success" if sqlstate == "00000" else "failure"),
            ("cs5Label", "sqlstate"),
            ("cs5", sqlstate),
            ("cnt", done.get("rows")),
        ]
    elif type_ == "auth.failed":
        ext += [("outcome", "failure"), ("msg", event.get("message"))]
    elif type_ == "connection.open":
        ext += [("outcome", "success")]
    header = "|".join(
        cef_escape_header(v)
        for v in ("CEF:0", "dbgov", "dbgov", __version__, type_, name, severity)
    )
    extension = " ".join(
        f"{key}={cef_escape_extension(value)}" for key, value in ext if value not in (None, "")
    )
    return f"{header}|{extension}"
