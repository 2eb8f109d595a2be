"""A private Postfix instance on loopback, for the interop tests and the benchmark.

Debian's ``postfix`` package provides the programs (``source scripts/postfix.sh;
ensure_postfix`` installs it); everything else is this instance's own, in one
temporary directory (on /dev/shm when there is one, so the queue's fsyncs cost
nothing): ``config/`` (main.cf, master.cf, the TLS key and chain), ``queue/``,
``data/``, ``mail/Maildir/`` (every recipient at ``sockmail.test`` lands there) and
``maillog``. It listens on 127.0.0.1 only, on free ports: one for plain SMTP and
STARTTLS (when given a certificate), one for implicit TLS. It never looks anything up
in DNS, relays nowhere (any other domain is refused at RCPT; what Postfix makes itself,
such as a bounce, for an address elsewhere is discarded) and never touches port 25 or
the system's instance.

Starting and stopping need root, as for any Postfix: ``postfix -c DIR start`` runs the
master as root, which drops to the ``postfix`` user for its daemons. Used as::

    with PostfixInstance(tls_chain_pem=pem) as postfix:
        ...  # send to postfix.host, postfix.port (or postfix.tls_port)
        postfix.wait_for_messages({"<id@example.org>"})

``python -m tests.postfix`` runs one in the foreground until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import pty
import pwd
import re
import select
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from tests.instances import Instance, accepts_connections, free_port, wait_until

POSTFIX = "/usr/sbin/postfix"
DOMAIN = "sockmail.test"  # every address here is delivered into the one Maildir
# The headers Postfix adds in front of a delivered message: cleanup the Received:
# line, the virtual delivery agent Return-Path:, X-Original-To: and Delivered-To:.
PREPENDED_HEADERS = frozenset({"received", "return-path", "x-original-to", "delivered-to"})

# The services the instance runs; none chrooted (nothing to copy into the queue
# directory), no pickup (nothing is submitted locally), no smtp client (nothing leaves).
_MASTER_CF = """\
{host}:{port} inet n - n - - smtpd
{tls_service}cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000? 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
virtual unix - n n - - virtual
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""

_TLS_SERVICE = """\
{host}:{port} inet n - n - - smtpd
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
"""

_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
maillog_file = {maillog}
maillog_file_prefixes = {directory}
myhostname = postfix.{domain}
mydomain = {domain}
myorigin = $myhostname
mydestination =
inet_interfaces = {host}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8

# No DNS, no reverse lookups of clients, no header rewriting (so what arrives is
# delivered as it came, with only Received: and the delivery headers added).
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
smtpd_peername_lookup = no
local_header_rewrite_clients =
remote_header_rewrite_domain =

# Every address at {domain} goes into one Maildir; every other domain is refused at
# RCPT (no relay_domains, no mydestination), and mail Postfix makes itself (bounces,
# DSNs, notices to postmaster) for an address elsewhere is discarded.
virtual_mailbox_domains = {domain}
virtual_mailbox_base = {mail}
virtual_mailbox_maps = static:Maildir/
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_transport = {delivery}
relay_domains =
default_transport = discard:
relay_transport = discard:
local_transport = discard:
alias_maps =
alias_database =
local_recipient_maps =
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions =
biff = no

# Every extension smtpd has: PIPELINING, SIZE, ETRN, STARTTLS (with a certificate),
# ENHANCEDSTATUSCODES, 8BITMIME, DSN, SMTPUTF8, CHUNKING.
smtputf8_enable = yes
smtpd_discard_ehlo_keywords =
smtpd_tls_security_level = {tls_level}
smtpd_tls_chain_files = {chain}
smtpd_tls_loglevel = 0
smtpd_tls_received_header = no

