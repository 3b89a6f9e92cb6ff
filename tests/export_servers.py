"""Real receivers for the export tests: Debian's rsyslog and a local HTTPS server.

rsyslog is started by the test with its own configuration (plain TCP and TLS inputs
on free ports, certificates made by the test), writing what it receives to a file
the test reads; it is stopped by its pid. Under ``CI=true`` a missing rsyslogd fails
the test; elsewhere the test is skipped, saying why.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.certs import make_ca, make_leaf

RSYSLOGD = os.environ.get("GQL_AUDIT_TEST_RSYSLOGD", "/usr/sbin/rsyslogd")

RSYSLOG_CONF = """
global(workDirectory="{dir}" maxMessageSize="4m"
       defaultNetstreamDriverCAFile="{dir}/ca.crt"
       defaultNetstreamDriverCertFile="{dir}/server.crt"
       defaultNetstreamDriverKeyFile="{dir}/server.key")
module(load="imtcp" maxSessions="200")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="received")
input(type="imtcp" address="127.0.0.1" port="{tls}" ruleset="received"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
template(name="fields" type="string" string="%pri%|%app-name%|%msgid%|%timereported:::date-rfc3339%|%msg%\\n")
ruleset(name="received") {{
  action(type="omfile" file="{dir}/received.log" template="fields")
}}
"""


def need(path: str, package: str) -> None:
    if Path(path).is_file() and os.access(path, os.X_OK):
        return
    reason = f"{path} is missing (apt-get install {package})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and this test cannot run: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port} after {seconds}s")


class Rsyslog:
    """One rsyslogd of the test's own: ``tcp`` and ``tls`` ports, ``received()`` lines."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        ca = make_ca("rsyslog test CA")
        (directory / "ca.crt").write_text(ca.pem)
        make_leaf(ca, "localhost", server=True).write(directory, "server")
        self.ca_file = str(directory / "ca.crt")
        self.tcp, self.tls = free_port(), free_port()
        self.conf = directory / "rsyslog.conf"
        self.conf.write_text(RSYSLOG_CONF.format(dir=directory, tcp=self.tcp, tls=self.tls))
        self.log = directory / "rsyslogd.out"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Rsyslog:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(self.dir / "rsyslogd.pid")],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_port(self.tcp)
        wait_port(self.tls)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def received(self) -> list[dict]:
        path = self.dir / "received.log"
        if not path.exists():
            return []
        found = []
        for line in path.read_text(encoding="utf-8").splitlines():
            pri, app, msgid, stamp, message = line.split("|", 4)
            found.append({"pri": int(pri), "app": app, "msgid": msgid, "time": stamp, "body": json.loads(message)})
        return found

    def wait_for(self, count: int, seconds: float = 20) -> list[dict]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            got = self.received()
            if len(got) >= count:
                return got
            time.sleep(0.1)
        raise AssertionError(f"rsyslog received {len(self.received())} of {count}:\n{self.log.read_text()}")


class Receiver(BaseHTTPRequestHandler):
    """POSTs recorded as parsed JSON; the server's ``plan`` decides each answer."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        server: HttpsServer = self.server  # type: ignore[assignment]
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        status, delay = server.next_answer()
        server.seen.append({"headers": dict(self.headers), "body": json.loads(body), "status": status})
        if delay:
            time.sleep(delay)
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


class HttpsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, directory: Path) -> None:
        super().__init__(("127.0.0.1", 0), Receiver)
        ca = make_ca("https test CA")
        (directory / "https-ca.crt").write_text(ca.pem)
        cert, key = make_leaf(ca, "localhost", server=True).write(directory, "https-server")
        self.ca_file = str(directory / "https-ca.crt")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.port = self.server_address[1]
        self.url = f"https://localhost:{self.port}/ingest"
        #: ``(status, delay)`` answers to give, in order; then 200 at once.
        self.plan: list[tuple[int, float]] = []
        self.seen: list[dict] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    def next_answer(self) -> tuple[int, float]:
        with self.lock:
            return self.plan.pop(0) if self.plan else (200, 0.0)

    def delivered(self) -> list[dict]:
        """Events of the POSTs answered 2xx."""
        return [event for post in self.seen if 200 <= post["status"] < 300 for event in post["body"]]

    def start(self) -> HttpsServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def rsyslog_server(directory: Path):
    """A started :class:`Rsyslog` (a generator for a fixture: stopped after)."""
    need(RSYSLOGD, "rsyslog rsyslog-gnutls")
    server = Rsyslog(directory / "rsyslog").start()
    yield server
    server.stop()


def https_receiver(directory: Path):
    """A started :class:`HttpsServer` (a generator for a fixture: stopped after)."""
    server = HttpsServer(directory).start()
    yield server
    server.stop()
