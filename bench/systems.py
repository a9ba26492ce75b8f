"""The systems under test: the embedded server (`dbgov up`), PgBouncer, dbgov instances.

Everything is started here on free loopback ports under one temporary directory
and MUST be stopped by the caller's `contextlib.ExitStack`, on success, error or
Ctrl-C alike. Every child runs in its own session (process group), so a Ctrl-C at
the terminal reaches only the bench, which then stops the children in order:
dbgov instances with SIGINT (drain, final checkpoint), then `dbgov up` (which
stops the embedded PostgreSQL), escalating to SIGKILL of the child's own
process group when it does not exit in time.

The three ways to reach the same `bench` database, each a `Endpoint`:
- direct:    TCP to the embedded PostgreSQL as `dbgov_app` (SCRAM);
- pgbouncer: TCP to PgBouncer (session pooling, SCRAM) which logs in as `dbgov_app`;
- dbgov:     TCP to a dbgov instance as `carol` with her token as the password.
All use `sslmode=disable`: dbgov offers TLS and libpq's default `prefer` would take
it, while the other two have none; loopback tokens need no TLS.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml

from dbgov.layout import Layout
from dbgov.ledger.lag import integrated_offsets, journal_sizes, lag_bytes
from dbgov.store.sqlite import LedgerStore

BENCH_DB = "bench"
APP_ROLE = "dbgov_app"
PGBENCH_SCALE = 10


class StartError(RuntimeError):
    """A system under test failed to start or answer; the message says which and why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Endpoint:
    """How a client reaches one system: libpq keywords plus the password."""

    name: str
    host: str
    port: int
    user: str
    password: str
    dbname: str = BENCH_DB
    # The proxy's own processes, whose CPU time is charged per transaction (none for direct).
    cpu_pids: tuple[int, ...] = ()
    # Those of them that integrate the ledger (dbgov: the supervisor, whose sequencer
    # thread is all it runs in a bench; the web app is off): their share is shown apart.
    ledger_pids: tuple[int, ...] = ()
    # dbgov: waits until the ledger has integrated every event written so far and returns
    # the seconds that took (see DbgovInstance.settle).
    settle: Callable[[], float] | None = None

    def dsn(self, dbname: str | None = None) -> str:
        return psycopg.conninfo.make_conninfo(
            host=self.host,
            port=self.port,
            user=self.user,
            dbname=dbname or self.dbname,
            password=self.password,
            sslmode="disable",
            connect_timeout=30,
        )

    def env(self) -> dict[str, str]:
        """Environment for pgbench/psql: the password never appears on a command line."""
        return {
            **os.environ,
            "PGPASSWORD": self.password,
            "PGSSLMODE": "disable",
            "PGCONNECT_TIMEOUT": "30",
        }


# ---------------------------------------------------------------------------- processes


def cpu_seconds(pids: tuple[int, ...]) -> float:
    """User + system CPU time of `pids` (all their threads), from /proc/<pid>/stat."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if len(fields) > 12:
            total += int(fields[11]) + int(fields[12])  # utime stime
    return total / os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int | str) -> list[str]:
    """/proc/<pid>/stat after the command name (state first), or [] if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def server_cpu_seconds(postmaster: int) -> float:
    """CPU time PostgreSQL has used so far: the postmaster's own, that of its children
    that have exited (the kernel adds a reaped child's time to its parent's cutime and
    cstime), and that of the children still there (backends, background workers; an
    exited child not yet reaped still shows its times).

    The difference of two readings is what the server spent in between, backends that
    came and went included, so a proxy's effect on the server's cost per transaction
    can be read beside the proxy's own CPU. A child reaped while a reading is taken
    would be counted twice or not at all, so a reading is retaken until the set of
    children is the same before and after it (backends end together when pgbench does).
    """
    for _ in range(100):
        before = _children_ticks(postmaster)
        own = _stat_fields(postmaster)
        after = _children_ticks(postmaster)
        if before.keys() == after.keys():
            ticks = sum(int(f) for f in own[11:15]) if own else 0  # utime stime cutime cstime
            return (ticks + sum(after.values())) / os.sysconf("SC_CLK_TCK")
        time.sleep(0.01)
    raise RuntimeError(f"PostgreSQL's children (postmaster {postmaster}) did not settle")


