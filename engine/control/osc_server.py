"""OSC over UDP (python-osc): control input, status replies and feedback to surfaces.

Only clients from the allowed networks are served (default: loopback). Datagrams that
are not OSC are counted as `malformed` (python-osc's own dispatcher drops them silently,
so packet parsing is done here with python-osc's parser). Everything that is not a
server-level address (`osc_space.SERVER_ADDRESSES`) goes to `Dispatcher.handle`.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Literal

from pythonosc import osc_packet, osc_server
from pythonosc.dispatcher import Dispatcher as _PyOscDispatcher
from pythonosc.osc_message_builder import OscMessageBuilder

from engine.control import osc_space
from engine.control.dispatcher import Dispatcher, OscInput

log = logging.getLogger(__name__)

FeedbackMode = Literal["registered", "sender", "none"]
Address = tuple[str, int]
LOOPBACK = ("127.0.0.0/8", "::1/128")


class OscServer:
    """A UDP OSC server bound to `host:port` (port 0 picks a free one, see `.address`)."""

    def __init__(self, dispatcher: Dispatcher, *, host: str = "127.0.0.1", port: int = 9000,
                 allow: Sequence[str] = LOOPBACK, feedback: FeedbackMode = "registered",
                 learn: Callable[[str], str | None] | None = None, recv_buffer: int = 1 << 22) -> None:
        if feedback not in ("registered", "sender", "none"):
            raise ValueError(f"OSC feedback must be registered, sender or none, got {feedback!r}")
        self.dispatcher = dispatcher
        self.rejects = dispatcher.rejects
        self.feedback = feedback
        self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in allow)
        self._allowed: dict[str, bool] = {}
        self._learn = learn
        self._clients: dict[Address, Address] = {}  # feedback destination -> the sender that registered it
        self._clients_lock = threading.Lock()
        self._server = _Server((host, port), _Packets(self))
        # a deep receive buffer absorbs bursts; the kernel caps it at net.core.rmem_max
        self._server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer)
        self._thread: threading.Thread | None = None
        self.handled = 0
        dispatcher.target.add_listener(self._on_change)

    @property
    def address(self) -> Address:
        return self._server.server_address[:2]

    def __enter__(self) -> OscServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="osc-server", daemon=True)
        self._thread.start()
        rcvbuf = self._server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        log.info("OSC server on %s:%d (clients from %s; receive buffer %d KiB)", *self.address,
                 ", ".join(map(str, self.networks)), rcvbuf // 1024)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def allowed(self, host: str) -> bool:
        """Is `host` in an allowed network? Cached per host: a surface sends from one address."""
        known = self._allowed.get(host)
        if known is None:
            try:
                ip = ipaddress.ip_address(host.split("%")[0])
                known = any(ip in net for net in self.networks)
            except ValueError:
                known = False
            if len(self._allowed) < 4096:
                self._allowed[host] = known
        return known

    @property
    def clients(self) -> list[Address]:
        with self._clients_lock:
            return list(self._clients)

    def on_message(self, address: str, args: tuple[object, ...], sender: Address) -> None:
        """One decoded message. Runs on the OSC server thread."""
        self.handled += 1
        source = f"osc:{sender[0]}:{sender[1]}"
        if self.feedback == "sender":
            with self._clients_lock:
                self._clients = {sender: sender}
        if address == "/backline/status":
            self._send(sender, "/backline/status", self._status_args())
        elif address in ("/backline/register", "/backline/unregister"):
            port = args[0] if len(args) == 1 and isinstance(args[0], int) and not isinstance(args[0], bool) else None
            if len(args) > 1 or (args and port is None) or (port is not None and not 0 < port < 65536):
                self.rejects.reject("wrong_type", f"{address} takes an optional port (i 1..65535), got {args!r}", source)
                return
            dest = (sender[0], port or sender[1])
            with self._clients_lock:
                if address.endswith("/register"):
                    self._clients[dest] = sender
                else:
                    self._clients.pop(dest, None)
            log.info("OSC client %s:%d %s", dest[0], dest[1], address.rsplit("/", 1)[1] + "ed")
        elif address == "/backline/learn":
            if self._learn is None or len(args) != 1 or not isinstance(args[0], str):
                self.rejects.reject("wrong_type", f"{address} needs one string target (and learn enabled)", source)
                return
            problem = self._learn(args[0])
            self._send(sender, "/backline/learn", [args[0], problem or "armed"])
        else:
            self.dispatcher.handle(OscInput(address, args), source)

    def _status_args(self) -> list[object]:
        return osc_space.status_args(self.dispatcher.target.status())

    def _on_change(self, path: str, value: object, source: str) -> None:
        """Engine listener, on its non-real-time notifier thread: feedback to clients.

        Never sends to the client whose message caused the change (no echo).
        """
        if self.feedback == "none" or value is None:
            return
        with self._clients_lock:
            dests = [d for d, sender in self._clients.items() if source != f"osc:{sender[0]}:{sender[1]}"]
        if not dests:
            return
        messages = [(osc_space.address_of(path), [value])]
        for out in self.dispatcher.mappings.outputs:
            if out.osc is not None and out.target == path and isinstance(value, (int, float)):
                x = out.shaper.to_control(float(value))
                if x is not None:
                    messages.append((out.osc, [x]))
        for dest in dests:
            for address, args in messages:
                self._send(dest, address, args)

    def _send(self, dest: Address, address: str, args: list[object]) -> None:
        builder = OscMessageBuilder(address)
        for arg in args:
            builder.add_arg(int(arg) if isinstance(arg, bool) else arg)
        try:
            self._server.socket.sendto(builder.build().dgram, dest)
        except OSError as err:
            log.warning("OSC feedback to %s:%d failed: %s", dest[0], dest[1], err)


class _Server(osc_server.OSCUDPServer):
    """python-osc's UDP server, serving one datagram at a time on the server thread."""

    def verify_request(self, request: object, client_address: Address) -> bool:
        """Drop datagrams from networks that are not allowed (counted). Runs on the server thread."""
        owner: OscServer = self.dispatcher.owner
        if owner.allowed(client_address[0]):
            return True
        owner.rejects.reject("forbidden", f"client {client_address[0]} is not in the allowed networks", "osc")
        return False


class _Packets(_PyOscDispatcher):
    """Parses packets with python-osc and routes every message to the owner; counts parse errors."""

    def __init__(self, owner: OscServer) -> None:
        super().__init__()
        self.owner = owner

    def call_handlers_for_packet(self, data: bytes, client_address: Address) -> list:
        """Runs on the OSC server thread. Bundles are handled at once (their time tags are not waited for)."""
        try:
            packet = osc_packet.OscPacket(data)
        except (osc_packet.ParseError, ValueError, IndexError, struct.error) as err:  # python-osc leaks the last three
            self.owner.rejects.reject("malformed", f"{len(data)} bytes: {err}", f"osc:{client_address[0]}:{client_address[1]}")
            return []
        for timed in packet.messages:
            self.owner.on_message(timed.message.address, tuple(timed.message.params), client_address)
        return []
