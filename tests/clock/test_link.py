"""Ableton Link through the real binding, WITHOUT joining any network.

These check the engine's Link timeline math against the binding with Link left disabled,
so no multicast is sent at all; two peers in a network namespace are in test_link_peers.py.
"""

from __future__ import annotations

import time

import pytest

link = pytest.importorskip("link", reason="LinkPython-extern is not installed (pip install LinkPython-extern)")

from engine.clock.link import LinkClock  # noqa: E402


def test_estimate_matches_the_binding_and_bar_lines_sit_on_phase_zero() -> None:
    clock = LinkClock(bpm=133.0, beats_per_bar=4, start_stop_sync=False, binding=link)
    assert clock._link.enabled is False
    now = time.monotonic()
    est = clock.estimate(now)
    assert est.tempo_bpm == pytest.approx(133.0)
    bar = (int(est.beat_at(now)) // 4 + 1) * 4
    t_bar = est.beat_time(bar)
    state = clock._link.captureAppSessionState()
    micros = round((t_bar + clock._offset()) * 1e6)
    assert state.phaseAtTime(micros, 4.0) == pytest.approx(0.0, abs=0.01) or state.phaseAtTime(micros, 4.0) > 3.99
    assert state.beatAtTime(micros, 4.0) == pytest.approx(bar, abs=0.01)  # 0.01 beat = 4.5 ms at 133 BPM


def test_proposed_tempo_and_start_stop_reach_the_estimate() -> None:
    clock = LinkClock(bpm=120.0, beats_per_bar=4, start_stop_sync=True, binding=link)
    now = time.monotonic()
    assert clock.estimate(now).state == "stopped"
    clock.propose_tempo(140.0, now)
    clock.set_playing(True, now)
    est = clock.estimate(now + 0.001)
    assert est.state == "running" and est.epoch == 1
    assert est.tempo_bpm == pytest.approx(140.0)
    assert est.beat_time(0) == pytest.approx(now, abs=0.002)  # alone in the session: beat 0 right at the start
    assert est.beat_time(4) - est.beat_time(0) == pytest.approx(4 * 60 / 140, abs=1e-6)
    clock.set_playing(False, now + 0.01)
    assert clock.estimate(now + 0.02).state == "stopped"
    with pytest.raises(ValueError, match="tempo must be in"):
        clock.propose_tempo(1000.0, now)
