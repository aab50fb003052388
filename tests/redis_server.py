"""A redis-server of a test's own: unix socket in a folder of the test's, no TCP port, nothing saved."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.conftest import wait_until

__all__ = ["RedisServer"]

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    """A redis-server of this test's own."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket = directory / "redis.sock"
        self.url = f"unix://{self.socket}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                REDIS,
                "--port",
                "0",
                "--unixsocket",
                str(self.socket),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=open(self.directory / "redis.log", "ab"),
            stderr=subprocess.STDOUT,
        )
        wait_until(self.socket.exists, 10, "redis-server to listen")
        import redis

        wait_until(lambda: _pings(redis.Redis.from_url(self.url)), 10, "redis-server to answer")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        if self.socket.exists():
            self.socket.unlink()


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False
