"""Approvals: the queue, and approve or deny with a reason.

Votes go through `ApprovalsPort.vote`, i.e. `Approvals.vote`, the same method
as the CLI: the engine refuses self-approval, non-approvers and late votes, and
its refusal is shown as is. Calls run on the event loop (see approvals_port.py).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from dbgov.web.approvals_port import ApprovalsUnavailable, VoteRefused
from dbgov.web.auth import viewer_of
from dbgov.web.views.common import BadRequest, api_json, render, services


def _queue(request: Request) -> dict[str, Any]:
    port = services(request).approvals
    viewer = viewer_of(request)
    if not port.available:
        return {
            "available": False,
            "why": port.why_unavailable or "approvals not available",
            "requests": [],
            "recent": [],
        }
    return {
        "available": True,
        "why": None,
        "requests": port.queue(viewer),
        "recent": [
            r for r in port.queue(viewer, pending_only=False, limit=50) if r["state"] != "pending"
        ][:20],
    }


async def page(request: Request) -> Response:
    return render(request, "approvals.html", _queue(request), page="approvals")


async def queue_fragment(request: Request) -> Response:
    return render(request, "_approvals_queue.html", _queue(request))


async def _reason(request: Request) -> str:
    if request.headers.get("content-type", "").startswith("application/json"):
        body = await request.json()
        reason = body.get("reason") if isinstance(body, dict) else None
    else:
        reason = (await request.form()).get("reason")
    return str(reason or "").strip()[:1000]


async def _vote(request: Request, approve: bool) -> tuple[dict[str, Any] | None, str | None, int]:
    viewer = viewer_of(request)
    try:
        request_id = int(request.path_params["id"])
    except ValueError:
        raise BadRequest("approval id must be a number") from None
    reason = await _reason(request)
    try:
        return services(request).approvals.vote(viewer, request_id, approve, reason), None, 200
    except VoteRefused as exc:
        return None, str(exc), 403
    except ApprovalsUnavailable as exc:
        return None, str(exc), 503


async def approve(request: Request) -> Response:
    result, error, status = await _vote(request, True)
    return _after_vote(request, result, error, status)


async def deny(request: Request) -> Response:
    result, error, status = await _vote(request, False)
    return _after_vote(request, result, error, status)


def _after_vote(
    request: Request, result: dict[str, Any] | None, error: str | None, status: int
) -> Response:
    data = _queue(request)
    data["message"] = error or (f"approval #{result['id']}: {result['state']}" if result else "")
    data["error"] = error is not None
    return render(request, "_approvals_queue.html", data, status_code=200 if not error else status)


async def api_queue(request: Request) -> Response:
    """Pending requests the viewer may see, with votes and whether they may decide."""
    data = _queue(request)
    return api_json(request, data, status_code=200 if data["available"] else 503)


async def api_approve(request: Request) -> Response:
    """Approve a request (same rules as `dbgov approvals approve`)."""
    result, error, status = await _vote(request, True)
    return api_json(request, result if error is None else {"error": error}, status_code=status)


async def api_deny(request: Request) -> Response:
    """Deny a request; a reason is required (same rules as `dbgov approvals deny`)."""
    result, error, status = await _vote(request, False)
    return api_json(request, result if error is None else {"error": error}, status_code=status)


routes: list[BaseRoute] = [
    Route("/approvals", page, include_in_schema=False),
    Route("/approvals/queue", queue_fragment, include_in_schema=False),
    Route("/approvals/{id}/approve", approve, methods=["POST"], include_in_schema=False),
    Route("/approvals/{id}/deny", deny, methods=["POST"], include_in_schema=False),
]
api_routes: list[BaseRoute] = [
    Route("/api/approvals", api_queue),
    Route("/api/approvals/{id}/approve", api_approve, methods=["POST"]),
    Route("/api/approvals/{id}/deny", api_deny, methods=["POST"]),
]
