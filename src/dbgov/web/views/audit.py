"""Audit: search the ledger, read one event with its inclusion proof, check ledger health.

Text search runs in SQL on the stored bodies, then again on what the viewer
would be shown: a viewer who sees literals redacted cannot use the search box
as an oracle for the values hidden from them.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from dbgov.ledger.lag import integrated_offsets, lag_bytes
from dbgov.store.sqlite import LedgerStore
from dbgov.web import queries
from dbgov.web.auth import viewer_of
from dbgov.web.services import Services, redact_tree
from dbgov.web.verification import event_proof, verify_ledger
from dbgov.web.views.common import (
    NotFound,
    api_json,
    filters_of,
    int_param,
    render,
    scope,
    services,
)

PAGE = 100


async def _search(request: Request) -> dict[str, Any]:
    svc = services(request)
    viewer = viewer_of(request)
    f = filters_of(request)
    limit = int_param(request, "limit", PAGE, 1, 1000) or PAGE
    redactor = svc.redactor(viewer)
    who = scope(viewer)

    def run(store: LedgerStore) -> tuple[list[dict[str, Any]], int | None]:
        found: list[dict[str, Any]] = []
        before = f.before
        for _ in range(20):  # bounded rescans when the text filter drops rows
            rows = queries.search_events(store, who, _with_before(f, before), limit=limit)
            for row in rows:
                ev = queries.decode(row)
                if (
                    f.text
                    and f.text.lower()
                    not in json.dumps(redact_tree(redactor, ev), ensure_ascii=False).lower()
                ):
                    continue
                found.append(ev)
            if len(rows) < limit or len(found) >= limit or not f.text:
                more = rows[-1].idx if len(rows) == limit else None
                return found[:limit], more
            before = rows[-1].idx
        return found[:limit], before

    events, more = await svc.read(run)
    return {
        "events": events,
        "next_before": more,
        "filters": f,
        "query": {k: v for k, v in request.query_params.items() if k != "before"},
    }


def _with_before(f: queries.Filters, before: int | None) -> queries.Filters:
    from dataclasses import replace

    return replace(f, before=before)


def _health(svc: Services, store: LedgerStore) -> dict[str, Any]:
    summary = queries.ledger_summary(store)
    summary["lag_bytes"] = lag_bytes(svc.journal_bytes(), integrated_offsets(store))
    return summary


async def page(request: Request) -> Response:
    svc = services(request)
    data = await _search(request)
    data["health"] = await svc.read(lambda s: _health(svc, s))
    return render(request, "audit.html", data, page="audit")


async def _event(request: Request) -> dict[str, Any]:
    svc = services(request)
    who = scope(viewer_of(request))
    idx = int(request.path_params["idx"])

    def run(store: LedgerStore) -> dict[str, Any] | None:
        row = queries.event_at(store, who, idx)
        if row is None:
            return None
        ev = queries.decode(row)
        related: list[dict[str, Any]] = []
        if row.type == "statement":
            related = [queries.decode(r) for r in store.search(ref=row.id, limit=20)]
        elif row.ref:
            parent = store.event_by_id(row.ref)
            if parent is not None and (who is None or parent.user == who):
                related = [queries.decode(parent)]
        return {
            "event": ev,
            "proof": event_proof(store, row, svc.ledger_verifier),
            "related": related,
        }

    data = await svc.read(run)
    if data is None:
        raise NotFound(f"no event #{idx} that you may see")
    return data


async def event_page(request: Request) -> Response:
    return render(request, "event.html", await _event(request), page="audit")


async def verify_fragment(request: Request) -> Response:
    svc = services(request)
    viewer_of(request)
    result = await svc.read(lambda s: verify_ledger(s, svc.ledger_verifier))
    return render(request, "_verify.html", {"result": result})


async def api_search(request: Request) -> Response:
    """Search events (user, target, type, decision, session, since, until, text, table)."""
    data = await _search(request)
    return api_json(request, {"events": data["events"], "next_before": data["next_before"]})


async def api_event(request: Request) -> Response:
    """One event, its related events and its inclusion proof to a signed checkpoint."""
    return api_json(request, await _event(request))


async def api_health(request: Request) -> Response:
    """Ledger size, latest signed checkpoint, events not yet checkpointed, journal lag."""
    svc = services(request)
    viewer_of(request)
    return api_json(request, await svc.read(lambda s: _health(svc, s)))


async def api_verify(request: Request) -> Response:
    """Verify the whole ledger now (same checks as `dbgov audit verify`)."""
    svc = services(request)
    viewer_of(request)
    return api_json(request, await svc.read(lambda s: verify_ledger(s, svc.ledger_verifier)))


routes: list[BaseRoute] = [
    Route("/audit", page, include_in_schema=False),
    Route("/audit/events/{idx:int}", event_page, include_in_schema=False),
    Route("/audit/verify", verify_fragment, methods=["POST"], include_in_schema=False),
]
api_routes: list[BaseRoute] = [
    Route("/api/audit/events", api_search),
    Route("/api/audit/events/{idx:int}", api_event),
    Route("/api/ledger/health", api_health),
    Route("/api/ledger/verify", api_verify, methods=["POST"]),
]
