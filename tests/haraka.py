"""A private Haraka on loopback, for the interop tests.

Haraka comes from the npm registry into the project's git-ignored ``.haraka/``
(``source scripts/haraka.sh; ensure_haraka``); everything else is this instance's
own, in one temporary directory made by ``haraka -i``: ``config/`` (smtp.ini,
log.ini, the plugin list and the plugins' settings), ``plugins/`` (two small plugins
of ours, below), ``store/`` (every message accepted) and ``haraka.log`` (the log at
PROTOCOL level: every command and reply, one line each). It listens on 127.0.0.1 only,
on free ports, in a single process (no cluster), and never relays anything.

Starting Haraka takes seconds, so one instance serves many tests; but a client may
remember what it learned about a server by host and port, so each test asks for a
port of its own (``endpoint()``: Haraka listens on as many as asked for when it
starts), a server that client has never met, and reads only what happened on that
port: its connections' log lines and the messages they delivered.

Its plugins:

- ``early_talker_loopback``: Haraka's own ``early_talker`` plugin
  (haraka-plugin-early_talker, inherited whole), minus its exemption of loopback and
  private clients, which would otherwise skip every check here. It waits
  ``early_talker_pause`` seconds before the greeting and before the 354 to DATA, and
  a client that says anything in either wait is refused (``You talk too soon``) and
  noted in the log (``fail:early``).
- ``sockmail_store``: accepts every recipient and queues every message by writing it
  to ``store/<n>.eml`` and a line of JSON to ``store/deliveries.jsonl``, both before
  the 250 goes out, so a test can count deliveries as soon as a send returns.

Haraka advertises PIPELINING (and SIZE, 8BITMIME, SMTPUTF8), not CHUNKING: it has no
BDAT. From 3.3.4 it answers ``503 Bad sequence of commands - pipelined after end of
DATA`` to each command the client wrote behind the end of the message content before
the reply to it, and runs none of them. Used as::

    with HarakaInstance(endpoints=4) as haraka:
        server = haraka.endpoint()
        ...  # send to server.host, server.port
        assert len(server.deliveries()) == 1
        assert not refusals(server.log()) and not early_talk(server.log())

``python -m tests.haraka`` runs one in the foreground until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.instances import Instance, free_port, process_alive, wait_until

HOME = Path(__file__).resolve().parent.parent / ".haraka"  # scripts/haraka.sh installs here
HARAKA = HOME / "node_modules" / ".bin" / "haraka"
# As scripts/haraka.sh pins it: the first release that refuses what comes behind the end
# of DATA. An older one would let the tests pass without meeting that refusal at all.
VERSION = "3.3.4"
_PID_FILE = "haraka.pid"

# The reply Haraka gives each command pipelined behind the end of DATA (3.3.4 and later).
REFUSAL = "503 Bad sequence of commands - pipelined after end of DATA"

_PLUGINS = "early_talker_loopback\nsockmail_store\n"

# Haraka's early_talker, checking loopback clients too: its should_check() skips every
# local or private address (and relaying, authenticated, whitelisted, good-karma
# clients), which would leave it idle against a test client on 127.0.0.1. Defined
# before inherits(), which copies only what this plugin does not define itself.
_EARLY_TALKER_LOOPBACK = """\
exports.should_check = function () {
    return true
}

exports.register = function () {
    this.inherits('early_talker')
}
"""

_STORE = """\
// Accepts every recipient; keeps every message in store/ before it answers 250.
const crypto = require('node:crypto')
const fs = require('node:fs')
const path = require('node:path')

exports.register = function () {
    this.store = path.resolve(__dirname, '..', 'store')
    fs.mkdirSync(this.store, { recursive: true })
    this.stored = 0
    this.register_hook('rcpt', 'accept_recipient')
    this.register_hook('queue', 'store_message')
}

exports.accept_recipient = function (next) {
    next(OK)
}

