"""StretchFitter: every beat on its exact sample, by pitch-preserving time-stretch.

The model plays a whole number of 40 ms frames per beat (`frames_per_beat`: 12 at 120 BPM,
the model at 125), so tempo lock's drum hits fall on frame starts and every generated beat
starts on a frame boundary. Each generated beat is then stretched onto its output beat,
`timeline.beat_start(b)` to `beat_start(b + 1)`, by Signalsmith Stretch (`stretch.py`): one
streaming stretcher carries its state across beats, so the stream has no splice and no seam,
and a sine keeps its pitch. The ratio is constant within a beat and steps only where the
frames per beat step (a tempo ramp).

Latency. The stretcher delays its input by `latency` samples (its 25 ms analysis block), so
the fitter feeds it ahead: output sample y is emitted once input up to
``g(y + output_latency) + input_latency`` is in, where g maps output samples onto generated
ones. Before the first bar it plays a pre-roll of silence (discarded), so bar 0 starts on
sample 0 with nothing lost. A change to generated audio can alter output up to `reach`
samples before the output position it maps to: rollback regenerates that much earlier.

Rollback copies the stretcher's whole state with each snapshot (`Stretcher.copy`, ~0.1 ms),
so a restored fitter goes on bit for bit as the original did.

Why these settings: a 1,200-sample block (25 ms, the issue's latency budget) with a new
spectrum every 300 samples; bench/stretch_bench.py measures its quality, CPU and latency
beside larger blocks. Scheduler thread only.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from engine.schedule.stretch import Stretcher
from engine.timeline import Timeline
from engine.units import CHANNELS, FRAME_SAMPLES

BLOCK = 1200  # analysis window: the stretcher's latency (25 ms at 48 kHz)
INTERVAL = 300  # a new spectrum every 6.25 ms
MAX_RATE = 1.12  # generated samples per output sample at most: F = round(beat / frame) keeps it <= 1.111
FADE = 48  # 1 ms fades at a hit: from the side stretcher to the hit as generated, and on to the main one
AFTER = 480  # a hit's first 10 ms play as generated (a phase vocoder softens an attack)
ONSET_BEFORE, ONSET_AFTER = 960, 480  # a hit at a beat line: the 10 ms after it 4x (+6 dB) the 20 ms before
ONSET_RATIO, ONSET_FLOOR = 4.0, 1e-4  # mean square; the floor is -40 dBFS


@dataclass(frozen=True, slots=True)
class BeatPlan:
    """Bar `bar`: its beats' exact output starts, and `frames_per_beat` generated frames each."""

    bar: int
    beats: tuple[int, ...]  # output starts of the bar's beats, then the next bar's start
    gen_start: int
    frames_per_beat: int

    @property
    def out_start(self) -> int:
        return self.beats[0]

    @property
    def out_end(self) -> int:
        return self.beats[-1]

    @property
    def out_length(self) -> int:
        return self.out_end - self.out_start

    @property
    def frames(self) -> int:
        return (len(self.beats) - 1) * self.frames_per_beat

    @property
    def gen_end(self) -> int:
        return self.gen_start + self.frames * FRAME_SAMPLES

    @property
    def beat_gen(self) -> int:
        """Generated samples per beat."""
        return self.frames_per_beat * FRAME_SAMPLES

    def rate(self, beat: int) -> float:
        """Generated samples per output sample in beat `beat` of the bar."""
        return self.beat_gen / (self.beats[beat + 1] - self.beats[beat])

    def beat_at(self, out: float) -> int:
        """Index within the bar of the beat holding output position `out` (clamped to the bar)."""
        return min(max(bisect.bisect_right(self.beats, out) - 1, 0), len(self.beats) - 2)

    def segment_at(self, out: int) -> tuple[int, int, float, int]:
        """(output start, its generated position, rate, output end) of the beat holding `out`."""
        beat = self.beat_at(out)
        return self.beats[beat], self.gen_start + beat * self.beat_gen, self.rate(beat), self.beats[beat + 1]

    @property
    def cents(self) -> float:
        """How far the model's tempo is from the output's, in cents of tempo (not of pitch)."""
        return 1200.0 * math.log2(self.frames * FRAME_SAMPLES / self.out_length)

    def frame_out_start(self, frame_in_bar: int) -> float:
        """Output sample where the bar's `frame_in_bar`-th frame starts (beat starts are exact)."""
        beat, rest = divmod(frame_in_bar, self.frames_per_beat)
        if beat >= len(self.beats) - 1:
            return float(self.out_end)
        return self.beats[beat] + rest * (self.beats[beat + 1] - self.beats[beat]) / self.frames_per_beat

    def frame_for(self, out_sample: int) -> int:
        """Index within the bar of the frame whose start is nearest `out_sample` (a beat start: its first frame)."""
        beat = self.beat_at(out_sample)
        length = self.beats[beat + 1] - self.beats[beat]
        index = beat * self.frames_per_beat + math.floor((out_sample - self.beats[beat]) * self.frames_per_beat / length + 0.5)
        return min(max(index, 0), self.frames - 1)