# A test server: never slow down a fast client.
in_flow_delay = 0
smtpd_error_sleep_time = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
"""


@dataclass(frozen=True)
class Endpoint:
    """host and port, as ``tests.servers.backend_for`` wants them."""

    host: str
    port: int


@dataclass(frozen=True)
class Delivered:
    """One message as the virtual delivery agent wrote it into the Maildir."""

    path: Path
    raw: bytes  # as stored: LF line endings

    @property
    def crlf(self) -> bytes:
        """The message with CRLF line endings, as it went over the wire."""
        return self.raw.replace(b"\n", b"\r\n")

    def prepended(self, original: bytes) -> list[tuple[str, str]]:
        """The header fields Postfix put in front of ``original`` (CRLF bytes as sent):
        (name, value) pairs. Fails when the delivered message is not exactly those
        fields followed by ``original``, byte for byte."""
        delivered = self.crlf
        if not delivered.endswith(original):
            same = 0  # how many of the last bytes agree
            while same < min(len(delivered), len(original)) and (
                delivered[-1 - same] == original[-1 - same]
            ):
                same += 1
            raise AssertionError(
                f"{self.path.name}: the delivered message does not end with the bytes sent;"
                f" they differ {same} bytes from the end: delivered"
                f" {delivered[-same - 40 : len(delivered) - same + 1]!r}, sent"
                f" {original[-same - 40 : len(original) - same + 1]!r}"
            )
        prefix = delivered[: len(delivered) - len(original)].decode("utf-8")
        if prefix and not prefix.endswith("\r\n"):
            raise AssertionError(f"{self.path.name}: not a header block: {prefix!r}")
        fields: list[tuple[str, str]] = []
        for line in prefix.split("\r\n")[:-1]:
            if line[:1] in (" ", "\t") and fields:  # a folded field goes on
                name, value = fields[-1]
                fields[-1] = (name, f"{value} {line.strip()}")
                continue
            name, colon, value = line.partition(":")
            if not colon or not re.fullmatch(r"[!-9;-~]+", name):
                raise AssertionError(f"{self.path.name}: not a header field: {line!r}")
            fields.append((name, value.strip()))
        return fields

    @property
    def queue_id(self) -> str:
        """The queue id in the Received: line Postfix's cleanup added first."""
        header = self.raw.split(b"\n\n", 1)[0].decode("utf-8", "replace")
        unfolded = re.sub(r"\n[ \t]+", " ", header)
        match = re.search(r"^Received: .*?\(Postfix\) with \S+ id (\w+)", unfolded, re.M)
        if not match:
            raise AssertionError(f"{self.path.name}: no Received: line from Postfix")
        return match.group(1)

    @property
    def message_id(self) -> str:
        header = self.raw.split(b"\n\n", 1)[0].decode("utf-8", "replace")
        match = re.search(r"^Message-ID:\s*(\S+)", header, re.M | re.I)
        return match.group(1) if match else ""


def unavailable() -> str | None:
    """Why no private instance can run here, or None when it can."""
    if not os.access(POSTFIX, os.X_OK):
        return (
            f"{POSTFIX} is missing (Debian's postfix package: source scripts/postfix.sh;"
            " ensure_postfix)"
        )
    if os.geteuid() != 0:
        return "starting a Postfix instance needs root (its master runs as root)"
    return None


