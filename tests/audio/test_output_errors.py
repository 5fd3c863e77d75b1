"""A device that refuses us gets one clear message and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

jack = pytest.importorskip("jack", reason="JACK-Client is in the test extra")

from engine.audio.ring import PlaybackRing  # noqa: E402
from engine.audio.sinks import PA_DEVICE_UNAVAILABLE, DeviceSink, OutputSpec  # noqa: E402
from engine.errors import OutputError  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def test_a_jack_server_with_no_free_ports_refuses_backline_clearly(jack_few_ports) -> None:
    """A real refusal: the server's port table is full (jackd --port-max), so PortAudio
    cannot register backline's two outputs."""
    hog = jack.Client("hog", no_start_server=True)
    try:
        with pytest.raises(jack.JackError):
            for i in range(16):
                hog.outports.register(f"p{i}")
        proc = subprocess.run(
            [sys.executable, "-m", "engine", "run", "--patch", "patches/default.yaml", "--output", "jack", "--duration", "1"],
            cwd=REPO, capture_output=True, text=True, timeout=60, env=dict(os.environ),
        )
    finally:
        hog.close()
    assert proc.returncode == 1, proc.stderr
    assert "the JACK server refused backline's ports" in proc.stderr, proc.stderr
    assert "Devices:" in proc.stderr and "[0] system" in proc.stderr
    assert "--port-max" in proc.stderr and "--output wav:FILE" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_busy_device_names_the_problem_the_devices_and_what_to_try(jack44, monkeypatch) -> None:
    """A busy device is an ALSA card another program holds (EBUSY, PortAudio's
    paDeviceUnavailable). This machine has no sound card (/dev/snd) and JACK never reports
    that code, so PortAudio's error is raised by a stand-in for the stream; device lookup
    and the rate check before it run against the real JACK server."""
    import sounddevice as sd

    def busy(**kwargs: object) -> None:
        raise sd.PortAudioError("Error opening OutputStream: Device unavailable", PA_DEVICE_UNAVAILABLE)

    monkeypatch.setattr(sd, "_StreamBase", busy)
    with pytest.raises(OutputError) as info:
        DeviceSink(PlaybackRing(capacity=1 << 12), OutputSpec("jack"))
    message = str(info.value)
    assert message.startswith("jack device 0 (system) is busy: another program has it open (Error opening OutputStream: Device unavailable)")
    assert "Devices:\nhost API" in message and "[0] system" in message
    assert "close the other program" in message and "--output wav:FILE" in message


def test_without_the_compiled_callback_a_live_output_exits_1_naming_what_to_install(tmp_path) -> None:
    """An install on a machine with no C compiler has no engine/audio/_rtout*.so (the extension is
    optional): renders work, a live output refuses in one line. The missing file is simulated by
    hiding it from the import system, which is where the engine looks for it."""
    hide = ("import importlib.util as u, sys; find = u.find_spec; "
            "u.find_spec = lambda name, *a: None if name == 'engine.audio._rtout' else find(name, *a); "
            "from engine.cli import main; sys.exit(main(sys.argv[1:]))")
    live = subprocess.run([sys.executable, "-c", hide, "run", "--patch", "patches/default.yaml", "--output",
                           f"wav:{tmp_path / 'live.wav'}", "--no-osc", "--no-midi", "--duration", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert live.returncode == 1, live.stderr
    assert "real-time audio callback (engine/audio/rtout.c) was not built" in live.stderr, live.stderr
    assert "apt-get install gcc" in live.stderr and "Traceback" not in live.stderr
    render = subprocess.run([sys.executable, "-c", hide, "render", "--patch", "patches/default.yaml", "--bars", "1",
                             "-o", str(tmp_path / "demo.wav")], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert render.returncode == 0, render.stderr
