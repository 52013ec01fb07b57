"""A Prefect API server owned by this process, so no server outlives a killed run.

Without ``PREFECT_API_URL`` Prefect starts a temporary server of its own, and a ``SIGKILL`` of the main
process (the OOM killer) leaves it running. Here the run starts ``prefect server start`` itself, in its
own process group, with a parent-death signal (Linux ``PR_SET_PDEATHSIG``): the kernel stops it when
the run dies, however it dies. Its pid is recorded in ``<state_dir>/prefect/server.pid``; a later run
stops a stale one it finds there (belt and braces, and for systems without the signal). The same URL
is handed to Dask workers, which otherwise each start a temporary server of their own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

__all__ = ["prefect_api"]

_STARTUP_S = 120.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: the pid file still lets the next run stop a stale server
        pass


def _is_prefect_server(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return b"prefect" in cmdline and b"server" in cmdline


def stop_stale(pid_file: Path) -> int | None:
    """Stop the server a killed run left behind (its process group), if it is still there."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if not _is_prefect_server(pid):
        pid_file.unlink(missing_ok=True)
        return None
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    for _ in range(50):
        if not _is_prefect_server(pid):
            break
        time.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return pid


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + _STARTUP_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"the Prefect server did not answer at {url} within {_STARTUP_S:.0f} s; see {log}")


@contextlib.contextmanager
def prefect_api(state_dir: str | Path) -> Iterator[str]:
    """``PREFECT_API_URL`` for the duration of a run: the user's own server if set, else one we own."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    home = Path(os.environ.get("PREFECT_HOME") or Path(state_dir) / "prefect")
    home.mkdir(parents=True, exist_ok=True)
    pid_file = home / "server.pid"
    stop_stale(pid_file)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    log = home / "server.log"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            # the child only asks for PR_SET_PDEATHSIG, so the server dies with the process that started it
            preexec_fn=_die_with_parent,  # noqa: PLW1509
            start_new_session=True,
        )
    pid_file.write_text(f"{proc.pid} {port}\n")
    try:
        _wait_healthy(url, proc, log)
        os.environ["PREFECT_API_URL"] = url
        yield url
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        pid_file.unlink(missing_ok=True)
