"""What a private server instance of the tests needs, whatever the server (Postfix in
tests/postfix.py, Haraka in tests/haraka.py): free ports on loopback, a temporary
directory of its own, starting and stopping (with ``with``), waiting until it listens,
and stopping the instances a crashed test run left behind.

Each instance's directory holds ``owner.pid``, the pid of the process that made it:
an instance whose owner is gone is an orphan, stopped and removed the next time an
instance of its kind starts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import ClassVar, TypeVar

import pytest

HOST = "127.0.0.1"
OWNER_FILE = "owner.pid"

InstanceT = TypeVar("InstanceT", bound="Instance")


def free_port() -> int:
    """A port on HOST that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def process_alive(pid: int) -> bool:
    """Whether the process runs (a zombie, killed and not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def wait_until(
    ready: Callable[[], bool], timeout: float, failure: Callable[[], str], interval: float = 0.05
) -> None:
    """Ask ``ready()`` until it says True (an OSError counts as not yet); after
    ``timeout`` seconds, a RuntimeError with ``failure()``'s words."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            if ready():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(failure())
        time.sleep(interval)


def accepts_connections(host: str, port: int) -> bool:
    """Whether something accepts a TCP connection on ``host:port``."""
    with socket.create_connection((host, port), timeout=1):
        return True


def where_available(server: str, unavailable: str | None) -> pytest.MarkDecorator:
    """The mark of a test module of a private ``server``: skipped on a machine where
    it cannot run (``unavailable`` says why), but not under CI, where the instance
    must run (the module's fixture then fails the tests, saying why)."""
    return pytest.mark.skipif(
        unavailable is not None and os.environ.get("CI") != "true",
        reason=f"no private {server} here: {unavailable}",
    )


class Instance:
    """A server of the tests' own on HOST, in a temporary directory of its own.

    ``with Kind(...) as instance:`` starts it (``start()``) and stops it however the
    block ends (``stop()``); a start that fails stops what it started. Each kind says
    how it launches its server (``_launch``), halts it (``_halt``) and halts an
    orphan's (``_halt_orphan``)."""

    prefix: ClassVar[str]  # of the directory's name, for finding orphans

    def __init__(self) -> None:
        self.host = HOST
        self.directory = Path(tempfile.mkdtemp(prefix=self.prefix, dir=self.parent()))
        (self.directory / OWNER_FILE).write_text(f"{os.getpid()}\n")

    @classmethod
    def parent(cls) -> str | None:
        """Where the directories are made: None for the system's temporary directory."""
        return None

    def __enter__(self: InstanceT) -> InstanceT:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self: InstanceT, timeout: float = 30.0) -> InstanceT:
        """Start the server and wait (up to ``timeout`` seconds) until it listens."""
        self.stop_orphans()
        try:
            self._launch(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (if it runs) and remove its directory. Safe to call twice."""
        self._halt()
        shutil.rmtree(self.directory, ignore_errors=True)

    @classmethod
    def stop_orphans(cls) -> None:
        """Stop and remove the instances of this kind whose starting process is gone
        (killed before it could stop them), so none outlives a crashed test run long."""
        for directory in Path(cls.parent() or tempfile.gettempdir()).glob(f"{cls.prefix}*"):
            try:
                owner = int((directory / OWNER_FILE).read_text())
            except (OSError, ValueError):
                continue
            if process_alive(owner):
                continue
            cls._halt_orphan(directory)
            shutil.rmtree(directory, ignore_errors=True)

    def _launch(self, timeout: float) -> None:
        raise NotImplementedError

    def _halt(self) -> None:
        raise NotImplementedError

    @classmethod
    def _halt_orphan(cls, directory: Path) -> None:
        raise NotImplementedError
