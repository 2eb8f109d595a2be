"""Servers that misbehave on purpose, for tests/test_faults.py: Postfix's smtp-sink with
its fault flags, and hostile servers of our own for what no real server does on demand."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tests.instances import free_port
from tests.servers import DROP, STALL, Action, Conversation, Responder

SMTP_SINK = "/usr/sbin/smtp-sink"


class SMTPSink:
    """Postfix's smtp-sink on 127.0.0.1 and a free port, in a subprocess of its own.

    ``flags`` are smtp-sink's options (``"-f", "MAIL"``). With ``dump`` it appends every
    transaction it reads to a file (``-D``), refused ones too: :meth:`dumped` shows what
    content reached it, whatever it answered.
    """

    def __init__(self, *flags: str, dump: bool = False) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.flags = flags
        # As root smtp-sink runs as nobody (-u): under /tmp, which nobody can reach.
        where = "/tmp" if os.geteuid() == 0 else None
        self._directory = tempfile.mkdtemp(prefix="sockmail-sink-", dir=where) if dump else None
        if self._directory is not None:
            # ... and nobody must be able to write here.
            os.chmod(self._directory, 0o777)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def dump_path(self) -> str | None:
        return None if self._directory is None else os.path.join(self._directory, "dump")

    def command(self) -> list[str]:
        command = [SMTP_SINK]
        if os.geteuid() == 0:
            command += ["-u", "nobody"]  # smtp-sink refuses to run as root without it
        if self.dump_path is not None:
            command += ["-D", self.dump_path]
        return [*command, *self.flags, f"{self.host}:{self.port}", "16"]

    def start(self) -> SMTPSink:
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 5
        while True:
            if self.process.poll() is not None:
                assert self.process.stderr is not None
                error = self.process.stderr.read().decode(errors="replace")
                raise RuntimeError(f"smtp-sink exited with {self.process.returncode}: {error}")
            try:
                # One empty session, which smtp-sink shrugs off: it is listening.
                socket.create_connection((self.host, self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.01)

    def dumped(self) -> str:
        """Everything smtp-sink wrote to its dump file so far."""
        if self.dump_path is None or not os.path.exists(self.dump_path):
            return ""
        with open(self.dump_path, encoding="utf-8", errors="replace") as dump:
            return dump.read()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            if self.process.stderr is not None:
                self.process.stderr.close()
            self.process = None
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None


# Hostile behaviour for a Responder: what a server does instead of a plain reply.


def drain(conversation: Conversation) -> None:
    """Read (and throw away) whatever the client sends until it closes the connection."""
    with contextlib.suppress(OSError):
        while conversation.sock.recv(65536):
            pass


class Behaviour(Action):
    """An answer of a :class:`HostileResponder` that does more than send a reply.

    :meth:`act` returns the bytes sent, as a plain answer would be, or None when the
    conversation is over.
    """

    def act(self, conversation: Conversation) -> bytes | None:
        raise NotImplementedError


class Say(Behaviour):
    """Send ``data`` (a reply cut short, say), then stall until the client gives up
    (``then="stall"``) or close the connection (``then="close"``)."""

    def __init__(self, data: bytes, then: str) -> None:
        assert then in ("stall", "close"), then
        super().__init__(f"say {data[:20]!r} then {then}")
        self.data = data
        self.then = then

    def act(self, conversation: Conversation) -> bytes | None:
        conversation.send(self.data)
        if self.then == "stall":
            drain(conversation)
        return None


class Endless(Behaviour):
    """Send ``chunk`` over and over until the client closes the connection, or ``limit``
    bytes went out (then stall): ``sent`` says how far the client let it go."""

    def __init__(self, chunk: bytes, limit: int = 64 << 20) -> None:
        super().__init__(f"endless {chunk[:20]!r}")
        self.chunk = chunk
        self.limit = limit
        self.sent = 0

    def act(self, conversation: Conversation) -> bytes | None:
        try:
            while self.sent < self.limit:
                conversation.sock.sendall(self.chunk)
                self.sent += len(self.chunk)
        except OSError:
            return None  # the client closed: what we want
        drain(conversation)
        return None


class Closing(Behaviour):
    """Send ``reply`` (a 421), then read what the client still sends until it closes.

    Reading on makes the test deterministic: a server that closed with the client's
    pipelined commands unread would reset the connection, and the reset may overtake
    the reply."""

    def __init__(self, reply: bytes) -> None:
        super().__init__(f"closing {reply!r}")
        self.reply = reply

    def act(self, conversation: Conversation) -> bytes | None:
        conversation.send(self.reply)
        drain(conversation)
        return None


class StopReading(Behaviour):
    """The answer to DATA: a 354, then read ``take`` bytes of the content and nothing
    more until the test sets ``released`` (the client's writes fill the buffers and
    block); the bytes taken are in ``taken``."""

    def __init__(self, take: int = 65536) -> None:
        super().__init__("354, then stop reading")
        self.take = take
        self.taken = b""
        self.released = threading.Event()

    def act(self, conversation: Conversation) -> bytes | None:
        conversation.send(b"354 End data with <CR><LF>.<CR><LF>\r\n")
        self.taken = conversation.read_exact(self.take)
        self.released.wait(timeout=10)
        return None


EHLO_PLAIN = b"250-hostile.test\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n"
EHLO_PIPELINING = (
    b"250-hostile.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n"
)


@dataclass
class HostileResponder(Responder):
    """A :class:`~tests.servers.Responder` whose answers may also be a
    :class:`Behaviour`; with ``pipelining`` its EHLO reply offers PIPELINING (it answers
    each command as it reads it either way)."""

    pipelining: bool = False

    def __post_init__(self) -> None:
        self.replies.setdefault("EHLO", EHLO_PIPELINING if self.pipelining else EHLO_PLAIN)

    def _reply(self, conversation: Conversation, key: str) -> bytes | None:
        answer = self.answer(key)
        if isinstance(answer, Behaviour):
            return answer.act(conversation)
        if answer is DROP:
            return None
        if answer is STALL:
            drain(conversation)
            return None
        assert isinstance(answer, bytes)
        conversation.send(answer)
        return None if answer.startswith(b"421") else answer


BEHIND_DATA_REFUSED = b"503 5.5.1 Bad sequence of commands - pipelined after end of DATA\r\n"


@dataclass
class RefusesBehindData(HostileResponder):
    """Refuses what a client wrote behind the end of the data before its verdict, as
    Haraka 3.3.4 does against SMTP smuggling: once the verdict is out, every complete
    line already received gets a 503 and is not run. ``refused`` keeps those lines."""

    refused: list[bytes] = field(default_factory=list)

    def _reply(self, conversation: Conversation, key: str) -> bytes | None:
        sent = super()._reply(conversation, key)
        after_data = conversation.received[-1:] == [b"."]  # not behind a BDAT chunk
        if key == "END" and after_data and sent is not None:
            while b"\r\n" in conversation.buffer:
                line, _, conversation.buffer = conversation.buffer.partition(b"\r\n")
                self.refused.append(line)
                conversation.send(BEHIND_DATA_REFUSED)
        return sent


def written_behind_data(session: Any) -> list[str]:
    """The commands a recorded session wrote behind a message's content before its
    verdict came: the transcript records each command as it is written and each reply
    as it is read, so these are the ``C`` lines between a ``D`` line and the next
    ``S`` line."""
    behind, after_content = [], False
    for line in session.transcript_lines():
        if line.direction == "D":
            after_content = True
        elif line.direction == "S":
            after_content = False
        elif line.direction == "C" and after_content:
            behind.append(line.text)
    return behind
