"""What changed in a model's inputs between two retrains: from the ledger, with evidence.

    dbgov models report churn-v2 [--from 6 --to 7] --format html|json --out FILE
                                 [--large-rows N] [--bundle DIR]

Pure over a `LedgerStore` (like `report/soc2.py`): `build_report` returns data,
`render_html` one self-contained HTML file, `write_evidence` the receipts.

The window of version `to` after version `from` is the ledger indices
`[from.seal, to.seal)` (markers.py explains the seal). A change is a `statement`
event in the window whose `models` links name the model; with it the report
gathers, each by its own ledger event:

- the outcome, from the `statement.done` with `ref` = the statement's id: rows
  affected (summed over the statements of the query that made the change),
  SQLSTATE, and whether the transaction it ran in committed (`autocommit`, a
  later COMMIT or ROLLBACK of the same session, or a connection.close first);
- who: user and target from the event, token groups from the session's
  `connection.open`;
- the decision and rule; the approval (`approval_ref` -> `approval.*` events:
  who asked, who voted, who approved); just-in-time grants used
  (`decision.grants` -> `grant.*` events: group, approvers).

Statements that did not change anything (denied, failed, rolled back) are listed
apart under `not_applied`. Flags on changes:

- `no_approval`     ran without an approval
- `outside_owners`  by an identity none of whose token groups owns the model
- `large_rows`      affected at least the threshold (`--large-rows`, else the
                    model's `large_rows`, else 1000)
- `jit_grant`       relied on a just-in-time grant
- `outcome_unknown` no completion in the ledger (the session may have died)
- `uncommitted`     inside a transaction whose end is not in the ledger

Owners and inputs are those the `to` marker recorded (the declaration at that
retrain), not today's policy.

`evidence` lists the ledger index of every event the report rests on (markers,
statements, completions, session openings, approval and grant events);
`write_evidence` writes a bundle covering them (`ledger/bundle.py`, checked by
`dbgov audit verify --bundle DIR --key K`) and one receipt per event
(`ledger/receipts.py`, `dbgov audit verify-receipt`). Limits of what the links
can see are in registry.py.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final

import jinja2

from dbgov.models.markers import Marker, find_marker, markers
from dbgov.models.registry import Model
from dbgov.store.sqlite import EventRow, LedgerStore

__all__ = [
    "DEFAULT_LARGE_ROWS",
    "FLAGS",
    "FORMAT",
    "ModelReport",
    "ReportError",
    "build_report",
    "changes_between",
    "count_linked",
    "render_html",
    "write_evidence",
]

FORMAT: Final = "dbgov-model-report/v1"
DEFAULT_LARGE_ROWS: Final = 1000
FLAGS: Final = {
    "no_approval": "made without an approval",
    "outside_owners": "made by an identity outside the model's owner groups",
    "large_rows": "affected many rows",
    "jit_grant": "made through a just-in-time grant",
    "outcome_unknown": "no completion recorded: it may or may not have run",
    "uncommitted": "inside a transaction whose end is not in the ledger",
}
_COLS: Final = "idx, id, type, ts, session, user, target, ref, decision, body, leaf"
_TXN_END: Final = frozenset({"commit", "rollback"})
_TXN_START: Final = frozenset({"begin"})


class ReportError(Exception):
    """The report cannot be made (unknown model or version); the message says why."""


def _rows(store: LedgerStore, sql: str, args: Sequence[Any]) -> list[EventRow]:
    return [
        EventRow(
            int(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], bytes(r[9]), bytes(r[10])
        )
        for r in store.conn.execute(sql, args).fetchall()
    ]


def _decode(row: EventRow) -> dict[str, Any]:
    try:
        ev = json.loads(row.body)
    except ValueError:
        ev = None
    if not isinstance(ev, dict):
        ev = {"type": row.type, "id": row.id, "ts": row.ts, "corrupt": True}
    ev["idx"] = row.idx
    return ev


# ---------------------------------------------------------------------------- lookups


class _Lookups:
    """Related events, read once per report (sessions, approvals, grants, completions)."""

    def __init__(self, store: LedgerStore) -> None:
        self.store = store
        self._sessions: dict[str, dict[str, Any] | None] = {}
        self._approvals: dict[str, list[dict[str, Any]]] = {}
        self._grants: dict[str, list[dict[str, Any]]] = {}

    def done(self, statement_id: str) -> dict[str, Any] | None:
        rows = _rows(
            self.store,
            f"SELECT {_COLS} FROM events WHERE ref = ? AND "
            "type = 'statement.done' ORDER BY idx LIMIT 1",
            (statement_id,),
        )
        return _decode(rows[0]) if rows else None

    def session_open(self, session: str | None) -> dict[str, Any] | None:
        if not session:
            return None
        if session not in self._sessions:
            rows = self.store.search(session=session, types=["connection.open"], limit=1)
            self._sessions[session] = _decode(rows[0]) if rows else None
        return self._sessions[session]

    def _linked(self, kind: str, ref: str) -> list[dict[str, Any]]:
        rows = _rows(
            self.store,
            f"SELECT {_COLS} FROM events WHERE type >= ? AND type < ? "
            f"AND json_extract(CAST(body AS TEXT), '$.{kind}') = ? ORDER BY idx",
            (f"{kind}.", f"{kind}/", ref),
        )
        return [_decode(r) for r in rows]

    def approval(self, ref: str) -> list[dict[str, Any]]:
        if ref not in self._approvals:
            self._approvals[ref] = self._linked("approval", ref)
        return self._approvals[ref]

    def grant(self, ref: str) -> list[dict[str, Any]]:
        if ref not in self._grants:
            self._grants[ref] = self._linked("grant", ref)
        return self._grants[ref]

    def transaction_end(self, session: str, after: int) -> tuple[str, list[int]]:
        """How the session's open transaction ended after index `after`, with evidence."""
        for row in self.store.search(
            session=session, types=["statement", "connection.close"], after=after, limit=10_000
        ):
            if row.type == "connection.close":
                return "rolled_back", [row.idx]  # PostgreSQL rolls back on disconnect
            ev = _decode(row)
            kinds = [str(k) for k in ev.get("kinds") or ()]
            ends = [i for i, k in enumerate(kinds) if k in _TXN_END]
            if not ends:
                continue
            done = self.done(str(ev.get("id")))
            if done is None:
                return "open", [row.idx]
            return _txn_tag(done, ends[0]), [row.idx, int(done["idx"])]
        return "open", []


