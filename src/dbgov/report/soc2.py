"""The SOC 2 evidence report: ledger → figures per control → HTML.

Pure: `build_report` reads a `LedgerStore` (and the ledger's public key to
verify it) and returns data; `render_html` turns that data into one
self-contained HTML file (`dbgov report soc2`), and `render_body` into the
fragment the dashboard shows. Nothing here writes or reaches the network.

Every figure is a count of ledger events, and the report lists the ledger
index of each event it counted, linked to the dashboard's event page (with its
inclusion proof) when a base URL is given; `dbgov audit prove <index>` checks
any of them offline. The figures come from `web.queries` and plain SQL over the
same rows, so the dashboard and the report cannot disagree.

Evidence → Trust Services Criteria (2017, revised points of focus 2022):

- CC6.1 logical access security: the access list with groups; reads of masked data
- CC6.2 registration and authorization of users: the access list; failed logins
- CC6.3 role-based access, least privilege: use of privileged access; denied attempts
- CC6.6 threats from outside the boundary: failed logins; denied attempts
- CC6.7 restricting transmission of data: reads of masked data; TLS on connections
- CC7.2 monitoring for anomalies: denied attempts; failed logins; ledger verification
- CC7.3 evaluating security events: denied attempts; refused approvals
- CC8.1 change management: changes with their approvals and approvers
"""

from __future__ import annotations

import datetime
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final

import jinja2
from markupsafe import Markup

from dbgov.ledger.note import Verifier
from dbgov.sql.kinds import CATEGORY_OF_KIND
from dbgov.sql.model import Category
from dbgov.store.sqlite import LedgerStore
from dbgov.web import queries
from dbgov.web.redact import Redactor
from dbgov.web.verification import verify_ledger

MAX_LISTED: Final = 2000
"""Events listed per figure; beyond this the report says how to list the rest."""

CHANGE_CATEGORIES: Final = frozenset({Category.DDL, Category.PRIVILEGE})
DEFAULT_ADMIN_GROUPS: Final = frozenset({"dba"})


@dataclass
class Figure:
    """One number in the report and the ledger events it counts."""

    key: str
    title: str
    count: int
    indexes: list[int]
    breakdown: dict[str, int] = field(default_factory=dict)
    note: str = ""
    audit_query: dict[str, str] = field(default_factory=dict)

    @property
    def truncated(self) -> bool:
        return len(self.indexes) < self.count


@dataclass
class Control:
    id: str
    title: str
    what: str
    figures: list[str]


CONTROLS: Final = (
    Control(
        "CC6.1",
        "Logical access security",
        "Every connection is made by a verified identity whose groups come from a trusted "
        "issuer; personal data is masked for groups not exempt by policy.",
        ["access", "masked_reads"],
    ),
    Control(
        "CC6.2",
        "Registration and authorization of users",
        "Only identities with a token from a configured issuer (or a configured service "
        "account) connect; refused logins are recorded with their reason.",
        ["access", "failed_logins"],
    ),
    Control(
        "CC6.3",
        "Role-based access and least privilege",
        "Privileged access (admin groups, just-in-time grants) is recorded statement by "
        "statement; statements outside a grant are denied before they run.",
        ["privileged", "denials"],
    ),
    Control(
        "CC6.6",
        "Protection against threats from outside the boundary",
        "Credentials are verified at the proxy; failed logins and refused statements are "
        "recorded with the client address.",
        ["failed_logins", "denials"],
    ),
    Control(
        "CC6.7",
        "Restricting the transmission of data",
        "Masked columns leave the proxy masked; connections report whether TLS was used.",
        ["masked_reads", "tls"],
    ),
    Control(
        "CC7.2",
        "Monitoring for anomalies",
        "Denials and failed logins are counted and listed; the tamper-evident ledger is "
        "verified against its signed checkpoint.",
        ["denials", "failed_logins", "verification"],
    ),
    Control(
        "CC7.3",
        "Evaluating security events",
        "Each denial names the rule and reason; refused or expired approvals are listed.",
        ["denials", "refused_approvals"],
    ),
    Control(
        "CC8.1",
        "Change management",
        "Schema and privilege changes ran only as recorded here, with the approval and "
        "approvers where policy required one.",
        ["changes"],
    ),
)


