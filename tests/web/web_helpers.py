"""Helpers for the web tests: the stage's config, what a test holds of it, and a plain page
client (a WebSocket that keeps every message the engine sent it)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import mido
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from control_helpers import FrameLog
from engine.service.runner import Service

JACK_BACKEND = "mido.backends.rtmidi/UNIX_JACK"
PATCH = "name: {name}\ntempo: {tempo}\nmeter: 4\nseed: 3\nstyle:\n  - {{text: {text}, weight: 1.0}}\n  - {{text: dub echo, weight: 0.0}}\n"
MAPPING = """info: {name: test knob}
controls:
- name: temperature knob
  match: {midi: {port: "*test knob*", cc: 21}}
  target: sampling.temperature
  options: {range: [0.0, 2.0], soft_takeover: pickup}
outputs:
- name: temperature LED
  target: sampling.temperature
  midi: {port: "*test leds*", cc: 20}
  options: {range: [0.0, 2.0]}
"""


@dataclass
class Stage:
    service: Service
    frames: FrameLog
    changes: list[tuple[str, object, str, int]]
    knob: mido.ports.BaseOutput
    leds: list[mido.Message]
    tmp: Path

    @property
    def url(self) -> str:
        return self.service.web.url

    @property
    def ws_url(self) -> str:
        host, port = self.service.web.address
        return f"ws://{host}:{port}/ws"

    def temperature(self) -> float:
        return float(self.service.engine.value_of("sampling.temperature"))

    def pick_up(self) -> int:
        """Move the pickup knob (CC 21) across the temperature playing, so it takes over; its value."""
        at = round(self.temperature() / 2 * 127)
        for value in range(at - 3, at + 2):
            self.knob.send(mido.Message("control_change", control=21, value=value))
        return at + 1


def stage_config(tmp_path: Path, web: str = "{port: 0}", osc: str = "{port: 0}", extra: str = "") -> Path:
    patches = tmp_path / "patches"
    patches.mkdir(exist_ok=True)
    (patches / "a.yaml").write_text(PATCH.format(name="a", tempo=240, text="warm analog synth groove"))
    (patches / "b.yaml").write_text(PATCH.format(name="b", tempo=200, text="bright glassy arpeggio"))
    (tmp_path / "knob.yaml").write_text(MAPPING)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"output: wav:{tmp_path / 'out.wav'}\npatch: {patches / 'a.yaml'}\npatches: {patches}\nstate_file: null\n"
        f"lookahead_ms: 200\nfade_s: 0.05\nosc: {osc}\nweb: {web}\nlearn_file: {tmp_path / 'learned.yaml'}\n"
        "midi: {enabled: true, api: jack, inputs: ['*test knob*']}\n"
        f"mappings: [{tmp_path / 'knob.yaml'}]\n" + extra)
    return config




class Page:
    """A page's WebSocket without a browser: sends JSON, keeps every message received (its
    own reader thread), and knows when each arrived."""

    def __init__(self, url: str, **options) -> None:
        self.ws = connect(url, open_timeout=5, **options).__enter__()
        self.got: list[dict] = []
        self.arrived: list[float] = []
        self._reader = threading.Thread(target=self._read, name="test-page", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        import time

        try:
            for text in self.ws:
                self.got.append(json.loads(text))
                self.arrived.append(time.perf_counter())
        except ConnectionClosed:
            pass

    def send(self, message: object) -> None:
        self.ws.send(message if isinstance(message, str) else json.dumps(message))

    def changes(self, path: str) -> list[dict]:
        return [m for m in list(self.got) if m.get("path") == path]

    def close(self) -> None:
        self.ws.close()
        self._reader.join(5)

    def __enter__(self) -> "Page":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