def _txn_tag(done: Mapping[str, Any], index: int) -> str:
    """COMMIT of a failed transaction answers with the ROLLBACK tag."""
    tags = [str(t) for t in done.get("tags") or ()]
    if index < len(tags):
        tag = tags[index].upper()
        if tag.startswith("ROLLBACK"):
            return "rolled_back"
        if tag.startswith("COMMIT"):
            return "committed"
    return "open"


# ---------------------------------------------------------------------------- changes


def _approval_of(events: list[dict[str, Any]], ref: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": ref,
        "state": None,
        "rule": None,
        "requested_by": None,
        "approvers": [],
        "votes": [],
        "evidence": [],
    }
    for ev in events:
        out["evidence"].append(ev["idx"])
        kind = str(ev.get("type", "")).removeprefix("approval.")
        if kind == "requested":
            out.update(
                requested_by=ev.get("user"),
                requested_at=ev.get("ts"),
                rule=ev.get("rule"),
                reason=ev.get("reason"),
                risk=ev.get("risk"),
                state="pending",
            )
        elif kind == "vote":
            out["votes"].append(
                {
                    "user": ev.get("user"),
                    "verdict": ev.get("verdict"),
                    "reason": ev.get("reason"),
                    "ts": ev.get("ts"),
                    "index": ev["idx"],
                }
            )
        elif kind == "approved":
            out["approvers"] = list(ev.get("approvers") or [])
            out["state"] = "approved"
        elif kind in ("consumed", "denied", "timed_out", "withdrawn", "expired"):
            out["state"] = kind  # the latest state change wins
    if not events:
        out["state"] = "not in the ledger"
    return out


def _grant_of(events: list[dict[str, Any]], ref: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": ref,
        "group": None,
        "requested_by": None,
        "reason": None,
        "approvers": [],
        "evidence": [],
    }
    for ev in events:
        out["evidence"].append(ev["idx"])
        kind = str(ev.get("type", "")).removeprefix("grant.")
        if kind == "requested":
            out.update(group=ev.get("group"), requested_by=ev.get("user"), reason=ev.get("reason"))
        elif kind == "approved":
            out["approvers"] = list(ev.get("approvers") or [])
            out.update(starts_at=ev.get("starts_at"), ends_at=ev.get("ends_at"))
    return out