@dataclass
class Soc2Report:
    since: str | None
    until: str | None
    generated_at: str
    figures: dict[str, Figure]
    access: list[dict[str, Any]]
    changes: list[dict[str, Any]]
    verification: dict[str, Any]
    controls: Sequence[Control] = CONTROLS

    def as_json(self) -> dict[str, Any]:
        return {
            "period": {"from": self.since, "to": self.until},
            "generated_at": self.generated_at,
            "controls": [
                {"id": c.id, "title": c.title, "what": c.what, "figures": c.figures}
                for c in self.controls
            ],
            "figures": {
                k: {
                    "title": f.title,
                    "count": f.count,
                    "events": f.indexes,
                    "breakdown": f.breakdown,
                    "note": f.note,
                    "truncated": f.truncated,
                }
                for k, f in self.figures.items()
            },
            "access": self.access,
            "changes": self.changes,
            "verification": self.verification,
        }


def parse_day_or_time(text: str | None, *, end: bool = False) -> str | None:
    """'2026-01-31' (a whole day; `end` means the day after) or an ISO time → ledger ISO."""
    if not text:
        return None
    try:
        if len(text) == 10:
            day = datetime.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=datetime.UTC)
            return queries.iso(day + datetime.timedelta(days=1) if end else day)
        t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a date (YYYY-MM-DD) or ISO 8601 time: {text!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.UTC)
    return queries.iso(t)


def _window_sql(window: queries.Window, prefix: str = "") -> tuple[str, list[Any]]:
    clauses, args = window.where(f"{prefix}ts")
    return ("".join(f" AND {c}" for c in clauses), args)


def _events(store: LedgerStore, sql: str, args: Sequence[Any]) -> list[dict[str, Any]]:
    return [queries.decode(r) for r in queries.rows_of(store, sql, args)]


def _figure(
    key: str,
    title: str,
    events: list[dict[str, Any]],
    breakdown_by: str | None = None,
    note: str = "",
    audit_query: Mapping[str, str] | None = None,
) -> Figure:
    counts: Counter[str] = Counter()
    if breakdown_by:
        for ev in events:
            counts[str(_dig(ev, breakdown_by))] += 1
    return Figure(
        key,
        title,
        len(events),
        [int(e["idx"]) for e in events][:MAX_LISTED],
        dict(counts.most_common()),
        note,
        dict(audit_query or {}),
    )


def _dig(ev: Mapping[str, Any], path: str) -> Any:
    cur: Any = ev
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, Mapping) else None
    return cur


def _is_change(kinds: Iterable[str]) -> bool:
    return any(CATEGORY_OF_KIND.get(k) in CHANGE_CATEGORIES for k in kinds)


