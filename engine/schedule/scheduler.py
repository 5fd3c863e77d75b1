"""The look-ahead scheduler: conditioning per frame, generation ahead of the playhead.

It owns the timeline, the parameter state, the generator, the fitter and the writer
side of the playback ring, and runs on one thread (the scheduling loop, or the offline
render). Other threads talk to it only through `submit`, a queue it drains. Control
surfaces are drained by it too (`add_input`): once per new frame with a smoothing step, so
smoothing counts in frames, and on every turn of the loop without one. What a change does is its spec's route
(`engine.params.PARAMETERS`).

Per bar it plans a whole number of frames (`fit.py`: per beat when stretching, so every beat
starts on a frame and on its exact sample), so a change quantized to a bar starts exactly on
that bar's first sample. A change applies on the frame whose start is
nearest its boundary (`now`, `beat` or `bar`; see `_apply_due`). Tempo and meter changes
start a new timeline segment at a bar line.

Rollback: before each chunk it keeps a snapshot of everything with state (generator and
fallback, fitter, its own plan, notes, gain, pending changes; ring position and bar lines).
A change whose boundary lies in audio already generated but still a splice margin
(`margin.py`) ahead of the playhead restores the snapshot of the chunk that holds it and
generates from there again; every change scheduled since that snapshot applies again at its
own sample, and the ring splices the new audio in at the first sample that differs. So `now`
is heard a margin after it arrives, not a look-ahead, and a bar change lands on its bar line
while there is time to generate from it. At most one rollback per chunk of playback: a
fader sweep coalesces. Without rollback (or with no snapshot far enough ahead) a change
lands on the first frame not generated yet.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np

from engine.audio.ring import PlaybackRing
from engine.clock.tap import ramp
from engine.conditioning import DRUM_HIT, DRUM_MASK, DRUM_NONE, NOTE_MASK, NUM_NOTES, FrameConditioning
from engine.errors import GeneratorError
from engine.generator.base import Generator
from engine.params import ControlEvent, ParameterState, lookup
from engine.patch import Patch
from engine.ratelog import RateLimitedLog
from engine.schedule.fit import Plan, make_fitter
from engine.schedule.gain import GainEnvelope
from engine.schedule.margin import SpliceMargin
from engine.schedule.notes import NoteTracker
from engine.schedule.style_ramp import StyleRamp
from engine.style.bank import StyleBank
from engine.style.embedder import Embedder
from engine.timeline import Timeline
from engine.units import FRAME_SAMPLES, SAMPLE_RATE

log = logging.getLogger(__name__)
Listener = Callable[[str, object, str], None]
Drain = Callable[..., object]
MAX_SNAPSHOTS = 32  # chunk boundaries kept: 2.5 s of look-ahead at 2 frames a chunk (a generator state each)


@dataclass(frozen=True, slots=True)
class _PatchChange:
    patch: Patch
    bank: StyleBank
    quantize: str
    source: str


@dataclass(frozen=True, slots=True)
class _PromptReady:
    """A replaced prompt, embedded off the audio path: it swaps in like any other change."""

    slot: int
    embedding: np.ndarray
    text: str
    patch: Patch  # the patch it was for; dropped if another took over meanwhile


_Item = ControlEvent | _PatchChange | _PromptReady
_Entry = tuple[int, int, _Item]  # (output sample it applies at, sequence number, change)


@dataclass(slots=True)
class _Snapshot:
    """Everything with state, before a chunk: restoring it generates that chunk again."""

    at: int  # output sample where the chunk's first frame starts
    ring: tuple[int, int]  # ring cursor and bar mark
    seq: int  # changes scheduled after it have higher sequence numbers
    generator: object
    fallback: object
    fitter: tuple
    fields: dict[str, object]
    bar_line: bool  # the chunk starts a bar (its plan is made after the snapshot)
    frames: list[tuple[int, int]] = field(default_factory=list)  # (start, middle) of its frames, once generated


class Scheduler:
    """Generates bar-fitted audio ahead of the playhead into the playback ring."""

    @classmethod
    def for_patch(cls, patch: Patch, generator: Generator, *, ring: PlaybackRing, embedder: Embedder,
                  lookahead_ms: float, frames_per_call: int = 2, fallback: Generator | None = None,
                  rollback: bool = True, margin: SpliceMargin | None = None, fit: str | None = None) -> Scheduler:
        """A scheduler for `patch`, its style bank embedded with `embedder` (the engine, render and bench)."""
        return cls(generator=generator, patch=patch, bank=StyleBank.for_patch(patch, embedder), embedder=embedder,
                   ring=ring, lookahead=round(lookahead_ms * SAMPLE_RATE / 1000), frames_per_call=frames_per_call,
                   fallback=fallback, rollback=rollback, margin=margin, fit=fit)

    def __init__(
        self,
        *,
        generator: Generator,
        patch: Patch,
        bank: StyleBank,
        embedder: Embedder,
        ring: PlaybackRing,
        lookahead: int,
        frames_per_call: int = 2,
        fallback: Generator | None = None,
        origin: int = 0,
        rollback: bool = True,
        margin: SpliceMargin | None = None,
        fit: str | None = None,
    ) -> None:
        """`rollback` regenerates the look-ahead for a late change; `margin` keeps its splices
        ahead of the playhead (default: the fixed minimum, as offline); `fit` is how frames meet
        the grid (`fit.py`: stretch, or resample; None: stretch where it was built)."""
        if lookahead < 0:
            raise ValueError(f"look-ahead must be >= 0 samples, got {lookahead}")
        if frames_per_call < 1:
            raise ValueError(f"frames per call must be >= 1, got {frames_per_call}")
        self.generator = generator
        self.fallback = fallback
        self.ring = ring
        self.lookahead = lookahead
        self.frames_per_call = frames_per_call
        self.embedder = embedder
        self.patch = patch
        self.bank = bank
        self.timeline = Timeline.start(patch.bpm, patch.beats_per_bar, origin=origin)
        self.state = patch.initial_state()
        self.fitter = make_fitter(fit)
        self.notes = NoteTracker()
        self._inbox: queue.SimpleQueue[tuple[ControlEvent | _PatchChange, int]] = queue.SimpleQueue()
        self._pending: list[_Entry] = []
        self._seq = itertools.count()
        self._last_seq = -1
        self._frozen_at = -1  # while frozen, changes queued after this sequence number wait for release
        self._listeners: list[Listener] = []
        # (playing, sample) when the transport changes, on this thread (the engine's clock out)
        self.on_transport: Callable[[bool, int], None] | None = None
        self._inputs: list[Drain] = []
        self.rollback = rollback
        self.tempo_led = False  # an external clock leads the tempo (set by the engine): a patch's tempo waits
        self.margin = margin or SpliceMargin(adaptive=False)
        self._snapshots: list[_Snapshot] = []
        self._journal: list[_Entry] = []  # every change scheduled since the oldest snapshot
        self._announced: dict[int, int] = {}  # change -> the frame (start) it applied in: its listeners ran
        self._replay: dict[int, int] = {}  # change -> the frame a rollback applies it again in
        self._quiet = False
        self._rollback_to: int | None = None  # earliest boundary a late conditioning change asks to regenerate from
        self._rollback_sample: int | None = None  # earliest sample a late gain or transport change asks for
        self._last_rollback: int | None = None  # the playhead at the last rollback
        self._rhythm = False  # a note or pad hit waits for the rollback: a frame apart, not a chunk
        self._last_move: dict[str, tuple[int, int]] = {}  # target -> (sample, heard) of its latest `now` change
        self._restore_s = 0.0  # time the last restore took (counted into the chunk after it)
        self._open: _Snapshot | None = None  # the snapshot of the chunk being generated
        self._stamp: tuple[int, int] | None = None  # (thread, sample) while a new frame's inputs drain
        self._fill_at = (0, None)  # (playhead, first new frame) of this fill: new frames are stamped from it
        self.rollbacks = 0
        self.rollbacks_missed = 0  # a late change with no snapshot far enough ahead any more
        self.late_splices = 0  # audio generated again after the reader had played it (the margin was too short)
        self.frames_new = 0  # frames generated for the first time (the rest were generated again)
        self._embed_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self._embeds: list[tuple[int, Future[np.ndarray], str, Patch]] = []  # (slot, embedding, prompt, for patch)
        self._next_bar = 0
        self._frontier = origin  # frames starting here or later were never generated: inputs drain for them
        self._plan: Plan | None = None
        self._playhead = 0  # as of the last fill
        # The output sample playing now, read on the control threads as an event arrives (it
        # places pad hits). Offline it is the playhead of the last fill; the live engine sets
        # it to its sink's playhead, which moves while a slow generator runs.
        self.playhead_now: Callable[[], int] = lambda: self._playhead
        self._frame_in_bar = 0
        self._beat_frames: set[int] = set()
        self._style = bank.mix(self.state)
        self._ramp: StyleRamp | None = None
        self._gain = GainEnvelope(self._output_gain())
        self.frames_generated = 0
        self.fallback_frames = 0
        self._falling_back = False  # the fallback plays: the generator is asked again at a bar line
        self.generate_seconds = 0.0
        self.errors = 0
        self._rejects = RateLimitedLog(log)  # a flood of bad changes must not flood the log
        generator.reset(patch.seed)
        if fallback is not None:
            fallback.reset(patch.seed)
        ring.reset(origin)

    # -- other threads ------------------------------------------------------------------
    def submit(self, event: ControlEvent) -> None:
        """Queue a control event, stamped with the output sample playing when it was heard (its
        own `heard`, else now; taken in a new frame's drain: that frame's place in this fill, so
        a smoothing ramp's steps stay a frame apart). Thread-safe and never blocks."""
        stamp = self._stamp
        if event.heard is not None:
            heard = event.heard
        elif stamp is not None and stamp[0] == threading.get_ident():
            heard = stamp[1]
        else:
            heard = self.playhead_now()
        self._inbox.put((event, heard))

    def submit_patch(self, patch: Patch, bank: StyleBank, *, quantize: str = "bar", source: str = "internal") -> None:
        """Queue a loaded, validated patch (and its embeddings) to take over at a boundary."""
        self._inbox.put((_PatchChange(patch, bank, quantize, source), self.playhead_now()))

    def restore(self, events: list[ControlEvent]) -> None:
        """Before the first frame, on the thread that will run the loop: the saved show state
        applies at once (a replaced prompt embedded here), and the style mix starts at its
        saved value instead of ramping from the patch file's. Timeline, note, action and
        safety events are not for it (the engine restores tempo and freeze itself)."""
        if self._plan is not None:
            raise ValueError("restore: audio has been generated already")
        bank, state = self.bank, self.state  # all or nothing: a value that does not fit leaves the patch as written
        for event in events:
            route = event.spec.route
            if route == "prompt":
                bank = bank.with_slot(_prompt_slot(event, bank), self.embedder.embed_text(str(event.value)))
            elif route in ("timeline", "notes", "drums", "engine", "safety"):
                raise ValueError(f"{event.target} is not restored by the scheduler")
            state = state.with_event(event)
        self.bank, self.state = bank, state
        self._style, self._ramp = self.bank.mix(self.state), None
        self._gain = GainEnvelope(self._output_gain())

    def add_input(self, drain: Drain) -> None:
        """`drain(step=True)` runs on the scheduler thread once per frame generated for the first
        time, before its conditioning is fixed: control surfaces hand over what arrived and
        advance their smoothing ramps a frame. Between frames (each turn of the loop) it runs
        with `step=False`: what arrived is taken at once, ramps stay. A frame generated again
        by a rollback drains nothing (its changes are in the journal)."""
        self._inputs.append(drain)

    def add_listener(self, fn: Listener) -> None:
        """`fn(path, value, source)` runs on the scheduler thread after a change applies: it must
        only queue (a surface sends its feedback from its own thread, `control/feedback.py`)."""
        self._listeners.append(fn)

    # -- positions -----------------------------------------------------------------------
    def next_frame_time(self) -> int:
        """Output sample where the next frame to be generated starts."""
        if self._plan is not None and self._frame_in_bar < self._plan.frames:
            return round(self._plan.frame_out_start(self._frame_in_bar))
        return self.timeline.bar_start(self._next_bar)

    @property
    def planned_until(self) -> int:
        """Output sample where audio not planned yet starts (always a bar line)."""
        return self.timeline.bar_start(self._next_bar)

    # -- external clocks (scheduler thread) ----------------------------------------------------
    @property
    def replan_from(self) -> int:
        """The earliest bar line from which bars may be planned again: with rollback, the first
        bar line a splice margin ahead that a snapshot holds; else `planned_until`."""
        if self.rollback:
            floor = self._floor()
            for snap in self._snapshots:
                if snap.bar_line and snap.at >= floor:
                    return snap.at
        return self.planned_until

    def retime(self, timeline: Timeline, *, at: int | None = None) -> None:
        """Swap in an external clock's `timeline` from bar line `at` (`replan_from` as the caller
        read it; default `planned_until`). A bar line inside audio already generated rolls back
        to it, so the clock's tempo change re-plans bars already generated.

        Its bar at `at` must start exactly there, so the audio stays continuous; bar numbers
        may change (they become the clock's song bars).
        """
        end = self.planned_until if at is None else at
        bar = timeline.bar_at(end)
        if timeline.bar_start(bar) != end:
            raise ValueError(f"the new timeline has no bar line at sample {end}, where planning stands")
        if end < self.planned_until:
            snap = next((s for s in self._snapshots if s.bar_line and s.at == end), None)
            if snap is None:
                raise ValueError(f"no snapshot at bar line {end} to plan again from")
            if not self._restore(snap, end):
                return  # the generator cannot go back: the clock's next update re-fits the unplanned bars
            self._requeue_late(end)
        self.timeline, self._next_bar = timeline, bar

    def start_at(self, timeline: Timeline, bar: int) -> None:
        """Begin the stream at `bar` of `timeline` (an external clock's next bar line).

        Only before any audio was generated; the sink plays silence until that bar.
        """
        if self._plan is not None or self.ring.written != self.ring.origin:
            raise ValueError("start_at: audio has been generated already")
        self.timeline, self._next_bar = timeline, bar
        self.ring.reset(timeline.bar_start(bar))

    # -- the loop body -----------------------------------------------------------------------
    def fill(self, playhead: int) -> int:
        """Generate until the ring holds `lookahead` samples past `playhead`, rolling back first
        for a late change. Returns frames made."""
        made = 0
        self._playhead = playhead
        self._fill_at = (self.playhead_now(), None)
        self._forget_before(playhead)
        self._drain_inputs(step=False)
        self._collect_embeddings()
        chunk = FRAME_SAMPLES * self.frames_per_call
        while True:
            self._roll_back_if_asked()
            if not (self.ring.cursor < playhead + self.lookahead + 1 and self.ring.space(playhead) > 2 * chunk):
                return made
            if (made >= 2 * self.frames_per_call and self.ring.cursor < self.ring.written
                    and self.ring.cursor >= playhead + 2 * self.margin.samples + chunk):
                return made  # after a rollback, a few chunks a turn while well ahead: the audio thread gets the CPU
            made += self._generate_chunk()  # each new frame drains the inputs and the inbox first

    def close(self) -> None:
        self._embed_pool.shutdown(wait=False, cancel_futures=True)

    # -- events -------------------------------------------------------------------------------
    def _drain_inbox(self) -> None:
        while True:
            try:
                item, heard = self._inbox.get_nowait()
            except queue.Empty:
                return
            try:
                self._schedule(item, heard)
            except (ValueError, GeneratorError) as err:
                self.errors += 1
                log.warning("control change %s rejected: %s", getattr(item, "target", "patch"), err)

    def _schedule(self, item: ControlEvent | _PatchChange, heard: int) -> None:
        """Decide the sample an event applies at, and queue it in time order.

        `heard` is the output sample that was playing when the event arrived. Notes, pad hits
        and safety apply as soon as they can (safety's ring freeze at once: the reader loops
        from its next bar line; a key's release taken with its press keeps the time it was held,
        `_keep_spacing`), the rest at their quantize's next boundary from there."""
        route = _route(item)
        if route == "prompt":
            self._start_embedding(item)
            return
        if route == "engine":
            raise ValueError(f"{item.target} is handled by the engine, not the scheduler")
        if route == "safety":
            self.ring.freeze = bool(item.value)
        earliest = self._earliest()
        if route == "timeline" and not self.rollback:
            earliest = max(earliest, self.planned_until)  # a bar already planned keeps its tempo
        if route in ("safety", "notes", "drums"):
            at = self._keep_spacing(item.target, earliest, heard) if route == "notes" else earliest
            self._push(at, item, heard)
            return
        quantize = item.quantize
        if quantize == "now" and _sample_exact(item):
            earliest = self._earliest_sample()
        at = item.at if isinstance(item, ControlEvent) and item.at is not None else earliest
        if quantize == "beat":  # a beat lands on the frame nearest it: that frame must still be open
            at = max(at, earliest + FRAME_SAMPLES // 2)
        at = self.timeline.next_boundary(max(at, earliest), quantize)
        if quantize == "now" and isinstance(item, ControlEvent):
            at = self._keep_spacing(item.target, at, heard)
        self._push(at, item, heard)

    def _keep_spacing(self, target: str, at: int, heard: int) -> int:
        """A control moving again before its last move is heard keeps the player's spacing from
        it: a smoothing ramp's steps stay a frame apart while rollbacks coalesce, and a raw fader
        lands where it was played relative to its last value (never later than real time)."""
        last = self._last_move.get(target)
        if last is not None and last[0] >= at:
            at = last[0] + max(heard - last[1], 0)
        self._last_move[target] = (at, heard)
        return at

    def _push(self, at: int, item: _Item, heard: int | None = None, *, seq: int | None = None) -> None:
        """Queue `item` for output sample `at` (`seq`: moved, it keeps its number); inside audio
        already generated, ask for a rollback."""
        if heard is not None and isinstance(item, ControlEvent) and item.spec.route == "drums":
            item = replace(item, heard=heard)
        if seq is None:
            seq = self._last_seq = next(self._seq)
        entry = (at, seq, item)
        heapq.heappush(self._pending, entry)
        if self._snapshots:
            self._journal.append(entry)
        frozen = self.state.freeze and _route(item) not in ("timeline", "safety")  # held: nothing to regenerate
        if self.rollback and at < self.next_frame_time() and not frozen:
            if _sample_exact(item):
                self._rollback_sample = at if self._rollback_sample is None else min(self._rollback_sample, at)
            else:
                self._rollback_to = at if self._rollback_to is None else min(self._rollback_to, at)
            self._rhythm |= _route(item) in ("notes", "drums")

    def _earliest(self) -> int:
        """The first output sample a change can still land on: the start of the first frame a
        splice margin ahead of the playhead that a snapshot can generate again, else the first
        frame not generated yet."""
        if self.rollback:
            floor = self._floor()
            start = next((f[0] for f in self._frames() if f[0] >= floor), None)
            if start is not None:
                return start
        return self.next_frame_time()

    def _frames(self) -> list[tuple[int, int, _Snapshot]]:
        """(start, middle, its snapshot) of every frame a snapshot can generate again, in order."""
        return [(start, middle, snap) for snap in self._snapshots for start, middle in snap.frames]

    def _earliest_sample(self) -> int:
        """For a change the output takes at any sample (master gain, transport: applied after the
        generator): the splice margin itself, when a snapshot can generate the frame holding it
        again (its audio before that sample comes out as it was)."""
        if self.rollback:
            floor = self.playhead_now() + self.margin.samples
            if self._home(floor) is not None:
                return floor
        return self._earliest()

    def _home(self, sample: int) -> tuple[int, int, _Snapshot] | None:
        """(start, middle, snapshot) of the first frame of the chunk whose snapshot generates
        output `sample` again: its output resumes (the ring cursor when it was taken) at or
        before `sample`, and its frames reach past it. The stretch fitter's output lags its
        frames by its latency, so a chunk's audio starts before its first frame."""
        for snap in reversed(self._snapshots):
            if snap.frames and snap.ring[0] <= sample:
                start, middle = snap.frames[-1]
                return (*snap.frames[0], snap) if sample < 2 * middle - start else None
        return None

    def _floor(self) -> int:
        """The first frame start a rollback may change: a splice margin past the playhead, and the
        generator's audio lead (its decoder changes a frame's audio before the frame) and the
        fitter's reach (the stretcher's window) past that."""
        return self.playhead_now() + self.margin.samples + self.generator.audio_lead + self.fitter.reach

    def _start_embedding(self, event: ControlEvent) -> None:
        index = _prompt_slot(event, self.bank)
        future = self._embed_pool.submit(self.embedder.embed_text, str(event.value))
        self._embeds.append((index, future, str(event.value), self.patch))

    def _collect_embeddings(self) -> None:
        """Queue prompt embeddings that finished off the audio path; the old mix plays until they land."""
        still = []
        for index, future, text, patch in self._embeds:
            if not future.done():
                still.append((index, future, text, patch))
                continue
            try:
                embedding = future.result()
            except Exception as err:  # noqa: BLE001 - any embedder failure keeps the old prompt
                self.errors += 1
                log.warning("style slot %d: could not embed %r: %s; keeping the old prompt", index, text, err)
                continue
            self._push(self._earliest(), _PromptReady(index, embedding, text, patch))
        self._embeds = still

    def _apply_due(self, before: int, *, frame: int, end: int, timeline_only: bool = False) -> None:
        """Apply queued events whose boundary lies before output sample `before`, in time order.

        A frame takes every change whose boundary is nearer its start than the next frame's
        (`before` is the frame's middle): a beat-quantized change lands on the frame where
        the tempo lock puts that beat's drum hit, within half a frame of the beat; bar lines
        are frame starts, so a bar change is exact. Tempo, meter and patch changes apply only
        when a bar is planned (`timeline_only`, with safety), at that bar, so a bar already
        planned never changes under the fitter; while frozen, changes queued after the freeze
        wait until release. A change a rollback applies again is due in the very frame it
        applied in before (`_replay`), at its own sample, so those frames come out as heard.
        """

        def held(entry: _Entry) -> bool:
            route = _route(entry[2])
            if route == "timeline":
                return not timeline_only
            if route == "safety":
                return False
            return timeline_only or (self.state.freeze and entry[1] > self._frozen_at)

        def is_due(entry: _Entry) -> bool:
            replay = self._replay.get(entry[1])
            if replay is not None:
                on_time = replay <= frame
            else:  # a gain or transport change: in the frame holding its sample (its envelope starts there)
                on_time = entry[0] < (end if _sample_exact(entry[2]) else before)
            return on_time and not held(entry)

        due = sorted((entry for entry in self._pending if is_due(entry)), key=lambda e: (e[0], e[1]))
        if not due:
            return
        taken = set()
        restyle_at, fresh = None, False
        for at, seq, item in due:
            if held((at, seq, item)):  # a freeze applied just before it holds it
                continue
            taken.add(seq)
            self._replay.pop(seq, None)
            if _route(item) == "timeline":
                at = max(at, frame)  # late (its bar planned before it came): the bar being planned
            if isinstance(item, _PatchChange):
                restyle_at = at  # its bank and state replace ours first: restyle even if a later step fails
            self._quiet = seq in self._announced
            fresh |= not self._quiet
            try:
                if self._apply(item, at, seq):
                    restyle_at = at
            except ValueError as err:
                if not self._quiet:  # counted once, however often a rollback applies it again
                    self.errors += 1
                    self._rejects.warn(getattr(item, "target", "patch"), "control change rejected when applied: %s", err)
            finally:
                self._quiet = False
            if self._snapshots:  # only a rollback applies a change again
                self._announced[seq] = frame
            self._gain.move(max(at, self.ring.cursor), self._output_gain())  # never before audio already in the ring
        if taken:
            self._pending = [entry for entry in self._pending if entry[1] not in taken]
            heapq.heapify(self._pending)
        if restyle_at is not None:  # once for the lot: a fader sweep brings several style changes per frame
            try:
                self._restyle(restyle_at)
            except ValueError as err:
                if fresh:  # not again for a mix a rollback makes again
                    self.errors += 1
                    self._rejects.warn("style", "style mix rejected, the previous one plays on: %s", err)

    def _apply(self, item: _Item, at: int, seq: int) -> bool:
        """Apply change number `seq` at sample `at`; True when the style mix must be recomputed (the caller does it)."""
        if isinstance(item, _PatchChange):
            self._apply_patch(item, at)
            return True
        if isinstance(item, _PromptReady):
            return self._apply_prompt(item)
        target, value, route = item.target, item.value, item.spec.route
        restyle = False
        if target == "tempo.bpm":
            bar, bars = self.timeline.bar_at(at), self.state.tempo_ramp_bars
            self.timeline = (ramp(self.timeline, to_bpm=float(value), from_bar=bar, bars=bars) if bars
                             else self.timeline.with_change(at_bar=bar, bpm=value))
        elif target == "meter.beats_per_bar":
            self.timeline = self.timeline.with_change(at_bar=self.timeline.bar_at(at), beats_per_bar=int(value))
        elif target == "note.sustain":
            self.notes.sustain(bool(value))
        elif route == "notes":
            pitch = int(target.split(".")[1])
            self.notes.press(pitch) if float(value) > 0 else self.notes.release(pitch)
        elif route == "drums":
            self.notes.hit(at=at, heard=item.heard if item.heard is not None else at)
        else:
            old = self.state
            self.state = self.state.with_event(item)
            if route == "safety":
                self._frozen_at = seq  # changes queued before the freeze still land
            restyle = route == "style" and self.state != old
            if route == "transport" and self.state.playing != old.playing and not self._quiet and self.on_transport:
                self.on_transport(self.state.playing, at)  # the MIDI clock we send stops and resumes with it
        self._notify(target, value, item.source)
        return restyle

    def _apply_prompt(self, ready: _PromptReady) -> bool:
        if ready.patch is not self.patch:  # another patch took over meanwhile: the prompt was for the old one
            if not self._quiet:
                log.info("style slot %d: prompt %r was for patch %s, which no longer plays; dropped", ready.slot,
                         ready.text, ready.patch.name)
            return False
        self.bank = self.bank.with_slot(ready.slot, ready.embedding)
        self.state = self.state.with_event(ControlEvent(f"style.{ready.slot}.text", ready.text))
        self._notify(f"style.{ready.slot}.text", ready.text, "embedder")
        return True

    def _apply_patch(self, change: _PatchChange, at: int) -> None:
        patch = change.patch
        before = _values(self.state, self.timeline, at)
        bar = self.timeline.bar_at(at)
        # Under an external clock the tempo is the clock's: a patch's own would play its bars at
        # another tempo until the follower re-fits (seen in the soak: jungle's 174 BPM for two
        # bars against a 120 BPM MIDI clock at every load). Its meter is ours to change.
        bpm = self.timeline.segment_at(self.timeline.bar_start(bar)).bpm if self.tempo_led else patch.bpm
        self.timeline = self.timeline.with_change(at_bar=bar, bpm=bpm, beats_per_bar=patch.beats_per_bar)
        self.patch, self.bank = patch, change.bank
        # freeze, transport and master gain belong to the performer, not the patch
        self.state = replace(patch.initial_state(), freeze=self.state.freeze, playing=self.state.playing, gain=self.state.gain)
        self._notify("patch.load", patch.name, change.source)
        # every value the patch changed, so surfaces follow (LEDs, motor faders, OSC) and soft takeover re-arms
        for path, value in _values(self.state, self.timeline, at).items():
            if before.get(path) != value:
                self._notify(path, value, "patch")

    def _restyle(self, at: int) -> None:
        """Move to the style mix of the current state, ramping if the patch asks to."""
        current = self._ramp.at(at) if self._ramp is not None else self._style
        target = self.bank.mix(self.state)
        seg = self.timeline.segment_at(at)
        length = round(float(self.state.ramp_beats * seg.beat_length))
        if length > 0:
            self._ramp = StyleRamp(at, length, current, target, self.state.ramp_curve)
        else:
            self._ramp = None
            self._style = target

    def _notify(self, path: str, value: object, source: str) -> None:
        if self._quiet:  # a change applied again after a rollback: the surfaces know it already
            return
        for fn in self._listeners:
            try:
                fn(path, value, source)
            except Exception:  # noqa: BLE001 - a failing listener must not stop the music
                log.exception("listener %r failed for %s", fn, path)

    # -- generation ------------------------------------------------------------------------------
    def _plan_next_bar(self) -> Plan:
        start = self.timeline.bar_start(self._next_bar)
        self._apply_due(start + 1, frame=start, end=start + 1, timeline_only=True)  # tempo/meter/patch changes land on this line
        bar = self._next_bar
        start = self.timeline.bar_start(bar)
        plan = self.fitter.plan(self.timeline, bar)
        self.fitter.add_bar(plan)
        self.ring.publish_bar(start)
        first_beat = self.timeline.bar_first_beat(bar)
        self._beat_frames = {
            plan.frame_for(self.timeline.beat_start(b)) for b in range(first_beat, first_beat + self.timeline.beats_in_bar(bar))
        }
        self._next_bar += 1
        self._frame_in_bar = 0
        self._plan = plan
        return plan

    def poll_inputs(self) -> None:
        """While no frame is generated (waiting for an external clock's first bar): take what the
        control inputs hold, so a patch picked before the band starts plays from the first bar."""
        self._drain_inputs(step=False)

    def _drain_inputs(self, *, step: bool) -> None:
        """Every control input hands over what arrived (`step`: and advances its ramps a frame), then the inbox."""
        for drain in self._inputs:
            try:
                drain(step=step)
            except Exception as err:  # noqa: BLE001 - a failing control surface must not stop the music
                self.errors += 1
                self._rejects.warn("input", "control input %r failed: %r", drain, err)
        self._drain_inbox()

    def _conditioning(self, plan: Plan, frame: int) -> FrameConditioning:
        t = round(plan.frame_out_start(frame))
        middle = round((plan.frame_out_start(frame) + plan.frame_out_start(frame + 1)) / 2)
        if t >= self._frontier:  # a new frame: the inputs drain for it (a regenerated one replays the journal)
            self._frontier = round(plan.frame_out_start(frame + 1))
            self.frames_new += 1
            now, first = self._fill_at
            if first is None:
                self._fill_at = (now, t)
                first = t
            self._stamp = (threading.get_ident(), now + t - first)
            try:
                self._drain_inputs(step=True)
            finally:
                self._stamp = None
        if self._open is not None:
            self._open.frames.append((t, middle))
        self._apply_due(middle, frame=t, end=round(plan.frame_out_start(frame + 1)))
        if self._ramp is not None:
            self._style = self._ramp.at(t)
            if self._ramp.done(t):
                self._ramp = None
        notes = self.notes.frame_states()
        lock = self.state.tempo_lock
        if lock == "beats":
            drum = DRUM_HIT if frame in self._beat_frames else DRUM_MASK
        else:
            drum = DRUM_NONE if lock == "none" else DRUM_MASK
        if self.notes.take_pad_hit(until=min(round(plan.frame_out_start(frame + 1)), plan.out_end)):
            drum = DRUM_HIT
        return FrameConditioning(
            style=self._style,
            notes=notes if notes is not None else _MASKED,
            drum=drum,
            sampling=self.state.sampling,
        )

    def _generate_chunk(self) -> int:
        t0 = time.perf_counter()  # the whole chunk (snapshot, inputs, generator) counts towards the margin
        if self.rollback:
            self._keep_snapshot()
        plan = self._plan
        if plan is None or self._frame_in_bar >= plan.frames:
            plan = self._plan_next_bar()
        count = min(self.frames_per_call, plan.frames - self._frame_in_bar)
        at_bar_line = self._frame_in_bar == 0
        conds = []
        for _ in range(count):  # one frame at a time: controls drained for a frame land on it
            conds.append(self._conditioning(plan, self._frame_in_bar))
            self._frame_in_bar += 1
        fell_back = self.fallback_frames
        audio = self._run_generator(conds, at_bar_line=at_bar_line)
        if self.fallback_frames == fell_back:  # a hung or failed call says nothing about the generator's pace
            self.margin.observe(time.perf_counter() - t0 + self._restore_s, time.monotonic())
        self._restore_s = 0.0
        self.frames_generated += count
        self.fitter.push(audio)
        start, fitted = self.fitter.pull()
        if len(fitted):
            rewriting = start < self.ring.written
            self.ring.write(start, self._gain.apply(start, fitted))
            splice = self.ring.splice_at
            reached = self.playhead_now() + self.margin.block  # the sink may have read a block ahead
            if rewriting and splice is not None and max(start, splice) < min(start + len(fitted), reached):
                self.late_splices += 1  # changed samples written where the reader had already been
                self._rejects.warn("late", "the generator fell behind a rollback: %d changed samples were played "
                                   "before they were generated again (a glitch)",
                                   min(start + len(fitted), reached) - max(start, splice))
        return count

    # -- rollback ------------------------------------------------------------------------------
    _FIELDS = ("_plan", "_next_bar", "_frame_in_bar", "_beat_frames", "state", "bank", "patch", "timeline", "_style",
               "_ramp", "_frozen_at", "_falling_back")

    def _keep_snapshot(self) -> None:
        """Before a chunk: everything with state, so the chunk can be generated again. The
        nearest MAX_SNAPSHOTS chunks are kept (a longer look-ahead rolls back only that far)."""
        self._open = None
        if len(self._snapshots) >= MAX_SNAPSHOTS:
            return
        try:
            generator = self.generator.snapshot()
            fallback = self.fallback.snapshot() if self.fallback is not None else None
        except GeneratorError:  # starting, restarting, or a generator without snapshots: no rollback to here
            return
        fields = {name: getattr(self, name) for name in self._FIELDS}
        fields["_pending"] = list(self._pending)
        fields["notes"] = copy.deepcopy(self.notes)
        fields["_gain"] = copy.deepcopy(self._gain)
        bar_line = self._plan is None or self._frame_in_bar >= self._plan.frames
        self._open = _Snapshot(self.next_frame_time(), (self.ring.cursor, self.ring.bar_mark()), self._last_seq,
                               generator, fallback, self.fitter.snapshot(), fields, bar_line)
        self._snapshots.append(self._open)

    def _forget_before(self, playhead: int) -> None:
        """A snapshot whose frames all started playing can never be used again."""
        gone = 0
        while (gone < len(self._snapshots) and self._snapshots[gone] is not self._open
               and self._snapshots[gone].frames and self._snapshots[gone].frames[-1][0] <= playhead):
            gone += 1
        if gone:
            del self._snapshots[:gone]
            self._trim_journal()

    def _trim_journal(self) -> None:
        oldest = self._snapshots[0] if self._snapshots else None
        self._journal = [entry for entry in self._journal if oldest is not None and entry[1] > oldest.seq]
        # a change applied before the oldest snapshot's frame is never applied again (one still pending,
        # moved by a rollback, keeps its mark: its listeners ran)
        pending = {entry[1] for entry in self._pending}
        self._announced = {seq: frame for seq, frame in self._announced.items()
                           if (oldest is not None and frame >= oldest.at) or seq in pending}

    def _roll_back_if_asked(self) -> None:
        """Regenerate from the chunk holding the earliest late change, if a snapshot still can:
        at most once per chunk of playback (later requests wait and coalesce: a fader sweep),
        or per frame while a note or pad hit waits (a roll keeps frame resolution)."""
        if self._rollback_to is None and self._rollback_sample is None:
            return
        now = self.playhead_now()
        window = FRAME_SAMPLES if self._rhythm else self.frames_per_call * FRAME_SAMPLES
        if self._last_rollback is not None and now // window == self._last_rollback // window:
            return  # one per chunk (frame) of playback, counted on a fixed grid so no turn of the loop is lost
        target, sampled = self._rollback_to, self._rollback_sample
        self._rollback_to = self._rollback_sample = None
        self._rhythm = False
        floor = self._floor()
        frames = self._frames()
        # the first frame a conditioning change may land on, and (gain, transport) the frame holding their sample
        landing = next((f for f in frames if f[0] >= floor and (target is None or f[1] > target)), None)
        at_sample = None if sampled is None else max(sampled, now + self.margin.samples)
        home = None if at_sample is None else self._home(at_sample)
        candidates = [f for f in (landing, home) if f is not None]
        if not candidates or (target is None and home is None):
            self.rollbacks_missed += 1
            self._requeue_late(self.next_frame_time())
            return
        chosen = min(candidates, key=lambda f: f[0])[2]  # the earlier frame's snapshot generates both again
        open_frame = landing[0] if landing is not None else self.next_frame_time()
        exact_until = min(open_frame - self.fitter.reach - self.generator.audio_lead,
                          at_sample if at_sample is not None else open_frame)
        if self._restore(chosen, open_frame, exact_until):
            self._last_rollback = now
            self._requeue_late(open_frame, at_sample)
        else:
            self._requeue_late(self.next_frame_time())

    def _restore(self, chosen: _Snapshot, land: int, exact_until: int | None = None) -> bool:
        """Go back to `chosen`; the first frame whose conditioning may change is `land`, the
        first sample that may change `exact_until` (default: `land`, less the fitter's and the
        generator's reach back). False (and nothing changed) when the generator cannot restore it."""
        t0 = time.perf_counter()
        try:
            if self.fallback is not None:  # the synth: it cannot fail, so a failure below leaves only it moved
                self.fallback.restore(chosen.fallback)
            self.generator.restore(chosen.generator)
        except GeneratorError as err:
            self.rollbacks_missed += 1
            self._rejects.warn("rollback", "cannot regenerate the look-ahead (%s); the change lands after it", err)
            return False
        self.fitter.restore(chosen.fitter)
        if exact_until is None:
            exact_until = land - self.fitter.reach - self.generator.audio_lead
        self.ring.rewind(*chosen.ring, exact_until=exact_until)
        for name, value in chosen.fields.items():  # the snapshot is used up: its copies are ours now
            if name != "_pending":
                setattr(self, name, value)
        self._pending = list(chosen.fields["_pending"]) + [e for e in self._journal if e[1] > chosen.seq]
        heapq.heapify(self._pending)
        # what applied before `land` applies again in the very frame it did (those frames are heard as they were)
        self._replay = {seq: self._announced[seq] for _, seq, _ in self._pending if self._announced.get(seq, land) < land}
        del self._snapshots[self._snapshots.index(chosen):]  # taken again as the chunks are generated again
        self._restore_s = time.perf_counter() - t0
        self.rollbacks += 1
        return True

    def _pushed_on(self, late: list[_Entry], first: dict[str, int], open_at: int) -> list[_Entry]:
        """A control's later moves that its late ones, moved, would land on or pass: those more
        than half a frame after the move before them (a smoothing ramp's steps, one a frame)
        move on too, so no step shares a frame and is lost; closer ones (a raw fader's) coalesce."""
        pushed = []
        for target, start in first.items():
            moved = [e for e in late if isinstance(e[2], ControlEvent) and e[2].target == target]
            prev_was = max(e[0] for e in moved)
            prev_new = open_at + prev_was - start
            for entry in sorted(e for e in self._pending if e not in late and isinstance(e[2], ControlEvent)
                                and e[2].target == target and e[2].quantize == "now"
                                and self._announced.get(e[1], open_at) >= open_at):
                spacing = entry[0] - prev_was
                if spacing <= FRAME_SAMPLES // 2 or entry[0] >= prev_new + spacing:
                    break
                pushed.append(entry)
                prev_was, prev_new = entry[0], prev_new + spacing
        return pushed

    def _requeue_late(self, open_at: int, open_sample: int | None = None) -> None:
        """Changes not applied yet whose sample lies before `open_at`, the first frame they can
        still change, move there (a beat or bar change: to its next boundary from there; a
        control's later moves keep their spacing from its first: a ramp's steps; none passes a
        move of its control received after it: `_never_past_later`). The
        ones applied before a rollback keep their sample: the frames before `open_at` are
        generated again exactly as they were heard. A gain or transport change asked for `now`
        moves to `open_sample` instead (the output takes it at any sample)."""

        def opens(entry: _Entry) -> int:
            if open_sample is not None and _sample_exact(entry[2]) and getattr(entry[2], "quantize", None) == "now":
                return open_sample
            return open_at

        late = [e for e in self._pending if e[0] < opens(e) and self._announced.get(e[1], open_at) >= open_at
                and not (self.state.freeze and e[1] > self._frozen_at and _route(e[2]) not in ("timeline", "safety"))]
        if not late:
            return
        first: dict[str, int] = {}  # a control's earliest late move: its later ones move with it, keeping their spacing
        for at, _, item in late:
            if isinstance(item, ControlEvent) and item.quantize == "now" and item.target in self._last_move:
                first[item.target] = min(at, first.get(item.target, at))  # a value that keeps its spacing
        late += self._pushed_on(late, first, open_at)
        gone = {e[1] for e in late}
        self._pending = [e for e in self._pending if e[1] not in gone]
        self._journal = [e for e in self._journal if e[1] not in gone]
        heapq.heapify(self._pending)
        moved = []
        for entry in late:
            was, seq, item = entry
            quantize = getattr(item, "quantize", "now")
            if quantize in ("beat", "bar"):  # the next bar line from the first open frame is never planned yet
                at = self.timeline.next_boundary(open_at + (FRAME_SAMPLES // 2 if quantize == "beat" else 0), quantize)
            else:  # a smoothing ramp's steps stay a frame apart, not all in the first open frame
                at = opens(entry) + (was - first[item.target] if isinstance(item, ControlEvent) and item.target in first else 0)
            moved.append((at, seq, item))
        stay = [e for e in self._pending if e[0] >= opens(e) and self._announced.get(e[1], open_at) >= open_at]
        for at, seq, item in _never_past_later(moved, stay):
            if isinstance(item, ControlEvent) and item.quantize == "now" and item.target in self._last_move:
                self._last_move[item.target] = (max(at, self._last_move[item.target][0]), self._last_move[item.target][1])
            self._push(at, item, seq=seq)

    def _run_generator(self, conds: list[FrameConditioning], *, at_bar_line: bool) -> np.ndarray:
        """Run the generator; on failure use the fallback (or silence) so the ring keeps filling.
        Once the fallback plays, the generator is asked again only for a chunk that starts a
        bar: a server or child that comes back takes over on a bar line, not mid-phrase. The
        fallback (the synth, 80x real time) is run on every chunk, unheard while the generator
        plays: its voices are sounding when it has to take over."""
        t0 = time.perf_counter()
        audio = None
        if not (self._falling_back and not at_bar_line and self.fallback is not None):
            try:
                audio = self.generator.generate(conds)
            except GeneratorError as err:
                if not self._falling_back or self.fallback_frames % 250 < len(conds):
                    log.warning("generator %s unavailable (%s); playing %s", self.generator.name, err,
                                self.fallback.name if self.fallback else "silence")
                self._falling_back = True
            else:
                if self._falling_back:
                    log.info("generator %s is back: it plays from this bar line", self.generator.name)
                self._falling_back = False
                self.generate_seconds += time.perf_counter() - t0
                if self.fallback is not None:  # kept playing unheard, so it takes over mid-phrase, not from silence
                    self.fallback.generate(conds)
                return audio
        self.fallback_frames += len(conds)
        audio = self.fallback.generate(conds) if self.fallback else np.zeros((len(conds) * FRAME_SAMPLES, 2), np.float32)
        self.generate_seconds += time.perf_counter() - t0
        return audio

    def _output_gain(self) -> float:
        """Master gain times the transport (stopped = silent)."""
        return self.state.gain if self.state.playing else 0.0

    # -- reporting ---------------------------------------------------------------------------------
    def speed(self) -> float:
        """Generator real-time factor so far (audio seconds per compute second)."""
        if self.generate_seconds <= 0:
            return 0.0
        return self.frames_generated * FRAME_SAMPLES / SAMPLE_RATE / self.generate_seconds


def _never_past_later(moved: list[_Entry], stay: list[_Entry]) -> list[_Entry]:
    """`moved` (late changes at their new samples), none of a control's `now` moves past a later
    one of it, moved or staying where it was (`stay`, changes still open): for one control the
    move received last is the one in force once its frame is reached. Kept spacing from the
    control's first late move, a late move could pass a later one that stays (a raw fader's,
    under half a frame after the move before it, is not pushed on: `_pushed_on`); it moves only
    as far as that one instead, and applies just before it (sequence numbers order a sample)."""

    def control(item: _Item) -> str | None:
        return item.target if isinstance(item, ControlEvent) and item.quantize == "now" else None

    controls = {control(item) for _, _, item in moved} - {None}
    if not controls:
        return moved
    moving = {seq for _, seq, _ in moved}
    bound: dict[str, int] = {}  # control -> the earliest sample of its moves received after the one looked at
    kept = []
    others = [e for e in stay if control(e[2]) in controls]
    for at, seq, item in sorted(moved + others, key=lambda e: e[1], reverse=True):  # the last received first
        target = control(item)
        if target is not None:
            at = min(at, bound.get(target, at)) if seq in moving else at
            bound[target] = min(at, bound.get(target, at))
        if seq in moving:
            kept.append((at, seq, item))
    return kept


def _values(state: ParameterState, timeline: Timeline, at: int) -> dict[str, object]:
    """The show state at sample `at` (what a patch load can change)."""
    seg = timeline.segment_at(at)
    return state.show_state(bpm=seg.bpm, beats_per_bar=seg.beats_per_bar)


def _prompt_slot(event: ControlEvent, bank: StyleBank) -> int:
    """The slot a `style.<i>.text` event replaces, or ValueError when the patch has no such slot."""
    index = lookup(event.target)[1]
    assert index is not None
    if index >= len(bank.slots):
        raise ValueError(f"style slot {index} does not exist in this patch (it has {len(bank.slots)})")
    return index


def _sample_exact(item: _Item) -> bool:
    """Master gain and the transport shape the output after the generator (the gain envelope),
    so they can start on any sample, not only on a frame."""
    return isinstance(item, ControlEvent) and (item.target == "master.gain" or item.spec.route == "transport")


def _route(item: _Item) -> str:
    """An event's route; a patch change starts a new timeline segment, so it is a timeline change
    (those land on a bar line not yet planned, or planned again); a replaced prompt is a style change."""
    if isinstance(item, _PatchChange):
        return "timeline"
    return "style" if isinstance(item, _PromptReady) else item.spec.route


_MASKED = np.full(NUM_NOTES, NOTE_MASK, dtype=np.int8)
_MASKED.flags.writeable = False
