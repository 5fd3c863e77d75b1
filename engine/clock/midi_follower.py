"""Follow an external MIDI clock (24 ppqn): tempo, phase and transport from timestamped messages.

Tempo: the least-squares line through the last 2 bars of ticks (8 beats). Phase: that
line's time at the newest tick, corrected by a steady-state Kalman filter of a wandering
phase (the local-level model: a random walk seen through white jitter), whose gain follows
the clock's measured jitter and wander (`_TimingNoise`): 0 for white jitter (the line is
the best estimate), near 1 for a frame-exact clock that wanders (jack_midi_clock -J: the
newest tick is). Changes: each tick's innovation, in standard deviations of that filter,
feeds a two-sided CUSUM (Page's test); a step or ramp adds up on one side and restarts
the window where it began, wander and jitter sum to nothing. A tick beyond 5 sigma (at
least `jump_threshold`) is held back as a late tick. During a ramp (curvature clearly
above the timing noise) the tempo is the tangent of a parabola through the newest 2.5 beats.
At a change the detector found, a step and a ramp are both fitted (`_ramp_start`): a step
restarts the window, a ramp keeps it and bends the line where the ramp began, so the steady
ticks before it pin the period it left from (under USB-like jitter a ramp's first beats
lagged 2.6 BPM, now within 0.5 BPM at 99.7 % of ticks from two beats in, the two after its
end left out: `python -m bench --only clock`, `clock.ramp_tempo_error_*`). Only where the
clock's noise is jitter, not wander: a random walk looks like a step and a ramp by turns.

Why this and not a delay-locked loop (Adriaensen, "Using a DLL to filter time", as JACK
uses) or a Kalman filter of phase and period: a clock's tempo is judged against its own
ticks regressed over the last 2 bars, and under jack_midi_clock's -J (a random walk of
the phase, see `engine.clock.synthetic.jack_midi_clock`) that reference itself moves by
~0.6 BPM (1 sd) at -J 10. Measured at 133 BPM, 6 seeds x 40 bars, p99 tempo error
against it at -J 1 / 5 / 10: a second-order DLL 0.07 / 0.38 / 0.80 BPM at its best
bandwidth (0.1 Hz; 0.09 / 0.48 / 1.0 at 0.2 Hz), a phase+period Kalman filter 0.11 /
0.55 / 1.11; any estimator that averages the intervals with other weights than the
regression's is that far off, and only the regression itself is within 0.2 BPM (this
follower's tempo is that regression, so its error is 0 by construction: the figure says the
reference is met, not that the line beats the others). The Kalman filter does predict the phase
better (one bar ahead, p99 28.8 ms at -J 10 vs 36.7 for the plain line), which is why the
phase here comes from its local-level form on top of the line (30.5 ms; `python -m bench --only clock`). The old
follower (1-beat line, a tick 3 ms off the line three times in a row = a tempo jump) took
wander for jumps: p99 3.2 BPM at -J 5, 8.8 at -J 10. Lost ticks (a whole period early on
the prediction), repeated ones (a period late) and delayed ones (beyond 5 sigma, then back)
are told apart from a change because each lands a known way off the prediction.

A tick lost while the window is young (just after Start, or after the clock came back from a
dropout) is counted once a few intervals give the period.

Pure: no threads, no clock reads. The MIDI input callback (or a test) calls
`feed(message, t)` with the arrival time; the scheduler calls `estimate(t)`.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import mido
import numpy as np

from engine.ratelog import RateLimitedLog
from engine.clock.estimate import PPQN, ClockEstimate, ClockState
from engine.timeline import BPM_RANGE

logger = logging.getLogger(__name__)

_OUTLIER_SIGMAS = 5.0  # a tick this many standard deviations off its prediction is held back
_LEAST_SIGMA = 50e-6  # s: a frame-exact clock's innovations are a frame or two (21 us at 48 kHz)
_NOISE_SETTLE = 96  # ticks of noise measurements before a small sigma is believed
_CUSUM_DRIFT = 1.0  # standard deviations of innovation the change detector forgives per tick
_CUSUM_ALARM = 12.0  # ...and the sum that means the tempo changed: 3 held-back ticks in a row (3 x (5 - 1))
_RAMP_TICKS = 60  # 2.5 beats: the ramp tangent is taken from these newest ticks (48 under USB-like jitter: 0.6 BPM off)
_MIN_POINTS_TO_JUDGE = 12  # below this the line itself is too uncertain to call a tick an outlier
_NOISE_MEMORY_WINDOWS = 8  # timing noise is averaged over this many windows
_MIN_POINTS_TO_RELABEL = 4  # three intervals: their median is a period even when one holds a lost tick
_WHOLE_PERIODS = 0.25  # every interval of a young window within this many periods of a whole number, to relabel it
_SAME_TEMPO = 0.1  # a clock back from a dropout within this fraction of its old period is numbered by the old line
_WANDER_SCATTER = 2.85  # sd of the wander estimate under white jitter j from N ticks, in units of j / sqrt(N)
_WANDER_CLEAR = 3.0  # ...and how many of those it must stand clear of to count (at 2, 3 USB clocks of 40 read
# 0.11-0.14 ms of wander a tick that is not there: their ramps went unseen for 2.5 beats, 2.1 BPM off)
_CURVED_SDS = 4.0  # curvature beyond this many standard errors of the clock's noise is a ramp
_HINGE_SEARCH = 48  # ticks before the change detector's evidence began where a ramp's start is looked for
_HINGE_STEP = 3  # ...every this many ticks
_WANDER_BESIDE_JITTER = 0.25  # wander (variance) under this share of the jitter leaves a bend to be judged
_RAMP_MARGIN = 9.0  # jitter variances by which a bent line must fit better than a step (a 1 BPM step is not a ramp)
_FIT_SLACK = 1.5  # ...and its residuals at most this many times the clock's jitter: ticks a stall shifted fit no bend
_REPEAT_WITHIN = 0.3  # periods: a tick this soon after the last, in a young window, repeats it (a cycle JACK ran twice)


@dataclass(frozen=True, slots=True, kw_only=True)
class FollowerConfig:
    """Knobs of the follower; defaults suit a drum machine or DAW clock with a few ms jitter."""

    window_beats: float = 8.0
    """Regression window for the tempo: 2 bars of 4/4, as the reference a clock's tempo is
    judged by (its own ticks regressed over the last 2 bars). Longer rejects more jitter;
    shorter follows a wandering clock's tempo more closely. A step or ramp restarts it."""
    jump_threshold: float = 0.003
    """Seconds off the prediction a tick may be before it is suspected, at least: the clock's
    measured timing noise (5 standard deviations of its one-tick prediction error) raises it."""
    lost_after_ticks: float = 4.0
    """Tick periods without a clock before the clock counts as missing (coasting)."""
    grace: float = 1.0
    """Seconds of coasting before the follower holds and reports the clock as lost."""

    def __post_init__(self) -> None:
        if not 0.25 <= self.window_beats <= 64:
            raise ValueError(f"window_beats must be in 0.25..64, got {self.window_beats}")
        if not 0.0 < self.jump_threshold <= 0.1:
            raise ValueError(f"jump_threshold must be in 0..0.1 s, got {self.jump_threshold}")
        if not 1.5 <= self.lost_after_ticks <= 96:
            raise ValueError(f"lost_after_ticks must be in 1.5..96, got {self.lost_after_ticks}")
        if not 0.0 <= self.grace <= 60:
            raise ValueError(f"grace must be in 0..60 s, got {self.grace}")


