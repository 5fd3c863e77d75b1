"""backline: a headless live-performance engine for Magenta RealTime 2."""

from engine.jack import use_system_libjack

__version__ = "0.1.0"

use_system_libjack()  # before anything imports rtmidi: one libjack per process (see engine/jack.py)