def build_report(
    store: LedgerStore,
    *,
    since: str | None,
    until: str | None,
    verifier: Verifier | None,
    redactor: Redactor,
    admin_groups: frozenset[str] = DEFAULT_ADMIN_GROUPS,
    now: datetime.datetime | None = None,
) -> Soc2Report:
    """Collect every figure for events with `since <= ts < until` (either may be open)."""
    window = queries.Window(since, until)
    w, args = _window_sql(window)
    cols = f"SELECT {queries.COLS} FROM events"
    figures: dict[str, Figure] = {}

    opens = _events(store, f"{cols} WHERE type = 'connection.open'{w} ORDER BY idx", args)
    figures["access"] = _figure(
        "access",
        "Connections by verified identities",
        opens,
        "user",
        audit_query={"type": "connection.open"},
    )
    figures["tls"] = _figure(
        "tls",
        "Connections without TLS",
        [e for e in opens if not e.get("tls")],
        "user",
        note="connections from clients that did not negotiate TLS (loopback clients may)",
        audit_query={"type": "connection.open"},
    )
    failed = _events(store, f"{cols} WHERE type = 'auth.failed'{w} ORDER BY idx", args)
    figures["failed_logins"] = _figure(
        "failed_logins", "Failed logins", failed, "reason", audit_query={"type": "auth.failed"}
    )
    denials = _events(
        store, f"{cols} WHERE type = 'statement' AND decision = 'deny'{w} ORDER BY idx", args
    )
    figures["denials"] = _figure(
        "denials",
        "Denied statements",
        denials,
        "decision.rule",
        audit_query={"type": "statement", "decision": "deny"},
    )
    masked = _events(
        store,
        f"{cols} WHERE type = 'statement.done' AND "
        f"json_extract({queries.BODY}, '$.masked') IS NOT NULL{w} "
        "ORDER BY idx",
        args,
    )
    figures["masked_reads"] = _figure(
        "masked_reads",
        "Results returned with masked columns",
        masked,
        "user",
        audit_query={"type": "statement.done"},
    )
    masked_by_column: Counter[str] = Counter()
    for ev in masked:
        for m in ev.get("masked") or []:
            masked_by_column[f"{m.get('column')} ({m.get('mask')})"] += 1
    figures["masked_reads"].note = (
        "by column: " + ", ".join(f"{c}: {n}" for c, n in masked_by_column.most_common())
        if masked_by_column
        else ""
    )

    privileged = _privileged(store, window, admin_groups)
    figures["privileged"] = _figure(
        "privileged",
        "Statements run with privileged access",
        privileged,
        "user",
        note=f"statements in sessions of {', '.join(sorted(admin_groups))} and statements "
        "that relied on a just-in-time grant",
        audit_query={"type": "statement"},
    )
    refused = _events(
        store,
        f"{cols} WHERE type IN ('approval.denied', 'approval.timed_out', "
        f"'grant.denied', 'grant.timed_out'){w} ORDER BY idx",
        args,
    )
    figures["refused_approvals"] = _figure(
        "refused_approvals", "Approval requests denied or timed out", refused, "type"
    )

    changes, change_events = _changes(store, window)
    figures["changes"] = _figure(
        "changes",
        "Schema and privilege changes that ran",
        change_events,
        "user",
        note="with their approvals: "
        + (
            f"{sum(1 for c in changes if c['approval'])} of {len(changes)} went through an approval"
            if changes
            else "none"
        ),
        audit_query={"type": "statement"},
    )

    verification = verify_ledger(store, verifier)
    figures["verification"] = Figure(
        "verification",
        "Ledger verification",
        int(verification.get("events") or 0),
        [],
        {"result": 1} if verification.get("ok") else {"failed": 1},
        "verified: every event re-hashed, every signed checkpoint checked"
        if verification.get("ok")
        else str(verification.get("message", "verification failed")),
    )

    access = _access_list(opens)
    generated = now or datetime.datetime.now(datetime.UTC)
    return Soc2Report(
        since,
        until,
        queries.iso(generated),
        figures,
        access,
        [redactor.event(c) if "sql" in c else c for c in changes],
        verification,
    )


def _access_list(opens: list[dict[str, Any]]) -> list[dict[str, Any]]:
    people: dict[str, dict[str, Any]] = {}
    for ev in opens:
        user = str(ev.get("user"))
        p = people.setdefault(
            user,
            {
                "user": user,
                "groups": set(),
                "auth": set(),
                "issuers": set(),
                "targets": set(),
                "sessions": 0,
                "first": ev.get("ts"),
                "last": ev.get("ts"),
                "first_idx": ev["idx"],
            },
        )
        p["groups"].update(ev.get("groups") or [])
        p["auth"].add(str(ev.get("auth")))
        if ev.get("issuer"):
            p["issuers"].add(str(ev["issuer"]))
        p["targets"].add(str(ev.get("target")))
        p["sessions"] += 1
        p["last"] = ev.get("ts")
    return [
        {k: sorted(v) if isinstance(v, set) else v for k, v in p.items()}
        for p in sorted(people.values(), key=lambda p: str(p["user"]))
    ]


