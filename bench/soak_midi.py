"""The soak's MIDI controller and keyboard, in a process of their own (bench/soak.py).

A stage's controllers are other devices; here they are two virtual JACK MIDI outputs (mido over
python-rtmidi's JACK API) in a child process. In the harness's own process, closing or opening
a JACK client while the harness's recorder runs its Python process callback deadlocks: the
closing thread holds the GIL while JACK waits for the cycle, and the cycle's callback waits for
the GIL (seen: the whole graph stopped). Lines on stdin, one per message:

    send PORT HEX...   send the bytes (a whole MIDI message) on PORT (`nano` or `keys`)
    close PORT         the device is unplugged
    open PORT          it is plugged in again
"""

from __future__ import annotations

import sys

import mido

BACKEND = "mido.backends.rtmidi/UNIX_JACK"


def main(names: dict[str, str]) -> int:
    backend = mido.Backend(BACKEND)
    ports = {key: backend.open_output(name, virtual=True) for key, name in names.items()}
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        verb, key = words[0], words[1]
        if verb == "send" and ports.get(key) is not None:
            ports[key].send(mido.Message.from_bytes(bytes.fromhex("".join(words[2:]))))
        elif verb == "close" and ports.get(key) is not None:
            ports[key].close()
            ports[key] = None
            print(f"closed {key}", flush=True)
        elif verb == "open" and ports.get(key) is None:
            ports[key] = backend.open_output(names[key], virtual=True)
            print(f"opened {key}", flush=True)
    for port in ports.values():
        if port is not None:
            port.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(dict(arg.split("=", 1) for arg in sys.argv[1:])))
