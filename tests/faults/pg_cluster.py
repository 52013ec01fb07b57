"""A throw-away PostgreSQL 15 cluster owned by one test: its own data folder and port, stopped and
started at will (Debian's ``initdb`` / ``pg_ctl``, run as the ``postgres`` user since tests run as root).

Used by the fault tests and by ``benchmarks/faults.py``: the shared server at 127.0.0.1:5432 is never
restarted.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["PgCluster", "free_port", "pg_available"]


def _bindir() -> Path | None:
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path(out.stdout.strip())
    return path if (path / "initdb").exists() and (path / "pg_ctl").exists() else None


def pg_available() -> str | None:
    """Why a cluster of our own cannot run here (``None`` when it can)."""
    if _bindir() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl from `pg_config --bindir`) are not installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` user to run the cluster as"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """``initdb`` in a fresh folder, then ``start()`` / ``stop()`` / ``restart()``; ``close()`` removes it."""

    def __init__(self) -> None:
        bindir = _bindir()
        assert bindir is not None, pg_available()
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="shelfwise-pg-"))  # pytest's tmp is root-only (0700)
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        cmd = [*self._as_user, str(self.bindir / tool), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
        assert proc.returncode == 0, f"{tool} failed: {proc.stdout}\n{proc.stderr}"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "start")

    def stop(self, *, mode: str = "fast") -> None:
        """``fast``: sessions are ended (admin shutdown); ``immediate``: like a crash (recovery on start)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, *, down_seconds: float = 0.0, mode: str = "fast") -> None:
        self.stop(mode=mode)
        time.sleep(down_seconds)
        self.start()

    def running(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        except OSError:
            return False
        return True

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop(mode="immediate")
        shutil.rmtree(self.root, ignore_errors=True)
