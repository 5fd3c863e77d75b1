"""Ableton Link between two peers: the binding's own peer at 128 BPM and an engine on `--clock link`.

Link discovers peers by multicast, which must never leave this machine: both peers run in a
network namespace the test creates (`ip netns add`, only `lo` up), where Link finds its peer
on loopback. Needs root (or CAP_SYS_ADMIN) for the namespace; skips with the reason otherwise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
pytest.importorskip("link", reason="LinkPython-extern is not installed (pip install backline[link])")


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace with only loopback up; deleted afterwards."""
    if shutil.which("ip") is None:
        pytest.skip("iproute2 is not installed: cannot make a network namespace for Link")
    name = f"bl-link-{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace ({made.stderr.strip()}); Link is tested without a network "
                    "in test_link.py")
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_engine_takes_the_session_tempo_and_bar_lines_sit_on_its_phase(netns: str, tmp_path: Path) -> None:
    run = subprocess.run(["ip", "netns", "exec", netns, sys.executable, str(REPO / "tests/clock/link_session.py"),
                          str(tmp_path / "out.wav")], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    errors = result["errors_ms"]
    print(f"\nLink peers on loopback: engine tempo {result['tempo']:.3f} BPM (session {result['session_bpm']}); "
          f"bar lines vs the peer's "
          f"phase 0: " + " ".join(f"{e:+.2f}" for e in errors) + f" ms; after the peer stopped: {result['after_peer_stop']}")
    assert result["tempo"] == pytest.approx(result["session_bpm"], abs=0.01)  # the session's tempo change reached us
    assert len(errors) == 6
    assert max(abs(e) for e in errors) < 5.0
    assert result["after_peer_stop"]["state"] == "stopped"  # start/stop sync
    assert result["after_peer_stop"]["peers"] == 1


@pytest.mark.jack
def test_link_beats_land_to_the_sample_on_jack(netns: str, tmp_path: Path) -> None:
    """`--clock link --output jack`: the engine follows the session on JACK's frame clock, so
    every hit of the synth (temperature 0: one a beat) lands on the peer's beat, by the
    recording placed in JACK frames (#19 item 4). Hits in the 2 bars after JACK skipped cycles
    are left out, as the MIDI clock's figures leave out skipped cycles: a dummy server that loses
    cycles moves its frames against Link's clock, and the engine re-fits onto the new line over a
    bar or two (seen: 1.3-8 ms off then). So are those after JACK's frames moved against Link's
    clock by more than 0.3 ms with no xrun reported (a cycle late, then caught up: seen in CI,
    1.1-1.9 ms off, within the fitter's 2 ms phase tolerance, for 5 beats). A hit a beat cannot tell beat 1 from beat 3:
    that the bar lines sit on the session's phase 0 is the test above's (planned bar lines)."""
    if shutil.which("jackd") is None:
        pytest.skip("jackd is not installed")
    run = subprocess.run(["ip", "netns", "exec", netns, sys.executable, str(REPO / "tests/clock/link_jack_session.py"),
                          str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=90)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    errors = np.array(result["errors_ms"])
    assert result["peers_seen"]
    # Hits on the engine's own session's grid until it joined (Link took 2-5 s to join here); then at most a
    # bridging bar (up to 5 beats) onto the session's grid, on the peer's beats from there on.
    later = errors[result["moved"] + 5 :]
    p50, worst = (np.median(np.abs(later)), np.abs(later).max()) if len(later) else (np.nan, np.nan)
    print(f"\nLink on JACK: session {result['tempo']:.2f} BPM; {len(errors)} hits, the first {len(errors) - len(later)} "
          f"while joining; after: p50 {p50:.3f} ms, max {worst:.3f} ms from the peer's "
          f"beats; {result['xruns']} xruns and {result['jumps']} frame jumps, {result['after_xrun']} hits after one left out; JACK's frames up to "
          f"{result['off_line_ms']:.2f} ms off one line; " + "; ".join(result["clock_log"]))
    assert result["returncode"] == 0, result["clock_log"]
    assert any("JACK's frame clock" in line for line in result["clock_log"]), result["clock_log"]
    if len(later) < 8 and result["after_xrun"]:  # JACK lost cycles all through: nothing left to judge
        pytest.xfail(f"JACK skipped cycles {result['xruns']} times in the run: {result['after_xrun']} hits fell in the "
                     f"2 bars after one, {len(later)} left to judge (a loaded box's dummy server)")
    assert len(later) >= 8, errors
    assert worst <= 1.0, later.round(3)