def _privileged(
    store: LedgerStore, window: queries.Window, admin_groups: frozenset[str]
) -> list[dict[str, Any]]:
    """Statements in sessions opened with an admin group, or that used a JIT grant."""
    w, args = _window_sql(window, "s.")
    marks = ",".join("?" * len(admin_groups))
    rows = queries.rows_of(
        store,
        f"SELECT {', '.join('s.' + c.strip() for c in queries.COLS.split(','))} FROM events s "
        f"WHERE s.type = 'statement'{w} AND ("
        f"json_extract(CAST(s.body AS TEXT), '$.decision.grants') IS NOT NULL OR s.session IN ("
        "SELECT o.session FROM events o, json_each(CAST(o.body AS TEXT), '$.groups') g "
        f"WHERE o.type = 'connection.open' AND g.value IN ({marks}))) ORDER BY s.idx",
        [*args, *sorted(admin_groups)],
    )
    return [queries.decode(r) for r in rows]


def _changes(
    store: LedgerStore, window: queries.Window
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """DDL and privilege statements that ran, each with its approval and approvers."""
    w, args = _window_sql(window)
    statements = _events(
        store,
        f"SELECT {queries.COLS} FROM events WHERE type = 'statement' "
        f"AND decision != 'deny'{w} ORDER BY idx",
        args,
    )
    statements = [s for s in statements if _is_change(s.get("kinds") or [])]
    queries.with_outcome(store, statements)
    ran = [s for s in statements if s["status"] in ("allowed", "masked")]
    out = []
    for s in ran:
        ref = s.get("approval_ref")
        approval = None
        if ref:
            evs = _events(
                store,
                f"SELECT {queries.COLS} FROM events WHERE type LIKE 'approval.%' "
                f"AND json_extract({queries.BODY}, '$.approval') = ? "
                "ORDER BY idx",
                [str(ref)],
            )
            approved = [e for e in evs if e.get("type") == "approval.approved"]
            votes = [e for e in evs if e.get("type") == "approval.vote"]
            approval = {
                "id": str(ref),
                "approvers": list(approved[-1].get("approvers") or [])
                if approved
                else sorted({str(v.get("user")) for v in votes if v.get("verdict") == "approve"}),
                "reason": next(
                    (e.get("reason") for e in evs if e.get("type") == "approval.requested"), None
                ),
                "events": [int(e["idx"]) for e in evs],
            }
        out.append(
            {
                "idx": s["idx"],
                "ts": s.get("ts"),
                "user": s.get("user"),
                "target": s.get("target"),
                "kinds": s.get("kinds") or [],
                "sql": s.get("sql"),
                "reads": s.get("reads"),
                "writes": s.get("writes"),
                "type": "statement",
                "rule": (s.get("decision") or {}).get("rule"),
                "done_idx": (s.get("done") or {}).get("idx"),
                "approval": approval,
            }
        )
    return out, ran


# ---------------------------------------------------------------------------- HTML


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.files("dbgov.report") / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["short_ts"] = lambda ts: str(ts or "")[:19].replace("T", " ")
    env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True)
    return env


def render_body(report: Soc2Report, base_url: str | None = None) -> Markup:
    """The report's content, for embedding in a page (no <html>, no styles)."""
    html = _env().get_template("soc2_body.html").render(r=report, base=base_url)
    return Markup(html)  # noqa: S704  (rendered with autoescape above)


def render_html(report: Soc2Report, base_url: str | None = None) -> str:
    """A self-contained HTML document (inline styles, no scripts, no external assets)."""
    return (
        _env()
        .get_template("soc2.html")
        .render(r=report, base=base_url, body=render_body(report, base_url))
    )
