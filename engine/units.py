"""The engine's units, shared by every layer: the sample rate every position is counted in,
MRT2's frame, and the output's channels. A bottom module: it imports nothing of the engine."""

SAMPLE_RATE = 48_000
FRAME_SAMPLES = 1920  # 40 ms at 48 kHz, one MRT2 frame
CHANNELS = 2
FIT_MODES = ("stretch", "resample")  # how frames meet the output grid: engine/schedule/fit.py
