"""Keyboard notes, the sustain pedal and pad hits as MRT2's per-frame note and drum states.

Owned by the scheduler (its thread only): it presses and releases keys as their changes
apply, and asks for each frame's states while it fixes that frame's conditioning.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from engine.conditioning import NOTE_HELD, NOTE_MASK, NOTE_OFF, NOTE_ONSET, NUM_NOTES

MAX_PENDING_PAD_HITS = 64  # hits waiting to be generated; more is a flood, not a roll (dropped)
HIT_MERGE_SAMPLES = 256  # hits heard within 5.3 ms (a 256-frame audio block) of the one before are that hit


RELEASE_FRAMES = 25  # a released key is sent as off for 1 s (25 frames), then the model decides again


class NoteTracker:
    """Keyboard notes as MRT2 note states, one frame at a time (scheduler thread).

    A press is an onset in the next frame generated, however soon the key comes up again (a
    staccato note shorter than a frame still sounds); held while down; off for
    RELEASE_FRAMES after release, then masked. With the sustain pedal down a released key
    stays held until the pedal lifts.
    """

    def __init__(self) -> None:
        self._held: set[int] = set()
        self._sustained: set[int] = set()  # released while the pedal is down: still sounding
        self._onsets: set[int] = set()  # pressed since the last frame
        self._off: dict[int, int] = {}  # released pitch -> frames of off left
        self._pedal = False
        self._pad_hits: deque[int] = deque()  # output samples of hits not yet generated
        self._last_hit: tuple[int, int] | None = None  # (at, heard) of the latest hit

    def press(self, pitch: int) -> None:
        self._held.add(pitch)
        self._onsets.add(pitch)
        self._sustained.discard(pitch)
        self._off.pop(pitch, None)

    def release(self, pitch: int) -> None:
        self._held.discard(pitch)
        if self._pedal:
            self._sustained.add(pitch)
        else:
            self._off[pitch] = RELEASE_FRAMES

    def sustain(self, down: bool) -> None:
        """The sustain pedal (CC 64): lifting it releases every key it held."""
        self._pedal = down
        if not down:
            for pitch in self._sustained:
                self._off[pitch] = RELEASE_FRAMES
            self._sustained.clear()

    def hit(self, *, at: int, heard: int) -> None:
        """A pad hit heard at output sample `heard`, for the first frame not yet generated (`at`).

        While the hit before it still waits to be generated, it keeps the player's distance
        from that one: a roll keeps its rhythm at frame resolution (40 ms), pads struck
        together land in one frame, and hits never queue up to sound after the player stopped.
        """
        if self._last_hit is not None:
            last_at, last_heard = self._last_hit
            if heard - last_heard < HIT_MERGE_SAMPLES:
                return  # struck together with the hit before: the same hit
            if last_at >= at:
                at = last_at + heard - last_heard
        self._last_hit = (at, heard)
        if len(self._pad_hits) < MAX_PENDING_PAD_HITS:
            self._pad_hits.append(at)

    def take_pad_hit(self, until: int) -> bool:
        """Does the frame that ends at output sample `until` carry a pad hit? Takes every hit before it."""
        hit = False
        while self._pad_hits and self._pad_hits[0] < until:
            self._pad_hits.popleft()
            hit = True
        return hit

    def frame_states(self) -> np.ndarray | None:
        """States for the next frame, or None when the keyboard is silent (notes masked)."""
        if not (self._held or self._sustained or self._onsets or self._off):
            return None
        notes = np.full(NUM_NOTES, NOTE_MASK, dtype=np.int8)
        for pitch in list(self._off):
            notes[pitch] = NOTE_OFF
            self._off[pitch] -= 1
            if self._off[pitch] <= 0:
                del self._off[pitch]
        notes[list(self._held | self._sustained)] = NOTE_HELD
        notes[list(self._onsets)] = NOTE_ONSET
        self._onsets.clear()
        return notes
