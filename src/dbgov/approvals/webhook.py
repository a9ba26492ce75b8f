"""Webhook notifications: Slack-compatible JSON POSTed when a request is made and
when it is decided.

The payload is what Slack's incoming webhooks take (`text` for notifications
and clients without blocks, `blocks` for the message), which most chat tools
and HTTP relays also accept. Delivery uses the standard library in a daemon
thread so a slow or dead endpoint never blocks or crashes the proxy: each
attempt has a timeout, failures are retried with exponential backoff, and the
final failure is logged and kept in the store's outbox for operators.

Which notifications to send is decided by the approvals service, which queues
them in the control store in the same transaction as the change they report;
any worker may then send them (`service.Approvals.run`), so a vote cast from the
CLI is announced by the running proxy.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dbgov.approvals.model import GRANT, Request, Vote, format_duration

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 8.0
_SQL_CHARS = 2500  # Slack caps a section's text at 3000 characters


def _esc(text: str) -> str:
    """Slack mrkdwn escaping (https://api.slack.com/reference/surfaces/formatting#escaping)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _label(request: Request) -> str:
    return f"{'Access request' if request.kind == GRANT else 'Approval'} #{request.id}"


def build_payload(
    event: str,
    request: Request,
    votes: Sequence[Vote] = (),
    *,
    actor: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """The Slack message for `event` (requested, approved, denied, timed_out, withdrawn)."""
    label = _label(request)
    approvers = ", ".join(request.approvers)
    approved_by = ", ".join(v.voter for v in votes if v.verdict == "approve")
    if event == "requested":
        what = (
            f"group {request.grant_group} for {format_duration(request.grant_seconds or 0)}"
            if request.kind == GRANT
            else f"a statement (rule {request.rule})"
        )
        text = (
            f"dbgov: {label} by {request.requester} on {request.target}: {what}; "
            f"needs {request.quorum} approval(s) from {approvers}"
        )
    elif event == "approved":
        text = f"dbgov: {label} approved by {approved_by or actor}"
    elif event == "denied":
        text = f"dbgov: {label} denied by {actor}" + (f": {reason}" if reason else "")
    elif event == "timed_out":
        text = f"dbgov: {label} timed out undecided"
    else:
        text = f"dbgov: {label} {event.replace('_', ' ')}"
    fields = [
        f"*Requester*\n{_esc(request.requester)}",
        f"*Target*\n{_esc(request.target)}",
        f"*Approvers*\n{_esc(approvers)} ({request.quorum} needed)",
        f"*Risk*\n{_esc(request.risk)}",
    ]
    if request.rule:
        fields.append(f"*Rule*\n{_esc(request.rule)}")
    if request.tables:
        fields.append(f"*Tables*\n{_esc(', '.join(request.tables))}")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{_esc(text)}*"}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f[:2000]} for f in fields[:10]]},
    ]
    if request.sql:
        sql = request.sql if len(request.sql) <= _SQL_CHARS else request.sql[:_SQL_CHARS] + "…"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"```{_esc(sql)}```"}})
    if request.reason:
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"*Why*\n{_esc(request.reason)}"[:3000]},
            }
        )
    if event == "requested":
        hint = (
            f"`dbgov approvals approve {request.id}` or "
            f'`dbgov approvals deny {request.id} --reason "..."`'
        )
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": hint}]})
    return {"text": text, "blocks": blocks}


@dataclass(frozen=True, slots=True)
class Delivery:
    ok: bool
    attempts: int
    status: int | None = None
    error: str | None = None


def _retryable(status: int) -> bool:
    return status >= 500 or status in (408, 429)


def post(
    url: str,
    payload: dict[str, Any],
    *,
    timeout_s: float,
    retries: int,
    backoff_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> Delivery:
    """POST `payload` as JSON; retry network errors, timeouts, 408, 429 and 5xx up to
    `retries` times with exponential backoff. Blocking: call it from a thread."""
    if not url.startswith(("http://", "https://")):
        return Delivery(False, 0, error=f"webhook URL must be http(s): {url!r}")
    data = json.dumps(payload).encode()
    attempts = 0
    status: int | None = None
    error = ""
    for attempt in range(retries + 1):
        if attempt:
            sleep(min(MAX_BACKOFF_S, backoff_s * 2 ** (attempt - 1)))
        attempts += 1
        req = urllib.request.Request(  # noqa: S310 (scheme checked above: http(s) only)
            url,
            data=data,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "dbgov-webhook"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 (http(s) only)
                resp.read(64 * 1024)
                return Delivery(True, attempts, resp.status)
        except urllib.error.HTTPError as exc:
            status, error = exc.code, f"HTTP {exc.code}"
            if not _retryable(exc.code):
                break
        except (OSError, ValueError) as exc:  # URLError, timeouts, resets
            status, error = None, str(getattr(exc, "reason", None) or exc)
    return Delivery(False, attempts, status, error)
