"""Exposure rules shared by the daemon's two HTTP servers (live view, /metrics) and the MQTT client.

- Binding beyond loopback needs credentials (``auth_file``) or an explicit ``insecure_listen``.
- Secrets (tokens, passwords, private keys) come from files that only their owner may read (no
  group or other permission bits, e.g. mode 0600), read with a size bound.
- HTTP credentials: a token (``Authorization: Bearer TOKEN``, or basic authentication with any user
  name and the token as password, which a browser prompts for) or ``user:password`` (basic).
- TLS from a PEM certificate and key; the handshake runs on the connection's own thread, bounded by
  the idle timeout, never in the accepting thread.
- :class:`BoundedServerMixin`: at most ``max_connections`` connections served at once (each one a
  thread), the rest answered ``503`` and closed at once; an idle timeout on every connection.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import logging
import os
import socket
import ssl
import stat
import threading
from dataclasses import dataclass
from typing import Callable

from edge.errors import ConfigError

log = logging.getLogger(__name__)

MAX_SECRET_BYTES = 4096


def is_loopback(address: str) -> bool:
    """True when ``address`` (an IP literal or a host name) only reaches this machine."""
    if address in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(address, None)
    except (OSError, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def check_private(path: str, what: str) -> os.stat_result:
    """The stat of ``path``, a regular file with no group/other permission bits; ConfigError otherwise."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"{what} {path!r} cannot be read: {exc.strerror}", "give an existing file") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{what} {path!r} is not a regular file", "give a file")
    if st.st_mode & 0o077:
        raise ConfigError(f"{what} {path!r} has mode {stat.S_IMODE(st.st_mode):04o}: others may read it",
                          f"chmod 600 {path}")
    return st


def read_secret(path: str, what: str) -> str:
    """The first line of a private file (see :func:`check_private`), at most MAX_SECRET_BYTES; never echoed."""
    st = check_private(path, what)
    if st.st_size > MAX_SECRET_BYTES:
        raise ConfigError(f"{what} {path!r} is {st.st_size} bytes, more than a secret's {MAX_SECRET_BYTES}",
                          "put only the secret in it")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SECRET_BYTES + 1)
        text = data.decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{what} {path!r} cannot be read: {exc.strerror}", "check its owner") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path!r} is not UTF-8 text", "put the secret in it as text") from None
    line = text.strip().split("\n", 1)[0].strip()
    if not line:
        raise ConfigError(f"{what} {path!r} is empty", "put the secret on its first line")
    return line


@dataclass(frozen=True)
class Credentials:
    """What a client must present: a token, or a user name and password."""

    secret: str
    user: str | None = None        # None: ``secret`` is a token

    @classmethod
    def from_file(cls, path: str, what: str) -> Credentials:
        line = read_secret(path, what)
        user, sep, password = line.partition(":")
        if sep:
            if not user or not password:
                raise ConfigError(f"{what} {path!r} holds user:password with an empty part",
                                  "write user:password, or a token alone")
            return cls(password, user)
        return cls(line)

    def accepts(self, header: str | None) -> bool:
        """True when the ``Authorization`` header value carries these credentials."""
        if not header:
            return False
        scheme, _, value = header.strip().partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "bearer" and self.user is None:
            return hmac.compare_digest(value.encode(), self.secret.encode())
        if scheme != "basic":
            return False
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        if not sep:
            return False
        same_password = hmac.compare_digest(password.encode(), self.secret.encode())
        if self.user is None:
            return same_password
        return hmac.compare_digest(user.encode(), self.user.encode()) & same_password


def check_exposure(what: str, address: str, auth_file: str, insecure_listen: bool, tls: bool) -> None:
    """Refuse to serve ``what`` beyond loopback without credentials unless told ``insecure_listen``."""
    if is_loopback(address):
        return
    if not auth_file and not insecure_listen:
        raise ConfigError(f"{what} on {address or 'every address'} would be open to the network without "
                          "authentication", "give --web-auth FILE (a token or user:password, mode 0600), or "
                          "--insecure-listen to serve it anyway, or bind 127.0.0.1")
    if not auth_file:
        log.warning("%s on %s is open to the network without authentication (insecure_listen)", what, address)
    elif not tls:
        log.warning("%s on %s: credentials cross the network in clear text; set tls_cert and tls_key", what,
                    address)


def server_tls(cert: str, key: str, what: str) -> ssl.SSLContext | None:
    """A TLS server context from a PEM certificate (chain) and private key; None when neither is set."""
    if not cert and not key:
        return None
    if not (cert and key):
        raise ConfigError(f"{what}: TLS needs both tls_cert and tls_key", "give both, or neither")
    check_private(key, f"{what} TLS key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{what}: cannot load the TLS certificate {cert!r} and key {key!r}: "
                          f"{getattr(exc, 'strerror', None) or exc.__class__.__name__}",
                          "give a PEM certificate and its matching private key") from None
    return context


class BoundedServerMixin:
    """For a ``socketserver.ThreadingMixIn`` server: a connection cap, TLS on the connection's thread,
    quiet error handling. Set ``max_connections``, ``tls`` and ``on_refused`` before serving; the
    handler's ``timeout`` attribute gives the idle timeout (``StreamRequestHandler`` applies it)."""

    max_connections = 16
    request_queue_size = 64      # listen backlog: a burst of connections is accepted (and maybe refused) at once
    handshake_timeout = 10.0
    tls: ssl.SSLContext | None = None
    on_refused: Callable[[], None] | None = None
    refused = 0

    def _slots(self) -> threading.BoundedSemaphore:
        slots = self.__dict__.get("_slot_semaphore")
        if slots is None:
            slots = self.__dict__["_slot_semaphore"] = threading.BoundedSemaphore(self.max_connections)
        return slots

    def process_request(self, request, client_address):
        if not self._slots().acquire(blocking=False):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:        # no thread started: give the slot back
            self._slots().release()
            raise

    def _refuse(self, request) -> None:
        self.refused += 1
        if self.on_refused is not None:
            self.on_refused()
        if self.tls is None:
            try:
                request.setblocking(False)
                request.send(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: 21\r\nConnection: close\r\n\r\ntoo many connections\n")
            except OSError as exc:
                log.debug("refusing a connection: %s", exc)
        self.shutdown_request(request)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots().release()

    def finish_request(self, request, client_address):
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(self.handshake_timeout)
        try:
            tls_socket = self.tls.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            log.debug("TLS handshake with %s failed: %s", client_address[0], exc)
            return
        try:
            super().finish_request(tls_socket, client_address)
        finally:
            tls_socket.close()

    def handle_error(self, request, client_address):
        """A connection's failure is logged (no traceback on stderr) and ends that connection only."""
        import sys
        exc = sys.exc_info()[1]
        log.debug("connection from %s failed: %s: %s", client_address[0], type(exc).__name__, exc)