exports.store_message = function (next, connection) {
    const txn = connection.transaction
    txn.message_stream.get_data((content) => {
        this.stored += 1
        const name = `${this.stored}.eml`
        fs.writeFileSync(path.join(this.store, name), content)
        const delivery = {
            file: name,
            session: connection.uuid,
            transaction: txn.uuid,
            mail_from: txn.mail_from.address,
            rcpt_to: txn.rcpt_to.map((rcpt) => rcpt.address),
            size: txn.data_bytes,
            sha256: crypto.createHash('sha256').update(content).digest('hex'),
            message_id: (txn.header.get('Message-ID') || '').trim(),
        }
        const line = JSON.stringify(delivery) + '\\n'
        fs.appendFileSync(path.join(this.store, 'deliveries.jsonl'), line)
        next(OK, `queued as H${this.stored}`)
    })
}
"""

_SMTP_INI = """\
listen={listen}
; one process: no cluster of workers
nodes=
daemonize=false
inactivity_timeout=60
force_shutdown_timeout=5
"""

_LOG_INI = """\
[main]
; PROTOCOL: every command (C:) and reply (S:) as well as the notices
level=protocol
timestamps=true
format=default
"""

_EARLY_TALKER_INI = """\
[main]
; seconds to wait before the greeting and before the 354 to DATA
pause={pause}
; refuse an early talker (DENYDISCONNECT "You talk too soon")
reject=true

