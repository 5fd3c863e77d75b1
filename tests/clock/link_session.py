"""Run inside a network namespace by test_link_peers: a Link peer of the binding and an engine on Link.

Prints one JSON line: the engine's tempo and, for the bar lines it planned, how far each is
from the peer's phase 0 (quantum = beats per bar), plus what start/stop sync did.
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
QUANTUM = 4.0


def peer_time_of_bar(peer: link.Link, bar: int) -> float:
    """Monotonic time of the peer's bar `bar` (its beat bar * quantum, phase 0)."""
    clock = peer.clock()
    before = time.monotonic()
    micros = clock.micros()
    offset = micros / 1e6 - (before + time.monotonic()) / 2
    return peer.captureAppSessionState().timeAtBeat(bar * QUANTUM, QUANTUM) / 1e6 - offset


def main(out: Path) -> None:
    peer = link.Link(PEER_BPM)
    peer.startStopSyncEnabled = True
    peer.enabled = True
    state = peer.captureAppSessionState()
    state.setIsPlayingAndRequestBeatAtTime(True, peer.clock().micros(), 0.0, QUANTUM)
    peer.commitAppSessionState(state)

    patch = load_patch(REPO / "patches/default.yaml")  # 120 BPM: the session's 128 must win
    clock = ClockDriver.open(ClockSource("link"), bpm=float(patch.bpm), beats_per_bar=patch.beats_per_bar)
    engine = Engine(patch=patch, generator=SynthGenerator(), clock=clock, status_line=False,
                    sink_factory=lambda ring: WavRealtimeSink(ring, out))
    runner = threading.Thread(target=engine.run, kwargs={"duration_s": 9.0})
    runner.start()
    deadline = time.monotonic() + 5.0
    while clock.link.peers < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(4.0)  # discovery, then a few bars of following
    errors = []
    for _ in range(6):
        timeline, sample_clock = engine.scheduler.timeline, engine.sample_clock.clock
        playhead = engine.sink.playhead
        bar = timeline.bar_at(playhead) + 1
        ours = sample_clock.time_of(timeline.bar_start(bar))
        song_bar = timeline.bar_first_beat(bar) // patch.beats_per_bar
        errors.append((ours - peer_time_of_bar(peer, song_bar)) * 1e3)
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
    print(json.dumps({"tempo": tempo, "errors_ms": errors, "after_peer_stop": health}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
