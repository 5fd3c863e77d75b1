"""Which clock leads: `internal`, `midi:PORT` or `link`, from the CLI, config or a patch."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from engine.clock.estimate import ClockEstimate

logger = logging.getLogger(__name__)

ClockKind = Literal["internal", "midi", "link"]


@dataclass(frozen=True, slots=True)
class ClockSource:
    """A parsed clock choice; `port` is the MIDI input port name (or pattern) for `midi`."""

    kind: ClockKind
    port: str | None = None

    def __str__(self) -> str:
        return f"midi:{self.port}" if self.kind == "midi" else self.kind

    @property
    def wants_link(self) -> bool:
        """Link (and its network discovery) is enabled only when this is True."""
        return self.kind == "link"


def parse_clock_source(text: str) -> ClockSource:
    """Parse `internal`, `link` or `midi:PORT` (the port name may contain colons)."""
    if not isinstance(text, str):
        raise ValueError(f"clock must be a string (internal, link or midi:PORT), got {type(text).__name__}")
    value = text.strip()
    if value in ("internal", "link"):
        return ClockSource(value)  # type: ignore[arg-type]
    if value.startswith("midi:"):
        port = value[len("midi:"):].strip()
        if not port:
            raise ValueError("clock 'midi:' needs a port name, e.g. midi:'Drum Machine MIDI 1'")
        return ClockSource("midi", port)
    raise ValueError(f"clock must be internal, link or midi:PORT, got {text!r}")


def health(source: ClockSource, estimate: ClockEstimate | None, **details: object) -> dict[str, object]:
    """Status-line and /backline/status view of the active clock source.

    `details` carries source-specific counters (e.g. the MIDI follower's `counters`, Link's peers).
    """
    return {
        "source": str(source),
        "state": estimate.state if estimate else "waiting",
        "tempo_bpm": round(estimate.tempo_bpm, 2) if estimate else None,
        "last_clock_age": round(estimate.last_clock_age, 3) if estimate else None,
        **details,
    }


def open_link_source(source: ClockSource, *, bpm: float, beats_per_bar: int) -> object | None:
    """A started LinkClock when `source` asks for Link, else None.

    When the binding is missing the engine runs on its internal clock and says so here,
    once, at start.
    """
    if not source.wants_link:
        return None
    from engine.clock.link import LinkClock, LinkUnavailable

    try:
        clock = LinkClock(bpm=bpm, beats_per_bar=beats_per_bar)
    except LinkUnavailable as err:
        logger.error("clock source 'link' asked for, but %s; running on the internal clock", err)
        return None
    clock.enable()
    return clock