; no client is spared the checks (the plugin reads this section, which must be there)
[ip_whitelist]
"""

# The plugin's results (pass/fail: early) go into the log at DEBUG.
_RESULTS_INI = """\
[early_talker_loopback]
debug=true
"""


# Haraka's notice when it refuses commands pipelined behind the end of DATA, logged with
# the connection's uuid and the transaction's number: "[<uuid>.<n>] [core] command
# pipelined after end of DATA - refused remote=… buffered=… commands=<count>".
_REFUSAL_NOTICE = re.compile(
    r"\[(?P<session>[0-9A-F-]{36})\.(?P<transaction>\d+)\] \[core\] command pipelined after"
    r" end of DATA - refused .*?\bcommands=(?P<commands>\d+)"
)


# What a log line is about: "<time> [LEVEL] [<uuid>] …" for a connection, "[<uuid>.<n>]"
# for its n-th transaction, "[-]" for the server as a whole.
_LINE_UUID = re.compile(r"^\S+ \[[A-Z]+\] \[([0-9A-F-]{36})(?:\.\d+)?\] ")
# Its first line: "[<uuid>] [core] connect ip=… port=… local_ip=… local_port=<port>".
_CONNECT = re.compile(
    r"\[([0-9A-F-]{36})\] \[core\] connect ip=\S+ port=\d+ local_ip=\S+ local_port=(\d+)"
)
_EARLY_TALK = re.compile(r"fail: ?early|\[early_talker\]|\bearly=Y|You talk too soon")


@dataclass(frozen=True)
class Refusal:
    """Commands a client wrote behind the end of a message's content, which Haraka
    answered with 503 each and did not run."""

    session: str  # Haraka's connection uuid
    transaction: int  # which transaction of the session the content ended (1, 2, …)
    commands: int


@dataclass(frozen=True)
class Delivery:
    """One message as the store plugin kept it."""

    path: Path
    session: str  # Haraka's connection uuid
    transaction: str
    mail_from: str
    rcpt_to: tuple[str, ...]
    size: int  # the bytes of content received (data_bytes)
    sha256: str  # of the message as stored
    message_id: str  # ``<…>`` included, as in the header

    @property
    def content(self) -> bytes:
        return self.path.read_bytes()


def unavailable() -> str | None:
    """Why no private instance can run here, or None when it can."""
    if not os.access(HARAKA, os.X_OK):
        return f"{HARAKA} is missing (npm: source scripts/haraka.sh; ensure_haraka)"
    if shutil.which("node") is None:
        return "node (Node.js 20 or later) is not on the PATH"
    installed = installed_version()
    if installed != VERSION:
        return (
            f"Haraka {installed} in {HOME}, not {VERSION} (source scripts/haraka.sh; ensure_haraka)"
        )
    return None


def installed_version() -> str:
    manifest = HOME / "node_modules" / "Haraka" / "package.json"
    try:
        version: str = json.loads(manifest.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return "(unknown)"
    return version


class HarakaInstance(Instance):
    """Haraka with its own configuration, plugins, store and log, on 127.0.0.1.

    It listens on ``port`` (which its start-up check talks to) and on ``endpoints``
    more ports, handed out one by one by :meth:`endpoint`. ``early_talker_pause`` is
    how long (seconds) early_talker waits, before the greeting and before each 354,
    for a client that speaks too soon.
    """

    prefix = "sockmail-haraka-"

    def __init__(self, *, endpoints: int = 0, early_talker_pause: float = 0.1) -> None:
        super().__init__()
        self.port = free_port()
        self.endpoint_ports = tuple(free_port() for _ in range(endpoints))
        self._handed_out = 0
        self.early_talker_pause = early_talker_pause
        self.home = self.directory / "haraka"  # made by `haraka -i`
        self.config = self.home / "config"
        self.store = self.home / "store"
        self.log_path = self.directory / "haraka.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def _ports(self) -> list[int]:
        return [self.port, *self.endpoint_ports]

    def endpoint(self) -> HarakaEndpoint:
        """A port of this instance no one has been given before."""
        if self._handed_out == len(self.endpoint_ports):
            raise RuntimeError("every port handed out: start the instance with more endpoints")
        self._handed_out += 1
        return HarakaEndpoint(self, self.endpoint_ports[self._handed_out - 1])

    # Starting and stopping

    def _launch(self, timeout: float) -> None:
        self._install()
        self._write_configuration()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(HARAKA), "-c", str(self.home)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as one
            )
        (self.directory / _PID_FILE).write_text(f"{self.process.pid}\n")
        self._wait_until_listening(timeout)

    def _halt(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    @classmethod
    def _halt_orphan(cls, directory: Path) -> None:
        with contextlib.suppress(OSError, ValueError):
            pid = int((directory / _PID_FILE).read_text())
            # Only if that pid is still this instance's Haraka (`haraka -c <its home>`).
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if process_alive(pid) and str(directory / "haraka").encode() in command:
                os.killpg(pid, signal.SIGKILL)  # its own group: Haraka and nothing else

    def _install(self) -> None:
        result = subprocess.run(
            [str(HARAKA), "-i", str(self.home)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"haraka -i failed ({result.returncode}):\n"
                f"{result.stdout.decode(errors='replace')}{result.stderr.decode(errors='replace')}"
            )

    def _write_configuration(self) -> None:
        listen = ",".join(f"{self.host}:{port}" for port in self._ports)
        (self.config / "me").write_text("haraka.sockmail.test\n")
        (self.config / "smtp.ini").write_text(_SMTP_INI.format(listen=listen))
        (self.config / "log.ini").write_text(_LOG_INI)
        (self.config / "plugins").write_text(_PLUGINS)
        (self.config / "early_talker.ini").write_text(
            _EARLY_TALKER_INI.format(pause=self.early_talker_pause)
        )
        (self.config / "results.ini").write_text(_RESULTS_INI)
        plugins = self.home / "plugins"
        (plugins / "early_talker_loopback.js").write_text(_EARLY_TALKER_LOOPBACK)
        (plugins / "sockmail_store.js").write_text(_STORE)

    def _wait_until_listening(self, timeout: float) -> None:
        """Until Haraka has said it listens on every port and answers a connection to
        ``port`` with 220 (the check then says QUIT)."""
        addresses = [f"Listening on {self.host}:{port}" for port in self._ports]

        def listening() -> bool:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"haraka exited before it listened:\n{self.log()}")
            log = self.log()
            return all(a in log for a in addresses) and _greeting(self.host, self.port)

        wait_until(
            listening,
            timeout,
            lambda: f"haraka gave no 220 within {timeout} s:\n{self.log()}",
            interval=0.1,
        )

    # Reading back

    def log(self) -> str:
        """The whole log: every port's connections, and the server's own lines."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def deliveries(self) -> list[Delivery]:
        """Every message the store plugin kept, in the order Haraka queued them."""
        try:
            lines = (self.store / "deliveries.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return []
        found = []
        for line in lines:
            record = json.loads(line)
            found.append(
                Delivery(
                    path=self.store / record["file"],
                    session=record["session"],
                    transaction=record["transaction"],
                    mail_from=record["mail_from"],
                    rcpt_to=tuple(record["rcpt_to"]),
                    size=record["size"],
                    sha256=record["sha256"],
                    message_id=record["message_id"],
                )
            )
        return found


class HarakaEndpoint:
    """One port of an instance, as ``tests.servers.backend_for`` wants it (``host``,
    ``port``), with what happened on it alone."""

    def __init__(self, instance: HarakaInstance, port: int) -> None:
        self.instance = instance
        self.host = instance.host
        self.port = port

    def __repr__(self) -> str:
        return f"<HarakaEndpoint {self.host}:{self.port}>"

    def log(self) -> str:
        """The log lines of the connections made to this port, in order. Each line is
        added after those before it, so ``log()[len(earlier):]`` is what came since."""
        lines = self.instance.log().splitlines(keepends=True)
        connections = self._connections(lines)
        return "".join(line for line in lines if _connection(line) in connections)

    def deliveries(self) -> list[Delivery]:
        """The messages delivered through this port, in order."""
        sessions = self._connections(self.instance.log().splitlines())
        return [d for d in self.instance.deliveries() if d.session in sessions]

    def _connections(self, lines: list[str]) -> set[str]:
        return {
            match[1]
            for line in lines
            if (match := _CONNECT.search(line)) and int(match[2]) == self.port
        }


def _connection(line: str) -> str | None:
    match = _LINE_UUID.match(line)
    return match[1] if match else None


def _greeting(host: str, port: int) -> bool:
    """Whether a connection is greeted with 220 (then says QUIT)."""
    with socket.create_connection((host, port), timeout=5) as sock:
        reader = sock.makefile("rb")
        line: bytes = reader.readline()
        while line[3:4] == b"-":  # a multi-line greeting: its last line says 220
            line = reader.readline()
        if not line.startswith(b"220 "):
            return False
        sock.sendall(b"QUIT\r\n")
        reader.readline()
        return True


# Reading a log (the whole log or an endpoint's)


def refusals(log: str) -> list[Refusal]:
    """Each time Haraka refused what a client wrote behind the end of DATA (one 503
    per command), from its notices."""
    return [
        Refusal(match["session"], int(match["transaction"]), int(match["commands"]))
        for match in _REFUSAL_NOTICE.finditer(log)
    ]


def replies(code: str, log: str) -> list[str]:
    """The replies with this code Haraka sent (its ``S: <code>…`` protocol lines)."""
    return [line for line in log.splitlines() if re.search(rf"\bS: {code}[ -]", line)]


def early_talk(log: str) -> list[str]:
    """The lines that show a client talking early: the early_talker plugin's verdict
    (``fail:early``), Haraka's own flag on the connection (``[early_talker]``,
    ``early=Y``) and the refusal (``You talk too soon``)."""
    return [line for line in log.splitlines() if _EARLY_TALK.search(line)]


def early_talker_checks(log: str) -> list[str]:
    """The plugin's verdicts for clients that waited their turn (``pass:early``):
    proof that it checked at all."""
    return [line for line in log.splitlines() if re.search(r"pass: ?early", line)]


def protocol_lines(log: str) -> list[str]:
    """The conversation as Haraka saw it: its ``C: …`` and ``S: …`` lines, bare."""
    found = []
    for line in log.splitlines():
        # Haraka writes the connection's state after each command: " state=1".
        match = re.search(r"\] ([CS]: .*?)(?: state=\d+)?$", line)
        if match:
            found.append(match.group(1))
    return found


if __name__ == "__main__":
    reason = unavailable()
    if reason:
        raise SystemExit(reason)
    with HarakaInstance() as instance:
        print(f"Haraka {VERSION} on {instance.host}:{instance.port}")
        print(f"  home {instance.home}\n  store {instance.store}\n  log {instance.log_path}")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