def frames_per_beat(beat_length: Fraction | float) -> int:
    """The whole number of frames nearest one beat (a tie: the fewer, the model a little faster:
    12 at 120 BPM, the model at 125); it plays at most half a frame per beat off the output's tempo."""
    return max(1, math.ceil(float(beat_length) / FRAME_SAMPLES - 0.5))


def plan_beats(timeline: Timeline, bar: int, *, gen_start: int) -> BeatPlan:
    """Bar `bar` of `timeline`: its exact beat starts, and whole frames per beat for the model."""
    first = timeline.bar_first_beat(bar)
    count = timeline.beats_in_bar(bar)
    beats = tuple(timeline.beat_start(first + i) for i in range(count)) + (timeline.bar_start(bar + 1),)
    if beats[-1] <= beats[0]:
        raise ValueError(f"bar {bar} has no length ({beats[-1] - beats[0]} samples)")
    return BeatPlan(bar, beats, gen_start, frames_per_beat(Fraction(beats[-1] - beats[0], count)))


class StretchFitter:
    """Streams generated audio in, beat-grid audio out. Owned by the scheduler thread."""

    mode = "stretch"

    def __init__(self, *, channels: int = CHANNELS, block: int = BLOCK, interval: int = INTERVAL) -> None:
        self._stretcher = Stretcher(block=block, interval=interval, channels=channels)
        self._in_latency = self._stretcher.input_latency
        self._out_latency = self._stretcher.latency - self._in_latency
        self._channels = channels
        self._material = np.zeros((0, channels), dtype=np.float32)
        self._material_base = 0  # generated sample index of _material[0]
        self._plans: list[BeatPlan] = []  # bars not all emitted yet
        self._planned_gen_end = 0
        self._planned_out_end = 0
        self._stream_start: int | None = None  # output sample of the first bar (the pre-roll before it is dropped)
        self._emitted = 0  # output emitted (stream position, pre-roll included)
        self._fed = 0  # generated position fed to the stretcher
        self._side: tuple[Stretcher | None, int, int] | None = None  # (side stretcher, a hit's generated
        # position, its beat line's output position): forked at a hit, gone once the main plays again
        self._checked = -1  # the last beat line's generated position checked for a hit

    @property
    def latency(self) -> int:
        """Samples the stretcher delays its input (its analysis block)."""
        return self._stretcher.latency

    @property
    def reach(self) -> int:
        """Output samples before a changed generated sample's own place that the change may alter."""
        return math.ceil(self._in_latency * MAX_RATE) + self._out_latency + 1

    @property
    def generated_end(self) -> int:
        return self._material_base + len(self._material)

    @property
    def planned_gen_end(self) -> int:
        return self._planned_gen_end

    def plan(self, timeline: Timeline, bar: int) -> BeatPlan:
        """The next bar's plan, continuing the generated stream."""
        return plan_beats(timeline, bar, gen_start=self._planned_gen_end)

    def snapshot(self) -> tuple:
        """Everything, the stretchers' states copied (material is never written in place: shared)."""
        side = None if self._side is None else (self._side[0] and self._side[0].copy(), *self._side[1:])
        return (self._stretcher.copy(), side, self._material, self._material_base, tuple(self._plans),
                self._planned_gen_end, self._planned_out_end, self._stream_start, self._emitted, self._fed, self._checked)

    def restore(self, snapshot: tuple) -> None:
        (stretcher, side, self._material, self._material_base, plans, self._planned_gen_end, self._planned_out_end,
         self._stream_start, self._emitted, self._fed, self._checked) = snapshot
        self._stretcher, self._plans = stretcher.copy(), list(plans)  # the snapshot stays as it was
        self._side = None if side is None else (side[0] and side[0].copy(), *side[1:])

    def add_bar(self, plan: BeatPlan) -> None:
        """Queue the next bar; it must follow the previous one in both time bases."""
        if self._stream_start is None:
            self._stream_start = plan.out_start
            self._emitted = plan.out_start - self.latency  # the pre-roll: silence before bar 0
            self._fed = self._material_base = plan.gen_start
            self._material = self._material[:0]
        elif plan.gen_start != self._planned_gen_end or plan.out_start != self._planned_out_end:
            raise ValueError(f"bar {plan.bar} does not follow the bar before it")
        self._plans.append(plan)
        self._planned_gen_end, self._planned_out_end = plan.gen_end, plan.out_end

    def push(self, audio: np.ndarray) -> None:
        """Append generated audio (continuing the generated stream)."""
        self._material = np.concatenate([self._material, audio.astype(np.float32, copy=False)])

    def pull(self, *, flush: bool = False) -> tuple[int, np.ndarray]:
        """Emit every output sample whose input (with the stretcher's look-ahead) is in.

        Returns (first output sample, audio). With `flush` the input past the generated
        stream is taken as silence, so every planned bar comes out (the end of a stream).
        """
        if flush:
            missing = self._planned_gen_end + self.latency + AFTER + FADE + 1 - self.generated_end
            if missing > 0:
                self.push(np.zeros((missing, self._channels), np.float32))
        start = max(self._emitted, self._stream_start if self._stream_start is not None else 0)
        chunks: list[np.ndarray] = []
        while (call := self._next_call(flush)) is not None:
            out_n, in_end = call
            audio = self._material[self._fed - self._material_base : in_end - self._material_base]
            out = self._stretcher.process(audio, out_n)
            if self._side is not None:
                out = self._hand_over(audio, out)
            drop = max(self._stream_start - self._emitted, 0)  # type: ignore[operator]
            if drop < out_n:
                chunks.append(out[drop:])
            self._emitted += out_n
            self._fed = in_end
            while self._plans and self._plans[0].out_end <= self._emitted:
                self._plans.pop(0)
        self._trim()
        if not chunks:
            return start, np.zeros((0, self._channels), dtype=np.float32)
        return start, np.concatenate(chunks)

    def _next_call(self, flush: bool) -> tuple[int, int] | None:
        """(output samples, input end) of the next stretcher call: to the next beat line (one
        ratio a call), as far as the input reaches, and never past a hit's generated position
        (the side stretcher forks there); None when nothing can be emitted now."""
        synth = self._emitted + self._out_latency  # the output position the stretcher synthesises now
        segment = self._segment(synth, flush)
        if segment is None:
            return None
        out0, gen0, rate, boundary = segment
        if not self._fork_if_hit():
            return None  # a beat line's hit is not decidable yet: wait for its audio
        # round(g(end)) + input latency must be generated
        reach = math.floor(out0 + (self.generated_end - self._in_latency - 0.5 - gen0) / rate)
        end = min(boundary, reach)
        if end <= synth:
            return None
        in_end = round(gen0 + (end - out0) * rate) + self._in_latency
        line = self._next_line()
        if line is not None and self._fed < (line := line[0]) < in_end:  # stop the feed on the line (a hit forks there), at this rate
            end = max(math.floor(out0 + (line - self._in_latency - gen0) / rate), synth + 1)
            in_end = line
        return end - synth, in_end

    def _next_line(self) -> tuple[int, int] | None:
        """(generated, output) position of the first beat line after the one last checked for a hit."""
        for plan in self._plans:
            for beat in range(len(plan.beats) - 1):
                gen = plan.gen_start + beat * plan.beat_gen
                if gen > self._checked:
                    return gen, plan.beats[beat]
        return None

    def _fork_if_hit(self) -> bool:
        """With the feed on a beat line: if a hit starts there, fork a side stretcher that never
        hears it (it plays the output up to the line: no pre-echo of the hit). False while the
        line's audio is not all generated yet."""
        found = self._next_line()
        if found is None or self._fed != found[0]:
            return True
        line, out = found
        if self.generated_end < line + max(ONSET_AFTER, AFTER + FADE):
            return False
        lo = line - self._material_base
        before = self._material[max(lo - ONSET_BEFORE, 0) : lo]
        after = self._material[lo : lo + ONSET_AFTER]
        power_before = float(np.mean(np.square(before))) if len(before) else 0.0
        power_after = float(np.mean(np.square(after)))
        self._checked = line
        if power_after > ONSET_FLOOR and power_after > ONSET_RATIO * power_before and self._side is None:
            self._side = (self._stretcher.copy(), line, out)
        return True

    def _hand_over(self, audio: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Around a hit's beat line: the side stretcher's output up to the line (fed silence from
        the hit on, it never smears the hit back before it; its state is the main's own up to
        there, so the two agree where the side takes over), then the hit's first AFTER samples
        as generated, then the main stretcher, with FADE-long fades between."""
        side, hit, line = self._side  # type: ignore[misc]
        pos = np.arange(self._emitted, self._emitted + len(out))
        w_side = 1.0 - _rise(pos, line - FADE)  # the hit as generated is whole from the line on
        w_main = _rise(pos, line + AFTER)
        w_copy = 1.0 - w_side - w_main
        mixed = w_main[:, None] * out  # exactly 0 before the line: nothing after it is heard before it
        if side is not None:
            mixed += w_side[:, None] * side.process(self._before_line(hit, len(audio)), len(out))
        span = (pos >= line - FADE) & (pos < line + AFTER + FADE)
        if span.any():
            first, last = int(np.argmax(span)), len(span) - int(np.argmax(span[::-1]))
            src = hit + int(pos[first]) - line - self._material_base
            lead = max(-src, 0)  # before the stream's first sample: silence
            mixed[first + lead : last] += w_copy[first + lead : last, None] * self._material[src + lead : src + last - first]
        end = int(pos[-1]) + 1
        self._side = None if end >= line + AFTER + FADE else (side if end < line else None, hit, line)
        return mixed.astype(np.float32, copy=False)

    def _before_line(self, line: int, n: int) -> np.ndarray:
        """The side stretcher's next `n` input samples from the feed: the stream up to the line,
        then silence (what follows the line never reaches it)."""
        quiet = self._material[self._fed - self._material_base : self._fed + n - self._material_base].copy()
        quiet[max(line - self._fed, 0) :] = 0.0
        return quiet

    def _segment(self, synth: int, flush: bool) -> tuple[int, float, float, int] | None:
        """(output anchor, its generated position, rate, output end) of the stretch segment
        holding output position `synth`: a beat, the pre-roll before the first bar, or (when
        flushing) the stretcher's tail after the last."""
        plan = next((p for p in self._plans if p.out_end > synth), None)
        if plan is not None:
            if synth < plan.out_start:
                return plan.out_start, plan.gen_start, 1.0, plan.out_start
            return plan.segment_at(synth)
        end = self._planned_out_end + self._out_latency  # synthesised this far, the last bar is all emitted
        if flush and self._stream_start is not None and synth < end:
            return self._planned_out_end, self._planned_gen_end, 1.0, end
        return None

    def _trim(self) -> None:
        """Drop generated audio no longer needed: fed, and not a hit's (played as generated) nor
        the 20 ms before the next beat line (its hit check)."""
        keep = self._fed - ONSET_BEFORE if self._side is None else min(self._fed - ONSET_BEFORE, self._side[1] - FADE)
        drop = keep - self._material_base
        if drop > 0:
            self._material = self._material[drop:]
            self._material_base = keep


def _rise(pos: np.ndarray, at: int, length: int = FADE) -> np.ndarray:
    """0 before `at`, a raised-cosine rise over `length` samples, then 1."""
    w = np.clip((pos - at + 0.5) / length, 0.0, 1.0)
    return (0.5 - 0.5 * np.cos(np.pi * w)).astype(np.float32)
