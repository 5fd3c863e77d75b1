"""Transport-agnostic dispatch: MIDI and OSC messages -> shaped ControlEvents -> the engine.

`handle(message, source)` is fed by MIDI ports, the OSC server and tests alike. Continuous
values are coalesced to the latest per parameter until the next `drain()`, which the scheduler
calls once per generated frame, so a flood of 5,000 messages a second costs one event per
parameter per frame and a bounded amount of memory. Discrete events (notes, drum hits,
actions) are queued in order in a bounded queue; overflow is counted as a reject.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import mido

from engine.units import FRAME_SAMPLES, SAMPLE_RATE
from engine.control import osc_space
from engine.control.feedback import FEED_LIMIT
from engine.control.mapping import MappingError, MappingSet, Rule
from engine.control.rejects import Reject, Rejects
from engine.control.shaping import (
    Cc14Assembler,
    NrpnAssembler,
    Ramp,
    SoftTakeover,
    Switch,
    decode_relative,
    normalise_7bit,
    normalise_14bit,
)
from engine.params import ControlEvent, route_of

log = logging.getLogger(__name__)
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE


class ControlTarget(Protocol):
    """What the engine offers the control layer."""

    def submit(self, event: ControlEvent) -> None:
        """Thread-safe, never blocks."""

    def playhead(self) -> int:
        """The output sample playing now (any thread): discrete events are stamped with it."""

    def status(self) -> dict[str, object]:
        """The Engine's status dict (see Engine.status; `/backline/status` sends osc_space.STATUS_FIELDS)."""

    def add_listener(self, fn: Callable[[str, object, str], None]) -> None:
        """fn(path, value, source) after a change applies, on the scheduler thread: it must only
        queue (no lock of a surface, no I/O; see engine/control/feedback.py)."""

    def value_of(self, path: str) -> object:
        """The parameter's current value (None if unknown): a smoothed or soft-takeover control
        starts from it, so its first move after start-up glides instead of jumping."""


@dataclass(frozen=True, slots=True)
class OscInput:
    """A decoded OSC message, independent of the library that parsed it."""

    address: str
    args: tuple[object, ...] = ()


@dataclass(slots=True)
class _RuleState:
    takeover: SoftTakeover
    switch: Switch | None
    ramp: Ramp | None
    position: float | None = None
    last_source: str | None = None


@dataclass(slots=True)
class _PortState:
    cc14: Cc14Assembler = field(default_factory=Cc14Assembler)
    nrpn: NrpnAssembler = field(default_factory=NrpnAssembler)


LearnHook = Callable[[mido.Message, str], None]


def _sysex_cut(data: list[int]) -> int | None:
    """Where a SysEx is ended by another status byte (not F7, not real-time F8..FF), if it is."""
    if not data or data[0] != 0xF0:
        return None
    return next((i for i, b in enumerate(data[1:], 1) if 0x80 <= b < 0xF8 and b != 0xF7), None)


