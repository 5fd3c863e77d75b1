"""The one compiled part: the real-time output callback (engine/audio/rtout.c).

It includes no Python header (cffi loads it in ABI mode), so a C compiler and libc are all it
needs. It is optional: without a compiler `pip install` still succeeds, renders to a file work,
and a live output says in one line what is missing (engine/audio/rtout.py).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("engine.audio._rtout", sources=["engine/audio/rtout.c"],
                             extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"], optional=True)])
