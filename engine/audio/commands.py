"""`backline devices`: the host APIs and output devices PortAudio sees."""

from __future__ import annotations

import argparse


def _cmd_devices(args: argparse.Namespace) -> int:
    import sounddevice as sd

    from engine.audio.sinks import list_devices

    print(list_devices(sd))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    devices = sub.add_parser("devices", help="list host APIs and output devices")
    devices.set_defaults(func=_cmd_devices)