class Dispatcher:
    """Routes input to rules, shapes values, coalesces, and submits on `drain()`."""

    def __init__(self, target: ControlTarget, mappings: MappingSet | None = None, *,
                 rejects: Rejects | None = None, max_queued: int = 1024, frame_s: float = FRAME_S) -> None:
        self.target = target
        self.rejects = rejects or Rejects()
        self.frame_s = frame_s
        self._lock = threading.RLock()  # input threads and the engine's listener thread share rule state
        self._mappings = mappings or MappingSet()
        self._pending: dict[str, ControlEvent] = {}
        self._queue: deque[ControlEvent] = deque()
        self._max_queued = max_queued
        self._rules: dict[tuple[str, int], _RuleState] = {}
        self._ports: dict[str, _PortState] = {}
        self._values: dict[str, object] = {}
        self._changes: deque[tuple[str, object, str]] = deque(maxlen=FEED_LIMIT)  # from the engine, not yet taken
        self.busy_drains = 0  # drains skipped because an input thread held the lock (they land a frame later)
        self._learn: LearnHook | None = None
        self.received = 0
        self.unmapped = 0
        target.add_listener(self._on_change)

    # --- mappings -------------------------------------------------------------------
    @property
    def mappings(self) -> MappingSet:
        return self._mappings

    def set_mappings(self, mappings: MappingSet) -> None:
        with self._lock:
            self._mappings = mappings
            self._rules = {k: v for k, v in self._rules.items() if any(r.key == k for r in mappings.rules)}

    def reload(self, path: str | Path) -> MappingError | None:
        """(Re)load one mapping file; on error return it and keep the running mappings."""
        try:
            new = self._mappings.with_file(path)
        except MappingError as err:
            log.error("%s (keeping the running mappings)", err)
            return err
        self.set_mappings(new)
        log.info("mapping %s loaded (%d files active)", path, len(new.files))
        return None

    def arm_learn(self, hook: LearnHook | None) -> None:
        """The next MIDI message goes to `hook` instead of the rules (MIDI learn); None disarms."""
        self._learn = hook

    # --- input ----------------------------------------------------------------------
    def handle(self, message: object, source: str, *, heard: int | None = None) -> tuple[str, str] | None:
        """Dispatch one message. Runs on the input's thread (rtmidi callback, OSC server thread,
        the web page's). `heard`: the output sample it arrived at, where the input knows it
        (JACK MIDI, engine/control/arrival.py); else notes and actions are stamped now. Returns
        (reason, detail) when an OSC message was refused (counted already), so a surface that
        can answer says why; None otherwise."""
        self.received += 1
        try:
            if isinstance(message, mido.Message):
                self._handle_midi(message, source, heard)
            elif hasattr(message, "address"):
                args = tuple(getattr(message, "args", None) or getattr(message, "params", ()))
                return self._handle_osc(message.address, args, source)
            else:
                return self._refuse("unknown_message", f"{type(message).__name__}", source)
        except Exception as err:  # a bad message must never kill an input thread
            log.exception("control handler failed on %r from %s", message, source)
            return self._refuse("handler_error", f"{type(err).__name__}: {err}", source)
        return None

    def _refuse(self, reason: str, detail: str, source: str) -> tuple[str, str]:
        self.rejects.reject(reason, detail, source)
        return reason, detail

    def handle_bytes(self, data: bytes | list[int], source: str, *, heard: int | None = None) -> None:
        """Raw MIDI bytes (for inputs that deliver bytes); malformed data is counted.

        rtmidi keeps appending events to a SysEx that never got its F7 and delivers the lot
        as one message when an F7 finally comes. Per MIDI, any status byte but real-time ends
        a SysEx: the broken SysEx is counted and the messages inside are recovered (late).
        """
        data = list(data)
        cut = _sysex_cut(data)
        if cut is not None:
            self.rejects.reject("unterminated_sysex", f"SysEx cut short after {cut} bytes by {data[cut]:02X}", source)
            parser = mido.Parser()
            parser.feed(data[cut:])
            for message in parser:
                self.handle(message, source, heard=heard)
            return
        try:
            message = mido.Message.from_bytes(data)
        except (ValueError, TypeError, IndexError) as err:  # mido: IndexError for a short Song Position (F2)
            self.rejects.reject("malformed_midi", f"{bytes(data)[:8].hex()}: {type(err).__name__} {err}", source)
            return
        self.handle(message, source, heard=heard)

    def _handle_midi(self, msg: mido.Message, port: str, heard: int | None) -> None:
        hook = self._learn
        if hook is not None and msg.type in ("control_change", "note_on", "pitchwheel", "aftertouch", "program_change"):
            self._learn = None
            hook(msg, port)
            return
        ms = self._mappings
        ch = getattr(msg, "channel", None)
        hits: list[tuple[Rule, float | int | None]] = []
        matched = False
        if msg.type == "control_change":
            ps = self._ports.setdefault(port, _PortState())
            if ms.has_nrpn() and NrpnAssembler.is_nrpn_cc(msg.control):
                done = ps.nrpn.feed(msg.channel, msg.control, msg.value)
                if done:
                    norm = normalise_14bit(done[1]) if done[2] == 14 else normalise_7bit(done[1])
                    hits += [(r, norm) for r in ms.midi_rules("nrpn", done[0]) if r.options.bits == done[2]]
            if msg.control < 64 and (msg.control % 32) in ms.cc14_numbers():
                pair = ps.cc14.feed(msg.channel, msg.control, msg.value)
                if pair:
                    hits += [(r, normalise_14bit(pair[1])) for r in ms.midi_rules("cc14", pair[0])]
            hits += [(r, msg.value) for r in ms.midi_rules("cc", msg.control)]
        elif msg.type in ("note_on", "note_off"):
            velocity = msg.velocity if msg.type == "note_on" else 0
            hits += [(r, normalise_7bit(velocity)) for r in ms.midi_rules("note", msg.note)]
            for r in ms.midi_rules("notes", None):
                if r.midi.notes[0] <= msg.note <= r.midi.notes[1] and self._channel_ok(r, ch) and r.midi.port_matches(port):
                    self._keyboard(r, msg.note, velocity, port, heard)
                    matched = True
        elif msg.type == "program_change":
            hits += [(r, None) for r in ms.midi_rules("program", msg.program)]
            hits += [(r, msg.program) for r in ms.midi_rules("program", None)]
        elif msg.type == "pitchwheel":
            hits += [(r, normalise_14bit(msg.pitch + 8192)) for r in ms.midi_rules("pitchbend", None)]
        elif msg.type == "aftertouch":
            hits += [(r, normalise_7bit(msg.value)) for r in ms.midi_rules("aftertouch", None)]
        for rule, value in hits:
            if self._channel_ok(rule, ch) and rule.midi.port_matches(port):
                matched = True
                self._apply(rule, value, f"midi:{port}", raw_cc=msg.type == "control_change" and rule.midi.kind == "cc",
                            heard=heard)
        if not matched:
            self.unmapped += 1

    @staticmethod
    def _channel_ok(rule: Rule, channel: int | None) -> bool:
        return rule.midi.channel is None or rule.midi.channel == channel

    def _keyboard(self, rule: Rule, pitch: int, velocity: int, port: str, heard: int | None) -> None:
        value = (velocity / 127.0 if rule.options.velocity else 1.0) if velocity else 0.0
        self._queue_event(ControlEvent(f"note.{pitch}", value, f"midi:{port}", rule.options.quantize, heard=heard))

    def _handle_osc(self, address: str, args: tuple[object, ...], source: str) -> tuple[str, str] | None:
        rules = self._mappings.osc_rules(address)
        if rules:
            x = args[0] if len(args) == 1 else None
            if isinstance(x, bool) or not isinstance(x, (int, float)) or x != x:
                return self._refuse("wrong_type", f"{address} (mapped) needs one number 0..1, got {args!r}", source)
            for rule in rules:
                self._apply(rule, min(1.0, max(0.0, float(x))), source)
            return None
        try:
            event, clamped = osc_space.to_event(address, args, source=source)
        except Reject as err:
            return self._refuse(err.reason, str(err), source)
        if clamped:
            self.rejects.reject("clamped", f"{address} {args!r} clamped to {event.value}", source)
        self._submit_later(event, continuous=osc_space.continuous(event.target))
        return None

    # --- shaping --------------------------------------------------------------------
    def _state(self, rule: Rule) -> _RuleState:
        st = self._rules.get(rule.key)
        if st is None:
            o = rule.options
            ramp = Ramp(o.smoothing, frame_s=self.frame_s) if o.smoothing > 0 and rule.continuous else None
            switch_mode = o.switch or (None if rule.continuous or route_of(rule.target) == "notes" else "trigger")
            st = _RuleState(SoftTakeover(o.soft_takeover, threshold=o.threshold), Switch(switch_mode) if switch_mode else None, ramp)
            known = self._values.get(rule.target)
            if known is None:
                known = self.target.value_of(rule.target)
            if isinstance(known, (int, float)):
                pos = o.shaper.to_control(float(known))
                st.takeover.parameter_changed(pos)
                st.position = pos
                if ramp:
                    ramp.current = float(known)
            self._rules[rule.key] = st
        return st

    def _apply(self, rule: Rule, value: float | int | None, source: str, *, raw_cc: bool = False,
               heard: int | None = None) -> None:
        with self._lock:
            self._take_changes()
            self._apply_locked(rule, value, source, raw_cc=raw_cc, heard=heard)

    def _apply_locked(self, rule: Rule, value: float | int | None, source: str, *, raw_cc: bool,
                      heard: int | None) -> None:
        o = rule.options
        st = self._state(rule)
        st.last_source = source
        if rule.midi is not None and rule.midi.kind == "program":
            self._queue_event(ControlEvent(rule.target, value if o.value is None else o.value, source, o.quantize,
                                           heard=heard))
            return
        if o.relative and raw_cc:
            ticks = decode_relative(int(value), o.relative)
            x = min(1.0, max(0.0, (st.position or 0.0) + ticks * o.step))
            st.position = x
        else:
            x = normalise_7bit(value) if raw_cc else float(value)
        if st.switch is not None:
            pressed = st.switch.press(x)
            if pressed is None:
                return
            if not rule.continuous or st.switch.mode == "trigger":
                self._queue_event(ControlEvent(rule.target, o.value, source, o.quantize, heard=heard))
                return
            x = pressed
        elif not o.relative:
            taken = st.takeover.move(x)
            if taken is None:
                return
            x = taken
        native = o.shaper.to_native(x)
        if route_of(rule.target) == "notes":
            self._queue_event(ControlEvent(rule.target, x if o.velocity else float(x > 0), source, o.quantize,
                                           heard=heard))
            return
        if st.ramp is not None:
            st.ramp.set_target(native)
            return
        self._submit_later(ControlEvent(rule.target, native, source, o.quantize), continuous=True)

    # --- coalescing and drain -----------------------------------------------------------
    def _submit_later(self, event: ControlEvent, *, continuous: bool) -> None:
        if continuous:
            with self._lock:
                self._pending.pop(event.target, None)
                self._pending[event.target] = event
        else:
            self._queue_event(event)

    def _queue_event(self, event: ControlEvent) -> None:
        """Notes, hits and actions, in order, stamped with the sample playing as they arrived
        (unless the input stamped them)."""
        if event.heard is None:
            event = replace(event, heard=self.target.playhead())
        with self._lock:
            if len(self._queue) >= self._max_queued:
                overflow = True
            else:
                self._queue.append(event)
                overflow = False
        if overflow:
            self.rejects.reject("queue_full", f"{event.target} dropped ({self._max_queued} events waiting)", event.source)

    def drain(self, *, wait: bool = True, step: bool = True) -> int:
        """Submit everything that arrived since the last drain, and (`step`) one step of each ramp.

        The scheduler calls it once per new frame on its own thread with `wait=False`, and
        between frames with `step=False` (what arrived goes at once; ramps count frames):
        it never waits for an input thread that is shaping a message; that frame's drain is
        skipped (counted in `busy_drains`) and what arrived lands on the next frame. Returns
        how many events were submitted.
        """
        if not self._lock.acquire(blocking=wait):
            self.busy_drains += 1
            return 0
        try:
            self._take_changes()
            events = list(self._queue)
            self._queue.clear()
            events += self._pending.values()
            self._pending.clear()
            for rule in self._mappings.rules if step else ():
                st = self._rules.get(rule.key)
                if st is not None and st.ramp is not None and st.ramp.active:
                    events.append(ControlEvent(rule.target, st.ramp.advance(), st.last_source or "ramp", rule.options.quantize))
        finally:
            self._lock.release()
        for event in events:
            self.target.submit(event)
        return len(events)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending) + len(self._queue)

    # --- feedback from the engine -------------------------------------------------------
    def _on_change(self, path: str, value: object, source: str) -> None:
        """Engine listener, on the scheduler thread: queued without taking the dispatcher's lock.
        Input threads take the changes (`_take_changes`, under the lock) before they shape the
        next message, which is when soft takeover and toggles need them."""
        self._changes.append((path, value, source))

    def _take_changes(self) -> None:
        """Under the lock: update soft-takeover, toggle and relative-encoder state of every rule
        on each changed path, except the rule whose own input caused the change (its state is
        already current)."""
        while self._changes:
            path, value, source = self._changes.popleft()
            self._values[path] = value
            for rule in self._mappings.rules:
                st = self._rules.get(rule.key)
                if rule.target != path or st is None or st.last_source == source:
                    continue
                if isinstance(value, (int, float)):
                    pos = rule.options.shaper.to_control(float(value))
                    st.takeover.parameter_changed(pos)
                    st.position = pos
                    if st.switch is not None:
                        st.switch.set_state(bool(value))
                    if st.ramp is not None:
                        st.ramp.current = float(value)

