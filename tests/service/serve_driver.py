"""`backline serve`, plus a line-based control channel on stdin, for the end-to-end tests.

The control layer (OSC, MIDI) is not on this branch yet, so tests cannot reach a running
engine through it. This driver runs the real runner exactly as `serve` does and adds two
stdin commands: `set PATH VALUE` (a ControlEvent applied now) and `dump` (prints the
engine's snapshot as one JSON line on stdout).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading

from engine.params import ControlEvent, lookup
from engine.service.config import load_config
from engine.service.notify import Notifier
from engine.service.runner import Service
from engine.service.signals import SignalThread


def stdin_commands(service: Service) -> None:
    """Driver thread: apply `set` lines, answer `dump` lines."""
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["set"]:
            path = words[1]  # applied now, or at the next bar line for what changes only there (tempo)
            quantize = "now" if "now" in lookup(path)[0].quantizes else "bar"
            service.engine.submit(ControlEvent(path, json.loads(words[2]), source="test", quantize=quantize))
        elif words[:1] == ["dump"]:
            print(json.dumps(service.engine.snapshot_state()), flush=True)


def main(config_path: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    notifier = Notifier()
    service = Service(load_config(config_path), notifier=notifier, reload_config=lambda: load_config(config_path))
    handlers = {signal.SIGHUP: service.reload, signal.SIGTERM: service.terminate}
    with SignalThread(handlers):
        try:
            service.start()
            threading.Thread(target=stdin_commands, args=(service,), daemon=True).start()
            return service.run()
        finally:
            service.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
