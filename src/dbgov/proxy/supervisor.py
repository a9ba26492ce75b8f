"""The supervisor: workers, the ledger sequencer, the web app, and orderly shutdown.

`dbgov up` and `dbgov proxy` both end here. The supervisor owns the one
sequencer of the data dir (a thread), starts N worker processes that share the
listening port, serves the dashboard, writes `state.json` once everything is
ready, and on SIGINT/SIGTERM drains workers first, then integrates the last
journal entries and signs a final checkpoint.

A worker that dies (a crash, the OOM killer, a stray kill) takes only its own
sessions with it: the supervisor writes a `proxy.worker_exit` event and starts a
new worker in its slot, on the same port, after a backoff that grows while
workers keep dying young. A worker that is alive but stuck (its event loop has not
touched its heartbeat file for `worker_stall_s`) is killed, then replaced. A new
worker reads the config file afresh; one that cannot start is retried with the
same backoff, while the other workers take every new client.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dbgov.config import Config
from dbgov.durable import write_atomic
from dbgov.layout import Layout
from dbgov.ledger.journal import Journal
from dbgov.ledger.keys import default_origin, load_or_create_signer
from dbgov.ledger.sequencer import Sequencer, SequencerLock
from dbgov.proxy import session_limits
from dbgov.proxy.audit import Audit

log = logging.getLogger("dbgov")

WATCH_INTERVAL_S = 0.2
RESPAWN_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # by deaths in a row
STEADY_S = 60.0  # a worker that lived this long resets the backoff
STARTUP_GRACE_S = 60.0  # the stall limit before a worker's first heartbeat


def _worker_preexec() -> None:
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)


class SupervisorError(RuntimeError):
    pass


class Supervisor:
    def __init__(
        self,
        config: Config,
        config_path: Path,
        workers: int,
        state_extra: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.layout = Layout(config.data_dir)
        self.nworkers = workers or os.cpu_count() or 1
        self.state_extra = state_extra or {}
        self.procs: list[subprocess.Popen[str]] = []
        self.sequencer: Sequencer | None = None
        self._seq_thread: threading.Thread | None = None
        self._lock = SequencerLock(config.data_dir)
        self.port = 0
        self.web: str | None = None  # the dashboard address actually bound
        self.started_at = time.time()
        self._audit: Audit | None = None  # the supervisor's own journal, opened on first use

    # -- start ------------------------------------------------------------------------

    def start_sequencer(self) -> None:
        if not self._lock.acquire():
            raise SupervisorError(
                f"another dbgov is already running on {self.layout.root} (ledger sequencer locked)"
            )
        origin = self.config.ledger.origin or default_origin(self.layout.root)
        signer = load_or_create_signer(
            self.config.ledger.key_file or self.layout.ledger_key, origin
        )
        hook: Callable[[bytes], None] | None = None
        if self.config.ledger.witness_url:
            from dbgov.ledger.witness_client import push_checkpoint

            url = self.config.ledger.witness_url
            hook = lambda note: push_checkpoint(url, note, self.layout)  # noqa: E731
        self.sequencer = Sequencer(
            self.layout.root,
            signer,
            origin,
            checkpoint_every=self.config.ledger.checkpoint_every,
            checkpoint_interval_s=self.config.ledger.checkpoint_interval_s,
            on_checkpoint=hook,
        )
        self._seq_thread = threading.Thread(
            target=self.sequencer.run, name="ledger-sequencer", daemon=True
        )
        self._seq_thread.start()

    def start_workers(self, timeout: float = 30.0) -> None:
        """Start the workers and wait until each listens. With port 0 in the config,
        worker 0 picks the port and the others join it, so all share one port."""
        deadline = time.monotonic() + timeout
        session_limits.reset(self.layout.live_sessions)  # no worker runs yet: nothing is live
        _, port = self.config.listen.proxy_addr()
        for i in range(self.nworkers):
            proc = self._spawn(i, port)
            self.procs.append(proc)
            if port == 0:
                port = self._await_ready(proc, deadline)
        for proc in self.procs[1:] if self.config.listen.proxy_addr()[1] == 0 else self.procs:
            self._await_ready(proc, deadline)
        self.port = port

    def _spawn(self, worker_id: int, port: int) -> subprocess.Popen[str]:
        cmd = [
            sys.executable,
            "-m",
            "dbgov.proxy.worker",
            "--config",
            str(self.config_path),
            "--worker-id",
            str(worker_id),
        ]
        if port:
            cmd += ["--port", str(port)]
        return subprocess.Popen(
            cmd, stdout=subprocess.PIPE, text=True, env=dict(os.environ), preexec_fn=_worker_preexec
        )

    def _await_ready(self, proc: subprocess.Popen[str], deadline: float) -> int:
        assert proc.stdout is not None
        line = ""
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.startswith("READY") or not line:
                break
        if not line.startswith("READY"):
            self.stop_workers()
            raise SupervisorError("a proxy worker failed to start; see the messages above")
        return int(line.split()[1])

    def write_state(self, **extra: Any) -> None:
        host, _ = self.config.listen.proxy_addr()
        state = {
            "pid": os.getpid(),
            "proxy": f"{host}:{self.port}",
            "web": self.web,
            "workers": [p.pid for p in self.procs],
            "data_dir": str(self.layout.root),
            "started_at": self.started_at,
            **self.state_extra,
            **extra,
        }
        write_atomic(self.layout.state, json.dumps(state, indent=2).encode())

    # -- run ---------------------------------------------------------------------------

    async def serve(self, on_ready: Callable[[], None] | None = None) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        web_task = None
        if self.config.listen.web:
            from dbgov.web.server import bind_web, serve_web, web_address

            sock = bind_web(self.config)
            self.web = web_address(sock) if sock is not None else None
            web_task = loop.create_task(serve_web(self.config, stop, sock))
        self.write_state()
        if on_ready is not None:
            on_ready()
        watch = loop.create_task(self._watch_workers(stop))
        await stop.wait()
        watch.cancel()
        if web_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(web_task, 5)

    async def _watch_workers(self, stop: asyncio.Event) -> None:
        """Replace workers that die. Never returns on its own; `serve` cancels it."""
        deaths = [0] * len(self.procs)  # deaths in a row, per slot
        born = [time.monotonic()] * len(self.procs)
        due: dict[int, float] = {}  # slot -> when its new worker starts
        # Heartbeats: the file's last mtime seen, when it changed (monotonic: it stands
        # still while the machine sleeps, so a resume kills nobody), and whether the
        # worker has beaten since it started.
        beats = [self._first_beat(i) for i in range(len(self.procs))]
        stalled: dict[int, float] = {}  # slot -> seconds it had not turned when killed
        while not stop.is_set():
            now = time.monotonic()
            for i, p in enumerate(self.procs):
                if i in due:
                    continue
                if p.poll() is None:
                    beats[i] = self._check_heartbeat(i, p, beats[i], now, stalled)
                    continue
                deaths[i] = 1 if now - born[i] >= STEADY_S else deaths[i] + 1
                delay = RESPAWN_BACKOFF_S[min(deaths[i], len(RESPAWN_BACKOFF_S)) - 1]
                how = _exit_text(p.returncode)
                if i in stalled:
                    how = f"stalled for {stalled.pop(i):.0f} s and was killed"
                log.error(
                    "proxy worker %d (pid %d) %s, ending the sessions it held; restart in %.1f s",
                    i,
                    p.pid,
                    how,
                    delay,
                )
                self._record_exit(i, p, how, delay)
                due[i] = now + delay
            for i, at in list(due.items()):
                if now >= at:
                    del due[i]
                    try:
                        proc = self._spawn(i, self.port)
                    except OSError as exc:  # no fork today (limits, memory): try again
                        log.error("proxy worker %d cannot be started: %s", i, exc)
                        due[i] = now + RESPAWN_BACKOFF_S[-1]
                        continue
                    old, self.procs[i] = self.procs[i], proc
                    if old.stdout is not None:
                        old.stdout.close()
                    born[i] = time.monotonic()
                    beats[i] = self._first_beat(i)
                    self.write_state()
                    log.warning("proxy worker %d restarted as pid %d", i, self.procs[i].pid)
            await asyncio.sleep(WATCH_INTERVAL_S)

    def _heartbeat_mtime(self, slot: int) -> float:
        try:
            return self.layout.heartbeat(slot).stat().st_mtime
        except OSError:
            return 0.0  # not written yet

    def _first_beat(self, slot: int) -> tuple[float, float, bool]:
        """A new worker's heartbeat state: the file may be its predecessor's."""
        return (self._heartbeat_mtime(slot), time.monotonic(), False)

    def _check_heartbeat(
        self,
        slot: int,
        proc: subprocess.Popen[str],
        beat: tuple[float, float, bool],
        now: float,
        stalled: dict[int, float],
    ) -> tuple[float, float, bool]:
        """The slot's heartbeat as last seen; kills the worker once it is stale."""
        limit = self.config.worker_stall_s
        if limit <= 0:
            return beat
        mtime = self._heartbeat_mtime(slot)
        if mtime != beat[0]:
            return (mtime, now, True)
        if not beat[2]:  # still starting (config, keys, policy): a slow machine is no hang
            limit = max(limit, STARTUP_GRACE_S)
        if now - beat[1] > limit and slot not in stalled:
            stalled[slot] = now - beat[1]
            log.error(
                "proxy worker %d (pid %d): its event loop has not turned for %.0f s; killing it",
                slot,
                proc.pid,
                now - beat[1],
            )
            proc.kill()
        return beat

    def _record_exit(self, slot: int, proc: subprocess.Popen[str], how: str, delay: float) -> None:
        """Write the worker's death to the ledger: its open sessions end here, with no
        connection.close of their own (their connection.open names the worker's pid)."""
        session_limits.forget_worker(self.layout.live_sessions, proc.pid)
        try:
            if self._audit is None:
                self._audit = Audit(
                    Journal(
                        self.layout.journal,
                        f"{os.getpid()}-supervisor",
                        self.config.ledger.mode,
                        self.config.ledger.fsync_interval_ms,
                    )
                )
            err = self._audit.write_ahead(
                "proxy.worker_exit",
                f"proxy:{os.getpid()}:{secrets.token_hex(4)}",
                worker=slot,
                pid=proc.pid,
                exit=how,
                restart_in_ms=int(delay * 1000),
            )
        except OSError as exc:
            err = exc
        if err is not None:
            log.error("the ledger cannot record proxy worker %d's exit: %s", slot, err)

    # -- stop --------------------------------------------------------------------------

    def stop_workers(self, timeout: float = 15.0) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop(self) -> None:
        self.stop_workers()
        if self._audit is not None:  # before the sequencer's last pass, which takes it in
            self._audit.journal.close()
            self._audit = None
        if self.sequencer is not None:
            self.sequencer.stop()
            if self._seq_thread is not None:
                self._seq_thread.join(30)
            self.sequencer.close()
        self._lock.release()
        with contextlib.suppress(FileNotFoundError):
            self.layout.state.unlink()


def _exit_text(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"
