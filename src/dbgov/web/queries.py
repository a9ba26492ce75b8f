"""Every read the dashboard, API, metrics and SOC 2 report make: pure functions of a store.

Nothing here writes, opens files or knows about HTTP. Each function takes the
`LedgerStore` and the `scope` — the one user whose events may be read, or None
for everyone (`Viewer.scope_user()`) — so what a person may see is enforced
where the rows are read, not in templates. Results are plain dicts and lists,
ready for JSON and for Jinja2.

The store keeps a few columns copied out of each event (type, user, session,
ref, decision verdict); everything else is read from the canonical JSON body
with SQLite's JSON1 functions. Tables are named as the statement wrote them
(``customers`` or ``public.customers``); `qualify` turns them into
``schema.table`` with the event's search_path, the way the proxy resolved them.

Outcome of a statement (`status`), from its event and its `statement.done`:
``denied`` (policy said no, or an approval was refused), ``pending`` (held for
approval, not finished), ``masked`` (ran and some output was masked),
``allowed`` (ran), ``failed`` (ran and the database reported an error), or
``running`` (allowed, not finished yet).
"""

from __future__ import annotations

import datetime
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from dbgov.store.sqlite import EventRow, LedgerStore, ts_window

BODY: Final = "CAST(body AS TEXT)"


COLS: Final = "idx, id, type, ts, session, user, target, ref, decision, body, leaf"


def rows_of(store: LedgerStore, sql: str, args: Sequence[Any]) -> list[EventRow]:
    return [
        EventRow(
            int(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], bytes(r[9]), bytes(r[10])
        )
        for r in store.conn.execute(sql, args).fetchall()
    ]


def parse_ts(ts: str) -> datetime.datetime:
    return datetime.datetime.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.UTC)


def iso(t: datetime.datetime) -> str:
    return t.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def qualify(table: str, search_path: str | None = None) -> str:
    if "." in table:
        return table
    schema = (search_path or "public").split(",")[0].strip() or "public"
    return f"{schema}.{table}"


def table_variants(table: str) -> tuple[str, ...]:
    """Names an event may use for ``schema.table``: qualified, and bare for public."""
    schema, _, name = table.rpartition(".")
    return (table, name) if schema == "public" else (table,)


def decode(row: EventRow) -> dict[str, Any]:
    """The event's JSON with its ledger index added (as ``idx``)."""
    try:
        ev = json.loads(row.body)
    except ValueError:
        ev = {"type": row.type, "id": row.id, "ts": row.ts, "corrupt": True}
    if not isinstance(ev, dict):
        ev = {"type": row.type, "id": row.id, "ts": row.ts, "corrupt": True}
    ev["idx"] = row.idx
    return ev


@dataclass(frozen=True, slots=True)
class Window:
    """A time range, ISO strings as the ledger stores them; None = open ended."""

    since: str | None = None
    until: str | None = None

    def where(self, col: str = "ts") -> tuple[list[str], list[Any]]:
        return ts_window(self.since, self.until, col)


def _scoped(scope: str | None, window: Window, col_prefix: str = "") -> tuple[str, list[Any]]:
    clauses, args = window.where(f"{col_prefix}ts")
    if scope is not None:
        clauses.append(f"{col_prefix}user = ?")
        args.append(scope)
    return (" AND " + " AND ".join(clauses)) if clauses else "", args


# ---------------------------------------------------------------------------- statements


def status_of(statement: Mapping[str, Any], done: Mapping[str, Any] | None) -> str:
    verdict = (statement.get("decision") or {}).get("verdict")
    if verdict == "deny":
        return "denied"
    if done is None:
        return "pending" if verdict == "approval" else "running"
    sqlstate = str(done.get("sqlstate") or "00000")
    if sqlstate == "42501" and verdict == "approval":
        return "denied"  # refused or timed out while held
    if sqlstate != "00000":
        return "denied" if sqlstate == "42501" else "failed"
    return "masked" if done.get("masked") else "allowed"


