"""`make bench`'s reading of PostgreSQL's CPU: a server's backends come and go during a
run, so the reading must count children still running and children already reaped."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.systems import server_cpu_seconds

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def test_counts_a_child_while_it_runs_and_after_it_is_reaped():
    me = os.getpid()  # this test process stands in for the postmaster
    before = server_cpu_seconds(me)
    child = subprocess.Popen([sys.executable, "-c", BURN.format(s=0.6)])
    try:
        time.sleep(0.4)
        running = server_cpu_seconds(me) - before
    finally:
        child.wait()
    reaped = server_cpu_seconds(me) - before
    assert running >= 0.2  # the live child's time so far
    assert reaped >= 0.5  # its whole time, now in this process's cutime and cstime
    assert reaped >= running
