"""MIDI ports: every input matching a name pattern feeds the dispatcher; outputs get feedback.

Ports are opened with python-rtmidi on a selectable API (ALSA sequencer or JACK MIDI)
rather than through mido's port objects, because mido's parser drops malformed bytes
silently; here raw bytes go to `Dispatcher.handle_bytes`, which parses them with mido and
counts what it rejects. A watcher thread rescans the ports every `poll_s`: a device that
disappears is closed, and when it comes back it is rebound (and the log says so).

A device unplugged and plugged back between two scans shows the same port name, but our
connection to it is gone. On JACK the watcher therefore also asks the server (through
JACK-Client, when installed) whether each bound port is still connected to our input, and
rebinds it if not. rtmidi's ALSA API cannot tell: there a replug within one poll is caught
only when the device comes back under a new ALSA client number (part of the port name).

On JACK, rtmidi would run a Python callback on JACK's process thread, so every cycle that
carries MIDI would wait for the GIL (and the dispatcher's work) and delay the whole graph,
backline's audio included. There the ports are polled instead: rtmidi queues messages in C++ on
JACK's thread, and the `midi-poll` thread drains the queues every POLL_S. On ALSA rtmidi's own
input thread runs the callback, outside any audio graph.

rtmidi holds back everything after a SysEx that never gets its F7 until the next F7
arrives; `Dispatcher.handle_bytes` then recovers the messages in between (late) and counts
the broken SysEx as `unterminated_sysex`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import mido
import rtmidi

from engine.control.arrival import Arrivals
from engine.control.dispatcher import Dispatcher
from engine.control.feedback import Feed
from engine.control.mapping import Output
from engine.midi import MidiApi, port_matches, rtmidi_api

log = logging.getLogger(__name__)
POLL_S = 0.002  # JACK: how often queued input is drained (a control waits at most this much more)
SETTLE_S = 2.0  # a port's connection is not judged until this long after we opened it, and then on two scans


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(port_matches(name, p) for p in patterns)


class MidiHub:
    """Binds input ports by pattern, rebinds them on hotplug, and sends feedback to outputs."""

    def __init__(self, dispatcher: Dispatcher, *, api: MidiApi = "alsa", inputs: Sequence[str] = ("*",),
                 client_name: str = "backline", poll_s: float = 0.25) -> None:
        rtmidi_api(api)  # ValueError naming the choices
        self.dispatcher = dispatcher
        self.api = api
        self.patterns = tuple(inputs)
        self.client_name = client_name
        self.poll_s = poll_s
        self._lock = threading.Lock()
        self._in_lock = threading.Lock()  # inputs' lifetime only (inside _lock): polling never waits for a rescan
        self._inputs: dict[str, rtmidi.MidiIn] = {}
        self._arrivals: dict[str, Arrivals] = {}  # JACK: an input's stamps, replaced with the port
        self._outputs: dict[str, rtmidi.MidiOut] = {}
        self._labels: dict[str, str] = {}  # input port name -> the name of our port connected to it
        self._opened_at: dict[str, float] = {}  # input port name -> when we opened it (monotonic)
        self._unlinked: set[str] = set()  # inputs whose connection the last scan did not see
        self._opened = 0
        self._lost: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._poller: threading.Thread | None = None
        self._closed = False
        self._probe_in = rtmidi.MidiIn(rtmidi_api(api), name=f"{client_name}-probe")
        self._probe_out = rtmidi.MidiOut(rtmidi_api(api), name=f"{client_name}-probe")
        self._links = _JackLinks(client_name) if api == "jack" else None
        self.rebinds = 0
        self._feed = Feed("midi-feedback", self._on_change)
        dispatcher.target.add_listener(self._feed.put)

    def __enter__(self) -> MidiHub:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self.scan()
        self._thread = threading.Thread(target=self._watch, name="midi-hotplug", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop watching, send All Notes Off to outputs, close every port and its client.

        Each rtmidi object is a client of the MIDI API (on JACK, a JACK client); close_port()
        leaves the client open until the object is collected, and a client still open when
        its JACK server stops is torn down under it by libjack at the next client's open."""
        self._stop.set()
        for thread in (self._thread, self._poller):
            if thread is not None:
                thread.join()
        self._feed.close()
        with self._lock:
            if self._closed:
                return
            self._closed = True  # a deleted rtmidi object must never be touched again: it would segfault
            for out in self._outputs.values():
                for ch in range(16):
                    out.send_message(mido.Message("control_change", channel=ch, control=123, value=0).bytes())
                out.delete()
            with self._in_lock:
                for port in self._inputs.values():
                    self._close_input(port)
                self._inputs.clear()
            self._outputs.clear()
            self._probe_in.delete()
            self._probe_out.delete()
        if self._links is not None:
            self._links.close()

    @property
    def inputs(self) -> list[str]:
        with self._lock:
            return sorted(self._inputs)

    @property
    def outputs(self) -> list[str]:
        with self._lock:
            return sorted(self._outputs)

    def _foreign(self, names: list[str]) -> list[str]:
        own = self.client_name.lower()
        return [n for n in names if not n.lower().startswith(own)]

    def _watch(self) -> None:
        """Hotplug watcher thread: rescans until closed; waits on an event, never sleeps blindly."""
        while not self._stop.wait(self.poll_s):
            try:
                self.scan()
            except Exception:  # a flaky MIDI API must not end hotplug handling
                log.exception("MIDI port scan failed; retrying in %.2f s", self.poll_s)

    def scan(self) -> None:
        """Open new matching ports, close vanished ones. Runs on the watcher thread (or the caller's)."""
        out_patterns = [o.midi.port for o in self.dispatcher.mappings.outputs if o.midi is not None]
        with self._lock:
            if self._closed:
                return
            in_ports, out_ports = self._probe_in.get_ports(), self._probe_out.get_ports()  # rtmidi's numbering
            in_names, out_names = self._foreign(in_ports), self._foreign(out_ports)
            for name in [n for n in self._inputs if n not in in_names]:
                self._drop_input(name)
                self._lost.add(name)
                log.warning("MIDI input %r disappeared; it will be rebound when it returns", name)
            for name in self._replugged():
                self._drop_input(name)
                self._lost.add(name)
                log.warning("MIDI input %r was unplugged and plugged back (our connection is gone)", name)
            for name in [n for n in self._outputs if n not in out_names]:
                self._outputs.pop(name).delete()
            for name in in_names:
                if name not in self._inputs and _matches(name, self.patterns):
                    self._open_input(name, in_ports.index(name))
            for name in out_names:
                if name not in self._outputs and _matches(name, out_patterns):
                    out = rtmidi.MidiOut(rtmidi_api(self.api), name=self.client_name)
                    out.open_port(out_ports.index(name), name=f"feedback {len(self._outputs)}")
                    self._outputs[name] = out
                    log.info("MIDI feedback output %r opened", name)

    def _replugged(self) -> list[str]:
        """Inputs whose connection to our port is gone: on two scans in a row, and only once JACK
        had `SETTLE_S` to show the connection we asked for. Under load JACK makes a connection
        late; judged at once, a fresh port looked replugged, its rebind made another fresh port,
        and the rebinds fed on each other (seen in the soak: 35 in 30 s, and 1,300 xruns)."""
        links, now = self._links, time.monotonic()
        if links is None:
            return []
        missing = {n for n in self._inputs if now - self._opened_at.get(n, 0.0) >= SETTLE_S
                   and not links.connected(n, self._labels[n])}
        gone, self._unlinked = sorted(missing & self._unlinked), missing - self._unlinked
        return gone

    def _open_input(self, name: str, index: int) -> None:
        port = rtmidi.MidiIn(rtmidi_api(self.api), name=self.client_name)
        polled = self.api == "jack"  # polled ports keep clock and active sensing: their time is in rtmidi's deltas
        port.ignore_types(sysex=False, timing=not polled, active_sense=not polled)
        label = f"in {self._opened}"
        self._opened += 1
        port.open_port(index, name=label)
        if self.api != "jack":
            port.set_callback(self._on_midi, name)
        elif self._poller is None:  # on JACK: polled (see the module), from the first input on
            self._poller = threading.Thread(target=self._poll, name="midi-poll", daemon=True)
            self._poller.start()
        with self._in_lock:
            self._inputs[name] = port
            self._arrivals[name] = Arrivals()
        self._labels[name] = label
        self._opened_at[name] = time.monotonic()
        if name in self._lost:
            self._lost.discard(name)
            self.rebinds += 1
            log.warning("MIDI input %r is back: rebound", name)
        else:
            log.info("MIDI input %r opened (%s)", name, self.api)

    def _on_midi(self, event: tuple[list[int], float], name: str) -> None:
        """rtmidi callback, on rtmidi's input thread (ALSA): hand the raw bytes to the dispatcher."""
        self.dispatcher.handle_bytes(event[0], name)

    def _poll(self) -> None:
        """The `midi-poll` thread (JACK): drain rtmidi's queues, then dispatch outside the lock,
        each message stamped with when it reached JACK (engine/control/arrival.py)."""
        while not self._stop.wait(POLL_S):
            with self._in_lock:  # a port is never deleted while it is read
                if self._closed:
                    return
                batch = [(name, self._arrivals[name], list(iter(port.get_message, None)))
                         for name, port in self._inputs.items()]
            now = self.dispatcher.target.playhead()
            for name, arrivals, messages in batch:
                for data, heard in arrivals.stamp(messages, now) if messages else ():
                    try:
                        self.dispatcher.handle_bytes(data, name, heard=heard)
                    except Exception:  # noqa: BLE001 - one bad message must not end MIDI input
                        log.exception("MIDI input %r: message %s not handled", name, bytes(data)[:8].hex())

    def _drop_input(self, name: str) -> None:
        with self._in_lock:
            self._close_input(self._inputs.pop(name))
            self._arrivals.pop(name)

    def _close_input(self, port: rtmidi.MidiIn) -> None:
        """Cancel the Python callback before closing (ALSA): closing while rtmidi's thread waits
        for the GIL to run the callback can deadlock."""
        if self.api != "jack":
            port.cancel_callback()
        port.delete()

    def _on_change(self, path: str, value: object, source: str) -> None:
        """The `midi-feedback` thread (a Feed: never the scheduler's, which a rescan holding
        the hub's lock would stall): send feedback to outputs.

        An output is skipped when the change came from a control of the same mapping file
        driving the same target from a port that file matches (no echo to the moving fader).
        """
        if not isinstance(value, (int, float)):
            return
        port = source[5:] if source.startswith("midi:") else None
        for out in self.dispatcher.mappings.outputs:
            if out.target != path or out.midi is None or self._is_echo(out, port):
                continue
            x = out.shaper.to_control(float(value))
            if x is None:
                continue
            data = _feedback_message(out, round(x * 127)).bytes()
            with self._lock:
                for name, port_out in self._outputs.items():
                    if out.midi.port_matches(name):
                        port_out.send_message(data)

    def _is_echo(self, out: Output, port: str | None) -> bool:
        if port is None:
            return False
        return any(r.target == out.target and r.midi is not None and r.midi.port_matches(port)
                   for f in self.dispatcher.mappings.files if f.path == out.file for r in f.rules)


