"""`backline devices`: the host APIs and output devices PortAudio sees, and the generator
servers that answer on the network (Zeroconf)."""

from __future__ import annotations

import argparse


def _cmd_devices(args: argparse.Namespace) -> int:
    import sounddevice as sd

    from engine.audio.sinks import list_devices

    print(list_devices(sd))
    if args.servers:
        from engine.discovery import find_servers

        found = find_servers(seconds=args.servers)
        print(f"\ngenerator servers (Zeroconf, {args.servers:g} s): " + ("none answered" if not found else ""))
        for server in found:
            print(f"  {server.url}  {server.generator}, {server.max_sessions} session(s) at most  ({server.name})")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    devices = sub.add_parser("devices", help="list host APIs, output devices and generator servers on the network")
    devices.add_argument("--servers", type=float, default=1.5, metavar="SECONDS",
                         help="how long to listen for generator servers (default 1.5; 0: do not)")
    devices.set_defaults(func=_cmd_devices)
