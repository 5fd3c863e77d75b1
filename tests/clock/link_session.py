"""Run inside a network namespace by test_link_peers: a Link peer of the binding and an engine on Link.

The peer starts a session at 128 BPM, the engine (patch at 120) joins, then the peer moves the
session to 133 BPM. Prints one JSON line: the engine's tempo, how far each bar line it planned
is from the peer's phase 0 (quantum = beats per bar), and its clock after the peer stopped.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import link

from engine.audio.sinks import WavRealtimeSink
from engine.clock.driver import ClockDriver
from engine.clock.source import ClockSource
from engine.engine import Engine
from engine.generator.synth import SynthGenerator
from engine.patch import load_patch

REPO = Path(__file__).resolve().parents[2]
PEER_BPM = 128.0
SESSION_BPM = 133.0
QUANTUM = 4.0


def phase_error_ms(peer: link.Link, t: float) -> float:
    """How far monotonic time `t` is from the peer's nearest bar line (phase 0 at quantum = beats per bar).

    Link shares tempo and phase, not beat numbers (a peer's start request may renumber its
    beats by whole quanta), so bar lines are compared by phase.
    """
    clock = peer.clock()
    before = time.monotonic()
    micros = clock.micros()
    offset = micros / 1e6 - (before + time.monotonic()) / 2
    state = peer.captureAppSessionState()
    phase = state.phaseAtTime(round((t + offset) * 1e6), QUANTUM)
    beats = phase if phase < QUANTUM / 2 else phase - QUANTUM
    return beats * 60 / state.tempo() * 1e3


def playing_peer(bpm: float) -> link.Link:
    """A Link peer of the binding with start/stop sync, its session playing from beat 0 now."""
    peer = link.Link(bpm)
    peer.startStopSyncEnabled = True
    peer.enabled = True
    state = peer.captureAppSessionState()
    state.setIsPlayingAndRequestBeatAtTime(True, peer.clock().micros(), 0.0, QUANTUM)
    peer.commitAppSessionState(state)
    return peer


def set_session_tempo(peer: link.Link, bpm: float) -> None:
    """Move the session the peer is in to `bpm` now (every peer follows)."""
    state = peer.captureAppSessionState()
    state.setTempo(bpm, peer.clock().micros())
    peer.commitAppSessionState(state)


def main(out: Path) -> None:
    peer = playing_peer(PEER_BPM)

    patch = load_patch(REPO / "patches/default.yaml")  # 120 BPM: the session's 128 must win
    clock = ClockDriver.open(ClockSource("link"), bpm=float(patch.bpm), beats_per_bar=patch.beats_per_bar)
    engine = Engine(patch=patch, generator=SynthGenerator(), clock=clock, status_line=False,
                    sink_factory=lambda ring: WavRealtimeSink(ring, out))
    runner = threading.Thread(target=engine.run, kwargs={"duration_s": 9.0})
    runner.start()
    deadline = time.monotonic() + 5.0
    while clock.link.peers < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    # Which session survives when two meet is Link's choice; a tempo change in the joined
    # session is what every peer must follow.
    time.sleep(0.5)
    set_session_tempo(peer, SESSION_BPM)
    time.sleep(4.0)  # a few bars of following
    errors = []
    for _ in range(6):
        timeline, sample_clock = engine.scheduler.timeline, engine.timing.sample_clock.clock
        bar = timeline.bar_at(engine.sink.playhead) + 1
        errors.append(phase_error_ms(peer, sample_clock.time_of(timeline.bar_start(bar))))
        time.sleep(0.4)
    tempo = float(timeline.tempo_at(engine.sink.playhead))
    # Start/stop sync: the peer stops the session; the engine's clock reports it.
    state = peer.captureAppSessionState()
    state.setIsPlaying(False, peer.clock().micros())
    peer.commitAppSessionState(state)
    time.sleep(0.3)
    health = engine.status()["clock"]
    runner.join()
    peer.enabled = False
    print(json.dumps({"tempo": tempo, "session_bpm": SESSION_BPM, "errors_ms": errors, "after_peer_stop": health}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
