"""The SOC 2 report as a dashboard page (and JSON), from the same code as `dbgov report soc2`.

Only auditors and dba may see it: it covers every identity.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from dbgov.report.soc2 import Soc2Report, build_report, parse_day_or_time, render_body
from dbgov.store.sqlite import LedgerStore
from dbgov.web.auth import Forbidden, viewer_of
from dbgov.web.views.common import BadRequest, api_json, render, services


async def _report(request: Request) -> Soc2Report:
    viewer = viewer_of(request)
    if not viewer.sees_all:
        raise Forbidden("the SOC 2 report covers every identity: auditors and dba only")
    try:
        since = parse_day_or_time(request.query_params.get("from"))
        until = parse_day_or_time(request.query_params.get("to"), end=True)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    svc = services(request)
    redactor = svc.redactor(viewer)
    engine: Any = svc.current_policy().engine
    admin = frozenset(engine.admin_groups) if engine is not None else frozenset({"dba"})

    def run(store: LedgerStore) -> Soc2Report:
        return build_report(
            store,
            since=since,
            until=until,
            verifier=svc.ledger_verifier,
            redactor=redactor,
            admin_groups=admin or frozenset({"dba"}),
        )

    return await svc.read(run)


async def page(request: Request) -> Response:
    report = await _report(request)
    return render(
        request,
        "soc2.html",
        {
            "body": render_body(report, ""),
            "since": request.query_params.get("from", ""),
            "until": request.query_params.get("to", ""),
        },
        page="reports",
    )


async def api_report(request: Request) -> Response:
    """SOC 2 evidence: figures per control, each with the ledger indexes it counts."""
    return api_json(request, (await _report(request)).as_json())


routes: list[BaseRoute] = [Route("/reports/soc2", page, include_in_schema=False)]
api_routes: list[BaseRoute] = [Route("/api/reports/soc2", api_report)]