def _link_of(ev: Mapping[str, Any], model: str) -> dict[str, Any] | None:
    for link in ev.get("models") or ():
        if isinstance(link, Mapping) and link.get("name") == model:
            return dict(link)
    return None


def _rows_affected(done: Mapping[str, Any] | None, statements: Iterable[int]) -> int | None:
    if done is None:
        return None
    rows = done.get("rows") or []
    counted = [rows[i] for i in statements if i < len(rows) and isinstance(rows[i], int)]
    return sum(counted) if counted else None


def _analyse(
    lookups: _Lookups,
    ev: dict[str, Any],
    model: str,
    owners: frozenset[str],
    large_rows: int,
) -> dict[str, Any]:
    """One linked statement event -> a change (or a statement that changed nothing)."""
    link = _link_of(ev, model) or {}
    statements = [int(i) for i in link.get("statements") or [0]]
    evidence = [int(ev["idx"])]
    decision = dict(ev.get("decision") or {})
    done = lookups.done(str(ev.get("id")))
    if done is not None:
        evidence.append(int(done["idx"]))
    opened = lookups.session_open(ev.get("session"))
    if opened is not None:
        evidence.append(int(opened["idx"]))
    groups = sorted(str(g) for g in (opened or {}).get("groups") or ())
    sqlstate = str(done.get("sqlstate") or "00000") if done is not None else None
    rows = _rows_affected(done, statements)
    if decision.get("verdict") == "deny":
        outcome = "refused"
    elif done is None:
        outcome = "unknown"
    elif sqlstate == "00000":
        outcome = "applied"
    else:
        outcome = "failed"
    kinds = [str(k) for k in ev.get("kinds") or ()]
    transaction = "autocommit"
    if outcome in ("applied", "unknown"):
        first, last = min(statements), max(statements)
        if ev.get("in_txn") or any(k in _TXN_START for k in kinds[:first]):
            later = [i for i, k in enumerate(kinds) if i > last and k in _TXN_END]
            if later and done is not None:
                transaction = _txn_tag(done, later[0])
            elif later:
                transaction = "open"
            else:
                transaction, more = lookups.transaction_end(str(ev.get("session")), ev["idx"])
                evidence.extend(more)
        if transaction == "rolled_back":
            outcome = "rolled_back"
    approval = None
    if ev.get("approval_ref"):
        approval = _approval_of(lookups.approval(str(ev["approval_ref"])), str(ev["approval_ref"]))
        evidence.extend(approval["evidence"])
    grants = []
    for gid in decision.get("grants") or ():
        grant = _grant_of(lookups.grant(str(gid)), str(gid))
        evidence.extend(grant["evidence"])
        grants.append(grant)
    flags: list[str] = []
    if outcome in ("applied", "unknown"):
        if approval is None:
            flags.append("no_approval")
        if not owners & set(groups):
            flags.append("outside_owners")
        if rows is not None and rows >= large_rows:
            flags.append("large_rows")
        if grants:
            flags.append("jit_grant")
        if outcome == "unknown":
            flags.append("outcome_unknown")
        if transaction == "open":
            flags.append("uncommitted")
    return {
        "index": int(ev["idx"]),
        "id": ev.get("id"),
        "ts": ev.get("ts"),
        "user": ev.get("user"),
        "groups": groups,
        "target": ev.get("target"),
        "session": ev.get("session"),
        "tables": list(link.get("tables") or []),
        "rows": rows,
        "outcome": outcome,
        "sqlstate": sqlstate,
        "transaction": transaction,
        "decision": {k: decision[k] for k in ("verdict", "rule", "reason") if k in decision},
        "approval": approval,
        "grants": grants,
        "flags": flags,
        "statement": {
            k: ev[k]
            for k in (
                "type",
                "sql",
                "params",
                "kinds",
                "reads",
                "writes",
                "search_path",
                "protocol",
            )
            if k in ev
        },
        "evidence": sorted(set(evidence)),
    }


