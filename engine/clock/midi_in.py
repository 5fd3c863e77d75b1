"""The MIDI input an external clock arrives on: rtmidi in polling mode, stamped by the MIDI API.

Why polling and not rtmidi's callback: with the JACK API the callback runs on JACK's
process thread and must take the GIL there, so a busy engine delays the JACK cycle and
the clock's own arrival stamps. In polling mode rtmidi queues messages in C++ on that
thread, with the API's time between messages (JACK: `jack_get_time()` in the cycle that
delivered them), and the engine loop drains the queue every few milliseconds.

Stamps: the running sum of rtmidi's deltas is the MIDI API's own timeline. Its offset to
`time.monotonic()` is the smallest (poll time - summed time) seen so far, since a message
is always polled after it arrived; the poll delay therefore never enters the stamps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence

import mido
import rtmidi

from engine.errors import BacklineError
from engine.midi import MidiApi, no_sequencer_hint, port_matches, rtmidi_api
from engine.ratelog import RateLimitedLog

logger = logging.getLogger(__name__)

RESCAN_S = 1.0


def parse_stamped(raw: Iterable[tuple[Sequence[int] | bytes, float]], *, log: RateLimitedLog,
                  port: str | None) -> list[tuple[mido.Message, float]]:
    """(message, stamp) for each (bytes, stamp); bytes mido cannot parse are logged (rate-limited) and skipped."""
    out = []
    for data, stamp in raw:
        try:
            out.append((mido.Message.from_bytes(data), stamp))
        except ValueError as err:
            log.warn("parse", "MIDI clock input %r: cannot parse %s (%s); ignored", port, list(data), err)
    return out


class MidiClockInput:
    """Binds the first input port matching `pattern` and yields its messages with monotonic stamps."""

    def __init__(self, pattern: str, *, api: MidiApi = "alsa", client_name: str = "backline-clock",
                 now: Callable[[], float] = time.monotonic) -> None:
        api_id = rtmidi_api(api)
        self.pattern = pattern
        self.api = api
        self._now = now
        try:
            self._port = rtmidi.MidiIn(api_id, name=client_name, queue_size_limit=4096)
        except rtmidi.SystemError as err:
            hint = no_sequencer_hint(api)
            raise BacklineError(f"cannot open the {api} MIDI API for clock input: {err}{hint}") from err
        self._port.ignore_types(sysex=True, timing=False, active_sense=True)
        self.bound: str | None = None
        self._next_scan = 0.0
        self._api_time = 0.0  # running sum of rtmidi's deltas since the port opened
        self._offset: float | None = None  # monotonic minus API time
        self._log = RateLimitedLog(logger, interval=30.0)

    def _scan(self, t: float) -> None:
        self._next_scan = t + RESCAN_S
        names = self._port.get_ports()
        match = next((i for i, n in enumerate(names) if port_matches(n, self.pattern)), None)
        if match is None:
            self._log.warn("absent", "MIDI clock input %r not found on %s (ports: %s); still looking",
                           self.pattern, self.api, ", ".join(names) or "none")
            return
        self._port.open_port(match, name="clock in")
        self.bound = names[match]
        self._api_time, self._offset = 0.0, None
        logger.info("MIDI clock input %r bound to %r (%s)", self.pattern, self.bound, self.api)

    def poll(self) -> list[tuple[mido.Message, float]]:
        """Messages that arrived since the last poll, with their monotonic arrival times.

        Runs on the engine loop thread; never blocks. Bytes mido cannot parse are counted
        and logged (rate-limited), never raised.
        """
        t = self._now()
        if self.bound is None:
            if t >= self._next_scan:
                self._scan(t)
            return []
        raw: list[tuple[list[int], float]] = []
        while (item := self._port.get_message()) is not None:
            self._api_time += item[1]
            raw.append((item[0], self._api_time))
        if not raw:
            return []
        offset = self._now() - raw[-1][1]
        self._offset = offset if self._offset is None else min(self._offset, offset)
        return parse_stamped(((data, api_t + self._offset) for data, api_t in raw), log=self._log, port=self.bound)

    def close(self) -> None:
        self._port.close_port()
        self._port.delete()
