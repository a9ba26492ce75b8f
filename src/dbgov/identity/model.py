"""The verified identity behind a connection, and why one was refused."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    groups: frozenset[str]
    method: str  # "token", "oidc", "scram", "cert"
    issuer: str
    token_id: str | None = None  # the token's jti, never the token itself
    expires_at: float | None = None  # unix seconds; sessions end their rights here
    # Groups added by just-in-time grants, with the grant ids (see approvals/).
    grants: tuple[tuple[str, str], ...] = field(default=())

    def with_grant(self, group: str, grant_id: str) -> Identity:
        return Identity(
            self.user,
            self.groups | {group},
            self.method,
            self.issuer,
            self.token_id,
            self.expires_at,
            (*self.grants, (group, grant_id)),
        )


class AuthError(Exception):
    """Authentication refused. `reason` is a short machine-friendly code for the audit."""

    def __init__(self, reason: str, message: str, *, sqlstate: str = "28P01") -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.sqlstate = sqlstate
