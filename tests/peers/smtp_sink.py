#!/usr/bin/python3
"""SMTP test peer for syncctl (started by tests/peers/smtp.sh; not meant to be run by hand).

An aiosmtpd server (Debian's python3-aiosmtpd) on 127.0.0.1 with two listeners:

* PORT: submission with STARTTLS. Mode `starttls` (default): STARTTLS is required before
  anything else and AUTH (PLAIN or LOGIN) is required after it. Mode `notls`: STARTTLS is
  not offered at all (AUTH in the clear is accepted), for the "no STARTTLS" failure tests.
  Mode `reject`: like `starttls`, but every recipient gets a permanent `550` reply.
* TLS_PORT: implicit TLS (TLS from the first byte) with AUTH required (not in `notls` mode).

Every accepted message is stored maildir-style: written to DIR/mail/tmp, then renamed into
DIR/mail/new/<n>.eml (the DATA as received), with DIR/mail/new/<n>.json beside it (envelope,
AUTH user, TLS, listener port) written first. Tests count and read the .eml files.

DELAY_MS (optional) waits that long after the DATA content arrives and before storing and
answering it, so that a test can stop the server while a message is in flight: a message
is stored only when it is accepted, and is accepted only when stored.

Arguments: DIR PORT TLS_PORT MODE DELAY_MS USER PASSWORD_FILE
"""

import asyncio
import json
import logging
import os
import re
import signal
import ssl
import sys
import threading
import time
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class LogFilter(logging.Filter):
    """Drops aiosmtpd 1.4's deprecation line after every AUTH, and hides the credentials of an
    AUTH command with an initial response (aiosmtpd logs every command line it reads)."""

    AUTH = re.compile(r"(>> b'AUTH \S+) [^']*'", re.IGNORECASE)

    def filter(self, record):
        message = record.getMessage()
        if "login_data is deprecated" in message:
            return False
        if self.AUTH.search(message):
            record.msg = self.AUTH.sub(r"\1 [credentials hidden]'", message)
            record.args = None
        return True


class Authenticator:
    def __init__(self, user, password_file, log):
        self.user = user.encode()
        self.password_file = password_file
        self.log = log

    def __call__(self, server, session, envelope, mechanism, auth_data):
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        with open(self.password_file, "rb") as f:
            expected = f.read().strip()
        ok = auth_data.login == self.user and auth_data.password == expected
        # Never log the password the client sent.
        self.log.info("AUTH %s as %r: %s", mechanism, auth_data.login.decode(errors="replace"),
                      "accepted" if ok else "refused")
        if not ok:
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=auth_data.login.decode(errors="replace"))


class Handler:
    def __init__(self, maildir, port, mode, delay_ms, log, implicit_tls=False):
        self.maildir = maildir
        self.implicit_tls = implicit_tls
        self.port = port
        self.mode = mode
        self.delay = delay_ms / 1000.0
        self.log = log
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.mode == "reject":
            self.log.info("RCPT %s rejected (mode reject)", address)
            return "550 5.7.1 Recipient rejected by policy (syncctl test sink, mode reject)"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay > 0:
            await asyncio.sleep(self.delay)
        with self.lock:
            name = "%d.%d.%d" % (time.time_ns(), os.getpid(), self.port)
            meta = {
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "auth_user": getattr(session, "auth_data", None),
                "tls": self.implicit_tls or session.ssl is not None,
                "port": self.port,
                "received_at": time.time(),
            }
            tmp = os.path.join(self.maildir, "tmp", name)
            new = os.path.join(self.maildir, "new", name)
            with open(tmp + ".json", "w") as f:
                json.dump(meta, f)
            os.rename(tmp + ".json", new + ".json")
            with open(tmp + ".eml", "wb") as f:
                f.write(envelope.original_content or envelope.content)
            os.rename(tmp + ".eml", new + ".eml")
        self.log.info("stored %s.eml from %s to %s (tls %s, auth %s)", name, envelope.mail_from,
                      ",".join(envelope.rcpt_tos), meta["tls"], meta["auth_user"])
        return "250 2.0.0 OK stored"


def main():
    if len(sys.argv) != 8:
        sys.exit("usage: smtp_sink.py DIR PORT TLS_PORT MODE DELAY_MS USER PASSWORD_FILE")
    d, port, tls_port, mode, delay_ms, user, password_file = sys.argv[1:]
    port, tls_port, delay_ms = int(port), int(tls_port), int(delay_ms)
    if mode not in ("starttls", "notls", "reject"):
        sys.exit("mode must be starttls, notls or reject, not %r" % mode)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for h in logging.getLogger().handlers:
        h.addFilter(LogFilter())
    log = logging.getLogger("smtp-sink")
    # AUTH without TLS is what the notls mode is for.
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")

    maildir = os.path.join(d, "mail")
    for sub in ("tmp", "new"):
        os.makedirs(os.path.join(maildir, sub), exist_ok=True)

    tls = os.path.join(d, "tls")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(os.path.join(tls, "cert.pem"), os.path.join(tls, "key.pem"))
    auth = Authenticator(user, password_file, log)

    common = dict(hostname="127.0.0.1", server_hostname="syncctl-test-sink", authenticator=auth,
                  auth_required=True)
    if mode == "notls":
        submission = Controller(Handler(maildir, port, mode, delay_ms, log), port=port,
                                auth_require_tls=False, **common)
    else:
        submission = Controller(Handler(maildir, port, mode, delay_ms, log), port=port,
                                tls_context=context, require_starttls=True, auth_require_tls=True,
                                **common)
    controllers = [submission]
    if mode != "notls":
        # aiosmtpd counts only STARTTLS as TLS for auth_require_tls: on an implicit-TLS
        # listener AUTH is never offered unless it is off there.
        controllers.append(Controller(Handler(maildir, tls_port, mode, delay_ms, log, True), port=tls_port,
                                      ssl_context=context, auth_require_tls=False, **common))
    for c in controllers:
        c.start()
    log.info("listening on 127.0.0.1:%d (mode %s)%s, delay %d ms", port, mode,
             "" if mode == "notls" else " and implicit TLS on 127.0.0.1:%d" % tls_port, delay_ms)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    for c in controllers:
        c.stop()
    log.info("stopped")


if __name__ == "__main__":
    main()
