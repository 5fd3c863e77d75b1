"""MIDI names shared by the control surfaces and the clocks (a bottom module): the two MIDI
APIs rtmidi opens here, and the one rule every MIDI port pattern follows (config inputs,
mapping `port:`, feedback outputs, clock in and out)."""

from __future__ import annotations

import fnmatch
import os
from typing import Literal

MidiApi = Literal["alsa", "jack"]
MIDI_APIS: tuple[MidiApi, ...] = ("alsa", "jack")


def rtmidi_api(api: str) -> int:
    """rtmidi's constant for `api` (ValueError naming the choices for anything else)."""
    import rtmidi

    apis = {"alsa": rtmidi.API_LINUX_ALSA, "jack": rtmidi.API_UNIX_JACK}
    if api not in apis:
        raise ValueError(f"MIDI api must be alsa or jack, got {api!r}")
    return apis[api]


def port_matches(name: str, pattern: str) -> bool:
    """A glob (`TR-8*`) matches the whole name; plain text matches a part of it. Case-insensitive."""
    name, pattern = name.lower(), pattern.lower()
    return fnmatch.fnmatchcase(name, pattern) if any(c in pattern for c in "*?[") else pattern in name


def no_sequencer_hint(api: str) -> str:
    """What to try when the ALSA API cannot open because the machine has no sequencer device."""
    if api == "alsa" and not os.path.exists("/dev/snd/seq"):
        return "; this machine has no ALSA sequencer (/dev/snd/seq): try --midi-api jack"
    return ""