def changes_between(
    store: LedgerStore,
    model: str,
    lo: int,
    hi: int | None,
    *,
    owners: Iterable[str],
    large_rows: int = DEFAULT_LARGE_ROWS,
    user: str | None = None,
    limit: int | None = None,
    newest_first: bool = False,
) -> list[dict[str, Any]]:
    """Every statement in `[lo, hi)` linked to `model`, analysed (see the module docstring).

    `user` restricts to one identity's statements (the dashboard's scope).
    """
    where = ["type = 'statement'", "idx >= ?"]
    args: list[Any] = [lo]
    if hi is not None:
        where.append("idx < ?")
        args.append(hi)
    if user is not None:
        where.append("user = ?")
        args.append(user)
    where.append(
        "EXISTS (SELECT 1 FROM json_each(CAST(body AS TEXT), '$.models') AS j "
        "WHERE json_extract(j.value, '$.name') = ?)"
    )
    args.append(model)
    sql = f"SELECT {_COLS} FROM events WHERE {' AND '.join(where)} ORDER BY idx"
    sql += " DESC" if newest_first else ""
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    lookups = _Lookups(store)
    owner_set = frozenset(owners)
    return [
        _analyse(lookups, _decode(r), model, owner_set, large_rows) for r in _rows(store, sql, args)
    ]


def count_linked(store: LedgerStore, model: str, *, not_user: str | None = None) -> int:
    """Statement events linked to `model` (by identities other than `not_user`)."""
    sql = (
        "SELECT count(*) FROM events WHERE type = 'statement' AND EXISTS (SELECT 1 FROM "
        "json_each(CAST(body AS TEXT), '$.models') AS j WHERE json_extract(j.value, "
        "'$.name') = ?)"
    )
    args: list[Any] = [model]
    if not_user is not None:
        sql += " AND (user IS NULL OR user != ?)"
        args.append(not_user)
    return int(store.conn.execute(sql, args).fetchone()[0])


# ---------------------------------------------------------------------------- the report


@dataclass
class ModelReport:
    model: str
    frm: Marker | None
    to: Marker
    owners: list[str]
    inputs: list[dict[str, Any]]
    large_rows: int
    changes: list[dict[str, Any]]
    not_applied: list[dict[str, Any]]
    ledger_size: int
    generated_at: str = field(
        default_factory=lambda: datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    )

    @property
    def window(self) -> tuple[int, int]:
        return (self.frm.seal if self.frm is not None else 0, self.to.seal)

    @property
    def fingerprint_changed(self) -> bool | None:
        """Whether the input digests differ; None unless both retrains carry one."""
        a = self.frm.digest if self.frm is not None else None
        b = self.to.digest
        return None if a is None or b is None else a != b

    @property
    def evidence(self) -> list[int]:
        found = {self.to.index}
        if self.frm is not None:
            found.add(self.frm.index)
        for c in (*self.changes, *self.not_applied):
            found.update(c["evidence"])
        return sorted(found)

    def summary(self) -> dict[str, Any]:
        flags = {f: sum(f in c["flags"] for c in self.changes) for f in FLAGS}
        return {
            "changes": len(self.changes),
            "rows": sum(c["rows"] or 0 for c in self.changes),
            "identities": sorted({str(c["user"]) for c in self.changes}),
            "tables": sorted({t for c in self.changes for t in c["tables"]}),
            "flags": {f: n for f, n in flags.items() if n},
            "not_applied": len(self.not_applied),
        }

    def as_json(self) -> dict[str, Any]:
        lo, hi = self.window
        return {
            "format": FORMAT,
            "model": self.model,
            "from": self.frm.as_json() if self.frm is not None else None,
            "to": self.to.as_json(),
            "window": {"first": lo, "end": hi},
            "owners": self.owners,
            "inputs": self.inputs,
            "large_rows": self.large_rows,
            "fingerprint_changed": self.fingerprint_changed,
            "summary": self.summary(),
            "flags": {f: FLAGS[f] for f in FLAGS},
            "changes": self.changes,
            "not_applied": self.not_applied,
            "evidence": self.evidence,
            "ledger_size": self.ledger_size,
            "generated_at": self.generated_at,
        }


