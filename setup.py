"""The compiled parts: the real-time callbacks, audio (engine/audio/rtout.c) and JACK MIDI clock
(engine/clock/jack_midi.c), and the time-stretch binding (engine/schedule/stretch.cpp, C++ with the
vendored header-only Signalsmith Stretch).

They include no Python header (cffi loads them in ABI mode: engine/native.py), so a C compiler and
libc are all they need. They are optional: without a compiler `pip install` still succeeds, renders
to a file work, and a live output says in one line what is missing.
"""

from setuptools import Extension, setup

FLAGS = ["-O2", "-std=c11", "-Wall", "-Wextra"]
setup(ext_modules=[Extension("engine.audio._rtout", sources=["engine/audio/rtout.c"], extra_compile_args=FLAGS, optional=True),
                   Extension("engine.clock._jackmidi", sources=["engine/clock/jack_midi.c"], extra_compile_args=FLAGS,
                             optional=True),
                   Extension("engine.schedule._stretch", sources=["engine/schedule/stretch.cpp"], language="c++",
                             extra_compile_args=["-O2", "-std=c++17", "-Wall"], optional=True)])