def _coefficient_sd(a: np.ndarray, k: np.ndarray, jitter: float, wander: float) -> float:
    """Standard deviation of the fitted coefficient with weights `a` on the ticks' times, under
    jitter and wander (variances per tick, `_TimingNoise`)."""
    tails = np.cumsum(a[::-1])[::-1][1:]  # a wander step before tick m moves ticks m.. alike
    return float(np.sqrt(jitter * float(a @ a) + wander * float(np.diff(k) @ (tails * tails))))


def _hinge_basis(k: np.ndarray, hinge: float) -> np.ndarray:
    """Columns 1, k and (k - hinge)² after the hinge: a steady tempo that starts to ramp at `hinge`."""
    return np.stack([np.ones_like(k), k, np.maximum(0.0, k - hinge) ** 2], axis=1)


def _best_split_ssr(k: np.ndarray, t: np.ndarray, first: float) -> float:
    """The least sum of squared residuals of two lines, one through the ticks before a split and
    one from it, over every split from `first` to the newest three ticks with at least
    `_MIN_POINTS_TO_JUDGE` ticks before it. From running sums, so all splits cost one pass
    (a least-squares fit per split took 4-7 ms a tick on this VM)."""
    t = t - k * (t[0] / k[0] if k[0] else 0.0)  # detrended by the chord: the sums stay small

    def ssr(cols: np.ndarray) -> np.ndarray:  # rows: counts, sums of k, t, k², kt, t² -> the line's SSR
        n, sk, st, skk, skt, stt = cols
        with np.errstate(invalid="ignore", divide="ignore"):
            vkk, vkt, vtt = skk - sk * sk / n, skt - sk * st / n, stt - st * st / n
            return np.where(vkk > 0, vtt - vkt * vkt / vkk, vtt)

    moments = np.stack([np.ones_like(k), k, t, k * k, k * t, t * t])
    head = np.cumsum(moments, axis=1)  # column i: the sums over ticks 0..i
    total = head[:, -1:]
    split = np.arange(_MIN_POINTS_TO_JUDGE, len(k) - 2)  # the new line starts at tick index `split`
    split = split[k[split] >= first]
    if len(split) == 0:
        return float("inf")
    before = head[:, split - 1]
    return float(np.min(ssr(before) + ssr(total - before)))


