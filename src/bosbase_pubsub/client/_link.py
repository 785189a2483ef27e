"""One WebSocket connection on a non-blocking socket, for the sync client's socket thread.

websockets' sans-I/O ``ClientProtocol`` does the framing; this module steps a
socket through TCP connect, TLS, the HTTP upgrade, then frames and keepalive
pings, never blocking (so the socket thread also serves the core's timers and
the application's wake-ups), and ``wait`` multiplexes it with the wake-up
socket.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import ssl
from typing import Any, cast

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State as WsState
from websockets.uri import parse_uri

from ._config import Timeouts
from ._core import Handshake
from ._exceptions import BosBaseError, TransportError, transport_error

__all__ = ["MAX_MESSAGE_BYTES", "Link", "wait"]

MAX_MESSAGE_BYTES = 1024 * 1024
"""Largest frame accepted from the server (a message carries at most 256 KiB of data)."""
_READ_SIZE = 256 * 1024


def wait(
    wake: socket.socket,
    sock: socket.socket | None,
    want_read: bool,
    want_write: bool,
    timeout: float | None,
) -> tuple[bool, bool, bool]:
    """Wait until ``wake`` or ``sock`` is ready, or ``timeout``; returns (woken,
    readable, writable). ``poll`` where there is one: ``select`` caps descriptors
    at 1024, which a process with many files passes easily."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(wake, select.POLLIN)
        mask = (select.POLLIN if want_read else 0) | (select.POLLOUT if want_write else 0)
        if sock is not None and mask:
            poller.register(sock, mask)
        ready = poller.poll(None if timeout is None else timeout * 1000.0)
        woken = readable = writable = False
        wake_fd = wake.fileno()
        for fd, flags in ready:
            if fd == wake_fd:
                woken = True
                continue
            # Errors and hang-ups surface on the next read or write.
            failed = bool(flags & (select.POLLERR | select.POLLHUP | select.POLLNVAL))
            readable = readable or bool(flags & select.POLLIN) or (failed and want_read)
            writable = writable or bool(flags & select.POLLOUT) or (failed and want_write)
        return woken, readable, writable
    readers: list[socket.socket] = [wake]
    writers: list[socket.socket] = []
    if sock is not None:
        if want_read:
            readers.append(sock)
        if want_write:
            writers.append(sock)
    r, w, _ = select.select(readers, writers, [], timeout)
    return wake in r, sock is not None and sock in r, sock is not None and sock in w


