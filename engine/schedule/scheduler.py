"""The look-ahead scheduler: conditioning per frame, generation ahead of the playhead.

It owns the timeline, the parameter state, the generator, the fitter and the writer
side of the playback ring, and runs on one thread (the scheduling loop, or the offline
render). Other threads talk to it only through `submit`, a queue it drains. Control
surfaces are drained by it too (`add_input`), once per generated frame, so smoothing,
coalescing and quantize all count in frames. What a change does is its spec's route
(`engine.params.PARAMETERS`).

Per bar it plans a whole number of frames (see `fitter.py`), so a change quantized to a
bar starts exactly on that bar's first sample. A change applies on the frame not generated
yet whose start is nearest its boundary (`now`, `beat` or `bar`; see `_apply_due`). Tempo
and meter changes start a new timeline segment at the first bar line not yet planned.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from engine.audio.ring import PlaybackRing
from engine.clock.tap import ramp
from engine.conditioning import DRUM_HIT, DRUM_MASK, DRUM_NONE, NOTE_MASK, NUM_NOTES, FrameConditioning
from engine.errors import GeneratorError
from engine.generator.base import Generator
from engine.params import ControlEvent, ParameterState, lookup
from engine.patch import Patch
from engine.ratelog import RateLimitedLog
from engine.schedule.fitter import DEFAULT_MAX_CENTS, BarFitter, BarPlan, plan_bar
from engine.schedule.gain import GainEnvelope
from engine.schedule.notes import NoteTracker
from engine.schedule.style_ramp import StyleRamp
from engine.style.bank import StyleBank
from engine.style.embedder import Embedder
from engine.timeline import Timeline
from engine.units import FRAME_SAMPLES, SAMPLE_RATE

log = logging.getLogger(__name__)
Listener = Callable[[str, object, str], None]


@dataclass(frozen=True, slots=True)
class _PatchChange:
    patch: Patch
    bank: StyleBank
    quantize: str
    source: str





class Scheduler:
    """Generates bar-fitted audio ahead of the playhead into the playback ring."""

    @classmethod
    def for_patch(cls, patch: Patch, generator: Generator, *, ring: PlaybackRing, embedder: Embedder,
                  lookahead_ms: float, frames_per_call: int = 2, fallback: Generator | None = None) -> Scheduler:
        """A scheduler for `patch`, its style bank embedded with `embedder` (the engine, render and bench)."""
        return cls(generator=generator, patch=patch, bank=StyleBank.for_patch(patch, embedder), embedder=embedder,
                   ring=ring, lookahead=round(lookahead_ms * SAMPLE_RATE / 1000), frames_per_call=frames_per_call,
                   fallback=fallback)

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
        max_cents: float = DEFAULT_MAX_CENTS,
        fallback: Generator | None = None,
        origin: int = 0,
    ) -> None:
        if lookahead < 0:
            raise ValueError(f"look-ahead must be >= 0 samples, got {lookahead}")
        if frames_per_call < 1:
            raise ValueError(f"frames per call must be >= 1, got {frames_per_call}")
        self.generator = generator
        self.fallback = fallback
        self.ring = ring
        self.lookahead = lookahead
        self.frames_per_call = frames_per_call
        self.max_cents = max_cents
        self.embedder = embedder
        self.patch = patch
        self.bank = bank
        self.timeline = Timeline.start(patch.bpm, patch.beats_per_bar, origin=origin)
        self.state = patch.initial_state()
        self.fitter = BarFitter()
        self.notes = NoteTracker()
        self._inbox: queue.SimpleQueue[tuple[ControlEvent | _PatchChange, int]] = queue.SimpleQueue()
        self._pending: list[tuple[int, int, ControlEvent | _PatchChange]] = []
        self._seq = itertools.count()
        self._frozen_at = -1  # while frozen, changes queued after this sequence number wait for release
        self._listeners: list[Listener] = []
        self._inputs: list[Callable[[], object]] = []
        self._embed_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self._embeds: list[tuple[int, Future[np.ndarray], str, Patch]] = []  # (slot, embedding, prompt, for patch)
        self._next_bar = 0
        self._plan: BarPlan | None = None
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
        own `heard`, else now). Thread-safe and never blocks."""
        self._inbox.put((event, event.heard if event.heard is not None else self.playhead_now()))

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

    def add_input(self, drain: Callable[[], object]) -> None:
        """`drain()` runs on the scheduler thread once per generated frame, before the frame's
        conditioning is fixed: control surfaces hand over what arrived (and advance their
        smoothing ramps a frame), and it lands on that frame."""
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
    def retime(self, timeline: Timeline) -> None:
        """Swap in an external clock's `timeline` for the bars not planned yet.

        Its bar at `planned_until` must start exactly there, so the audio stays continuous;
        bar numbers may change (they become the clock's song bars).
        """
        end = self.planned_until
        bar = timeline.bar_at(end)
        if timeline.bar_start(bar) != end:
            raise ValueError(f"the new timeline has no bar line at sample {end}, where planning stands")
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
        """Generate until the ring holds `lookahead` samples past `playhead`. Returns frames made."""
        made = 0
        self._playhead = playhead
        self._drain_inbox()
        self._collect_embeddings()
        while self.ring.written < playhead + self.lookahead + 1 and self.ring.space(playhead) > 2 * FRAME_SAMPLES * self.frames_per_call:
            made += self._generate_chunk()  # each frame drains the inputs and the inbox first
        return made

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

        `heard` is the output sample that was playing when the event arrived."""
        route = _route(item)
        if route in ("safety", "notes"):  # safety acts at once, even while frozen; notes in the next frame
            self._apply(item, self.next_frame_time())
            return
        if route == "drums":
            self.notes.hit(at=self.next_frame_time(), heard=heard)
            self._notify(item.target, item.value, item.source)
            return
        if route == "prompt":
            self._start_embedding(item)
            return
        if route == "engine":
            raise ValueError(f"{item.target} is handled by the engine, not the scheduler")
        earliest = self.next_frame_time()
        if route == "timeline":
            earliest = max(earliest, self.timeline.bar_start(self._next_bar))  # not planned yet
        quantize = item.quantize
        at = item.at if isinstance(item, ControlEvent) and item.at is not None else earliest
        at = self.timeline.next_boundary(max(at, earliest), quantize)
        heapq.heappush(self._pending, (at, next(self._seq), item))

    def _start_embedding(self, event: ControlEvent) -> None:
        index = _prompt_slot(event, self.bank)
        future = self._embed_pool.submit(self.embedder.embed_text, str(event.value))
        self._embeds.append((index, future, str(event.value), self.patch))

    def _collect_embeddings(self) -> None:
        """Swap in prompt embeddings that finished off the audio path; the old mix plays until then."""
        still = []
        for index, future, text, patch in self._embeds:
            if not future.done():
                still.append((index, future, text, patch))
                continue
            if patch is not self.patch:  # another patch took over meanwhile: the prompt was for the old one
                log.info("style slot %d: prompt %r was for patch %s, which no longer plays; dropped", index, text,
                         patch.name)
                continue
            try:
                embedding = future.result()
            except Exception as err:  # noqa: BLE001 - any embedder failure keeps the old prompt
                self.errors += 1
                log.warning("style slot %d: could not embed %r: %s; keeping the old prompt", index, text, err)
                continue
            self.bank = self.bank.with_slot(index, embedding)
            self.state = self.state.with_event(ControlEvent(f"style.{index}.text", text))
            self._restyle(self.next_frame_time())
            self._notify(f"style.{index}.text", text, "embedder")
        self._embeds = still

    def _apply_due(self, before: int, *, timeline_only: bool = False) -> None:
        """Apply queued events whose boundary lies before output sample `before`, in time order.

        A frame takes every change whose boundary is nearer its start than the next frame's
        (`before` is the frame's middle): a beat-quantized change lands on the frame where
        the tempo lock puts that beat's drum hit, within half a frame of the beat; bar lines
        are frame starts, so a bar change is exact. `timeline_only` (when a bar is planned)
        applies just the tempo/meter/patch changes; while frozen, changes queued after the
        freeze wait until release.
        """

        def held(entry: tuple[int, int, ControlEvent | _PatchChange]) -> bool:
            if _route(entry[2]) == "timeline":
                return False
            return timeline_only or (self.state.freeze and entry[1] > self._frozen_at)

        due = [entry for entry in self._pending if entry[0] < before and not held(entry)]
        if not due:
            return
        taken = {entry[1] for entry in due}
        self._pending = [entry for entry in self._pending if entry[1] not in taken]
        heapq.heapify(self._pending)
        restyle_at = None
        for at, _, item in sorted(due, key=lambda e: (e[0], e[1])):
            if isinstance(item, _PatchChange):
                restyle_at = at  # its bank and state replace ours first: restyle even if a later step fails
            try:
                if self._apply(item, at):
                    restyle_at = at
            except ValueError as err:
                self.errors += 1
                self._rejects.warn(getattr(item, "target", "patch"), "control change rejected when applied: %s", err)
            self._gain.move(max(at, self.ring.written), self._output_gain())  # never before audio already in the ring
        if restyle_at is not None:  # once for the lot: a fader sweep brings several style changes per frame
            try:
                self._restyle(restyle_at)
            except ValueError as err:
                self.errors += 1
                self._rejects.warn("style", "style mix rejected, the previous one plays on: %s", err)

    def _apply(self, item: ControlEvent | _PatchChange, at: int) -> bool:
        """Apply one change at sample `at`; True when the style mix must be recomputed (the caller does it)."""
        if isinstance(item, _PatchChange):
            self._apply_patch(item, at)
            return True
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
        else:
            old = self.state
            self.state = self.state.with_event(item)
            if route == "safety":
                self.ring.freeze = self.state.freeze
                self._frozen_at = next(self._seq)  # changes queued before the freeze still land
            restyle = route == "style" and self.state != old
        self._notify(target, value, item.source)
        return restyle

    def _apply_patch(self, change: _PatchChange, at: int) -> None:
        patch = change.patch
        before = _values(self.state, self.timeline, at)
        bar = self.timeline.bar_at(at)
        self.timeline = self.timeline.with_change(at_bar=bar, bpm=patch.bpm, beats_per_bar=patch.beats_per_bar)
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
        for fn in self._listeners:
            try:
                fn(path, value, source)
            except Exception:  # noqa: BLE001 - a failing listener must not stop the music
                log.exception("listener %r failed for %s", fn, path)

    # -- generation ------------------------------------------------------------------------------
    def _plan_next_bar(self) -> BarPlan:
        start = self.timeline.bar_start(self._next_bar)
        self._apply_due(start + 1, timeline_only=True)  # tempo/meter/patch changes land on this line
        bar = self._next_bar
        start = self.timeline.bar_start(bar)
        plan = plan_bar(
            bar,
            out_start=start,
            out_length=self.timeline.bar_length(bar),
            gen_start=self.fitter.planned_gen_end,
            max_cents=self.max_cents,
        )
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
        self._drain_inputs()

    def _drain_inputs(self) -> None:
        """Once per generated frame: every control input hands over what arrived, then the inbox."""
        for drain in self._inputs:
            try:
                drain()
            except Exception as err:  # noqa: BLE001 - a failing control surface must not stop the music
                self.errors += 1
                self._rejects.warn("input", "control input %r failed: %r", drain, err)
        self._drain_inbox()

    def _conditioning(self, plan: BarPlan, frame: int) -> FrameConditioning:
        t = round(plan.frame_out_start(frame))
        self._drain_inputs()
        self._apply_due(round((plan.frame_out_start(frame) + plan.frame_out_start(frame + 1)) / 2))
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
        plan = self._plan
        if plan is None or self._frame_in_bar >= plan.frames:
            plan = self._plan_next_bar()
        count = min(self.frames_per_call, plan.frames - self._frame_in_bar)
        conds = []
        for _ in range(count):  # one frame at a time: controls drained for a frame land on it
            conds.append(self._conditioning(plan, self._frame_in_bar))
            self._frame_in_bar += 1
        audio = self._run_generator(conds)
        self.frames_generated += count
        self.fitter.push(audio)
        start, fitted = self.fitter.pull()
        if len(fitted):
            self.ring.write(start, self._gain.apply(start, fitted))
        return count

    def _run_generator(self, conds: list[FrameConditioning]) -> np.ndarray:
        """Run the generator; on failure use the fallback (or silence) so the ring keeps filling."""
        t0 = time.perf_counter()
        try:
            audio = self.generator.generate(conds)
        except GeneratorError as err:
            self.fallback_frames += len(conds)
            if self.fallback_frames == len(conds) or self.fallback_frames % 250 < len(conds):
                log.warning("generator %s unavailable (%s); playing %s", self.generator.name, err,
                            self.fallback.name if self.fallback else "silence")
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


def _route(item: ControlEvent | _PatchChange) -> str:
    """An event's route; a patch change starts a new timeline segment, so it is a timeline change
    (those land on an unplanned bar line)."""
    return "timeline" if isinstance(item, _PatchChange) else item.spec.route


_MASKED = np.full(NUM_NOTES, NOTE_MASK, dtype=np.int8)
_MASKED.flags.writeable = False