def _line_at_end(k: np.ndarray, t: np.ndarray, noise: _TimingNoise, hinge: float | None = None) -> tuple[float, float, bool]:
    """Time and period at k = 0 (the newest tick) from a least-squares fit, and whether it follows a ramp.

    A straight line when the tempo is steady; during a ramp (curvature clearly above the
    clock's own timing noise: |c| > 4 standard errors, see `_TimingNoise`) the tangent of a
    parabola at the newest tick, which follows the ramp instead of lagging half a window
    behind it. After a ramp's start was found (`hinge`, see `MidiClockFollower._ramp_start`),
    the tangent of a line that bends there: its steady part pins the period the ramp left from.
    """
    if hinge is not None:
        x = _hinge_basis(k, hinge)
        coef = np.linalg.lstsq(x, t, rcond=None)[0]
        noise.update(t - x @ coef)
        return float(coef[0] + coef[2] * hinge * hinge), float(coef[1] - 2.0 * coef[2] * hinge), True
    if len(k) >= _MIN_POINTS_TO_JUDGE:
        x = np.stack([np.ones_like(k), k, k * k], axis=1)
        weights = np.linalg.pinv(x)  # row i: the weights of the ticks' times in coefficient i
        coef = weights @ t
        jitter, wander = noise.update(t - x @ coef)
        if abs(coef[2]) > _CURVED_SDS * _coefficient_sd(weights[2], k, jitter, wander):
            recent = x[-_RAMP_TICKS:]  # the tangent from the newest ticks only: a ramp that ends is left in a beat or two
            coef = np.linalg.lstsq(recent, t[-_RAMP_TICKS:], rcond=None)[0]
            return float(coef[0]), float(coef[1]), True
    km, tm = k.mean(), t.mean()
    period = float(((k - km) * (t - tm)).sum() / ((k - km) ** 2).sum())
    return float(tm - period * km), period, False


def _line_ssr(k: np.ndarray, t: np.ndarray) -> float:
    """Sum of squared residuals of the least-squares line of `t` on `k`."""
    x = np.stack([np.ones_like(k), k], axis=1)
    return float(np.sum((t - x @ np.linalg.lstsq(x, t, rcond=None)[0]) ** 2))


class _TimingNoise:
    """A clock's timing noise, jitter and wander, as variances (s²) averaged over several windows.

    Jitter: each tick stamped off by its own amount (MIDI transport, a callback's wake-up).
    Wander: each interval off by its own amount, so the time error adds up (a sender's
    drifting clock, jack_midi_clock -J): a random walk, whose residuals are correlated and
    which looks curved far more often than white noise of its size. A curvature test that
    assumes jitter only takes wander for a ramp. In the fit residuals' successive
    differences e, jitter j gives var(e) = 2j and lag-1 covariance -j; wander w per tick
    gives var(e) = w and none. Both belong to the clock and its transport and change slowly,
    unlike its tempo, so they are averaged over several windows: one window's estimate is
    noisy, and under heavy jitter shows wander that is not there, hiding a ramp's start.
    """

    def __init__(self, *, memory: int) -> None:
        self._decay = 1.0 - 1.0 / memory
        self._sums = np.zeros(3)  # weight, var(e), lag-1 covariance of e
        self.last = (0.0, 0.0)  # (jitter, wander) after the latest update
        self.updates = 0
        self._ticks = 0.0  # about how many distinct ticks the averages hold

    def update(self, residual: np.ndarray) -> tuple[float, float]:
        """Add one window's residuals; return (jitter, wander)."""
        e = np.diff(residual)
        self.updates += 1
        self._sums *= self._decay
        self._sums += (1.0, float(e @ e) / len(e), float(e[1:] @ e[:-1]) / (len(e) - 1))
        g0, g1 = self._sums[1:] / self._sums[0]
        jitter = max(0.0, -g1)
        # Wander only where it stands clear of what jitter alone reads as wander: under white jitter j the
        # estimate g0 + 2 g1 from N ticks scatters by 2.85 j / sqrt(N) (simulated), and its upper tail
        # hides a ramp's curvature (a USB clock 16 bars in read 0.18 ms of wander a tick that is not there).
        # The windows overlap, one new tick each: the ticks behind it are the first window's, then one
        # per update, decayed alike (about: a window restarted at a change adds its first ticks as one).
        self._ticks = self._ticks * self._decay + 1.0 if self.updates > 1 else float(len(residual))
        scatter = _WANDER_SCATTER * jitter / np.sqrt(self._ticks)
        self.last = (jitter, max(0.0, g0 + 2.0 * g1 - _WANDER_CLEAR * scatter))
        return self.last

    def phase_tracker(self) -> tuple[float, float]:
        """Gain and innovation variance (s²) of the steady-state Kalman filter of a phase that
        wanders through jitter (a random walk seen through white noise: the local-level model).

        Wander only: gain 1, the newest tick is the phase. Jitter only: gain 0, the line is.
        """
        jitter, wander = self.last
        prior = 0.5 * (wander + np.sqrt(wander * wander + 4.0 * wander * jitter))
        innovation = prior + jitter
        return (prior / innovation if innovation > 0.0 else 1.0), innovation