def _tmp_parent() -> str | None:
    """/dev/shm when it is a writable directory (tmpfs: fsync is free), else the default."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


class PostfixInstance(Instance):
    """Postfix with its own configuration, queue and mailbox, on 127.0.0.1.

    ``deliver=False`` discards accepted mail instead of writing it to the Maildir
    (for the benchmark: delivery then costs nothing). ``tls_chain_pem`` is a private
    key followed by the certificate chain (PEM); with it the instance offers STARTTLS
    on ``port`` and implicit TLS on ``tls_port``.
    """

    prefix = "sockmail-postfix-"

    def __init__(self, *, tls_chain_pem: bytes | None = None, deliver: bool = True) -> None:
        super().__init__()
        self.port = free_port()
        self.tls_port: int | None = free_port() if tls_chain_pem else None
        self.domain = DOMAIN
        self.deliver = deliver
        self._tls_chain_pem = tls_chain_pem
        self.config = self.directory / "config"
        self.maillog = self.directory / "maillog"
        self.maildir = self.directory / "mail" / "Maildir"
        self.running = False

    @classmethod
    def parent(cls) -> str | None:
        return _tmp_parent()

    @property
    def tls(self) -> Endpoint:
        """The implicit-TLS port."""
        if self.tls_port is None:
            raise RuntimeError("started without a certificate: no implicit-TLS port")
        return Endpoint(self.host, self.tls_port)

    # Starting and stopping

    def _launch(self, timeout: float) -> None:
        self._write_configuration()
        self.postfix("check")
        # "start" would run the same checks again unless told they were just done.
        (self.directory / "queue" / "quick-start").touch()
        self.postfix("start")
        self.running = True
        for port in (self.port, self.tls_port):
            if port is not None:
                self._wait_for_port(port, timeout)

    def _wait_for_port(self, port: int, timeout: float) -> None:
        wait_until(
            lambda: accepts_connections(self.host, port),
            timeout,
            lambda: (
                f"postfix does not listen on {self.host}:{port} after {timeout} s"
                f"\n--- maillog:\n{self.log()[-4000:]}"
            ),
        )

    def _halt(self) -> None:
        if self.running or (self.directory / "queue" / "pid" / "master.pid").exists():
            _stop(self.config)
        self.running = False

    @classmethod
    def _halt_orphan(cls, directory: Path) -> None:
        if (directory / "config" / "main.cf").exists():
            _stop(directory / "config")

    def postfix(self, *command: str) -> str:
        """Run ``postfix -c CONFIG <command>``; its output, or an error with the log."""
        returncode, output = _run_postfix(self.config, *command)
        if returncode != 0:
            raise RuntimeError(
                f"postfix {' '.join(command)} failed ({returncode}):\n"
                f"{output}\n--- maillog:\n{self.log()}"
            )
        return output

    def _write_configuration(self) -> None:
        self.directory.chmod(0o755)  # the daemons, as user postfix, look inside
        self.config.mkdir()
        # Owned by root (as made here); "postfix check" makes its subdirectories with
        # the owners and modes they need (post-install create-missing).
        (self.directory / "queue").mkdir()
        nobody = pwd.getpwnam("nobody")  # the virtual agent writes the Maildir as this user
        mail = self.maildir.parent
        mail.mkdir()
        os.chown(mail, nobody.pw_uid, nobody.pw_gid)
        chain = ""
        if self._tls_chain_pem:
            path = self.config / "server.pem"
            path.touch(mode=0o600)  # read by smtpd as root, before it drops privileges
            path.write_bytes(self._tls_chain_pem)
            chain = str(path)
        (self.config / "main.cf").write_text(
            _MAIN_CF.format(
                queue=self.directory / "queue",
                data=self.directory / "data",
                maillog=self.maillog,
                directory=self.directory,
                domain=self.domain,
                host=self.host,
                mail=mail,
                uid=nobody.pw_uid,
                gid=nobody.pw_gid,
                delivery="virtual" if self.deliver else "discard",
                tls_level="may" if chain else "none",
                chain=chain,
            )
        )
        tls_service = (
            _TLS_SERVICE.format(host=self.host, port=self.tls_port) if self.tls_port else ""
        )
        (self.config / "master.cf").write_text(
            _MASTER_CF.format(host=self.host, port=self.port, tls_service=tls_service)
        )
        # Postfix reads a table again and again, for up to seconds, while its mtime is
        # this very second (it might still be being written): date the files back.
        past = time.time() - 60
        for name in ("main.cf", "master.cf"):
            os.utime(self.config / name, (past, past))

    # Reading back

    def log(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def delivered(self) -> list[Delivered]:
        """Every message in the Maildir so far, oldest first."""
        new = self.maildir / "new"
        if not new.is_dir():
            return []
        paths = sorted(new.iterdir(), key=lambda p: (p.stat().st_mtime_ns, p.name))
        return [Delivered(path, path.read_bytes()) for path in paths]

    def wait_for(
        self, wanted: Callable[[Delivered], bool], count: int, timeout: float = 15.0
    ) -> list[Delivered]:
        """The delivered messages ``wanted`` picks, once there are ``count`` of them;
        polls until ``timeout``, then fails with the log (delivery is asynchronous:
        Postfix has only queued a message when it answers 250)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [d for d in self.delivered() if wanted(d)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(found)} of {count} messages delivered within {timeout} s"
                    f"\n--- maillog:\n{self.log()[-4000:]}"
                )
            time.sleep(0.02)

    def wait_for_messages(
        self, message_ids: Iterable[str], timeout: float = 15.0
    ) -> dict[str, Delivered]:
        """The delivered messages with these Message-IDs (``<…>`` included), by id."""
        wanted = set(message_ids)
        found = self.wait_for(lambda d: d.message_id in wanted, len(wanted), timeout)
        by_id = {d.message_id: d for d in found}
        assert len(by_id) == len(found), "a Message-ID delivered twice"
        return by_id

    def wait_for_log(self, text: str, timeout: float = 10.0) -> str:
        """The maillog once it contains ``text`` (postlogd writes it asynchronously)."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.log()):
            if time.monotonic() > deadline:
                raise AssertionError(f"not in the maillog: {text!r}\n--- maillog:\n{log[-4000:]}")
            time.sleep(0.02)
        return log


def _run_postfix(config: Path, *command: str, timeout: float = 60) -> tuple[int, str]:
    """``postfix -c CONFIG command``: its exit status and what it printed.

    Postfix writes its messages to stderr only when that is a terminal (else to syslog,
    which a container may not have, or the maillog file, which it may not have opened
    yet): so stderr is a pseudo-terminal here, and a fatal error comes back in words."""
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [POSTFIX, "-c", str(config), *command],
            stdin=subprocess.DEVNULL,
            stdout=terminal,
            stderr=terminal,
        )
    finally:
        os.close(terminal)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: every holder of the terminal has closed it
                break
            if not chunk:
                break
            output += chunk
        try:
            returncode = process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            returncode = process.wait()
            output += b"\n(timed out)"
    finally:
        os.close(controller)
    return returncode, output.decode("utf-8", "replace").replace("\r\n", "\n")


def _stop(config: Path) -> None:
    """``postfix stop`` (which waits for the master to exit, and kills it after 5 s);
    a master that is not running is fine."""
    _run_postfix(config, "stop", timeout=30)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Run a private Postfix until Ctrl-C.")
    parser.add_argument("--discard", action="store_true", help="discard instead of deliver")
    args = parser.parse_args()
    reason = unavailable()
    if reason:
        raise SystemExit(reason)
    with PostfixInstance(deliver=not args.discard) as instance:
        print(f"Postfix on {instance.host}:{instance.port}, mail for @{instance.domain}")
        print(f"  config {instance.config}\n  Maildir {instance.maildir}\n  log {instance.maillog}")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
