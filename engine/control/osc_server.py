"""OSC over UDP (python-osc): control input, status replies and feedback to surfaces.

Only clients from the allowed networks are served (default: loopback). Datagrams that
are not OSC are counted as `malformed` (python-osc's own dispatcher drops them silently,
so packet parsing is done here with python-osc's parser). Everything that is not a
server-level address (`osc_space.SERVER_ADDRESSES`) goes to `Dispatcher.handle`.

Floods: the server thread reads every datagram waiting in the socket at each wake-up (a
batch), and of the datagrams one sender sent to one value address in that batch only the
last is parsed and dispatched; the others are counted in `coalesced`, unread. Parsing in
Python holds the GIL, which the scheduling loop and the audio feeder need too (the audio
callback itself is C and does not), so parsing less is what keeps a flood from delaying
generation. Triggers, actions, notes, switches, pickup controls, server
addresses and bundles are never coalesced. After a batch of `BURST_DATAGRAMS` or more
(short of a full batch) the thread waits `batch_window_s` so that the rest of the burst
gathers in the kernel's buffer; smaller batches (a surface played by hand) are handled with
no wait. The price, during a flood only: a message (a drum hit too) may wait that long.
"""

from __future__ import annotations

import ipaddress
import logging
import selectors
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Literal

from pythonosc import osc_packet
from pythonosc.osc_message_builder import OscMessageBuilder

from engine.control import osc_space
from engine.control.dispatcher import Dispatcher, OscInput
from engine.control.feedback import Feed
from engine.control.mapping import MappingSet

log = logging.getLogger(__name__)

FeedbackMode = Literal["registered", "sender", "none"]
Address = tuple[str, int]
LOOPBACK = ("127.0.0.0/8", "::1/128")
MAX_DATAGRAM = 65536
# After a burst of at least BURST_DATAGRAMS, wait this long for the rest of it: half a frame
# (frames are 40 ms), so values still reach the next frame. Measured at 5,000 msg/s: the
# server thread used 13 % of a core with 5 ms, 7 % with 20 ms.
BATCH_WINDOW_S = 0.02
BURST_DATAGRAMS = 16
MEMO_LIMIT = 4096  # per-host and per-address memos stop growing here (a flood of new names is not cached)


def message_address(data: bytes) -> bytes | None:
    """The address of a plain OSC message, read without parsing the rest (None for bundles and junk)."""
    if data[:1] != b"/":
        return None
    end = data.find(b"\0")
    return data[:end] if end > 0 else None


def coalesces(mappings: MappingSet, address: str) -> bool:
    """May a later message from the same sender to `address` replace an earlier one unread?

    Yes for plain values: a parameter address the dispatcher coalesces anyway
    (`osc_space.continuous`), or a mapped address whose every rule is a continuous,
    jump-takeover control without switch behaviour. No for everything else: a toggle needs
    its press and its release, a pickup control needs the move that crosses the parameter,
    and hits, notes, actions and server addresses need every message.
    """
    rules = mappings.osc_rules(address)
    if rules:
        return all(r.continuous and r.options.switch is None and r.options.soft_takeover == "jump" for r in rules)
    if not address.startswith(osc_space.PREFIX):
        return False
    try:
        return osc_space.continuous(address[len(osc_space.PREFIX):].replace("/", "."))
    except ValueError:  # unknown address: parsed and rejected as such
        return False