class _JackLinks:
    """Port identity on JACK: is a device's port still connected to the input we opened on it?"""

    def __init__(self, client_name: str) -> None:
        self._client_name = client_name
        try:
            import jack
        except ImportError:
            log.info("JACK-Client is not installed: a MIDI device replugged within one poll is not noticed")
            self._client = None
            return
        self._error = jack.JackError
        try:
            self._client = jack.Client(f"{client_name}-links", no_start_server=True)
        except jack.JackError as err:
            log.warning("cannot ask JACK about MIDI connections (%s): a replug within one poll is not noticed", err)
            self._client = None

    def connected(self, source: str, label: str) -> bool:
        """Watcher thread. True when unsure (no JACK-Client, a query error): never rebind needlessly."""
        if self._client is None:
            return True
        try:
            peers = self._client.get_all_connections(source)
        except self._error:
            return True
        return any(p.name.startswith(self._client_name) and p.name.endswith(f":{label}") for p in peers)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _feedback_message(out: Output, value: int) -> mido.Message:
    channel = out.midi.channel or 0
    if out.midi.kind == "note":
        return mido.Message("note_on", channel=channel, note=out.midi.number, velocity=value)
    return mido.Message("control_change", channel=channel, control=out.midi.number, value=value)


def list_ports(*, api: MidiApi = "alsa") -> tuple[list[str], list[str]]:
    """(input names, output names) on an API, for `backline learn --list` and diagnostics."""
    probe_in = rtmidi.MidiIn(rtmidi_api(api), name="backline-list")
    probe_out = rtmidi.MidiOut(rtmidi_api(api), name="backline-list")
    try:
        return probe_in.get_ports(), probe_out.get_ports()
    finally:
        probe_in.delete()
        probe_out.delete()
