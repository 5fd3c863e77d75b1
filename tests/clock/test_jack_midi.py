"""Real JACK MIDI: follow jack_midi_clock, and send our clock to a port that measures it.

The receiver is a JACK client (JACK-Client) that stamps every event with its JACK frame
time (cycle start + offset), i.e. the audio sample clock the engine's sink runs on.
Stamping with time.monotonic() in rtmidi's input callback instead adds a period (5.3 ms
here) of quantisation and, with the dummy driver on a loaded 2-core box, a rate error of
about 0.1 % between JACK time and monotonic time, which is the test box, not the clock.
"""

from __future__ import annotations

import shutil
import subprocess

import mido
import numpy as np
import pytest

from jack_rx import JITTER, receiver, unforeseeable_ms, wait_for

from engine.clock import MidiClockFollower, MidiClockOut, MidiClockSender, SampleClock
from engine.timeline import Timeline

SR = 48_000



@pytest.mark.jack
@JITTER
def test_follows_jack_midi_clock_at_133_bpm(jack: str, jitter: int) -> None:
    """The follower on jack_midi_clock's ticks as stamped in JACK frames: its tempo, and each
    bar line predicted at the bar before, within 5 ms plus what the clock could not foresee
    (-J is a random walk of the tick intervals, see test_clock_e2e)."""
    if shutil.which("jack_midi_clock") is None:
        pytest.skip("jack_midi_clock is not installed (apt-get install jack-midi-clock)")
    with receiver(jack) as rx:
        rx.client.transport_frame = 0  # jack_midi_clock sends Start (not Continue) when rolling from 0
        proc = subprocess.Popen(["jack_midi_clock", "-b", "133", "-B", "-J", str(jitter), "bl-rx:in"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # Start the transport only once jack_midi_clock is connected, so that it sends Start.
            wait_for(lambda: bool(rx.client.get_all_connections("bl-rx:in")))
            rx.client.transport_start()
            wait_for(lambda: rx.clocks >= 24 * 28)  # 28 beats
            rx.client.transport_stop()
        finally:
            proc.terminate()
            proc.wait(timeout=5)
        items = rx.snapshot()
        ticks = rx.song_tick_frames(133.0)
    assert "start" in [m.type for _, m in items]
    follower = MidiClockFollower()
    errors, grants = [], []
    for frame, msg in items:
        follower.feed(msg, frame / SR)
        if msg.type != "clock" or frame not in ticks.values():
            continue
        tick = next(k for k, f in ticks.items() if f == frame)
        ahead = tick + 96
        if tick % 96 == 0 and tick >= 96 and ahead in ticks:
            est = follower.estimate(frame / SR)
            assert est is not None and est.state == "running"
            errors.append((est.tick_time(ahead) - ticks[ahead] / SR) * 1e3)
            grants.append(abs(unforeseeable_ms(ticks, ahead, horizon=96)))
    last = max(ticks)
    est = follower.estimate(ticks[last] / SR)
    assert est is not None
    k = np.array([t for t in ticks if t > last - 192], dtype=np.float64)
    clock_bpm = 60 * SR / (np.polyfit(k, [ticks[int(t)] for t in k], 1)[0] * 24)  # its last 2 bars: the reference issue #19 names (the follower regresses the same window)
    errors_ms, grants_ms = np.array(errors), np.array(grants)
    print(f"\njack_midi_clock -b 133 -J {jitter}: follower {est.tempo_bpm:.3f} BPM, the clock's last 2 bars "
          f"{clock_bpm:.3f} BPM; {follower.counters}; bar lines a bar ahead: "
          + " ".join(f"{e:+.2f}" for e in errors_ms) + " ms; unforeseeable: " + " ".join(f"{g:.2f}" for g in grants_ms))
    assert abs(est.tempo_bpm - clock_bpm) < 0.1
    assert len(errors_ms) >= 4
    assert np.all(np.abs(errors_ms) < 5.0 + grants_ms), (errors_ms, grants_ms)


@pytest.mark.jack
def test_clock_out_is_measured_by_a_receiver(jack: str) -> None:
    backend = mido.Backend("mido.backends.rtmidi/UNIX_JACK")
    with receiver(jack) as rx, backend.open_output("clock-out", virtual=True) as port:
        subprocess.run(["jack_connect", "RtMidiOut Client:clock-out", "bl-rx:in"], check=True)
        wait_for(lambda: rx.cycle is not None)
        start_frame = rx.cycle[0] + SR // 10  # song starts 100 ms from now, in JACK frames
        timeline = Timeline.start(133, origin=start_frame)

        def sink_clock() -> SampleClock:
            """The sample clock as a sink publishes it: the cycle it was last called for, and when.

            Not jack_frame_time(): JACK interpolates that between cycles with its DLL, and on
            the dummy driver of an idle VM it strayed from the cycle counter by -358..+760
            frames (periods of 256) and ran 0.5 % slow, so a sender on time to 0.2 ms by it
            measured 132.1-132.7 BPM at the receiver (CI failed on this).
            """
            frame, t = rx.cycle  # type: ignore[misc]
            return SampleClock(sample=frame, time=t)

        out = MidiClockOut()
        out.start(beat=0)
        xruns = rx.xruns
        with MidiClockSender(port, out, timeline=lambda: timeline, sample_clock=sink_clock) as sender:
            wait_for(lambda: rx.clocks >= 24 * 12)
            out.stop(at_sample=rx.cycle[0] + SR // 10)  # type: ignore[index]
            wait_for(lambda: any(b[0] == 0xFC for _, b in list(rx.raw)))
        items = rx.snapshot()
        xruns = rx.xruns - xruns
    kinds = [m.type for _, m in items]
    assert kinds[0] == "start" and kinds[1] == "clock" and kinds[-1] == "stop"
    assert "clock" not in kinds[kinds.index("stop"):]
    # Numbered by frame, not by count: on a loaded box JACK skips cycles, and a message rtmidi
    # had queued for a skipped cycle never arrives (measured: the sender's sends on time to
    # 0.2 ms by frame_time, then every later tick "one period late" when counted).
    song = rx.song_tick_frames(133.0)
    ticks = np.array(sorted(song), dtype=np.float64)
    frames = np.array([song[int(k)] for k in ticks])
    period = np.polyfit(ticks, frames, 1)[0] / SR
    spacing = np.diff(frames) / np.diff(ticks) / SR * 1e3
    offsets = (frames - np.array([timeline.beat_start(0) + k * 60 / 133 / 24 * SR for k in ticks])) / SR * 1e3
    print(f"\nclock out 133 BPM: {sender.sent} messages sent, {len(ticks)} of {int(ticks[-1]) + 1} ticks arrived; "
          f"measured {60 / (period * 24):.3f} BPM; tick spacing p5/p50/p95 "
          f"{np.percentile(spacing, 5):.2f}/{np.median(spacing):.2f}/{np.percentile(spacing, 95):.2f} ms "
          f"(ideal {60e3 / 133 / 24:.3f}); late vs the sample clock p50 {np.median(offsets):.2f} ms; {xruns} xruns")
    # Start, every tick that arrived, Stop; numbered by frame, a late tick after a skipped cycle can
    # carry the number of one lost before it, so the count of numbers may be one more than arrived
    # (seen under load: 308 sent, tick 307; 294 sent, 293 numbers)
    assert sender.sent >= len(ticks) + 1
    assert len(ticks) >= 0.95 * (ticks[-1] + 1)
    # Measured within 0.02 on a quiet run (rtmidi delivers once per JACK period). This sender is
    # timed by a thread against the last cycle seen, so when the dummy server runs late its ticks
    # land late with it: quiet runs here show 3-8 xruns and 133.00 +/- 0.01; the runs that read
    # 132.1-133.6 BPM showed 39. Past 10 xruns (a loaded server) 1 BPM is allowed. (The
    # frame-locked JACK clock out is exact either way: test_clock_out_e2e.)
    assert abs(60 / (period * 24) - 133.0) < (1.0 if xruns > 10 else 0.2), xruns
    assert abs(np.median(spacing) - 60e3 / 133 / 24) < 6.0  # within one JACK period of quantisation
    assert 0.0 <= np.median(offsets) < 12.0  # delivered at the next cycle or the one after