class OscServer:
    """A UDP OSC server bound to `host:port` (port 0 picks a free one, see `.address`).

    Counters: `received` datagrams, `coalesced` datagrams superseded unread (see the module
    docstring), `handled` messages; rejects go to the dispatcher's `Rejects`.
    """

    def __init__(self, dispatcher: Dispatcher, *, host: str = "127.0.0.1", port: int = 9000,
                 allow: Sequence[str] = LOOPBACK, feedback: FeedbackMode = "registered",
                 learn: Callable[[str], str | None] | None = None, recv_buffer: int = 1 << 22,
                 batch_window_s: float = BATCH_WINDOW_S, max_batch: int = 512, max_clients: int = 64) -> None:
        if feedback not in ("registered", "sender", "none"):
            raise ValueError(f"OSC feedback must be registered, sender or none, got {feedback!r}")
        if not 0.0 <= batch_window_s <= 0.04:
            raise ValueError(f"OSC batch_window_s must be in 0.0..0.04 (one frame), got {batch_window_s}")
        self.dispatcher = dispatcher
        self.rejects = dispatcher.rejects
        self.feedback = feedback
        self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in allow)
        self.batch_window_s = batch_window_s
        self.max_batch = max_batch
        self.max_clients = max_clients
        self._allowed: dict[str, bool] = {}
        self._coalesce_memo: tuple[MappingSet, dict[bytes, bool]] = (dispatcher.mappings, {})
        self._learn = learn
        self._clients: dict[Address, Address] = {}  # feedback destination -> the sender that registered it
        self._clients_lock = threading.Lock()
        family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            # a deep receive buffer absorbs bursts; the kernel caps it at net.core.rmem_max
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer)
            self._sock.bind(sockaddr)
        except OSError:
            self._sock.close()
            raise
        self._buf = bytearray(MAX_DATAGRAM)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.received = 0
        self.coalesced = 0
        self.handled = 0
        self._feed = Feed("osc-feedback", self._on_change)
        dispatcher.target.add_listener(self._feed.put)

    @property
    def address(self) -> Address:
        return self._sock.getsockname()[:2]

    def __enter__(self) -> OscServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="osc-server", daemon=True)
        self._thread.start()
        rcvbuf = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        log.info("OSC server on %s:%d (clients from %s; receive buffer %d KiB)", *self.address,
                 ", ".join(map(str, self.networks)), rcvbuf // 1024)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._feed.close()
        self._sock.close()

    def allowed(self, host: str) -> bool:
        """Is `host` in an allowed network? Memoised per host: a surface sends from one address."""
        known = self._allowed.get(host)
        if known is None:
            try:
                ip = ipaddress.ip_address(host.split("%")[0])
                known = any(ip in net for net in self.networks)
            except ValueError:
                known = False
            if len(self._allowed) < MEMO_LIMIT:
                self._allowed[host] = known
        return known

    def coalescable(self, address: bytes) -> bool:
        """`coalesces` for the running mappings, memoised per address until the mappings change."""
        mappings = self.dispatcher.mappings
        if self._coalesce_memo[0] is not mappings:
            self._coalesce_memo = (mappings, {})
        memo = self._coalesce_memo[1]
        known = memo.get(address)
        if known is None:
            known = coalesces(mappings, address.decode("utf-8", "replace"))
            if len(memo) < MEMO_LIMIT:
                memo[address] = known
        return known

    @property
    def clients(self) -> list[Address]:
        with self._clients_lock:
            return list(self._clients)

    # --- the server thread --------------------------------------------------------------
    def _serve(self) -> None:
        """The OSC server thread: wait for a datagram, read the burst behind it, handle it."""
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            while not self._stop.is_set():
                if not selector.select(timeout=0.1):
                    continue
                batch = self._read_batch()
                self._handle_batch(batch)
                pause = self.pause_after(len(batch))
                if pause:
                    self._stop.wait(pause)

    def pause_after(self, batch_size: int) -> float:
        """How long to let the rest of a burst gather after reading `batch_size` datagrams.

        Only a flood waits: a surface played by hand sends a few datagrams at a time, and a
        drum hit must not wait behind a fader. A full batch reads on at once.
        """
        return self.batch_window_s if BURST_DATAGRAMS <= batch_size < self.max_batch else 0.0

    def _read_batch(self) -> list[tuple[bytes, Address]]:
        """Every datagram waiting in the socket, up to `max_batch`, without blocking. Server thread."""
        batch: list[tuple[bytes, Address]] = []
        view = memoryview(self._buf)
        while len(batch) < self.max_batch:
            try:
                n, sender = self._sock.recvfrom_into(self._buf, 0, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError as err:  # e.g. an ICMP error queued on the socket: it is read (cleared) by this call
                self.rejects.reject("socket_error", f"{type(err).__name__}: {err}", "osc")
                break
            batch.append((bytes(view[:n]), sender))
        self.received += len(batch)
        return batch

    def _handle_batch(self, batch: Sequence[tuple[bytes, Address]]) -> None:
        """Handle datagrams read together, in order, dropping values superseded in the batch.

        Runs on the OSC server thread. A datagram is dropped
        unread when a later one in `batch` comes from the same sender to the same address
        and that address `coalesces`; it is counted in `coalesced`, not validated.
        """
        kept: list[tuple[bytes, Address, tuple[bytes, Address] | None]] = []
        latest: dict[tuple[bytes, Address], int] = {}
        for data, sender in batch:
            if not self.allowed(sender[0]):
                self.rejects.reject("forbidden", f"client {sender[0]} is not in the allowed networks", "osc")
                continue
            address = message_address(data)
            key = (address, sender) if address is not None and self.coalescable(address) else None
            if key is not None:
                latest[key] = len(kept)
            kept.append((data, sender, key))
        for i, (data, sender, key) in enumerate(kept):
            if key is not None and latest[key] != i:
                self.coalesced += 1
                continue
            self._handle_datagram(data, sender)

    def _handle_datagram(self, data: bytes, sender: Address) -> None:
        """Parse one datagram with python-osc and handle its messages. Server thread; never raises."""
        source = f"osc:{sender[0]}:{sender[1]}"
        try:
            packet = osc_packet.OscPacket(data)
        except (osc_packet.ParseError, ValueError, IndexError, struct.error) as err:  # python-osc leaks the last three
            self.rejects.reject("malformed", f"{len(data)} bytes: {err}", source)
            return
        for timed in packet.messages:  # bundles are handled at once (their time tags are not waited for)
            try:
                self.on_message(timed.message.address, tuple(timed.message.params), sender)
            except Exception as err:  # a bad message must never end the server thread
                log.exception("OSC handler failed on %s from %s", timed.message.address, source)
                self.rejects.reject("handler_error", f"{type(err).__name__}: {err}", source)

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
            register = address.endswith("/register")
            with self._clients_lock:
                new = register and dest not in self._clients
                full = new and len(self._clients) >= self.max_clients
                if register and not full:
                    self._clients[dest] = sender
                gone = not register and self._clients.pop(dest, None) is not None
            if full:
                self.rejects.reject("too_many_clients", f"{dest[0]}:{dest[1]} not registered ({self.max_clients} are)", source)
            elif new or gone:  # logged on a change only: a surface may register again and again
                log.info("OSC client %s:%d %s", dest[0], dest[1], "registered" if new else "unregistered")
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
        """The `osc-feedback` thread (a Feed: never the scheduler's): feedback to clients.

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
            self._sock.sendto(builder.build().dgram, dest)
        except OSError as err:
            log.warning("OSC feedback to %s:%d failed: %s", dest[0], dest[1], err)