def dones_for(store: LedgerStore, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The `statement.done` event of each statement id that has one."""
    out: dict[str, dict[str, Any]] = {}
    for i in range(0, len(ids), 500):
        chunk = list(ids[i : i + 500])
        marks = ",".join("?" * len(chunk))
        rows = rows_of(
            store,
            f"SELECT {COLS} FROM events WHERE type = 'statement.done' AND ref IN ({marks})",
            chunk,
        )
        for r in rows:
            if r.ref is not None:
                out[r.ref] = decode(r)
    return out


def with_outcome(store: LedgerStore, statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Statement events joined with their completion and `status`."""
    done = dones_for(store, [str(s["id"]) for s in statements])
    for s in statements:
        d = done.get(str(s["id"]))
        s["done"] = d
        s["status"] = status_of(s, d)
    return statements


def recent_statements(
    store: LedgerStore, scope: str | None, *, limit: int = 50, after: int | None = None
) -> list[dict[str, Any]]:
    """The latest statement events, newest first, each with its outcome."""
    rows = store.search(
        user=scope, types=["statement"], after=after, limit=limit, newest_first=after is None
    )
    if after is not None:
        rows.reverse()
    return with_outcome(store, [decode(r) for r in rows])


# ---------------------------------------------------------------------------- sessions


def open_sessions(
    store: LedgerStore,
    scope: str | None,
    state: Mapping[str, Any] | None,
    alive: Callable[[int], bool],
) -> list[dict[str, Any]]:
    """Sessions opened by the running dbgov that have not closed, newest first.

    A session counts as open when its `connection.open` has no `connection.close`,
    it was opened since the running supervisor started (`state.json`), and the
    worker process that owns it (`worker_pid`; older events name only the worker's
    slot) is still one of the running workers: a killed worker writes no close event.
    """
    if not state:
        return []
    started = state.get("started_at")
    since = iso(datetime.datetime.fromtimestamp(float(started), datetime.UTC)) if started else None
    workers = [int(p) for p in state.get("workers") or []]
    extra, args = _scoped(scope, Window(since=since))
    rows = rows_of(
        store,
        f"SELECT {COLS} FROM events WHERE type = 'connection.open'{extra} AND session NOT IN "
        "(SELECT session FROM events WHERE type = 'connection.close' AND session IS NOT NULL"
        + (" AND ts >= ?" if since else "")
        + ") ORDER BY idx DESC LIMIT 1000",
        [*args, *([since] if since else [])],
    )
    out = []
    for r in rows:
        ev = decode(r)
        pid, worker = ev.get("worker_pid"), ev.get("worker")
        if isinstance(pid, int):  # its worker may have been replaced in the same slot
            if pid not in workers or not alive(pid):
                continue
        elif isinstance(worker, int) and 0 <= worker < len(workers) and not alive(workers[worker]):
            continue
        last = store.search(session=r.session, types=["statement"], newest_first=True, limit=1)
        current = with_outcome(store, [decode(last[0])])[0] if last else None
        count = store.conn.execute(
            "SELECT count(*) FROM events WHERE type = 'statement' AND id >= ? AND id < ?",
            (f"{r.session}:", f"{r.session};"),
        ).fetchone()[0]
        out.append(
            {
                "session": r.session,
                "user": ev.get("user"),
                "groups": ev.get("groups") or [],
                "target": ev.get("target"),
                "client": ev.get("client"),
                "application_name": ev.get("application_name"),
                "tls": ev.get("tls"),
                "auth": ev.get("auth"),
                "since": ev.get("ts"),
                "idx": r.idx,
                "statements": int(count),
                "current": current,
            }
        )
    return out


# ---------------------------------------------------------------------------- search


@dataclass(frozen=True, slots=True)
class Filters:
    """What the audit search accepts; every field optional."""

    user: str | None = None
    target: str | None = None
    types: tuple[str, ...] = ()
    decision: str | None = None
    session: str | None = None
    since: str | None = None
    until: str | None = None
    text: str | None = None
    table: str | None = None
    access: str | None = None  # "read" | "write" with table
    before: int | None = None  # idx < before (paging newest first)


def search_events(
    store: LedgerStore, scope: str | None, f: Filters, *, limit: int = 100
) -> list[EventRow]:
    """Events matching `f` that `scope` may see, newest first.

    A scoped viewer asking for another user's events gets none, never an error
    that would confirm the user exists.
    """
    if scope is not None and f.user is not None and f.user != scope:
        return []
    user = scope if scope is not None else f.user
    where: list[str] = []
    args: list[Any] = []
    for col, val in (("user", user), ("target", f.target), ("decision", f.decision)):
        if val:
            where.append(f"{col} = ?")
            args.append(val)
    if f.session:
        where.append("id >= ? AND id < ?")
        args.extend((f"{f.session}:", f"{f.session};"))
    if f.types:
        where.append(f"type IN ({','.join('?' * len(f.types))})")
        args.extend(f.types)
    clauses, wargs = Window(f.since, f.until).where()
    where.extend(clauses)
    args.extend(wargs)
    if f.before is not None:
        where.append("idx < ?")
        args.append(f.before)
    if f.text:
        where.append(f"instr(lower({BODY}), lower(?)) > 0")
        args.append(f.text)
    if f.table:
        paths = {"read": ["$.reads"], "write": ["$.writes"]}.get(
            f.access or "", ["$.reads", "$.writes"]
        )
        names = table_variants(f.table)
        ors = []
        for p in paths:
            ors.append(
                f"EXISTS (SELECT 1 FROM json_each({BODY}, '{p}') j WHERE j.value IN "
                f"({','.join('?' * len(names))}))"
            )
            args.extend(names)
        ors.append(
            f"EXISTS (SELECT 1 FROM json_each({BODY}, '$.masked') m WHERE "
            "json_extract(m.value, '$.column') LIKE ?)"
        )
        args.append(f"{f.table}.%")
        where.append("(" + " OR ".join(ors) + ")")
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    return rows_of(
        store,
        f"SELECT {COLS} FROM events {clause} ORDER BY idx DESC LIMIT ?",
        [*args, limit],
    )


def event_at(store: LedgerStore, scope: str | None, idx: int) -> EventRow | None:
    """One event by ledger index, if `scope` may see it."""
    row = store.event(idx)
    if row is None or (scope is not None and row.user != scope):
        return None
    return row


# ---------------------------------------------------------------------------- identities


def identities(
    store: LedgerStore, scope: str | None, window: Window = Window()
) -> list[dict[str, Any]]:
    """Per identity: sessions, statements by kind, tables, masked reads, denials, approvals."""
    extra, args = _scoped(scope, window)
    extra_e, _ = _scoped(scope, window, "e.")
    people: dict[str, dict[str, Any]] = {}

    def person(user: str) -> dict[str, Any]:
        return people.setdefault(
            user,
            {
                "user": user,
                "groups": [],
                "sessions": 0,
                "statements": 0,
                "kinds": {},
                "tables": [],
                "masked_reads": 0,
                "denials": 0,
                "approvals": 0,
                "failed_logins": 0,
                "last_seen": None,
            },
        )

    conn = store.conn
    for user, groups, n, last in conn.execute(
        f"SELECT user, json_extract({BODY}, '$.groups'), count(*), max(ts) FROM events "
        f"WHERE type = 'connection.open' AND user IS NOT NULL{extra} GROUP BY user",
        args,
    ):
        p = person(user)
        p["sessions"] = int(n)
        p["groups"] = json.loads(groups) if groups else []
        p["last_seen"] = last
    for user, decision, n, last in conn.execute(
        f"SELECT user, decision, count(*), max(ts) FROM events WHERE type = 'statement' "
        f"AND user IS NOT NULL{extra} GROUP BY user, decision",
        args,
    ):
        p = person(user)
        p["statements"] += int(n)
        if decision == "deny":
            p["denials"] += int(n)
        elif decision == "approval":
            p["approvals"] += int(n)
        p["last_seen"] = max(p["last_seen"] or "", last)
    for user, kind, n in conn.execute(
        f"SELECT e.user, j.value, count(*) FROM events e, "
        f"json_each(CAST(e.body AS TEXT), '$.kinds') j "
        f"WHERE e.type = 'statement' AND e.user IS NOT NULL{extra_e} GROUP BY e.user, j.value",
        args,
    ):
        person(user)["kinds"][str(kind)] = int(n)
    for user, n in conn.execute(
        f"SELECT user, count(*) FROM events WHERE type = 'statement.done' "
        f"AND json_extract({BODY}, '$.masked') IS NOT NULL AND user IS NOT NULL{extra} "
        "GROUP BY user",
        args,
    ):
        person(user)["masked_reads"] = int(n)
    for user, n in conn.execute(
        f"SELECT user, count(*) FROM events WHERE type = 'auth.failed' AND user IS NOT NULL"
        f"{extra} GROUP BY user",
        args,
    ):
        person(user)["failed_logins"] = int(n)
    tables: dict[str, set[str]] = defaultdict(set)
    for cell in matrix(store, scope, window):
        tables[cell["user"]].add(cell["table"])
    for user, ts in tables.items():
        person(user)["tables"] = sorted(ts)
    return sorted(people.values(), key=lambda p: str(p["user"]))


def matrix(
    store: LedgerStore, scope: str | None, window: Window = Window()
) -> list[dict[str, Any]]:
    """Identity x table cells: statements that read or wrote the table, by outcome.

    ``reads``/``writes`` count statements that ran (their `statement.done` says
    00000); ``denied`` counts refused attempts. Drill down with `search_events`
    (``table=``, ``access=``, ``user=``).
    """
    extra, args = _scoped(scope, window, "s.")
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for path, access in (("$.reads", "reads"), ("$.writes", "writes")):
        sql = (
            f"SELECT s.user, j.value, json_extract(CAST(s.body AS TEXT), '$.search_path'), "
            "s.decision, json_extract(CAST(d.body AS TEXT), '$.sqlstate'), count(*) "
            f"FROM events s JOIN json_each(CAST(s.body AS TEXT), '{path}') j "
            "LEFT JOIN events d ON d.ref = s.id AND d.type = 'statement.done' "
            f"WHERE s.type = 'statement' AND s.user IS NOT NULL{extra} "
            "GROUP BY 1, 2, 3, 4, 5"
        )
        for user, table, search_path, decision, sqlstate, n in store.conn.execute(sql, args):
            key = (str(user), qualify(str(table), search_path))
            cell = cells.setdefault(
                key, {"user": key[0], "table": key[1], "reads": 0, "writes": 0, "denied": 0}
            )
            if decision == "deny" or sqlstate == "42501":
                cell["denied"] += int(n)
            elif sqlstate == "00000":
                cell[access] += int(n)
    return sorted(cells.values(), key=lambda c: (c["user"], c["table"]))


def identity_detail(
    store: LedgerStore, scope: str | None, user: str, window: Window = Window()
) -> dict[str, Any] | None:
    if scope is not None and user != scope:
        return None
    found = [p for p in identities(store, user, window) if p["user"] == user]
    if not found:
        return None
    detail = found[0]
    detail["matrix"] = matrix(store, user, window)
    detail["recent"] = recent_statements(store, user, limit=25)
    return detail


# ---------------------------------------------------------------------------- tables


def tables(
    store: LedgerStore, scope: str | None, window: Window = Window()
) -> list[dict[str, Any]]:
    """Per table: who read and wrote it, and which of its columns were masked for whom."""
    by_table: dict[str, dict[str, Any]] = {}
    for cell in matrix(store, scope, window):
        t = by_table.setdefault(
            cell["table"],
            {"table": cell["table"], "readers": {}, "writers": {}, "denied": 0, "masked": {}},
        )
        if cell["reads"]:
            t["readers"][cell["user"]] = cell["reads"]
        if cell["writes"]:
            t["writers"][cell["user"]] = cell["writes"]
        t["denied"] += cell["denied"]
    for m in masked_columns(store, scope, window):
        table = m["column"].rsplit(".", 1)[0]
        t = by_table.setdefault(
            table, {"table": table, "readers": {}, "writers": {}, "denied": 0, "masked": {}}
        )
        col = t["masked"].setdefault(m["column"], {"column": m["column"], "masks": [], "users": {}})
        if m["mask"] not in col["masks"]:
            col["masks"].append(m["mask"])
        col["users"][m["user"]] = col["users"].get(m["user"], 0) + m["count"]
    out = []
    for t in sorted(by_table.values(), key=lambda t: str(t["table"])):
        t["masked"] = sorted(t["masked"].values(), key=lambda c: str(c["column"]))
        out.append(t)
    return out


def masked_columns(
    store: LedgerStore, scope: str | None, window: Window = Window()
) -> list[dict[str, Any]]:
    """(user, column, mask, count) of result columns masked on the way out."""
    extra, args = _scoped(scope, window, "e.")
    rows = store.conn.execute(
        "SELECT e.user, json_extract(m.value, '$.column'), json_extract(m.value, '$.mask'), "
        "count(*) FROM events e, json_each(CAST(e.body AS TEXT), '$.masked') m "
        f"WHERE e.type = 'statement.done' AND e.user IS NOT NULL{extra} GROUP BY 1, 2, 3",
        args,
    )
    return [{"user": u, "column": str(c), "mask": str(k), "count": int(n)} for u, c, k, n in rows]


def table_detail(
    store: LedgerStore, scope: str | None, table: str, window: Window = Window()
) -> dict[str, Any] | None:
    for t in tables(store, scope, window):
        if t["table"] == table:
            t["recent"] = [
                decode(r)
                for r in search_events(
                    store, scope, Filters(table=table, types=("statement",)), limit=25
                )
            ]
            with_outcome(store, t["recent"])
            return t
    return None


# ---------------------------------------------------------------------------- charts


def bucket_seconds(window_s: int, buckets: int = 60) -> int:
    """A round bucket width giving about `buckets` points over the window."""
    for width in (10, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 86400):
        if window_s / width <= buckets:
            return width
    return 86400


def _bucket(width: int) -> str:
    """SQL for the start (Unix seconds) of the `width`-second bucket holding an event."""
    return f"(CAST(strftime('%s', substr(ts, 1, 19)) AS INTEGER) / {int(width)}) * {int(width)}"


def _buckets(store: LedgerStore, sql: str, args: Sequence[Any]) -> dict[tuple[int, str], int]:
    return {(int(b), str(k)): int(n) for b, k, n in store.conn.execute(sql, args)}


def statements_over_time(
    store: LedgerStore, scope: str | None, window: Window, width: int
) -> dict[str, Any]:
    """Statements per time bucket by decision: allowed, masked, denied, pending."""
    extra, args = _scoped(scope, window)
    bucket = _bucket(width)
    counts = _buckets(
        store,
        f"SELECT {bucket}, coalesce(decision, ''), count(*) FROM events "
        f"WHERE type = 'statement'{extra} GROUP BY 1, 2",
        args,
    )
    masked = _buckets(
        store,
        f"SELECT {bucket}, 'masked', count(*) FROM events "
        f"WHERE type = 'statement.done' AND "
        f"json_extract({BODY}, '$.masked') IS NOT NULL{extra} GROUP BY 1, 2",
        args,
    )
    xs = _axis(window, width, [b for b, _ in (*counts, *masked)])
    series = {
        "allowed": [counts.get((x, "allow"), 0) for x in xs],
        "masked": [masked.get((x, "masked"), 0) for x in xs],
        "denied": [counts.get((x, "deny"), 0) for x in xs],
        "pending": [counts.get((x, "approval"), 0) for x in xs],
    }
    return {"width_s": width, "t": xs, "series": series}


def denials_over_time(
    store: LedgerStore, scope: str | None, window: Window, width: int
) -> dict[str, Any]:
    """Denied statements and failed logins per time bucket."""
    extra, args = _scoped(scope, window)
    bucket = _bucket(width)
    counts = _buckets(
        store,
        f"SELECT {bucket}, type, count(*) FROM events WHERE "
        f"((type = 'statement' AND decision = 'deny') OR type = 'auth.failed')"
        f"{extra} GROUP BY 1, 2",
        args,
    )
    xs = _axis(window, width, [b for b, _ in counts])
    return {
        "width_s": width,
        "t": xs,
        "series": {
            "denied statements": [counts.get((x, "statement"), 0) for x in xs],
            "failed logins": [counts.get((x, "auth.failed"), 0) for x in xs],
        },
    }


def _axis(window: Window, width: int, seen: Iterable[int]) -> list[int]:
    seen = list(seen)
    lo = (
        int(parse_ts(window.since).timestamp()) // width * width
        if window.since
        else (min(seen) if seen else 0)
    )
    hi = (
        int(parse_ts(window.until).timestamp()) // width * width
        if window.until
        else (max(seen) if seen else lo)
    )
    if hi < lo:
        return []
    if (hi - lo) // width > 2000:  # never build absurd axes from odd inputs
        lo = hi - 2000 * width
    return list(range(lo, hi + 1, width))


def top_identities(
    store: LedgerStore, scope: str | None, window: Window, limit: int = 10
) -> list[dict[str, Any]]:
    extra, args = _scoped(scope, window)
    rows = store.conn.execute(
        "SELECT user, count(*), sum(decision = 'deny'), sum(decision = 'approval') FROM events "
        f"WHERE type = 'statement' AND user IS NOT NULL{extra} GROUP BY user "
        "ORDER BY count(*) DESC, user LIMIT ?",
        [*args, limit],
    )
    return [
        {"user": u, "statements": int(n), "denied": int(d or 0), "held": int(h or 0)}
        for u, n, d, h in rows
    ]


# ---------------------------------------------------------------------------- ledger


def ledger_summary(store: LedgerStore) -> dict[str, Any]:
    """Size and latest checkpoint (everything but journal lag, which needs files)."""
    latest = store.latest_checkpoint()
    cp = None
    if latest is not None:
        size, root, note, ts = latest
        cp = {"size": size, "root": root.hex(), "note": note.decode(errors="replace"), "ts": ts}
    return {
        "size": store.size(),
        "checkpoint": cp,
        "uncheckpointed": store.size() - (latest[0] if latest else 0),
    }