def build_report(
    store: LedgerStore,
    model: str,
    *,
    from_version: str | None = None,
    to_version: str | None = None,
    large_rows: int | None = None,
    declared: Model | None = None,
) -> ModelReport:
    """The changes to `model`'s inputs between two retrains (default: the last two).

    With only one retrain marked, the window starts at the beginning of the
    ledger. `declared` is the model in today's policy: its `large_rows` applies
    when `large_rows` is not given, and its owners when the marker has none.
    """
    found = markers(store, model)
    if not found:
        raise ReportError(
            f"no retrain of {model} is marked in the ledger (dbgov models "
            f"retrain {model} --version V)"
        )
    if to_version is not None:
        to = find_marker(found, to_version)
        if to is None:
            raise ReportError(
                f"{model} version {to_version} is not marked; marked: "
                f"{', '.join(dict.fromkeys(m.version for m in found))}"
            )
    else:
        to = found[-1]
    frm: Marker | None
    if from_version is not None:
        frm = find_marker(found, from_version)
        if frm is None:
            raise ReportError(f"{model} version {from_version} is not marked")
        if frm.seal > to.seal:
            raise ReportError(
                f"version {from_version} was marked after {to.version}: give "
                "--from the earlier version"
            )
    else:
        earlier = [m for m in found if m.index < to.index and m.version != to.version]
        frm = earlier[-1] if earlier else None
    owners = sorted(str(o) for o in to.event.get("owners") or ())
    if not owners and declared is not None:
        owners = sorted(declared.owners)
    inputs = list(to.event.get("inputs") or [])
    if large_rows is None:
        large_rows = (declared.large_rows if declared is not None else None) or DEFAULT_LARGE_ROWS
    lo = frm.seal if frm is not None else 0
    analysed = changes_between(store, model, lo, to.seal, owners=owners, large_rows=large_rows)
    applied = [c for c in analysed if c["outcome"] in ("applied", "unknown")]
    others = [c for c in analysed if c["outcome"] not in ("applied", "unknown")]
    return ModelReport(model, frm, to, owners, inputs, large_rows, applied, others, store.size())


# ---------------------------------------------------------------------------- output


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.files("dbgov.models") / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["short_ts"] = lambda ts: str(ts or "")[:19].replace("T", " ")
    return env


def render_html(doc: Mapping[str, Any], base_url: str | None = None) -> str:
    """The report (`ModelReport.as_json()`, redacted as wanted) as one HTML file."""
    return _env().get_template("report.html").render(r=doc, flags=FLAGS, base_url=base_url)


def _after(ts: str) -> str:
    t = datetime.datetime.strptime(ts[:26], "%Y-%m-%dT%H:%M:%S.%f")
    t += datetime.timedelta(microseconds=1)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write_evidence(
    store: LedgerStore,
    report: ModelReport,
    out_dir: Path,
    *,
    key: str | None = None,
    doc: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a verifiable bundle covering the report's evidence, and one receipt per event.

    `out_dir` gets the bundle files (`ledger/bundle.py`: events.jsonl,
    checkpoint.note, proofs.json, key.pub), `receipts/<index>.json`, and
    `report.json` (`doc`, else the report's JSON). Raises
    `receipts.NotCoveredError` when the latest signed checkpoint does not cover
    every evidence event yet.
    """
    from dbgov.durable import write_atomic
    from dbgov.ledger.bundle import write_bundle
    from dbgov.ledger.receipts import NotCoveredError, build_receipt

    evidence = report.evidence
    latest = store.latest_checkpoint()
    if latest is None or latest[0] <= evidence[-1]:
        raise NotCoveredError(
            f"event #{evidence[-1]} is not covered by a signed checkpoint yet (latest covers "
            f"{latest[0] if latest else 0} events)"
        )
    rows = [store.event(i) for i in evidence]
    missing = [i for i, r in zip(evidence, rows, strict=True) if r is None]
    if missing:
        raise LookupError(f"the ledger has no event #{missing[0]}; run dbgov audit verify")
    present = [r for r in rows if r is not None]
    since = min(r.ts for r in present)
    until = _after(max(r.ts for r in present))
    info = write_bundle(store, out_dir, since=since, until=until, key=key)
    if not info.first <= evidence[0] or not evidence[-1] < info.end:
        raise LookupError(
            "event timestamps are out of step with ledger order; the bundle "
            f"[{info.first}, {info.end}) misses some evidence"
        )
    receipts = out_dir / "receipts"
    receipts.mkdir(exist_ok=True)
    for row in present:
        receipt = build_receipt(store, row, key)
        write_atomic(
            receipts / f"{row.idx}.json",
            (json.dumps(receipt, indent=2, ensure_ascii=False) + "\n").encode(),
        )
    body = doc if doc is not None else report.as_json()
    write_atomic(
        out_dir / "report.json", (json.dumps(body, indent=2, ensure_ascii=False) + "\n").encode()
    )
    return {"first": info.first, "end": info.end, "size": info.size, "receipts": len(present)}
