"""Types shared by the web modules (Starlette's `types.py` habit: one small module).

`Viewer` is who is looking. Every read in `queries.py` takes one, so what a
person may see is decided in one place: `auditors` and `dba` see everyone's
activity, anyone else only their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

JSON = dict[str, Any]
"""A JSON object as the API returns it."""

PRIVILEGED_GROUPS: Final = frozenset({"auditors", "dba"})
"""Groups that see every identity's activity on the dashboard."""


@dataclass(frozen=True, slots=True)
class Viewer:
    """A logged-in dashboard user, as the signed session cookie carries them."""

    user: str
    groups: frozenset[str]
    expires_at: float  # unix seconds; the token's exp: the session ends with it
    csrf: str  # per-session secret that CSRF tokens must match
    issuer: str = ""  # who signed the login token (approvals record it with a vote)

    @property
    def sees_all(self) -> bool:
        return bool(self.groups & PRIVILEGED_GROUPS)

    def scope_user(self) -> str | None:
        """The user whose events this viewer may read; None means everyone."""
        return None if self.sees_all else self.user

    def as_json(self) -> JSON:
        return {
            "user": self.user,
            "groups": sorted(self.groups),
            "sees_all": self.sees_all,
            "issuer": self.issuer,
            "expires_at": self.expires_at,
        }
