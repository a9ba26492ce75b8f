"""The dbgov configuration file: model, loading, and errors that say where.

A config is YAML validated against the models below. Unknown keys are errors
(a typo in a security setting must not be ignored). Every error names the file,
the key path and what is wrong, e.g.

    dbgov.yaml: targets[0].tls: must be one of disable, require, verify-full

Secrets never live in the file: target passwords come from an environment
variable or a file, service accounts carry SCRAM verifiers (hashed).
Configuration is passed down as an argument, never read from globals.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(Exception):
    """A configuration problem, already phrased for the operator."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _parse_hostport(value: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    host = host.strip("[]") or default_host
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"bad port in {value!r}")
    return host, int(port)


class Listen(_Model):
    proxy: str = "127.0.0.1:15432"
    web: str | None = "127.0.0.1:8432"
    workers: int = Field(default=0, ge=0, le=64)  # 0 = one per core
    # Client connections each worker holds at most (logging in or logged in); more
    # are refused with FATAL 53300. The proxy's total is workers times this.
    max_clients_per_worker: int = Field(default=5000, ge=1)
    # Sessions one identity (user name) holds at once, across every worker and target;
    # more are refused with FATAL 53300 before an upstream connection is opened (each
    # session holds a server backend). None: no cap. See proxy/session_limits.py.
    max_sessions_per_user: int | None = Field(default=None, ge=1)
    # Connections from one client address that have not logged in yet (negotiating or
    # authenticating), per worker; more are turned away with FATAL 53300, so that one
    # source cannot hold every client slot with logins it never finishes. 0: no cap.
    max_pending_logins_per_source: int = Field(default=256, ge=0)

    @field_validator("proxy", "web")
    @classmethod
    def _hostport(cls, v: str | None) -> str | None:
        if v is not None:
            _parse_hostport(v)
        return v

    def proxy_addr(self) -> tuple[str, int]:
        return _parse_hostport(self.proxy)

    def web_addr(self) -> tuple[str, int] | None:
        return _parse_hostport(self.web) if self.web else None


class TLS(_Model):
    cert: Path
    key: Path
    # Client certificates signed by this CA may authenticate (CN = identity name).
    client_ca: Path | None = None
    # Refuse plaintext connections from non-loopback clients outright.
    require: bool = False


