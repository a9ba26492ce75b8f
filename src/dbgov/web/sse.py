"""Server-Sent Events: new ledger events pushed to the browser as they are integrated.

The sequencer integrates journal entries into the store a few times a second;
each stream polls the store for rows after the last index it sent (the SSE
``id``, so a reconnecting browser resumes with ``Last-Event-ID``) and pushes
what its viewer may see, redacted like every other exit. Two encodings share
the loop: `/api/stream` sends event JSON, `/live/stream` sends table rows
rendered by the same template as the page, and a ``refresh`` message naming a
panel ("sessions", "approvals") when something it shows changed.

A stream ends when the client goes away, the session expires, or the server
is stopping (`stop`), so shutdown never waits on an open stream.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import StreamingResponse

from dbgov.store.sqlite import LedgerStore
from dbgov.web.auth import viewer_of
from dbgov.web.queries import decode, with_outcome
from dbgov.web.services import Services, redact_tree
from dbgov.web.types import JSON, Viewer
from dbgov.web.views.common import TEMPLATES, services

POLL_S: Final = 0.3
HEARTBEAT_S: Final = 15.0
BATCH: Final = 500
APPROVAL_STATUS: Final = {
    "approval.requested": "pending",
    "approval.approved": "approved",
    "approval.denied": "denied",
    "approval.timed_out": "denied",
    "approval.withdrawn": "denied",
}
PANELS: Final = {
    "connection.open": "sessions",
    "connection.close": "sessions",
    "statement": "sessions",
}


def message(event: str, data: str, event_id: int | None = None) -> str:
    """One SSE message; multi-line data becomes several ``data:`` lines (the spec's way)."""
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.extend(f"data: {line}" for line in data.split("\n"))
    return "\n".join(lines) + "\n\n"


def new_events(store: LedgerStore, scope: str | None, after: int) -> tuple[list[JSON], int]:
    """Visible events after `after`, statements joined with their outcome; and the new cursor.

    A `statement.done` is returned as its (now finished) statement, so a row the
    browser shows is replaced in place with its final status.
    """
    size = store.size()  # before the search: rows committed meanwhile have idx >= size
    rows = store.search(user=scope, after=after, limit=BATCH)
    out: list[JSON] = []
    for row in rows:
        ev = decode(row)
        if row.type == "statement.done" and row.ref:
            parent = store.event_by_id(row.ref)
            if parent is None:
                continue
            ev = with_outcome(store, [decode(parent)])[0]
        elif row.type == "statement":
            ev = with_outcome(store, [ev])[0]
        ev["cursor"] = row.idx
        out.append(ev)
    cursor = rows[-1].idx if rows else after
    if scope is not None and not rows:
        # Nothing of ours: skip ahead so the next poll does not rescan others' rows.
        cursor = max(after, size - 1)
    return out, cursor


def _poll(store: LedgerStore, *, scope: str | None, after: int) -> tuple[list[JSON], int]:
    return new_events(store, scope, after)


def start_cursor(request: Request, store_size: int) -> int:
    raw = request.headers.get("last-event-id") or request.query_params.get("after")
    if raw is not None and raw.lstrip("-").isdigit():
        return max(-1, int(raw))
    return store_size - 1


async def _stream(
    request: Request, svc: Services, viewer: Viewer, encode: Callable[[JSON], str | None]
) -> AsyncIterator[str]:
    stop: asyncio.Event | None = getattr(request.app.state, "stop", None)
    cursor = start_cursor(request, await svc.read(lambda s: s.size()))
    scope = viewer.scope_user()
    redactor = svc.redactor(viewer)
    last_beat = time.monotonic()
    yield "retry: 2000\n\n"
    while not (stop is not None and stop.is_set()) and time.time() < viewer.expires_at:
        events, cursor = await svc.read(functools.partial(_poll, scope=scope, after=cursor))
        panels: set[str] = set()
        for ev in events:
            ev = redact_tree(redactor, ev)
            text = encode(ev)
            if text is not None:
                yield text
            panel = PANELS.get(str(ev.get("type")))
            if panel:
                panels.add(panel)
            if str(ev.get("type", "")).startswith(("approval.", "grant.")) or (
                (ev.get("decision") or {}).get("verdict") == "approval"
            ):
                panels.add("approvals")
        for panel in sorted(panels):
            yield message("refresh", panel)
        if time.monotonic() - last_beat > HEARTBEAT_S:
            last_beat = time.monotonic()
            yield ": keep-alive\n\n"
        if events:
            continue  # more may be waiting; poll again at once
        try:
            if stop is not None:
                await asyncio.wait_for(stop.wait(), POLL_S)
            else:
                await asyncio.sleep(POLL_S)
        except TimeoutError:
            pass
    yield message("end", "session expired or server stopping")


def _response(body: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def api_stream(request: Request) -> StreamingResponse:
    """Every new event the viewer may see, as JSON (``event: ledger``)."""
    viewer = viewer_of(request)

    def encode(ev: JSON) -> str:
        return message("ledger", json.dumps(ev, separators=(",", ":")), int(ev["cursor"]))

    return _response(_stream(request, services(request), viewer, encode))


async def live_stream(request: Request) -> StreamingResponse:
    """Statement rows for the Live page's table (``event: row``), replaced by id."""
    viewer = viewer_of(request)
    row = TEMPLATES.get_template("_statement_row.html")
    held = TEMPLATES.get_template("_approval_row.html")

    def encode(ev: JSON) -> str | None:
        type_ = str(ev.get("type"))
        html: Any
        if type_ == "statement":
            html = row.render(s=ev)
        elif type_.startswith("approval.") and type_ in APPROVAL_STATUS and ev.get("approval"):
            # A held statement has no statement event until it is decided: show the
            # request, then replace it with the statement (same row id) when it runs.
            html = held.render(
                a={
                    **ev,
                    "id": ev["approval"],
                    "requester": ev.get("requester") or ev.get("user"),
                    "status": APPROVAL_STATUS[type_],
                }
            )
        else:
            return None
        return message("row", str(html).strip(), int(ev["cursor"]))

    return _response(_stream(request, services(request), viewer, encode))
