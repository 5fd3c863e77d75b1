"""The built-in `synth` generator: no weights, deterministic per seed, fast.

It reads the same per-frame conditioning as the model, at frame resolution:
- drum state 1 starts a percussive hit on the first sample of that frame;
- note states sound pitched voices (2 = onset, 1 = held, 0 = off); when no note is held
  or struck it plays its own melody, one note per drum hit, or on its own pulse when the
  drum state is 0 (no drums: melody only) or no hit has come for 3 s;
- the style embedding sets the timbre (brightness, key, scale, drum tuning, noise, pan)
  through a fixed projection, scaled by the style CFG, so different prompts differ;
- temperature and top-k shape how it picks its own notes (0 = always the likeliest).

It is the engine's default, the stand-in in tests, and the safety net on stage.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.conditioning import DRUM_HIT, DRUM_MASK, DRUM_NONE, NOTE_HELD, NOTE_ONSET, NUM_NOTES, STYLE_DIM, FrameConditioning
from engine.generator.base import Generator
from engine.units import FRAME_SAMPLES, SAMPLE_RATE

_TIMBRE_DIMS = 8
_PARTIALS = 3
_SCALES = (
    (0, 2, 4, 5, 7, 9, 11),  # major
    (0, 2, 3, 5, 7, 8, 10),  # minor
    (0, 2, 3, 5, 7, 9, 10),  # dorian
    (0, 3, 5, 7, 10),  # minor pentatonic
)
_ATTACK = 96  # samples of attack ramp on an onset (2 ms): click-free, still sharp
_SILENT = 1e-4
_OWN_PULSE_AFTER = 75  # frames (3 s) without a drum hit before the synth keeps its own time

# The kick's fixed curves, computed once: a style change re-tunes the kick every frame
# under a fader move, and building these took 1.6 ms each time.
_KICK_T = np.arange(int(0.3 * SAMPLE_RATE)) / SAMPLE_RATE
_KICK_PHASE_PER_HZ = 2 * np.pi * np.cumsum(1 + 3 * np.exp(-_KICK_T / 0.03)) / SAMPLE_RATE
_KICK_FADE = np.clip((_KICK_T[-1] - _KICK_T) / 0.06, 0.0, 1.0)  # its last 60 ms fade out: cut at 0.3 s, it clicked
_KICK_BODY = np.exp(-_KICK_T / 0.09) * (0.5 - 0.5 * np.cos(np.pi * _KICK_FADE))
_KICK_CLICK = np.random.default_rng(7).standard_normal(len(_KICK_T)) * np.exp(-_KICK_T / 0.004)


@dataclass(frozen=True, slots=True)
class Timbre:
    """Sound parameters derived from one style vector."""

    brightness: float
    root: int
    scale: tuple[int, ...]
    drum_hz: float
    noise: float
    decay_s: float
    pan_spread: float
    pulse_frames: int
    kick: np.ndarray

    @classmethod
    def from_style(cls, coords: np.ndarray) -> Timbre:
        s = np.tanh(coords)
        brightness = 0.15 + 0.7 * (s[0] + 1) / 2
        drum_hz = 45.0 + 35.0 * (s[4] + 1) / 2
        noise = 0.05 + 0.5 * (s[5] + 1) / 2
        # the pitch sweep is drum_hz * (1 + 3 e^(-t/30 ms)), so its phase is drum_hz times a fixed curve
        kick = (np.sin(drum_hz * _KICK_PHASE_PER_HZ) * _KICK_BODY + noise * _KICK_CLICK).astype(np.float32)
        return cls(
            brightness=float(brightness),
            root=int(45 + round(5 * s[2])),
            scale=_SCALES[int((s[3] + 1) / 2 * len(_SCALES)) % len(_SCALES)],
            drum_hz=float(drum_hz),
            noise=float(noise),
            decay_s=float(0.15 + 0.6 * (s[6] + 1) / 2),
            pan_spread=float(0.2 + 0.6 * (s[7] + 1) / 2),
            pulse_frames=int(9 + round(4 * (s[1] + 1) / 2)),
            kick=kick,
        )


def _style_vector(style: np.ndarray) -> np.ndarray:
    """A 768-d vector for either an embedding or 12 tokens (tokens are hashed)."""
    if style.shape == (STYLE_DIM,):
        return style.astype(np.float64)
    digest = hashlib.sha256(np.asarray(style, dtype=np.int64).tobytes()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little")).standard_normal(STYLE_DIM) / np.sqrt(STYLE_DIM)


TIMBRE_CACHE = 32  # timbres kept (28 KiB each): enough for A/B switching, bounded under a style-fader flood

class SynthGenerator(Generator):
    """A small additive synth plus kick drum that obeys MRT2-style conditioning."""

    name = "synth"

    def __init__(self, *, seed: int = 0) -> None:
        self._projection = np.random.default_rng(0xB4C).standard_normal((STYLE_DIM, _TIMBRE_DIMS)) * 2.0
        self._timbres: dict[tuple[bytes, float], Timbre] = {}
        self._frame_t = np.arange(FRAME_SAMPLES, dtype=np.float64)
        self._partials = np.arange(1, _PARTIALS + 1, dtype=np.float64)[:, None]
        self.reset(seed)

    # -- state ------------------------------------------------------------------------
    def reset(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        self._preference = self._rng.standard_normal(64)  # the synth's "taste" per scale step
        self._phase = np.zeros(NUM_NOTES)
        self._level = np.zeros(NUM_NOTES)  # envelope level at the end of the last frame
        self._attack = np.zeros(NUM_NOTES, dtype=bool)  # an onset starts this frame
        self._gate = np.zeros(NUM_NOTES, dtype=bool)  # held by the conditioning
        self._auto_note = -1
        self._kick_pos = -1
        self._since_hit = 0
        self._pulse_count = 1 << 30  # the first free-running frame plays at once

    _STATE = ("_rng", "_preference", "_phase", "_level", "_attack", "_gate", "_auto_note", "_kick_pos", "_since_hit",
              "_pulse_count")

    def snapshot(self) -> dict:
        """A copy of the whole state (a few kB); `restore` replays exactly from here."""
        return copy.deepcopy({name: getattr(self, name) for name in self._STATE})

    def restore(self, snapshot: dict) -> None:
        for name, value in copy.deepcopy(snapshot).items():
            setattr(self, name, value)

    def _timbre(self, cond: FrameConditioning) -> Timbre:
        key = (cond.style.tobytes(), cond.sampling.cfg_style)
        timbre = self._timbres.get(key)
        if timbre is None:
            strength = 0.4 + 0.6 * max(cond.sampling.cfg_style, 0.0) / 3.0
            timbre = Timbre.from_style(_style_vector(cond.style) @ self._projection * strength)
            if len(self._timbres) >= TIMBRE_CACHE:
                self._timbres.clear()
            self._timbres[key] = timbre
        return timbre

    # -- generation ---------------------------------------------------------------------
    def generate(self, conditioning: Sequence[FrameConditioning]) -> np.ndarray:
        out = np.empty((len(conditioning) * FRAME_SAMPLES, 2), dtype=np.float32)
        for i, cond in enumerate(conditioning):
            self._frame(cond, out[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES])
        return out

    def _pick_auto_note(self, timbre: Timbre, cond: FrameConditioning) -> int:
        """Choose the next own-melody note: near the last one, shaped by temperature/top-k."""
        steps = [timbre.root + 12 + 12 * octave + degree for octave in range(2) for degree in timbre.scale]
        candidates = np.array(steps)
        previous = self._auto_note if self._auto_note >= 0 else candidates[0]
        logits = -np.abs(candidates - previous) / 4.0 + self._preference[: len(candidates)]
        k = min(cond.sampling.top_k, len(candidates))
        top = np.argsort(-logits)[:k]
        temperature = cond.sampling.temperature
        if temperature <= 1e-6:
            choice = top[0]
        else:
            p = np.exp((logits[top] - logits[top].max()) / temperature)
            choice = self._rng.choice(top, p=p / p.sum())
        return int(candidates[choice])

    def _frame(self, cond: FrameConditioning, out: np.ndarray) -> None:
        timbre = self._timbre(cond)
        notes = cond.notes
        onsets = notes == NOTE_ONSET
        held = onsets | (notes == NOTE_HELD)
        hit = cond.drum == DRUM_HIT
        self._since_hit = 0 if hit else self._since_hit + 1
        own_pulse = False
        if not hit and (cond.drum == DRUM_NONE or self._since_hit >= _OWN_PULSE_AFTER):
            self._pulse_count += 1
            own_pulse = self._pulse_count >= timbre.pulse_frames
            self._pulse_count = 0 if own_pulse else self._pulse_count
        if hit or (own_pulse and cond.drum == DRUM_MASK):
            self._kick_pos = 0
        hit = hit or own_pulse
        # Own melody when the conditioning plays no notes: one pluck per drum hit.
        if hit and not held.any():
            self._auto_note = self._pick_auto_note(timbre, cond)
            self._attack[self._auto_note] = True
        # Explicit notes: onsets (and newly held notes) attack, held sustain, the rest release.
        self._attack |= onsets | (held & ~self._gate)
        self._gate = held

        out.fill(0.0)
        active = np.flatnonzero((self._level > _SILENT) | self._gate | self._attack)
        if active.size:
            self._render_voices(active, timbre, out)
        if self._kick_pos >= 0:
            self._render_kick(timbre, out)
        np.tanh(out, out=out)

    def _render_voices(self, active: np.ndarray, timbre: Timbre, out: np.ndarray) -> None:
        t = self._frame_t
        freqs = 440.0 * 2.0 ** ((active - 69) / 12.0)
        omega = 2 * np.pi * freqs / SAMPLE_RATE  # (V,)
        phases = self._phase[active, None] + omega[:, None] * t  # (V, N)
        amps = timbre.brightness ** (self._partials - 1)  # (P, 1)
        wave = (np.sin(phases[:, None, :] * self._partials[None]) * amps[None]).sum(axis=1) / amps.sum()
        env = np.empty_like(phases)
        decay = np.exp(-t / (timbre.decay_s * SAMPLE_RATE))
        for row, pitch in enumerate(active):
            start = self._level[pitch]
            if self._attack[pitch]:  # onset: 2 ms ramp from the old level to 1, then decay
                ramp = np.minimum(t / _ATTACK, 1.0)
                sustain = 0.5 if self._gate[pitch] else 0.0
                after = sustain + (1 - sustain) * np.exp(-np.maximum(t - _ATTACK, 0) / (timbre.decay_s * SAMPLE_RATE))
                env[row] = np.where(t < _ATTACK, start + (1 - start) * ramp, after)
            elif self._gate[pitch]:
                sustain = 0.5
                env[row] = sustain + (start - sustain) * decay
            else:
                env[row] = start * np.exp(-t / (0.08 * SAMPLE_RATE))  # release
            self._level[pitch] = env[row, -1]
        self._attack[active] = False
        self._phase[active] = (phases[:, -1] + omega) % (2 * np.pi)
        voices = wave * env * 0.35
        pan = 0.5 + timbre.pan_spread * ((active - 60) / 48.0).clip(-0.5, 0.5)
        out[:, 0] += (voices * np.cos(pan * np.pi / 2)[:, None]).sum(axis=0)
        out[:, 1] += (voices * np.sin(pan * np.pi / 2)[:, None]).sum(axis=0)

    def _render_kick(self, timbre: Timbre, out: np.ndarray) -> None:
        kick = timbre.kick
        start = self._kick_pos
        n = min(FRAME_SAMPLES, len(kick) - start)
        if n > 0:
            out[:n] += 0.8 * kick[start : start + n, None]
            self._kick_pos += FRAME_SAMPLES
        else:
            self._kick_pos = -1
