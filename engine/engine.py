"""The live engine: patch, scheduler, generator and sink wired together, and its loop.

The scheduling loop runs on the thread that calls `run`. It keeps the ring `lookahead`
ahead of the sink's playhead, waking on an Event every few milliseconds (never sleeping
to a deadline). Everything else (MIDI, OSC, signals) talks to it through `submit`.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mido

from engine.audio.realtime import DEFAULT_PRIORITY, Grant, promote
from engine.audio.ring import PlaybackRing
from engine.audio.sinks import Sink
from engine.clock import ClockSource
from engine.clock.coupling import ClockCoupling, StartOn
from engine.clock.driver import ClockDriver
from engine.clock.jack_out import JackClockOutput
from engine.errors import BacklineError, PatchRefused
from engine.generator.base import Generator
from engine.params import ControlEvent, lookup
from engine.patch import Patch, load_patch
from engine.ratelog import RateLimitedLog
from engine.schedule.margin import DEFAULT_MAX_MS, DEFAULT_MIN_MS, SpliceMargin
from engine.schedule.scheduler import Scheduler
from engine.style.bank import StyleBank
from engine.style.embedder import Embedder
from engine.timeline import Timeline
from engine.units import SAMPLE_RATE

log = logging.getLogger(__name__)
LOOP_WAIT_S = 0.005
STATUS_EVERY_S = 5.0
HEARD_EVERY_S = 1.0  # the generator hears how playback goes (a server lists each session's underruns)
STREAM_STALL_S = 2.0  # no audio block for this long: the stream is dead (a service exits 1 and is restarted)


class Engine:
    """One performance: owns the scheduler (on the loop thread) and the sink."""

    def __init__(
        self,
        *,
        patch: Patch,
        generator: Generator,
        sink_factory: Callable[[PlaybackRing], Sink],
        fallback: Generator | None = None,
        embedder: Embedder | None = None,
        lookahead_ms: float = 200.0,
        frames_per_call: int = 2,
        patch_set: list[Path] | None = None,
        status_line: bool | None = None,
        clock: ClockDriver | None = None,
        start_on: StartOn = "now",
        clock_out: mido.ports.BaseOutput | JackClockOutput | None = None,
        realtime_priority: int = DEFAULT_PRIORITY,
        rollback: bool = True,
        margin_ms: tuple[float, float] = (DEFAULT_MIN_MS, DEFAULT_MAX_MS),
        fit: str | None = None,
    ) -> None:
        """`embedder` defaults to the generator's own style model (`Generator.style_model`).
        `clock` leads the timeline (None: internal). `start_on="bar"` waits for the next bar
        line of an external clock before the audio starts. `clock_out` gets MIDI clock, Start
        at play and Stop at stop, timed by the sink's sample clock. `rollback` regenerates the
        look-ahead so a change is heard a splice margin after it arrives (bounds `margin_ms`;
        live it follows the generator's chunk times, offline it is the minimum). `fit`: how
        frames meet the grid (`engine/schedule/fit.py`; None: the patch's, else stretch)."""
        self.embedder = embedder or generator.style_model()
        log.info("style model %s embeds the prompts for %s", self.embedder.version, generator.name)
        self.ring = PlaybackRing()
        self.scheduler = Scheduler.for_patch(patch, generator, ring=self.ring, embedder=self.embedder,
                                             lookahead_ms=lookahead_ms, frames_per_call=frames_per_call, fallback=fallback,
                                             rollback=rollback, fit=fit or patch.fit)
        self.sink = sink_factory(self.ring)
        low = min(margin_ms[0], lookahead_ms)  # never past the look-ahead: a rollback must have audio to go back into
        self.scheduler.margin = SpliceMargin(min_ms=low, max_ms=max(low, min(margin_ms[1], lookahead_ms)),
                                             block=self.sink.read_ahead, adaptive=self.sink.live)
        self.scheduler.playhead_now = lambda: self.sink.playhead  # when a control arrived, as heard
        self.patch_set = list(patch_set or ([patch.path] if patch.path else []))
        self.on_ready: Callable[[], None] | None = None
        self.on_tick: Callable[[], None] | None = None
        self._status_line = sys.stderr.isatty() if status_line is None else status_line
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._fade_requested = False
        self._ready = False
        self.stream_died = False  # the audio stream ended without being asked to (a service exits 1)
        self.clock = clock or ClockDriver(ClockSource("internal"), beats_per_bar=patch.beats_per_bar)
        self.timing = ClockCoupling(self.clock, start_on=start_on, clock_out=clock_out)
        self.scheduler.tempo_led = self.clock.external
        self.scheduler.on_transport = lambda playing, at: self.timing.transport(playing, at, self.scheduler.timeline)
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="patch-loader")
        self.realtime_priority = realtime_priority
        self._restore_freeze: ControlEvent | None = None  # a saved freeze, applied once the generator is ready
        self.realtime: Grant | None = None  # what the audio thread got, once it ran
        self.input_rejects: Callable[[], int] = lambda: 0  # the control surfaces' own rejects (the service wires them)
        self.refused = 0  # engine actions refused (a patch outside the set, a path from a surface)
        self._refusals = RateLimitedLog(log)  # a hostile surface's refused patch loads: a line per 5 s, not each
        self.stall_s = 0.0  # test hook: make the loop stall (a stuck scheduler)

    # -- control (any thread) ----------------------------------------------------------
    def submit(self, event: ControlEvent) -> None:
        """Route a control event by its spec's route; engine actions are resolved here.

        Any thread; control surfaces call it from the scheduler's per-frame drain. A refused
        action (a patch not in the set, a path) is logged and counted in `rejected`."""
        try:
            if event.target == "tempo.tap":  # timed by when it was heard, not by when the frame drained it
                bpm = self.timing.tap(event.heard / SAMPLE_RATE if event.heard is not None else None)
                if bpm is not None and not self.timing.tempo(bpm, event.source):
                    self.scheduler.submit(ControlEvent("tempo.bpm", bpm, source=event.source, quantize="bar"))
            elif event.spec.route == "engine" and self.sink.live:  # read and embedded off the generation thread
                self._loader.submit(self._patch_action, event)
            elif event.spec.route == "engine":  # offline: at once, so a render never depends on wall-clock speed
                self._patch_action(event)
            elif not (event.target == "tempo.bpm" and self.timing.tempo(float(event.value), event.source)):  # type: ignore[arg-type]
                self.scheduler.submit(event)
        except BacklineError as err:
            self.refused += 1
            self._refusals.warn(f"{event.target} {event.source}", "%s from %s: %s", event.target, event.source, err)
        self._wake.set()

    def add_listener(self, fn: Callable[[str, object, str], None]) -> None:
        self.scheduler.add_listener(fn)

    def playhead(self) -> int:
        """The output sample playing now (any thread)."""
        return self.sink.playhead

    def value_of(self, path: str) -> object:
        """A show-state parameter's current value (any thread: it reads values swapped whole); None otherwise."""
        return self.snapshot_state()["values"].get(path)  # type: ignore[union-attr]

    def load_patch(self, path: str | Path, *, quantize: str = "bar", source: str = "internal") -> Patch:
        """Validate and embed a patch off the audio path; it takes over at the boundary.

        A broken file raises PatchError and the playing patch stays.
        """
        patch = load_patch(path)
        bank = StyleBank.for_patch(patch, self.embedder)
        self.scheduler.submit_patch(patch, bank, quantize=quantize, source=source)
        log.info("patch %s queued for the next %s", patch.name, quantize)
        return patch

    def _patch_action(self, event: ControlEvent) -> None:
        """Loader thread: pick the patch inside the set, read and embed it, queue it for its bar.
        A refusal or a broken file is logged and counted; the playing patch stays."""
        try:
            if not self.patch_set:
                raise BacklineError("no patch set to choose from")
            if event.target == "patch.load":
                path = patch_in_set(self.patch_set, event.value)
            else:
                current = self.scheduler.patch.path
                index = self.patch_set.index(current) if current in self.patch_set else -1
                step = 1 if event.target == "patch.next" else -1
                path = self.patch_set[(index + step) % len(self.patch_set)]
            self.load_patch(path, quantize=event.quantize or "bar", source=event.source)
        except BacklineError as err:
            self.refused += 1
            self._refusals.warn(f"{event.target} {event.source}", "%s from %s: %s", event.target, event.source, err)
        except Exception:  # noqa: BLE001 - an executor would drop it silently; the playing patch stays
            self.refused += 1
            log.exception("%s from %s failed", event.target, event.source)

    def request_stop(self) -> None:
        """Fade out, then let `run` return."""
        self._fade_requested = True
        self._wake.set()

    # -- status --------------------------------------------------------------------------
    def status(self) -> dict[str, object]:
        """A consistent-enough snapshot for status lines, OSC and health checks."""
        sched = self.scheduler
        playhead = self.sink.playhead
        timeline = sched.timeline
        bar = timeline.bar_at(playhead)
        beat = timeline.beat_at(playhead) - timeline.bar_first_beat(bar)
        return {
            "bar": bar + 1,
            "beat": beat + 1,
            "tempo": float(timeline.tempo_at(playhead)),
            "meter": timeline.beats_in_bar(bar),
            "patch": sched.patch.name,
            "fit": sched.fitter.mode,
            "lookahead_ms": self._lookahead_ms(playhead),
            "margin_ms": round(sched.margin.samples * 1000 / SAMPLE_RATE, 1) if sched.rollback else None,
            "rollbacks": sched.rollbacks,
            "rollbacks_missed": sched.rollbacks_missed,
            "late_splices": sched.late_splices,
            "work": round(sched.frames_generated / sched.frames_new, 3) if sched.frames_new else 1.0,
            "xruns": self.sink.xruns,
            "server_xruns": self.sink.server_xruns,
            **{f"{k}_ms": v for k, v in self.sink.output_ms.items()},
            "skips": [list(span) for span in self.sink.skips],
            "underruns": self.ring.underruns,
            "rejoins": self.ring.rejoins,
            "generator": sched.generator.name,
            **_generator_health(sched.generator),
            "speed": round(sched.speed(), 2),
            "fallback_frames": sched.fallback_frames,
            "rejected": sched.errors + self.refused + self.input_rejects(),
            "frozen": sched.state.freeze,
            "playing": sched.state.playing,
            "output": self.sink.name,
            "realtime": str(self.realtime) if self.realtime is not None else "not started" if self.sink.live else "offline",
            "memory": str(self.sink.memory) if self.sink.memory is not None else "not started" if self.sink.live else "offline",
            "clock": self.timing.health(tempo=float(timeline.tempo_at(playhead))),
            "playhead": playhead,
        }

    def _lookahead_ms(self, playhead: int | None = None) -> float:
        """Audio written ahead of the playhead, in ms (any thread)."""
        return round((self.ring.written - (self.sink.playhead if playhead is None else playhead)) * 1000 / SAMPLE_RATE, 1)

    def snapshot_state(self) -> dict[str, object]:
        """What crash recovery needs to resume with the same sound: the patch and the show state
        (every parameter whose spec says `show`). Any thread: it reads values swapped whole."""
        sched = self.scheduler
        last = sched.timeline.segments[-1]
        return {"patch": str(sched.patch.path) if sched.patch.path else None,
                "values": sched.state.show_state(bpm=last.bpm, beats_per_bar=last.beats_per_bar)}

    def restore_state(self, data: dict[str, object]) -> None:
        """Re-apply a snapshot before the loop starts (main thread): the tempo and meter from bar 0,
        the rest before the first frame, validated like any other input. All or nothing: on a
        ValueError (a value out of range, a slot this patch does not have) the patch plays as written."""
        values = dict(data["values"])  # type: ignore[call-overload]
        events = [ControlEvent(path, value, source="restore", quantize="now" if "now" in lookup(path)[0].quantizes else None)
                  for path, value in values.items()]
        timeline = {e.target: e.value for e in events if e.spec.route == "timeline"}
        first = self.scheduler.timeline.segments[0]
        self.scheduler.restore([e for e in events if e.spec.route not in ("timeline", "safety")])
        self.scheduler.start_at(Timeline.start(timeline.get("tempo.bpm", first.bpm),
                                               int(timeline.get("meter.beats_per_bar", first.beats_per_bar)),
                                               origin=self.ring.origin), 0)
        # freeze loops the bar playing: only once the generator itself plays (not its fallback or silence)
        self._restore_freeze = next((e for e in events if e.spec.route == "safety" and e.value), None)
        if self.clock.follower is not None and values.get("transport.playing", True):
            self.clock.follower.join_running()  # the show was playing along a clock that runs on

    # -- the loop ----------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None, *, duration_s: float | None = None) -> None:
        """Scheduling loop: follow the clock, fill ahead of the playhead until stopped, then fade out."""
        stop = stop or self._stop
        self.timing.begin(self.scheduler)
        if not self.timing.waiting_for_bar:
            self.scheduler.fill(0)  # the first look-ahead is ready before audio starts
        self.sink.start()
        self.clock.start_transport(time.monotonic())
        log.info("%s %s on %s (look-ahead %.0f ms, clock %s)",
                 "waiting for the next bar of the clock to play" if self.timing.waiting_for_bar else "playing",
                 self.scheduler.patch.name, self.sink.name, self.scheduler.lookahead * 1000 / SAMPLE_RATE, self.clock.source)
        next_status = time.monotonic() + STATUS_EVERY_S
        next_heard = time.monotonic() + HEARD_EVERY_S
        end_at = None if duration_s is None else round(duration_s * SAMPLE_RATE)
        moved_at, last_playhead = time.monotonic(), -1
        try:
            while not stop.is_set() and not self._fade_requested:
                if self.stall_s:
                    time.sleep(self.stall_s)
                playhead = self.sink.playhead
                if playhead != last_playhead or self.timing.waiting_for_bar:
                    moved_at, last_playhead = time.monotonic(), playhead
                elif time.monotonic() - moved_at > STREAM_STALL_S:
                    log.error("no audio block for %.0f s: the device or audio server stopped calling back", STREAM_STALL_S)
                    self.stream_died = True
                    break
                self.timing.follow(playhead, self.sink, self.scheduler)
                if self.realtime is None and self.sink.live and self.sink.audio_tid is not None:
                    self._ask_realtime(self.sink.audio_tid)
                if self.timing.waiting_for_bar:
                    self.scheduler.poll_inputs()
                else:
                    self.scheduler.fill(playhead)
                # ready: audio flows and the generator itself is warm (not just its fallback playing)
                if not self._ready and self.sink.playhead > 0 and self.scheduler.generator.wait_ready(0):
                    self._ready = True
                    if self._restore_freeze is not None:
                        log.warning("the show was frozen when it stopped: freeze restored, looping from the next bar "
                                    "line (release with safety.freeze 0)")
                        self.scheduler.submit(self._restore_freeze)
                        self._restore_freeze = None
                    if self.on_ready:
                        self.on_ready()
                if self.on_tick:
                    self.on_tick()
                if time.monotonic() >= next_heard:
                    next_heard = time.monotonic() + HEARD_EVERY_S
                    # A ring run dry has a negative look-ahead; the server's report takes ms >= 0 (a
                    # negative one was refused as malformed and dropped the link: seen in the soak).
                    self.scheduler.generator.heard(underruns=self.ring.underruns, lookahead_ms=max(0.0, self._lookahead_ms()))
                    self._embed_stand_ins_again()
                if end_at is not None and self.sink.playhead >= end_at:
                    break
                if self._status_line and time.monotonic() >= next_status:
                    next_status += STATUS_EVERY_S
                    log.info(format_status(self.status()))
                if self.sink.finished.is_set():
                    if self.sink.live:
                        log.error("the audio stream ended unexpectedly")
                        self.stream_died = True
                    break
                self.sink.tick(self._wake, LOOP_WAIT_S)  # live: wait for a control or 5 ms; offline: render a block
            self.sink.fade_out()
            give_up = time.monotonic() + self.sink.fade_s + STREAM_STALL_S  # a dead stream never finishes its fade
            while not self.sink.finished.wait(LOOP_WAIT_S) and time.monotonic() < give_up:
                self.scheduler.fill(self.sink.playhead)
        finally:
            self.timing.close()  # our MIDI clock sends Stop
            self.sink.close()
            self._loader.shutdown(wait=False, cancel_futures=True)
            self.scheduler.close()
            log.info("stopped: %s", format_status(self.status()))

    def _embed_stand_ins_again(self) -> None:
        """Scheduling loop: prompts a remote style model could not embed (its server was down:
        they got a stand-in) go again, as prompt changes of their slots, once the generator is
        up. Only the remote embedder keeps such prompts (`take_stand_ins`)."""
        take = getattr(self.scheduler.embedder, "take_stand_ins", None)
        if take is None or _generator_health(self.scheduler.generator)["generator_state"] != "ready":
            return
        texts = take()
        if not texts:
            return
        values = self.snapshot_state()["values"]
        for path, value in values.items():  # type: ignore[union-attr]
            if path.startswith("style.") and path.endswith(".text") and value in texts:
                log.info("%s: embedding %r again now that the server is back", path, value)
                self.scheduler.submit(ControlEvent(path, value, source="embedder"))

    def _ask_realtime(self, tid: int) -> None:
        """Loop thread, once the audio thread has run: SCHED_FIFO for it where granted; logged."""
        try:
            self.realtime = promote(tid, priority=self.realtime_priority, owner=self.sink.audio_server)
        except OSError as err:  # the thread is gone (a stream that died at once)
            self.realtime = Grant(False, 0, f"cannot read the audio thread's scheduling: {err.strerror}")
        log.log(logging.INFO if self.realtime.realtime or self.realtime_priority <= 0 else logging.WARNING,
                "audio thread (%s, tid %d) runs at %s", self.sink.name, tid, self.realtime)

def patch_in_set(patch_set: list[Path], value: object) -> Path:
    """Entry `value` of the set (0-based, the order of `patch_set`: file names sorted), or the
    set's patch with that file stem or `name:`. Never a path: a control surface cannot make
    the engine read a file outside the set (PatchRefused)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or value != int(value) or not 0 <= value < len(patch_set):
            raise PatchRefused(f"patch {value:g} is not in the set: entries are 0..{len(patch_set) - 1}")
        return patch_set[int(value)]
    name = str(value).strip()
    if not name or any(c in name for c in "/\\") or name.endswith((".yaml", ".yml")) or name.startswith("."):
        raise PatchRefused(f"patch {name!r} refused: a control picks a patch of the set by number or name, never a path")
    for path in patch_set:
        if path.stem == name:
            return path
    for path in patch_set:
        try:
            if load_patch(path).name == name:
                return path
        except BacklineError:
            continue
    if name.isdigit():
        return patch_in_set(patch_set, int(name))
    raise PatchRefused(f"no patch named {name!r} in the set ({', '.join(p.stem for p in patch_set)})")


def format_status(s: dict[str, object]) -> str:
    clock = s["clock"] if isinstance(s.get("clock"), dict) else {}
    age = clock.get("last_clock_age")
    return (
        f"bar {s['bar']} beat {s['beat']} | {s['tempo']:.2f} BPM | {s['patch']} | look-ahead {s['lookahead_ms']} ms | "
        f"xruns {s['xruns']} (server {s['server_xruns']}) | underruns {s['underruns']} | {s['generator']} {s['speed']}x | "
        f"clock {clock.get('source', '?')} {clock.get('state', '?')}" + (f" ({age * 1000:.0f} ms ago)" if age is not None else "")
    )


def _generator_health(generator: object) -> dict[str, object]:
    """A child's or a remote server's state, why it is not ready (a remote refused, say: "generator
    server ws://... refused the token (the token file ...)"), and its answer time per frame (a
    remote's includes the network's round trip); an in-process generator is always ready."""
    health = getattr(generator, "health", None)
    info = health() if callable(health) else {}
    ms = info.get("ms_per_frame")
    state = info.get("state", "ready")
    return {"generator_state": state, "generator_error": None if state == "ready" else info.get("last_error"),
            "generator_ms": None if ms is None else round(float(ms), 2)}