def _children_ticks(parent: int) -> dict[int, int]:
    """utime + stime of each child of `parent`, by pid."""
    out = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(entry.name)
            if len(fields) > 12 and int(fields[1]) == parent:  # ppid
                out[int(entry.name)] = int(fields[11]) + int(fields[12])
    return out


class Child:
    """One child process in its own session; `stop()` is idempotent."""

    def __init__(self, name: str, argv: list[str], log: Path, **popen: Any) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **popen,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, chars: int = 1500) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, sig: signal.Signals = signal.SIGINT, timeout: float = 60.0) -> None:
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(
                f"bench: {self.name} did not stop in {timeout:.0f} s; killing its group",
                file=sys.stderr,
            )
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _wait_state(child: Child, path: Path, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise StartError(f"{child.name} exited at start:\n{child.tail()}")
        with contextlib.suppress(OSError, ValueError):
            state: dict[str, Any] = json.loads(path.read_text())
            return state
        time.sleep(0.1)
    raise StartError(f"{child.name} wrote no {path.name} within {timeout:.0f} s:\n{child.tail()}")


def dbgov_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "dbgov", *args]


# ---------------------------------------------------------------------------- dbgov up


class EmbeddedWorld:
    """`dbgov up`: the embedded PostgreSQL with the demo targets, and the `bench` database.

    Its own proxy is not measured; it runs with one worker and no load.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_dir = root / "up"
        self.child: Child | None = None
        self.state: dict[str, Any] = {}

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / "state.json").unlink()
        self.child = Child(
            "dbgov up",
            dbgov_argv(
                "up",
                "--data-dir",
                str(self.data_dir),
                "--workers",
                "1",
                "--listen",
                f"127.0.0.1:{free_port()}",
                "--web-listen",
                f"127.0.0.1:{free_port()}",
            ),
            self.root / "up.log",
        )
        self.state = _wait_state(self.child, self.data_dir / "state.json", 180)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop(timeout=90)
            self.child = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def port(self) -> int:
        return int(self.state["embedded_port"])

    @property
    def admin_dsn(self) -> str:
        return str(self.state["admin_dsn"])

    @property
    def password_file(self) -> Path:
        return self.data_dir / "keys" / "upstream.password"

    @property
    def app_password(self) -> str:
        return self.password_file.read_text().strip()

    @property
    def pgbench(self) -> str:
        return str(self.state["pgbench"])

    def postmaster_pid(self) -> int:
        """The embedded server's postmaster (read each time: `restart` replaces it)."""
        data_dir = self.admin("SHOW data_directory")[0][0]
        return int((Path(data_dir) / "postmaster.pid").read_text().split()[0])

    def admin(self, sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            cur = conn.execute(sql)
            return cur.fetchall() if cur.description else []

    def max_connections(self) -> int:
        return int(self.admin("SHOW max_connections")[0][0])

    def server_version(self) -> str:
        return str(self.admin("SHOW server_version")[0][0])

    def ensure_max_connections(self, wanted: int) -> bool:
        """Raise max_connections (ALTER SYSTEM + restart of `dbgov up`). True if restarted."""
        if self.max_connections() >= wanted:
            return False
        self.admin(f"ALTER SYSTEM SET max_connections = {wanted}")
        self.restart()
        got = self.max_connections()
        if got < wanted:
            raise StartError(f"max_connections is {got} after restart, wanted {wanted}")
        return True

    def ensure_bench_db(self) -> float:
        """Create `bench` owned by dbgov_app and `pgbench -i` it. Returns seconds spent."""
        if self.admin(f"SELECT 1 FROM pg_database WHERE datname = '{BENCH_DB}'"):
            return 0.0
        started = time.monotonic()
        self.admin(f'CREATE DATABASE {BENCH_DB} OWNER "{APP_ROLE}"')
        dsn = self.admin_dsn.replace("user=postgres", f"user={APP_ROLE}").replace(
            "dbname=postgres", f"dbname={BENCH_DB}"
        )
        res = subprocess.run(
            [self.pgbench, "-i", "-q", "-s", str(PGBENCH_SCALE), dsn],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if res.returncode != 0:
            raise StartError(f"pgbench -i failed:\n{res.stderr[-1500:]}")
        return time.monotonic() - started

    def direct(self) -> Endpoint:
        return Endpoint("direct", "127.0.0.1", self.port, APP_ROLE, self.app_password)

    def token(self, user: str, group: str) -> str:
        res = subprocess.run(
            dbgov_argv(
                "token",
                "issue",
                "--data-dir",
                str(self.data_dir),
                "--user",
                user,
                "--group",
                group,
                "--ttl",
                "8h",
            ),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if res.returncode != 0:
            raise StartError(f"dbgov token issue failed: {res.stderr.strip()}")
        return res.stdout.strip()

    def effective_config(self) -> dict[str, Any]:
        config: dict[str, Any] = json.loads((self.data_dir / "run" / "config.json").read_text())
        return config


# ---------------------------------------------------------------------------- dbgov instances

ALLOW_ALL_POLICY = {
    "version": 1,
    "grants": [
        {"name": "everything", "groups": ["dba"], "targets": ["*"], "allow": ["*"], "tables": ["*"]}
    ],
}


@dataclass(frozen=True)
class Variant:
    """One dbgov configuration under test."""

    name: str
    policy: str  # "demo" or "allow-all"
    ledger_mode: str  # strict | async
    max_lag_mb: int | None = None  # ledger.max_lag_mb; None keeps dbgov's default


# The sustained scenario's bound: low, so that a run of tens of seconds spends most of
# its time at it (dbgov's default, 256 MiB, takes a minute or more to reach here).
SUSTAINED_LAG_MB = 16

VARIANTS = {
    v.name: v
    for v in (
        Variant("demo-strict", "demo", "strict"),
        Variant("allow-all", "allow-all", "strict"),
        Variant("demo-async", "demo", "async"),
        Variant("demo-bounded", "demo", "strict", SUSTAINED_LAG_MB),
    )
}


@dataclass
class DbgovInstance:
    """`dbgov proxy --config F` for one variant, with the embedded world's targets plus `bench`."""

    variant: Variant
    world: EmbeddedWorld
    workers: int
    child: Child | None = None
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.world.root / "instances" / self.variant.name

    def write_config(self) -> Path:
        base = self.world.effective_config()
        self.home.mkdir(parents=True, exist_ok=True)
        if self.variant.policy == "demo":
            policy = base["policy"]
        else:
            policy_path = self.home / "policy.yaml"
            policy_path.write_text(yaml.safe_dump(ALLOW_ALL_POLICY, sort_keys=False))
            policy = str(policy_path)
        targets = [t for t in base["targets"] if t["name"] in ("prod", "staging")]
        targets.append(
            {
                "name": BENCH_DB,
                "env": "production",
                "host": "127.0.0.1",
                "port": self.world.port,
                "database": BENCH_DB,
                "user": APP_ROLE,
                "password_file": str(self.world.password_file),
            }
        )
        identity = dict(base.get("identity") or {})
        identity["local_issuer"] = {
            **identity.get("local_issuer", {}),
            "key_file": str(self.world.data_dir / "keys" / "issuer.key"),
        }
        config = {
            "data_dir": str(self.home / "data"),
            # An explicit port: with port 0 every worker binds its own ephemeral port
            # and only the last one is advertised (see the bench report).
            "listen": {"proxy": f"127.0.0.1:{free_port()}", "web": None, "workers": self.workers},
            "tls": base["tls"],
            "targets": targets,
            "identity": identity,
            "policy": policy,
            "ledger": {"mode": self.variant.ledger_mode},
        }
        if self.variant.max_lag_mb is not None:
            config["ledger"]["max_lag_mb"] = self.variant.max_lag_mb
        path = self.home / "dbgov.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def start(self) -> None:
        config = self.write_config()
        state_path = self.home / "data" / "state.json"
        with contextlib.suppress(FileNotFoundError):
            state_path.unlink()
        self.child = Child(
            f"dbgov proxy ({self.variant.name})",
            dbgov_argv("proxy", "--config", str(config), "--workers", str(self.workers)),
            self.home / "proxy.log",
        )
        self.state = _wait_state(self.child, state_path, 90)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop(timeout=90)
            self.child = None

    @property
    def port(self) -> int:
        return int(str(self.state["proxy"]).rpartition(":")[2])

    @property
    def worker_pids(self) -> list[int]:
        return [int(p) for p in self.state["workers"]]

    def endpoint(self, user: str, token: str, dbname: str = BENCH_DB) -> Endpoint:
        supervisor = int(self.state["pid"])  # runs the ledger sequencer
        return Endpoint(
            self.variant.name,
            "127.0.0.1",
            self.port,
            user,
            token,
            dbname,
            (supervisor, *self.worker_pids),
            (supervisor,),
            self.settle,
        )

    def settle(self, timeout: float = 300.0) -> float:
        """Wait until the sequencer has integrated every journal byte; the seconds waited.

        The sequencer runs niced: under a saturating load it falls behind and catches up
        afterwards. Waiting here keeps that catch-up out of the next system's run, and
        charges its CPU to dbgov (pgbench.run reads the CPU clocks after this returns).
        """
        data = self.home / "data"
        started = time.monotonic()
        while True:
            if ledger_lag_bytes(data) == 0:
                time.sleep(0.05)  # events appended in the last tick
                if ledger_lag_bytes(data) == 0:
                    return round(time.monotonic() - started, 2)
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"the ledger did not catch up within {timeout:.0f} s")
            time.sleep(0.05)


def ledger_lag_bytes(data_dir: Path) -> int:
    """Journal bytes of a dbgov data dir not yet integrated into its ledger."""
    layout = Layout(data_dir)
    sizes = journal_sizes(layout.journal)
    store = LedgerStore(layout.ledger_db, readonly=True)
    try:
        return lag_bytes(sizes, integrated_offsets(store))
    finally:
        store.close()


# ---------------------------------------------------------------------------- PgBouncer


def pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None
    )


def pgbouncer_version(binary: str) -> str:
    res = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return res.stdout.splitlines()[0].strip() if res.stdout else "unknown"


class PgBouncer:
    """PgBouncer in session mode in front of the embedded server's `bench` and `prod`."""

    def __init__(self, root: Path, world: EmbeddedWorld, binary: str) -> None:
        self.home = root / "pgbouncer"
        self.world = world
        self.binary = binary
        self.port = free_port()
        self.child: Child | None = None

    def _write(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        # Server logins (pooled, rare) use the password; client logins the SCRAM secret.
        conn = (
            f"host=127.0.0.1 port={self.world.port} user={APP_ROLE} "
            f"password={self.world.app_password}"
        )
        ini = self.home / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"{BENCH_DB} = {conn} dbname={BENCH_DB}\n"
            f"prod = {conn} dbname=prod\n"
            "\n[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            "auth_type = scram-sha-256\n"
            f"auth_file = {self.home / 'userlist.txt'}\n"
            "pool_mode = session\nmax_client_conn = 2500\ndefault_pool_size = 100\n"
            f"logfile = {self.home / 'pgbouncer.log'}\n"
            f"pidfile = {self.home / 'pgbouncer.pid'}\n"
            "log_connections = 0\nlog_disconnections = 0\n"
        )
        # Clients are checked against the role's SCRAM secret, not its password, so
        # PgBouncer runs no PBKDF2 per client login (the recommended set-up).
        secret = self.world.admin(
            f"SELECT rolpassword FROM pg_authid WHERE rolname = '{APP_ROLE}'"
        )[0][0]
        (self.home / "userlist.txt").write_text(f'"{APP_ROLE}" "{secret}"\n')
        return ini

    def start(self) -> None:
        ini = self._write()
        popen: dict[str, Any] = {}
        if os.geteuid() == 0:  # PgBouncer refuses to run as root
            nobody = pwd.getpwnam("nobody")
            for path in (self.home, *self.home.iterdir()):
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
            os.chmod(self.home, 0o700)
            popen = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        self.child = Child(
            "pgbouncer", [self.binary, str(ini)], self.home.parent / "pgbouncer.out", **popen
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if not self.child.alive():
                raise StartError(f"pgbouncer exited at start:\n{self.child.tail()}")
            try:
                with psycopg.connect(self.endpoint().dsn(), autocommit=True) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                time.sleep(0.1)
        raise StartError(f"pgbouncer did not answer within 20 s:\n{self.child.tail()}")

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop(signal.SIGTERM, timeout=30)  # SIGTERM: immediate shutdown
            self.child = None

    def endpoint(self) -> Endpoint:
        pids = (self.child.pid,) if self.child is not None else ()
        return Endpoint(
            "pgbouncer", "127.0.0.1", self.port, APP_ROLE, self.world.app_password, cpu_pids=pids
        )
