"""Install Debian packages the tests or benchmarks need, when they are missing.

`make test` needs Chromium for the browser tests and `make bench` needs PgBouncer;
both come from Debian, never from a browser or binary download. Packages already
present are left alone, so a second run costs one `dpkg-query`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys


def missing(packages: list[str]) -> list[str]:
    out = []
    for pkg in packages:
        probe = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True
        )
        if "install ok installed" not in probe.stdout:
            out.append(pkg)
    return out


def main(argv: list[str]) -> int:
    if shutil.which("dpkg-query") is None or shutil.which("apt-get") is None:
        print(f"ensure_debs: not a Debian system; install {' '.join(argv)} yourself")
        return 0
    todo = missing(argv)
    if not todo:
        return 0
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print(f"ensure_debs: installing {' '.join(todo)} from Debian")
    update = subprocess.run([*sudo, "apt-get", "update", "-qq"], env=env)
    install = subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *todo], env=env
    )
    if update.returncode or install.returncode:
        print(f"ensure_debs: could not install {' '.join(todo)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