class Link:
    """One WebSocket connection, stepped without blocking by the socket thread:
    TCP connect, TLS, the HTTP upgrade, then frames and keepalive pings."""

    def __init__(self, handshake: Handshake, timeouts: Timeouts) -> None:
        self.handshake = handshake
        self.timeouts = timeouts
        self.uri = parse_uri(handshake.url)
        self.protocol = ClientProtocol(self.uri, max_size=MAX_MESSAGE_BYTES)
        self.sock: socket.socket | None = None
        self.phase = "tcp"  # tcp -> tls -> upgrade -> open -> closing
        self.opened = False
        """The upgrade succeeded (before that, a failure is a failed attempt)."""
        self.done = False
        self.error: BosBaseError | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.wants_read = False
        self.wants_write = False
        self._out = bytearray()
        self._addresses: list[Any] = []
        self._fragments: list[bytes] | None = None
        self._close_deadline: float | None = None
        self._next_ping: float | None = None
        self._ping_deadline: float | None = None
        self._ping_payload = b""

    # --- steps ------------------------------------------------------------------------

    def start(self, now: float) -> None:
        try:
            self._addresses = socket.getaddrinfo(
                self.uri.host, self.uri.port, type=socket.SOCK_STREAM
            )
        except OSError as error:
            self._fail(transport_error(error))
            return
        self._connect_next()

    def _connect_next(self) -> None:
        while self._addresses:
            family, kind, proto, _, address = self._addresses.pop(0)
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            code = sock.connect_ex(address)
            if code in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
                self.sock = sock
                self.wants_read, self.wants_write = False, True
                return
            sock.close()
            self.error = transport_error(OSError(code, os.strerror(code)))
        self._fail(self.error or TransportError("could not connect: no address"))

    def on_writable(self, now: float) -> None:
        if self.phase == "tcp":
            assert self.sock is not None
            code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self.sock.close()
                self.sock = None
                self.error = transport_error(OSError(code, os.strerror(code)))
                self._connect_next()
                return
            self._tcp_connected()
        elif self.phase == "tls":
            self._tls_step()
        else:
            self._flush()

    def on_readable(self, now: float) -> list[bytes]:
        if self.phase == "tls":
            self._tls_step()
            return []
        sock = self.sock
        assert sock is not None
        chunks: list[bytes] = []
        eof = False
        for _ in range(16):
            try:
                data = sock.recv(_READ_SIZE)
            except (BlockingIOError, ssl.SSLWantReadError, InterruptedError):
                break
            except ssl.SSLWantWriteError:
                self.wants_write = True
                break
            except OSError as error:
                self._fail(transport_error(error, action="read"))
                return []
            if not data:
                eof = True
                break
            chunks.append(data)
            if len(data) < _READ_SIZE and not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                break
        protocol = self.protocol
        if chunks and self._ping_deadline is not None:
            # Bytes flowing prove the peer alive; a pong may sit behind many messages.
            self._ping_deadline = now + self.timeouts.ping_timeout
        for chunk in chunks:
            protocol.receive_data(chunk)
        if eof:
            protocol.receive_eof()
        return self._process(now)

    def send_texts(self, frames: list[bytes]) -> None:
        """Write ``frames`` as text frames (dropped if the socket is not open: the core
        learns of the loss from ``connection_lost`` and sorts their requests out)."""
        if self.phase != "open" or self.protocol.state is not WsState.OPEN:
            return
        send_text = self.protocol.send_text
        for frame in frames:
            send_text(frame)
        self._collect_output()
        self._flush()

    def close(self, code: int, reason: str, now: float) -> None:
        """Start the closing handshake (or drop a connection not yet open)."""
        if self.done:
            return
        if self.phase == "open" and self.protocol.state is WsState.OPEN:
            self.protocol.send_close(code, reason)
            self._collect_output()
            self._flush()
            self.phase = "closing"
            self._close_deadline = now + self.timeouts.close
        else:
            self._abort()

    def next_timer(self) -> float | None:
        times = [
            t for t in (self._close_deadline, self._next_ping, self._ping_deadline) if t is not None
        ]
        return min(times) if times else None

    def check_timers(self, now: float) -> None:
        if self.done:
            return
        if self._close_deadline is not None and now >= self._close_deadline:
            self._abort()
            return
        if self._ping_deadline is not None and now >= self._ping_deadline:
            self._fail(
                TransportError(f"no pong within {self.timeouts.ping_timeout:g}s: connection lost")
            )
            return
        if self._next_ping is not None and now >= self._next_ping and self.phase == "open":
            interval = self.timeouts.ping_interval
            assert interval is not None
            self._next_ping = now + interval
            if self._ping_deadline is None:
                self._ping_payload = os.urandom(4)
                self.protocol.send_ping(self._ping_payload)
                self._ping_deadline = now + self.timeouts.ping_timeout
                self._collect_output()
                self._flush()

    # --- internals --------------------------------------------------------------------

    def _tcp_connected(self) -> None:
        sock = self.sock
        assert sock is not None
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.uri.secure:
            context = ssl.create_default_context()
            self.sock = context.wrap_socket(
                sock, server_hostname=self.uri.host, do_handshake_on_connect=False
            )
            self.phase = "tls"
            self._tls_step()
        else:
            self._start_upgrade()

    def _tls_step(self) -> None:
        sock = cast(ssl.SSLSocket, self.sock)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self.wants_read, self.wants_write = True, False
        except ssl.SSLWantWriteError:
            self.wants_read, self.wants_write = False, True
        except (OSError, ValueError) as error:
            self._fail(transport_error(error))
        else:
            self._start_upgrade()

    def _start_upgrade(self) -> None:
        self.phase = "upgrade"
        request = self.protocol.connect()
        for name, value in self.handshake.headers:
            request.headers[name] = value
        self.protocol.send_request(request)
        self._collect_output()
        self.wants_read = True
        self._flush()

    def _process(self, now: float) -> list[bytes]:
        """Turn the protocol's events into complete text messages; track its state."""
        texts: list[bytes] = []
        protocol = self.protocol
        for event in protocol.events_received():
            if isinstance(event, Frame):
                opcode = event.opcode
                if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                    if event.fin:
                        texts.append(bytes(event.data))
                    else:
                        self._fragments = [bytes(event.data)]
                elif opcode is Opcode.CONT:
                    if self._fragments is not None:
                        self._fragments.append(bytes(event.data))
                        if event.fin:
                            texts.append(b"".join(self._fragments))
                            self._fragments = None
                elif opcode is Opcode.PONG and event.data == self._ping_payload:
                    self._ping_deadline = None
            elif isinstance(event, Response):
                if protocol.handshake_exc is not None:
                    self._fail(transport_error(protocol.handshake_exc))
                    return []
                self.phase = "open"
                self.opened = True
                interval = self.timeouts.ping_interval
                self._next_ping = None if interval is None else now + interval
        self._collect_output()
        self._flush()
        if protocol.state is WsState.CLOSED:
            self._finish_closed()
        elif protocol.close_expected() and self._close_deadline is None:
            self._close_deadline = now + self.timeouts.close
        return texts

    def _collect_output(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self._out += data
            elif self.sock is not None:  # SEND_EOF: half-close once the rest is out
                self._flush()
                with contextlib.suppress(OSError):
                    self.sock.shutdown(socket.SHUT_WR)

    def _flush(self) -> None:
        sock = self.sock
        if sock is None or self.done:
            return
        out = self._out
        while out:
            try:
                sent = sock.send(out)
            except (BlockingIOError, ssl.SSLWantWriteError, InterruptedError):
                break
            except ssl.SSLWantReadError:
                break
            except OSError as error:
                self._fail(transport_error(error, action="write"))
                return
            del out[:sent]
        self.wants_write = bool(out)
        if self.phase in ("upgrade", "open", "closing"):
            self.wants_read = True

    def _finish_closed(self) -> None:
        close = self.protocol.close_rcvd
        if close is not None:
            self.close_code, self.close_reason = close.code, close.reason
        self._abort()

    def _fail(self, error: BosBaseError) -> None:
        if not self.done:
            self.error = error
        self._abort()

    def _abort(self) -> None:
        if self.done:
            return
        self.done = True
        self.wants_read = self.wants_write = False
        close = self.protocol.close_rcvd
        if close is not None and self.close_code is None:
            self.close_code, self.close_reason = close.code, close.reason
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
