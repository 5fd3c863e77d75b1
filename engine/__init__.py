"""backline: a headless live-performance engine for Magenta RealTime 2."""

__version__ = "0.1.0"
