"""The supervisor: workers, the ledger sequencer, the web app, and orderly shutdown.

`dbgov up` and `dbgov proxy` both end here. The supervisor owns the one
sequencer of the data dir (a thread), starts N worker processes that share the
listening port, serves the dashboard, writes `state.json` once everything is
ready, and on SIGINT/SIGTERM drains workers first, then integrates the last
journal entries and signs a final checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
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
from dbgov.ledger.keys import default_origin, load_or_create_signer
from dbgov.ledger.sequencer import Sequencer, SequencerLock

log = logging.getLogger("dbgov")


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
            "started_at": time.time(),
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
        while not stop.is_set():
            for p in self.procs:
                if p.poll() is not None:
                    log.error("proxy worker %d exited with %s; shutting down", p.pid, p.returncode)
                    stop.set()
                    return
            await asyncio.sleep(0.5)

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
        if self.sequencer is not None:
            self.sequencer.stop()
            if self._seq_thread is not None:
                self._seq_thread.join(30)
            self.sequencer.close()
        self._lock.release()
        with contextlib.suppress(FileNotFoundError):
            self.layout.state.unlink()