class MidiClockFollower:
    """Estimate tempo, phase and transport of an incoming 24-ppqn MIDI clock."""

    def __init__(self, *, config: FollowerConfig | None = None) -> None:
        self.config = config or FollowerConfig()
        self._window: deque[tuple[int, float]] = deque(maxlen=max(3, round(self.config.window_beats * PPQN)))
        self._pending: list[tuple[int, float]] = []
        self._noise = _TimingNoise(memory=_NOISE_MEMORY_WINDOWS * self._window.maxlen)
        self._fit: tuple[float, float, int] | None = None  # (phase: time of raw tick k0, period, k0)
        self._offset = 0.0  # the phase tracker's time at the newest tick, minus the line's
        self._seen = 0.0  # mean square of the innovations of the ticks taken (s²), over about a window
        self._seen_n = 0
        self._cusum = [0.0, 0.0]  # change detector: evidence the ticks come late (0) or early (1)
        self._since: list[int | None] = [None, None]  # raw tick where that evidence began
        self._raw = -1  # raw index of the last clock (counts every clock, playing or not)
        self._last_t: float | None = None
        self._before: tuple[list[tuple[int, float]], int] = ([], 0)  # ticks before a step, and where it began
        self._hinge: int | None = None  # raw tick where a ramp began, while the window holds steady ticks before it
        self._ramping = False  # the last fit followed a ramp (a bend or the window's own curvature)
        self._lost_line: tuple[int, float, float] | None = None  # (raw, time, period) of the last tick before a dropout
        self._playing = False
        self._base: tuple[int, int] = (0, 0)  # (raw tick, song tick) while playing
        self._resume_tick = 0  # song tick the next clock gets after Start/Continue
        self._armed = False  # Start/Continue seen, waiting for its first clock
        self._epoch = 0
        self._log = RateLimitedLog(logger)
        self.counters = {"clocks": 0, "rejected": 0, "jumps": 0, "dropouts": 0, "missed": 0, "duplicates": 0, "ignored": 0}

    # -- input ----------------------------------------------------------------------
    def feed(self, message: mido.Message, t: float) -> None:
        """Take one MIDI message that arrived at monotonic time `t` (seconds).

        Runs on whichever thread delivers MIDI input (rtmidi's callback thread, or the
        caller's in tests); it only updates this object's state, never blocks.
        """
        if self._last_t is not None and t < self._last_t:
            self._log.warn("time", "MIDI clock: message at %.6f s is older than the last (%.6f s); dropped", t, self._last_t)
            self.counters["ignored"] += 1
            return
        kind = getattr(message, "type", None)
        if kind == "clock":
            self._clock(t)
        elif kind == "start":
            self._resume_tick = 0
            self._armed, self._playing = True, False
        elif kind == "continue":
            self._armed, self._playing = True, False
        elif kind == "stop":
            if self._playing:
                self._resume_tick = self._song_tick(self._raw) + 1
            self._playing = self._armed = False
        elif kind == "songpos":
            if self._playing:  # not allowed while playing; treat as a relocation at the next clock
                self._armed, self._playing = True, False
            self._resume_tick = int(message.pos) * 6
        elif not isinstance(message, mido.Message):
            self._log.warn("type", "MIDI clock: expected a mido.Message, got %r; ignored", type(message).__name__)
            self.counters["ignored"] += 1

    def join_running(self) -> None:
        """Take the next clock as a Continue from song tick 0 unless a Start, Continue or Song
        Position Pointer comes first (main thread, before the loop; feed's thread reads it).

        Crash recovery: an engine restarted mid-show (the runner restored a show that was
        playing) hears a clock that is already running and will send no Start until the next
        song; it would otherwise wait, silent, for the drummer's next Start (seen in the soak:
        22 s of silence after a SIGKILL and restart). MIDI gives a slave that joins mid-song no
        position, so its bar lines are its own, on the clock's ticks and tempo, until a Start or
        a Song Position Pointer and Continue place them again.
        """
        if not self._playing and not self._armed:
            self._resume_tick, self._armed = 0, True

    def _clock(self, t: float) -> None:
        self.counters["clocks"] += 1
        raw = self._raw + 1
        returned = False
        lost_line = None
        if self._fit is not None and self._last_t is not None:
            period = self._fit[1]
            gap = t - self._last_t
            if gap > self.config.lost_after_ticks * period:
                # The clock was lost; assume the sender kept its tempo and count the ticks we missed.
                raw = self._raw + max(1, round(gap / period))
                self.counters["dropouts"] += 1
                logger.info("MIDI clock back after %.3f s; assuming %d ticks were missed", gap, raw - self._raw - 1)
                # Back on the old line (a short hole: cycles JACK skipped), the window goes on;
                # off it, the sender's phase moved: the new ticks get a window of their own.
                returned = abs(t - self._predict(raw)) > self._outlier_bound()
                lost_line = (self._raw, self._last_t, period)
            else:
                fitted = self._fitted_index(t)
                if fitted is None and len(self._window) < _MIN_POINTS_TO_JUDGE and gap < _REPEAT_WITHIN * period:
                    fitted = self._raw  # too young a window to judge by its line: a repeat by the last tick's time
                if fitted is not None and fitted <= self._raw:
                    self.counters["duplicates"] += 1
                    self._log.warn("dup", "MIDI clock: a tick at %.6f s repeats tick %d on the line; ignored", t, fitted)
                    return
                if fitted is not None and fitted > raw and not self._pending:  # pending: maybe a tempo change
                    self.counters["missed"] += fitted - raw
                    self._log.warn("missed", "MIDI clock: %d tick(s) missing before %.6f s (they fall on the line); "
                                   "counted", fitted - raw, t)
                    raw = fitted
        self._raw = raw
        self._last_t = t
        if self._armed:
            self._base = (raw, self._resume_tick)
            self._armed, self._playing = False, True
            self._epoch += 1
            returned = self._fit is not None
        if returned:
            self._restart(raw, t)
            self._lost_line = lost_line
            return
        self._add_point(raw, t)

    def _restart(self, raw: int, t: float) -> None:  # self._fit is not None
        """The first clock after Continue, Start, a Song Position Pointer or a dropout while ticks were known.

        A sender restarted (by hand, or a JACK transport relocating) starts its ticks at a
        phase the old ones do not predict, up to half a tick off their line: held back as late
        ticks, the estimate would place the new song grid by the old line for the 3 ticks the
        change detector needs, and the window it then restarts from keeps one old tick, which
        bends the tempo for two bars (measured live at 120 BPM, a restart 0.45 tick off: the
        bars after Continue 9.4 ms early, then 1-2.5 ms late for two bars). The new ticks start
        a window of their own, from this one, at the old period until a few give their own.

        A clock back from a dropout off the old line is the same: its phase is wherever the
        sender's clock has got to. Held back against the old line instead, a tick lost among its first dozen
        (JACK skipping a cycle) went uncounted, and the song position stayed a tick early for
        good (any one of the 2nd to 11th ticks back, 120 BPM, back 0.4 tick late); in a window
        of its own the young-window relabelling counts it. A tick repeated there (a cycle JACK
        ran twice) is told by its time against the last tick's: counted as a new one, it put the
        song position a tick late for good (CI, stop 26's session: every beat 20.8 ms late).
        """
        self._window.clear()
        self._window.append((raw, t))
        self._pending.clear()
        self._reset_detector()
        self._lost_line = None
        self._hinge = None
        self._ramping = False
        self._before = ([], raw)
        self._fit = (t, self._fit[1], raw)

    def _fitted_index(self, t: float) -> int | None:
        """The tick index whose predicted time is within the tolerance of `t`, when that is not the next one.

        A source stamped exactly (e.g. in JACK frames) can drop a tick (a skipped audio cycle)
        or repeat one; a tick that lands on the prediction a whole period early or late is that, not
        jitter. None while the line is young, or when `t` fits the next tick or no tick at all.
        The tolerance is the outlier bound (`_sigma`), at most 0.3 periods so that whole ticks
        stay apart. (A tempo that halves exactly looks like every other tick missing; no clock can tell.)
        """
        if self._fit is None or len(self._window) < _MIN_POINTS_TO_JUDGE:
            return None
        period = self._fit[1]
        index = self._raw + round((t - self._predict(self._raw)) / period)
        tolerance = min(self._outlier_bound(), 0.3 * period)
        if index == self._raw + 1 or abs(t - self._predict(index)) > tolerance:
            return None
        return index

    def _sigma(self) -> float:
        """Standard deviation of a tick's time around its prediction: the clock's measured jitter
        and wander (`_TimingNoise.phase_tracker`), at least `_LEAST_SIGMA`; until that noise has
        been measured over `_NOISE_SETTLE` ticks, at least a fifth of `jump_threshold`."""
        _, innovation = self._noise.phase_tracker()
        least = _LEAST_SIGMA if self._noise.updates >= _NOISE_SETTLE else self.config.jump_threshold / _OUTLIER_SIGMAS
        return max(float(np.sqrt(max(innovation, self._seen))), least)

    def _outlier_bound(self) -> float:
        """Seconds off the prediction beyond which a tick is held back: 5 sigma, at least `jump_threshold`."""
        return max(_OUTLIER_SIGMAS * self._sigma(), self.config.jump_threshold)

    def _add_point(self, raw: int, t: float) -> None:
        """Judge a tick against the prediction: take it, hold it back as an outlier, or restart at a change.

        The innovation (tick minus prediction, in standard deviations of `_sigma`) feeds a
        two-sided CUSUM (Page's test): each tick adds its innovation, clipped to the outlier
        bound, less a drift of one. Wander and jitter (innovations of one sigma, either side)
        sum to nothing; a tempo step or ramp adds up on one side until the alarm, which
        restarts the window where that side's evidence began. A tick beyond the bound is held
        back, not fitted: one or two late ticks leave the detector short of the alarm.
        """
        if self._fit is None or len(self._window) < _MIN_POINTS_TO_JUDGE:
            self._window.append((raw, t))
            self._reset_detector()
            if self._lost_line is not None:
                self._recount_dropout()
            else:
                self._relabel_young_window()
            self._refit()
            return
        innovation = t - self._predict(raw)
        clipped = min(max(innovation / self._sigma(), -_OUTLIER_SIGMAS), _OUTLIER_SIGMAS)
        for side, evidence in enumerate((clipped, -clipped)):
            self._cusum[side] = max(0.0, self._cusum[side] + evidence - _CUSUM_DRIFT)
            if self._cusum[side] == 0.0:
                self._since[side] = None
            elif self._since[side] is None:
                self._since[side] = raw
        side = 0 if self._cusum[0] >= self._cusum[1] else 1
        if self._cusum[side] >= _CUSUM_ALARM:
            start = self._since[side]
            assert start is not None
            points = [*self._window, *self._pending, (raw, t)]
            self._hinge = self._ramp_start(points, start)
            self._window.clear()
            if self._hinge is not None:  # a ramp: the steady ticks before it stay, pinning the period it left from
                self._window.extend(points)
                self._before = ([], start)
            else:  # a step, or a ramp too young to tell: the line starts again where it began
                before = [p for p in points if p[0] < start]
                self._window.extend([*before[-1:], *(p for p in points if p[0] >= start)])
                self._before = (before[:-1], start)
            self._pending.clear()
            self.counters["jumps"] += 1
            self._reset_detector()
            self._refit()
            return
        if abs(innovation) <= self._outlier_bound():
            self._seen_n = min(self._seen_n + 1, self._window.maxlen)
            self._seen += (innovation * innovation - self._seen) / self._seen_n
            if self._pending:
                self.counters["rejected"] += len(self._pending)
                self._pending.clear()
            self._window.append((raw, t))
            self._ramp_after_step()
            self._refit()
            return
        self._pending.append((raw, t))

    def _ramp_after_step(self) -> None:
        """Ask again, for 2.5 beats (`_RAMP_TICKS`) after a step was taken, whether it was the start of a ramp.

        A ramp can set off the change detector before its curvature stands clear of USB-like
        jitter (110 -> 140 BPM over 32 beats: an alarm 1 beat in); the restarted line then lagged
        it by up to 0.9 BPM until the window's own curvature showed, 1.7 beats later. The ticks
        before the step are kept that long, and once a bent line through them and the new ones
        is clearly better, it is taken as in `_ramp_start`.
        """
        before, start = self._before
        if not before:
            return
        if len(self._window) > _RAMP_TICKS:
            self._before = ([], start)
            return
        points = [*before, *self._window]
        hinge = self._ramp_start(points, start)
        if hinge is not None:
            self._window.clear()
            self._window.extend(points)
            self._hinge = hinge
            self._before = ([], start)

    def _ramp_start(self, points: list[tuple[int, float]], start: int) -> int | None:
        """Where a ramp began, when the change the detector found at `start` is one; None for a step.

        A step restarts the window where the evidence began, and a line through the new ticks
        follows it. A ramp's new ticks curve away from the old line, and a line through them
        alone lags half their span of ramp (USB-like jitter, a 30 BPM ramp over 32 beats: up
        to 2.6 BPM off from two beats in, until the window's own curvature shows). So here
        both are fitted to the window and the new ticks: the step as two lines (before `start`,
        and from it), the ramp as a line that bends at a hinge (searched up to `_HINGE_SEARCH`
        ticks before `start`, as the evidence begins after the change). The ramp is taken when
        it fits better by `_RAMP_MARGIN` jitter variances with a parameter fewer (a 1 BPM step
        two beats in fits a bend nearly as well, and the bend's tangent overshoots it), its
        curvature stands clear of the clock's noise, and its residuals are the clock's jitter
        (`_FIT_SLACK`): ticks a stall shifted (a burst off the line, then back) fit no bend and
        keep the step's restart. Not under wander beyond a quarter of the jitter (see the module
        docstring; a USB clock read up to 0.07 of its jitter in wander that is not there).

        Once the hinge leaves the window, the window's own curvature test takes over (a bend
        kept longer followed a ramp's end 1.1 BPM off).
        """
        jitter, wander = self._noise.last
        if wander > _WANDER_BESIDE_JITTER * jitter:  # a random walk looks like a step and like a ramp by turns:
            return None  # the line's restart is safer
        pts = np.asarray(points, dtype=np.float64)
        k, t = pts[:, 0] - pts[-1, 0], pts[:, 1] - pts[-1, 1]
        at = float(start - pts[-1, 0])
        hinges = [h for h in np.arange(at, at - _HINGE_SEARCH - 1, -_HINGE_STEP)
                  if (k < h).sum() >= _MIN_POINTS_TO_JUDGE and -h >= _MIN_POINTS_TO_JUDGE]
        if not hinges:
            return None
        # The step at its own best place: anywhere from the search's start to the newest two ticks (a step
        # the detector caught a few ticks after it has a short new line, which a bend cannot fit).
        step = _best_split_ssr(k, t, at - _HINGE_SEARCH)
        best: tuple[float, int] | None = None
        for hinge in hinges:
            x = _hinge_basis(k, hinge)
            weights = np.linalg.pinv(x)
            coef = weights @ t
            ssr = float(np.sum((t - x @ coef) ** 2))
            clear = abs(coef[2]) > _CURVED_SDS * _coefficient_sd(weights[2], k, jitter, wander)
            if clear and ssr <= min(step - _RAMP_MARGIN * jitter, _FIT_SLACK * jitter * (len(k) - 3)):
                if best is None or ssr < best[0]:
                    best = (ssr, int(hinge))
        return None if best is None else int(pts[-1, 0]) + best[1]

    def _reset_detector(self) -> None:
        self._cusum = [0.0, 0.0]
        self._since = [None, None]
        self._offset = 0.0

    def _relabel_young_window(self) -> None:
        """Count the ticks lost while the window is too young to judge single ticks.

        A tick lost in the first few after Start (JACK skipping a cycle) leaves a gap of
        two periods among a handful of points; numbered as one, it bends the line, reads as
        a tempo jump a few ticks later, and the song position stays a tick late for good.
        Once a few intervals are known, their median is the period and a gap of n periods
        is n ticks; those labels are taken when every interval is close to whole periods (a
        tick 0.6 periods late leaves a gap of 1.6 and then 0.4: not a lost tick) and a line
        fits them better.
        """
        if len(self._window) < _MIN_POINTS_TO_RELABEL:
            return
        k, t = np.asarray(self._window, dtype=np.float64).T
        dt = np.diff(t)
        period = float(np.median(dt))
        if period <= 0.0:  # repeated ticks; nothing to tell a period by yet
            return
        steps = np.maximum(1.0, np.rint(dt / period))
        if np.any(np.abs(dt / period - steps) > _WHOLE_PERIODS):  # a late tick, not whole ticks lost
            return
        labels = k[0] + np.concatenate(([0.0], np.cumsum(steps)))
        if np.array_equal(labels, k) or _line_ssr(labels, t) >= _line_ssr(k, t):
            return
        self.counters["missed"] += int(labels[-1]) - self._raw
        self._log.warn("missed", "MIDI clock: %d tick(s) missing among the last %d (gaps of whole periods); counted",
                       int(labels[-1]) - self._raw, len(k))
        self._renumber(k, t, labels, np.ones(len(k), dtype=bool))

    def _renumber(self, k: np.ndarray, t: np.ndarray, labels: np.ndarray, keep: np.ndarray) -> None:
        """The young window's ticks `k` (at times `t`) numbered `labels` instead, those in `keep`
        kept; the song position's base and the newest tick's number follow."""
        relabel = {int(old): int(new) for old, new in zip(k, labels)}
        self._window.clear()
        self._window.extend(zip(labels[keep].astype(np.int64).tolist(), t[keep].tolist()))
        self._base = (relabel.get(self._base[0], self._base[0]), self._base[1])
        self._raw = int(labels[-1])

    def _recount_dropout(self) -> None:
        """Number the first few ticks back from a dropout by their times, not by the first one's gap.

        The count on return is the gap from the last tick before to the first back, in periods.
        A first tick stamped a cycle late (5.3 ms at 48 kHz / 256) from a sender back 0.4 tick
        off its old line tips it to a tick too many, and the song position stays a tick late
        for good. Once `_MIN_POINTS_TO_RELABEL` ticks are back, their common phase against the
        old line (a circular mean, so one late tick moves it by a fraction) and each one's time
        number them all, at the old period (the sender kept its tempo): a tick lost or repeated
        among them is numbered right too.
        """
        if self._lost_line is None or len(self._window) < _MIN_POINTS_TO_RELABEL:
            return
        lost_raw, lost_t, period = self._lost_line  # numbered once, by the first ticks back
        self._lost_line = None
        k, t = np.asarray(self._window, dtype=np.float64).T
        if abs(float(np.median(np.diff(t))) / period - 1.0) > _SAME_TEMPO:
            return  # back at another tempo: the old period does not number these; the young window's relabelling does
        periods = (t - lost_t) / period
        phase = float(np.angle(np.exp(2j * np.pi * periods).mean())) / (2 * np.pi)
        labels = lost_raw + np.maximum(1, np.rint(periods - phase)).astype(np.int64)
        if np.any(np.diff(labels) < 0) or np.array_equal(labels, k):
            return
        keep = np.concatenate(([True], np.diff(labels) > 0))  # a repeat shares its tick's number
        shift = int(labels[-1]) - self._raw
        self.counters["missed"] += max(0, shift)
        self.counters["duplicates"] += int((~keep).sum())
        self._log.warn("missed", "MIDI clock: the %d ticks back after a dropout numbered by their times: %+d tick(s) "
                       "from the count by the first one's gap", len(k), shift)
        self._renumber(k, t, labels, keep)

    def _refit(self) -> None:
        if len(self._window) < 2:
            return
        pts = np.asarray(self._window, dtype=np.float64)
        k0 = int(pts[-1, 0])
        k = pts[:, 0] - k0
        t = pts[:, 1] - pts[-1, 1]
        if self._hinge is not None and self._hinge <= pts[0, 0]:
            self._hinge = None  # the steady ticks before the ramp left the window: its own curvature tells from here
        at_end, period, ramping = _line_at_end(k, t, self._noise, None if self._hinge is None else float(self._hinge - k0))
        if ramping and not self._ramping:  # the line lagged a ramp now followed: what the detector summed against
            self._reset_detector()  # it is explained (kept, it restarted on a young window 4 BPM off, 4 ticks later)
        self._ramping = ramping
        lo, hi = 60.0 / (BPM_RANGE[1] * PPQN), 60.0 / (BPM_RANGE[0] * PPQN)
        if not lo <= period <= hi:
            self._log.warn("range", "MIDI clock: tempo %.1f BPM is outside %s..%s BPM; ignored",
                           60.0 / (period * PPQN) if period > 0 else 0.0, *BPM_RANGE)
            return
        if len(self._window) >= _MIN_POINTS_TO_JUDGE:  # the phase tracker: smooth the newest tick's residual
            gain, _ = self._noise.phase_tracker()
            self._offset += gain * (-at_end - self._offset)
        self._fit = (float(pts[-1, 1] + at_end + self._offset), period, k0)

    def _predict(self, raw: float) -> float:
        assert self._fit is not None
        t0, period, k0 = self._fit
        return t0 + (raw - k0) * period

    def _song_tick(self, raw: int) -> int:
        return self._base[1] + raw - self._base[0]

    # -- output ---------------------------------------------------------------------
    def estimate(self, t: float) -> ClockEstimate | None:
        """The current view of the song at monotonic time `t`; None until a tempo is known."""
        if self._fit is None or self._last_t is None:
            return None
        _, period, _ = self._fit
        age = max(0.0, t - self._last_t)
        state: ClockState
        if not self._playing:
            state = "stopped"
        elif age <= self.config.lost_after_ticks * period:
            state = "running"
        elif age <= self.config.grace:
            state = "coasting"
        else:
            state = "lost"
        if self._playing:
            ref_tick = float(self._song_tick(self._raw))
            ref_time = self._predict(self._raw)
        else:  # the next clock after Start/Continue gets the resume position
            ref_tick = float(self._resume_tick)
            ref_time = self._predict(self._raw + 1)
        return ClockEstimate(
            tempo_bpm=60.0 / (period * PPQN),
            ref_time=ref_time,
            ref_tick=ref_tick,
            state=state,
            last_clock_age=age,
            epoch=self._epoch,
        )

    def health(self, t: float) -> dict[str, object]:
        """Status-line view: state, tempo, clock age and counters."""
        est = self.estimate(t)
        return {
            "state": est.state if est else "waiting",
            "tempo_bpm": round(est.tempo_bpm, 2) if est else None,
            "last_clock_age": round(est.last_clock_age, 3) if est else None,
            **self.counters,
        }
