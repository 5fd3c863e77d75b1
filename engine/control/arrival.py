"""When a queued JACK MIDI message arrived, as the output sample that was playing then.

On JACK the `midi-poll` thread drains rtmidi's queues every POLL_S (engine/control/midi_io.py).
Stamped when drained, a note-off that waited behind a busy interpreter for 60 ms made a 10 ms
staccato note sound for three frames, and a burst drained together lost its spacing. rtmidi
stamps each message in JACK's process thread with the time since the port's previous message
(JACK's clock, to the cycle), so the stamps can keep the player's timing however late the
drain is. Two bounds, neither earlier than the truth: the previous message's stamp plus that
delta (chained only across CHAIN_S, where the two clocks cannot drift apart), and "now" less
the deltas of the messages queued behind it (the newest arrived before now). A message is
stamped at the earlier bound, never before the message ahead of it.

rtmidi counts its deltas across the messages it was told to ignore, so the ports take clock,
MTC and active sensing from rtmidi and drop them here (IGNORED), keeping their time.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.units import SAMPLE_RATE

CHAIN_S = 1.0  # deltas summed over longer than this are not trusted against the sound card's clock
IGNORED = frozenset((0xF1, 0xF8, 0xFE))  # MTC quarter frame, timing clock, active sensing: not controls


class Arrivals:
    """One input port's stamps, for the messages each drain took. Made with the port (a port
    opened again starts a new chain); only the `midi-poll` thread calls `stamp`."""

    def __init__(self) -> None:
        self._last = float("-inf")  # the stamp of the port's last message
        self._since = float("inf")  # seconds from it to the newest message drained

    def stamp(self, messages: Sequence[tuple[list[int], float]], now: int) -> list[tuple[list[int], int]]:
        """(bytes, output sample it arrived at) for each message but the IGNORED; `messages` are
        rtmidi's (bytes, delta seconds) in order, all queued before the output sample `now`."""
        behind = [0.0] * len(messages)  # seconds from each message to the newest
        for i in range(len(messages) - 2, -1, -1):
            behind[i] = behind[i + 1] + messages[i + 1][1]
        out: list[tuple[list[int], int]] = []
        for (data, delta), after in zip(messages, behind):
            self._since += delta
            if data and data[0] in IGNORED:
                continue
            chained = self._last + self._since * SAMPLE_RATE if self._since <= CHAIN_S else float("inf")
            self._last, self._since = max(self._last, min(chained, now - after * SAMPLE_RATE)), 0.0
            out.append((data, round(self._last)))
        return out