class Target(_Model):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$")
    env: str = "production"
    host: str
    port: int = Field(default=5432, ge=1, le=65535)
    database: str
    user: str
    password_env: str | None = None
    password_file: Path | None = None
    tls: Literal["disable", "require", "verify-full"] = "disable"
    ca: Path | None = None

    @model_validator(mode="after")
    def _checks(self) -> Target:
        if self.password_env and self.password_file:
            raise ValueError("give password_env or password_file, not both")
        if self.tls == "verify-full" and self.ca is None:
            raise ValueError("tls: verify-full needs ca: (the CA file that signed the server)")
        return self

    @property
    def is_production(self) -> bool:
        return self.env in ("production", "prod")

    def password(self) -> str | None:
        """Read the upstream password at connect time; never cached in the model."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(
                    f"target {self.name}: environment variable {self.password_env} is not set"
                )
            return value
        if self.password_file:
            try:
                return self.password_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"target {self.name}: cannot read password_file: {exc}") from None
        return None


class LocalIssuer(_Model):
    enabled: bool = True
    issuer: str = "dbgov-local"
    audience: str = "dbgov"
    key_file: Path | None = None  # default: <data_dir>/issuer.key


class OIDCIssuer(_Model):
    name: str
    issuer: str
    audience: str
    jwks_url: str | None = None
    jwks_file: Path | None = None
    groups_claim: str = "groups"
    jwks_refresh_s: int = Field(default=300, ge=10)
    algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")

    @model_validator(mode="after")
    def _source(self) -> OIDCIssuer:
        if (self.jwks_url is None) == (self.jwks_file is None):
            raise ValueError("give exactly one of jwks_url or jwks_file")
        if self.jwks_url is not None and not self.jwks_url.startswith("https://"):
            raise ValueError("jwks_url must be an https:// URL")
        if "none" in {a.lower() for a in self.algorithms}:
            raise ValueError("algorithm 'none' is never accepted")
        return self


class ServiceAccount(_Model):
    name: str
    groups: tuple[str, ...] = ()
    # A PostgreSQL-style SCRAM verifier: SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>
    scram: str = Field(
        pattern=r"^SCRAM-SHA-256\$\d+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$"
    )


class ClientCerts(_Model):
    enabled: bool = False
    # Groups come from the certificate's OU entries when set.
    groups_from_ou: bool = True


class Identity(_Model):
    local_issuer: LocalIssuer = LocalIssuer()
    oidc: tuple[OIDCIssuer, ...] = ()
    service_accounts: tuple[ServiceAccount, ...] = ()
    client_certs: ClientCerts = ClientCerts()
    # Clock skew tolerated on exp/nbf, seconds.
    leeway_s: int = Field(default=30, ge=0, le=300)


class Ledger(_Model):
    mode: Literal["strict", "fsync", "async"] = "strict"
    # strict and async: the background fdatasync cadence (what a power loss can take)
    fsync_interval_ms: int = Field(default=100, ge=1, le=10_000)
    # strict: a worker groups the journal writes of one loop iteration's statements
    # while more than this many of its other sessions await answers (proxy/session.py)
    group_siblings: int = Field(default=1, ge=0, le=1_000_000)
    checkpoint_every: int = Field(default=1000, ge=1)
    checkpoint_interval_s: float = Field(default=10.0, gt=0)
    origin: str | None = None  # checkpoint origin line; default "dbgov/<hostname>"
    key_file: Path | None = None  # default: <data_dir>/ledger.key
    witness_url: str | None = None
    # Journal bytes the sequencer may trail by before the workers stop reading client
    # messages (proxy/backpressure.py): how far the verifiable log may fall behind.
    max_lag_mb: int = Field(default=256, ge=1, le=1 << 20)


class Approvals(_Model):
    default_timeout_s: int = Field(default=600, ge=1)
    validity_s: int = Field(default=3600, ge=1)
    webhook_url: str | None = None
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    webhook_retries: int = Field(default=3, ge=0, le=10)


class Config(_Model):
    data_dir: Path = Path(".dbgov")
    listen: Listen = Listen()
    tls: TLS | None = None
    targets: tuple[Target, ...] = Field(min_length=1)
    identity: Identity = Identity()
    policy: Path | None = None
    ledger: Ledger = Ledger()
    approvals: Approvals = Approvals()
    # Largest client message accepted (bytes).
    max_message_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    # Longest statement text analyzed (characters); longer ones are refused (parsing
    # runs on the worker's event loop: see sql/analyze.py). Bulk data goes in COPY.
    max_statement_chars: int = Field(default=1024 * 1024, ge=1024)
    # Seconds an upstream connection of a cleanly ended session is kept, reset with
    # DISCARD ALL, for the next session of the same identity and target; 0 = never.
    upstream_reuse_s: float = Field(default=10.0, ge=0, le=3600)
    # Seconds a proxy worker's event loop may go without a turn (its heartbeat file
    # untouched) before the supervisor kills and replaces it; 0 = never.
    worker_stall_s: float = Field(default=20.0, ge=0, le=3600)

    @model_validator(mode="after")
    def _unique(self) -> Config:
        names = [t.name for t in self.targets]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"target names must be unique, repeated: {', '.join(sorted(dup))}")
        accounts = [a.name for a in self.identity.service_accounts]
        if len(set(accounts)) != len(accounts):
            raise ValueError("service account names must be unique")
        return self

    def target(self, name: str) -> Target | None:
        for t in self.targets:
            if t.name == name:
                return t
        return None


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def format_validation_error(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {_loc(loc)}: {msg}")
    return "\n".join(lines)


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    """Relative paths in a config file are relative to the file, not the cwd."""

    def fix(d: dict[str, Any], *keys: str) -> None:
        for k in keys:
            v = d.get(k)
            if isinstance(v, str) and v and not os.path.isabs(v):
                d[k] = str(base / v)

    fix(raw, "data_dir", "policy")
    if isinstance(raw.get("tls"), dict):
        fix(raw["tls"], "cert", "key", "client_ca")
    for t in raw.get("targets") or []:
        if isinstance(t, dict):
            fix(t, "password_file", "ca")
    ident = raw.get("identity")
    if isinstance(ident, dict):
        if isinstance(ident.get("local_issuer"), dict):
            fix(ident["local_issuer"], "key_file")
        for o in ident.get("oidc") or []:
            if isinstance(o, dict):
                fix(o, "jwks_file")
    if isinstance(raw.get("ledger"), dict):
        fix(raw["ledger"], "key_file")


def load_config(path: Path) -> Config:
    source = str(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(
            f"{source}: not valid YAML{where}: {getattr(exc, 'problem', exc)}"
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: (top level): expected a mapping of settings")
    _resolve_paths(raw, path.resolve().parent)
    return config_from_dict(raw, source)


def config_from_dict(raw: dict[str, Any], source: str = "<config>") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None
