"""Live audio sinks: sounddevice (PortAudio on JACK or ALSA) and a real-time WAV writer.

Both play from the C output ring (engine/audio/rtout.c), filled ahead by the feeder
(engine/audio/feeder.py) from the playback ring. The C side's read position is the
engine's clock of record: `playhead` is the number of 48 kHz samples played since
transport start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from engine import native
from engine.audio.feeder import OutputFeeder, Quality
from engine.audio.file_sink import FileSink
from engine.audio.memlock import MemoryLock, lock_memory
from engine.audio.ring import PlaybackRing
from engine.audio.rtout import OutputRing
from engine.errors import OutputError
from engine.units import CHANNELS, SAMPLE_RATE

log = logging.getLogger(__name__)
HostApi = Literal["jack", "alsa"]
HOST_API_NAMES = {"jack": "JACK Audio Connection Kit", "alsa": "ALSA"}
DEFAULT_BLOCKSIZE = 256
DEFAULT_FADE_S = 0.05
CLOSE_TIMEOUT_S = 3.0  # longest wait for PortAudio to stop a stream
OUTPUT_RING_FRAMES = 1 << 19  # the C ring: ~10.9 s at 48 kHz, more than the longest look-ahead (10 s), 4 MiB
Resample = Quality | Literal["off"]
PA_INVALID_SAMPLE_RATE = -9997  # PortAudio error codes (portaudio.h)
PA_DEVICE_UNAVAILABLE = -9985
PA_INSUFFICIENT_MEMORY = -9992  # what PortAudio's JACK API reports when the server refuses our ports


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """Where audio goes: `jack`, `alsa` or `wav:FILE`, plus device options."""

    kind: Literal["jack", "alsa", "wav"]
    path: Path | None = None
    device: str | int | None = None
    blocksize: int = DEFAULT_BLOCKSIZE
    latency: str | float = "low"
    connect: tuple[str, ...] | None = None  # JACK ports to connect to; None = system playback
    autoconnect: bool = True
    resample: Resample = "HQ"  # soxr quality when the device does not run at 48 kHz; "off" refuses instead

    @classmethod
    def parse(cls, text: str, **options: object) -> OutputSpec:
        if text.startswith("wav:") and len(text) > 4:
            return cls("wav", path=Path(text[4:]), **options)  # type: ignore[arg-type]
        if text in ("jack", "alsa"):
            return cls(text, **options)  # type: ignore[arg-type]
        raise OutputError(f"unknown output {text!r}: use jack, alsa or wav:FILE")


class Sink:
    """Base for sinks: a ring, a playhead, counters, and a fade-out stop."""

    name = "sink"
    live = True  # a device or real-time writer: its own audio thread, and ending early is a failure

    def __init__(self, ring: PlaybackRing, *, blocksize: int, fade_s: float = DEFAULT_FADE_S) -> None:
        if blocksize < 16 or blocksize > 8192:
            raise OutputError(f"block size must be in 16..8192 frames, got {blocksize}")
        self.ring = ring
        self.blocksize = blocksize
        self.server_xruns = 0  # the audio server's own xrun reports (JACK), which PortAudio coalesces
        self.finished = threading.Event()
        self.armed = False  # until armed the sink plays silence and the playhead stays at 0
        self.fade_s = fade_s
        self.stuck = False  # the stream could not be stopped: exit without PortAudio's shutdown
        self.audio_server: str | None = None  # an audio server that sets our thread's priority itself (JACK)
        self.memory: MemoryLock | None = None  # what a live sink locked in RAM (memlock.py)

    @property
    def playhead(self) -> int:
        """48 kHz samples played since transport start."""
        raise NotImplementedError

    @property
    def xruns(self) -> int:
        """Blocks the output missed: the device's underflow flags, and blocks played short."""
        return 0

    @property
    def audio_tid(self) -> int | None:
        """The audio thread's kernel id, once it has run (realtime.py)."""
        return None

    @property
    def output_ms(self) -> dict[str, float]:
        """What the audio thread played other than fed audio, in ms since it armed: zeros
        (`silence`: nothing fed and no bar to loop), the designated bar looped because the
        feeder was late (`dry_replay`), and time JACK's frames moved on without a block from
        this client (`skipped`: its cycles lost to an xrun). Tells who made a silence a
        listener heard: the engine, or the audio server. Any thread: counters the callback
        adds to atomically."""
        return {"silence": 0.0, "dry_replay": 0.0, "skipped": 0.0}

    @property
    def skips(self) -> list[tuple[int, int]]:
        """The newest spans (JACK frame, frames) JACK's frames moved on without a block from this
        client, up to 16 (`skipped` counts them all): where a silence was the audio server's."""
        return []

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def fade_out(self) -> None:
        """Begin the fade; `finished` is set once silence is reached."""
        raise NotImplementedError

    def tick(self, wake: threading.Event, timeout: float) -> None:
        """Loop thread, between two turns of the engine loop. A live sink plays in real time on
        its own thread, so the loop waits for a control or `timeout`; the offline sink renders
        its next block here instead (the same loop, on an offline clock)."""
        wake.wait(timeout)
        wake.clear()

    @property
    def read_ahead(self) -> int:
        """48 kHz samples past `playhead` the sink may already have committed (one block):
        a rollback splices no nearer than this."""
        return self.blocksize

    @property
    def playing(self) -> bool:
        """Between arming and the end of the fade-out: the span whose xruns can be heard.

        A stream's teardown (clients leaving the JACK graph) causes xruns of its own, after
        the last sample was played; they are not counted."""
        return self.armed and not self.finished.is_set()


class LiveSink(Sink):
    """A sink whose audio thread runs the C callback over the C ring the feeder fills.

    `rate` is the rate the audio thread plays at; other than 48 kHz, the feeder resamples.
    """

    def __init__(self, ring: PlaybackRing, *, blocksize: int, fade_s: float, rate: int = SAMPLE_RATE,
                 quality: Quality = "HQ") -> None:
        super().__init__(ring, blocksize=blocksize, fade_s=fade_s)
        self.rate = rate
        self.out = OutputRing(OUTPUT_RING_FRAMES, CHANNELS, fade_frames=max(1, round(fade_s * rate)))
        self.feeder = OutputFeeder(ring, self.out, blocksize=blocksize, finished=self.finished,
                                   device_rate=rate, quality=quality)

    @property
    def playhead(self) -> int:
        return self.out.read_position * SAMPLE_RATE // self.rate

    @property
    def xruns(self) -> int:
        return self.out.xruns + self.out.gaps

    @property
    def audio_tid(self) -> int | None:
        return self.out.tid

    @property
    def output_ms(self) -> dict[str, float]:
        ms = 1000.0 / self.rate
        silence = self.out.gap_frames + self.feeder.silence_played  # unfed, or fed zeros: nothing to play
        return {"silence": round(silence * ms, 1), "dry_replay": round(self.out.dry_frames * ms, 1),
                "skipped": round(self.out.skipped * ms, 1)}

    @property
    def skips(self) -> list[tuple[int, int]]:
        return self.out.skips

    @property
    def read_ahead(self) -> int:
        return self.feeder.read_ahead

    def fade_out(self) -> None:
        self.out.fade()

    def _arm(self) -> None:
        """Feed what is written, lock the memory the audio thread touches, then play from frame 0."""
        self.feeder.start()
        self.memory = lock_memory(self.out.address, self.out.frames.nbytes)
        log.info("memory: %s", self.memory)
        self.out.arm()
        self.armed = True

    def _disarm(self) -> None:
        self.feeder.close()
        if self.memory is not None:
            self.memory.release()


class DeviceSink(LiveSink):
    """PortAudio output through sounddevice, on the JACK or ALSA host API, with the C callback.

    The stream is opened with `bl_callback`'s address as its callback (sounddevice's
    `_StreamBase` takes a C function pointer, as python-rtmixer does), so PortAudio's audio
    thread (JACK's process thread on JACK) never enters the interpreter. On a device that runs
    at another rate (a JACK server at 44.1 kHz, an ALSA card without 48 kHz) the feeder
    resamples into the C ring and the playhead counts the device's frames back in 48 kHz.
    """

    def __init__(self, ring: PlaybackRing, spec: OutputSpec, *, fade_s: float = DEFAULT_FADE_S, client_name: str = "backline") -> None:
        import sounddevice as sd

        if spec.kind == "jack":
            _PaJackName.set(sd, client_name)
        self._sd = sd
        self.spec = spec
        self.device = find_device(sd, spec.kind, spec.device)
        rate = _device_rate(sd, spec, self.device)
        quality: Quality = "HQ" if spec.resample == "off" else spec.resample
        super().__init__(ring, blocksize=spec.blocksize, fade_s=fade_s, rate=rate, quality=quality)
        self.audio_server = "JACK" if spec.kind == "jack" else None
        self.name = spec.kind
        if self.rate != SAMPLE_RATE:
            log.info("%s device %d runs at %d Hz: resampling the %d Hz stream to %d Hz (soxr %s, +%.0f ms queued)",
                     spec.kind, self.device, self.rate, SAMPLE_RATE, self.rate, spec.resample,
                     self.feeder.lead * 1000 / self.rate)
        try:
            self._stream = sd._StreamBase(
                kind="output",
                samplerate=self.rate,
                blocksize=spec.blocksize,
                device=self.device,
                channels=CHANNELS,
                dtype="float32",
                latency=spec.latency,
                callback=self.out.callback,
                userdata=self.out.userdata,
                finished_callback=self.finished.set,
            )
        except sd.PortAudioError as err:
            raise OutputError(_open_error(sd, spec, self.device, err)) from err
        self.client_name = client_name
        self._monitor = None  # a JACK-Client that routes our ports and hears JACK's xruns
        if spec.kind == "jack":
            self._open_monitor()  # before the engine sizes its splice margin on `read_ahead`

    @property
    def frame_origin(self) -> int | None:
        """JACK frame (32 bits) where playhead 0 plays, once the JACK stream runs frame-locked."""
        return self.out.origin

    @property
    def frame_clock(self) -> Callable[[], int] | None:
        """JACK's current frame (32 bits, interpolated within the cycle: `jack_frame_time`), for a
        clock source converted onto JACK's frames; None off JACK. Any thread."""
        monitor = self._monitor
        return None if monitor is None else (lambda: monitor.frame_time)

    def start(self) -> None:
        try:
            self._stream.start()
        except self._sd.PortAudioError as err:
            raise OutputError(_open_error(self._sd, self.spec, self.device, err)) from err
        if self._monitor is not None:
            self._route_jack()
        self._arm()  # bar 0 starts on the first sample of the next block

    def _open_monitor(self) -> None:
        """A JACK client beside PortAudio's: routes our ports, hears the server's xruns and
        shutdown, hands the C callback JACK's frame clock, and tells the feeder JACK's period.
        It has no process callback."""
        try:
            import jack
        except ImportError:
            log.warning("JACK-Client is not installed: leaving PortAudio's default connections, playhead not frame-locked")
            return
        self.client_name = _PaJackName.get(self._sd, self.client_name)
        monitor = jack.Client(f"{self.client_name}-monitor", no_start_server=True)
        monitor.set_xrun_callback(self._jack_xrun)
        monitor.set_client_registration_callback(self._jack_client_gone)
        monitor.set_shutdown_callback(lambda status, reason: self.finished.set())
        monitor.activate()
        self._monitor = monitor
        period = monitor.blocksize
        # PortAudio takes a JACK period of several blocks as that many callbacks back to back
        self.feeder.in_flight = max(self.blocksize, period * SAMPLE_RATE // self.rate)
        if self.rate != SAMPLE_RATE:
            log.info("resampling: the playhead follows the device's frames, not JACK's frame clock")
        elif period % self.blocksize and self.blocksize % period:
            log.warning("JACK period %d and block size %d do not divide: playhead not frame-locked", period, self.blocksize)
        else:
            ffi = jack._ffi  # the frame clock, read by the C callback through libjack itself
            self.out.lock_to(native.address(ffi, ffi.addressof(jack._lib, "jack_last_frame_time")),
                             native.address(ffi, monitor._ptr))

    def _route_jack(self) -> None:
        """Connect our two ports where asked (PortAudio auto-connects to system playback)."""
        monitor = self._monitor
        assert monitor is not None
        ours = monitor.get_ports(f"{self.client_name}:", is_output=True, is_audio=True)
        for port in ours:
            for dest in monitor.get_all_connections(port):
                if self.spec.connect is not None or not self.spec.autoconnect:
                    monitor.disconnect(port, dest)
        if self.spec.connect:
            for port, dest in zip(ours, self.spec.connect):
                monitor.connect(port, dest)
        log.info("JACK ports %s -> %s", [p.name for p in ours],
                 list(self.spec.connect or (["system:playback_*"] if self.spec.autoconnect else [])))

    def _jack_xrun(self, delay_usecs: float) -> None:
        """JACK's notification thread: count the server's xruns while our audio plays."""
        if self.playing:
            self.server_xruns += 1

    def _jack_client_gone(self, name: str, register: bool) -> None:
        """JACK's notification thread: if the server drops our client (a zombified, too-slow
        client), no callback will come again; end the stream so the engine stops waiting."""
        if not register and name == self.client_name:
            self.finished.set()

    def close(self) -> None:
        """Stop and close the stream, giving PortAudio a bounded time.

        PortAudio's JACK backend waits for one more process cycle to stop; when the server
        is frozen or gone that cycle never comes. Then the stream is left behind (`stuck`),
        with the C ring it reads, and the caller exits without PortAudio's own shutdown, so
        systemd can restart us.
        """
        stopper = threading.Thread(target=self._stop_stream, name="portaudio-stop", daemon=True)
        stopper.start()
        stopper.join(CLOSE_TIMEOUT_S)
        if stopper.is_alive():
            self.stuck = True
            _abandoned.append(self.out)  # the stream may still call back into it: never freed
            log.error("PortAudio did not stop the %s stream within %.0f s (the audio server is frozen or gone); "
                      "leaving it", self.spec.kind, CLOSE_TIMEOUT_S)
            return
        self._disarm()
        if self._monitor is not None:
            self._monitor.deactivate()
            self._monitor.close()

    def _stop_stream(self) -> None:
        self._stream.stop()
        self._stream.close()


_abandoned: list[OutputRing] = []  # C rings of streams PortAudio could not stop


class WavRealtimeSink(LiveSink):
    """Writes the live stream to a file in real time, for boxes without a device.

    A thread paced by `time.monotonic()` and an Event wait (never sleep-to-deadline) runs the
    C callback once per block period, exactly as a device would, and writes the block.
    """

    name = "wav"

    def __init__(self, ring: PlaybackRing, path: Path, *, blocksize: int = DEFAULT_BLOCKSIZE, fade_s: float = DEFAULT_FADE_S) -> None:
        super().__init__(ring, blocksize=blocksize, fade_s=fade_s)
        self._file = FileSink(path)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wav-sink", daemon=True)
        self._block = np.zeros((blocksize, CHANNELS), dtype=np.float32)
        self.late_blocks = 0  # the writer fell more than a block behind its clock

    @property
    def xruns(self) -> int:
        return super().xruns + self.late_blocks

    def start(self) -> None:
        self._arm()
        self._thread.start()

    def _run(self) -> None:
        period = self.blocksize / SAMPLE_RATE
        start = time.monotonic()
        blocks = 0
        while not self._stop.is_set() and not self.finished.is_set():
            self.out.pull(self._block)
            self._file.write(self._block)
            blocks += 1
            delay = start + blocks * period - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            elif delay < -period:
                self.late_blocks += 1
        self.finished.set()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self._disarm()
        self._file.close()


def open_sink(ring: PlaybackRing, spec: OutputSpec, *, fade_s: float = DEFAULT_FADE_S) -> Sink:
    if spec.kind == "wav":
        assert spec.path is not None
        return WavRealtimeSink(ring, spec.path, blocksize=spec.blocksize, fade_s=fade_s)
    return DeviceSink(ring, spec, fade_s=fade_s)


class _PaJackName:
    """PortAudio's JACK client name: set before PortAudio initialises, read back after.

    PortAudio keeps the pointer, not a copy, so the C string is kept alive here. JACK
    renames a client whose name is taken (backline-01), so routing asks for the real one.
    """

    _keep: list[object] = []

    @classmethod
    def _lib(cls, sd: object) -> tuple[object, object]:
        import cffi

        if not cls._keep:
            ffi = cffi.FFI()
            ffi.cdef("int PaJack_SetClientName(const char*); int PaJack_GetClientName(const char**);")
            cls._keep[:] = [ffi, ffi.dlopen(sd._libname)]  # type: ignore[attr-defined]
        return cls._keep[0], cls._keep[1]

    @classmethod
    def set(cls, sd: object, name: str) -> None:
        try:
            ffi, lib = cls._lib(sd)
            c_name = ffi.new("char[]", name.encode())  # type: ignore[attr-defined]
            cls._keep[2:] = [c_name]
            sd._terminate()  # type: ignore[attr-defined]
            lib.PaJack_SetClientName(c_name)  # type: ignore[attr-defined]
            sd._initialize()  # type: ignore[attr-defined]
        except (OSError, AttributeError) as err:
            log.warning("cannot name the JACK client %r (%s); PortAudio's default name is used", name, err)

    @classmethod
    def get(cls, sd: object, default: str) -> str:
        try:
            ffi, lib = cls._lib(sd)
            out = ffi.new("const char**")  # type: ignore[attr-defined]
            if lib.PaJack_GetClientName(out) == 0 and out[0] != ffi.NULL:  # type: ignore[attr-defined]
                return ffi.string(out[0]).decode()  # type: ignore[attr-defined]
        except (OSError, AttributeError) as err:
            log.warning("cannot read the JACK client's name (%s); assuming %r", err, default)
        return default


def _device_rate(sd: object, spec: OutputSpec, device: int) -> int:
    """48 kHz if the device takes it, else the device's own rate when resampling is on."""
    def check(rate: int) -> None:
        sd.check_output_settings(device=device, channels=CHANNELS, dtype="float32", samplerate=rate)  # type: ignore[attr-defined]

    try:
        check(SAMPLE_RATE)
        return SAMPLE_RATE
    except sd.PortAudioError as err:  # type: ignore[attr-defined]
        if err.args[1:2] != (PA_INVALID_SAMPLE_RATE,):
            raise OutputError(_open_error(sd, spec, device, err)) from err
        refused = err
    native = int(sd.query_devices(device)["default_samplerate"])  # type: ignore[attr-defined]
    if spec.resample != "off" and native != SAMPLE_RATE:
        try:
            check(native)
            return native
        except sd.PortAudioError as err:  # type: ignore[attr-defined]
            refused = err
    why = "resampling is off (--resample off)" if spec.resample == "off" else f"its own rate ({native} Hz) is refused too"
    raise OutputError(
        f"{spec.kind} device {device} ({_device_name(sd, device)}) does not run at {SAMPLE_RATE} Hz: {refused.args[0]}; "
        f"it runs at {native} Hz and {why}.\nDevices:\n{list_devices(sd)}\n"
        f"Try: --resample HQ, run the device at 48 kHz (JACK: jackd -r 48000), or --output wav:FILE"
    ) from refused


def _open_error(sd: object, spec: OutputSpec, device: int, err: Exception) -> str:
    """One message for a device PortAudio would not open: what, which devices exist, what to try."""
    code = err.args[1] if len(err.args) > 1 else None
    name = f"{spec.kind} device {device} ({_device_name(sd, device)})"
    if code == PA_DEVICE_UNAVAILABLE:
        what = f"{name} is busy: another program has it open ({err.args[0]})"
        hint = "close the other program (or route it through JACK), pick another --device"
    elif code == PA_INSUFFICIENT_MEMORY and spec.kind == "jack":
        what = f"the JACK server refused backline's ports ({err.args[0]}): it may be out of ports (jackd --port-max) or clients"
        hint = "stop a JACK client you do not need, restart jackd with a larger --port-max"
    else:
        what = f"cannot open {name}: {err}"
        hint = "pick another --device"
    return f"{what}.\nDevices:\n{list_devices(sd)}\nTry: {hint}, or --output wav:FILE"


def _device_name(sd: object, device: int) -> str:
    return str(sd.query_devices(device)["name"])  # type: ignore[attr-defined]


def list_devices(sd: object) -> str:
    """Host APIs and output devices, for `backline devices` and error messages."""
    lines = []
    for index, api in enumerate(sd.query_hostapis()):  # type: ignore[attr-defined]
        lines.append(f"host API {index}: {api['name']}")
        for dev in api["devices"]:
            info = sd.query_devices(dev)  # type: ignore[attr-defined]
            if info["max_output_channels"] > 0:
                lines.append(f"  [{dev}] {info['name']} ({info['max_output_channels']} out, {info['default_samplerate']:.0f} Hz)")
    return "\n".join(lines) if lines else "no host APIs found"


def find_device(sd: object, kind: str, device: str | int | None) -> int:
    """The output device index on host API `kind`, by index or name substring."""
    apis = sd.query_hostapis()  # type: ignore[attr-defined]
    wanted = HOST_API_NAMES[kind]
    api = next((a for a in apis if a["name"] == wanted), None)
    if api is None:
        hint = "is the JACK server running? (jackd -d alsa -r 48000, or systemctl start jackd)" if kind == "jack" else "is there a sound card? (/dev/snd)"
        raise OutputError(f"host API {wanted} is not available: {hint}. Devices:\n{list_devices(sd)}\nOr try --output wav:FILE")
    outputs = [d for d in api["devices"] if sd.query_devices(d)["max_output_channels"] >= CHANNELS]  # type: ignore[attr-defined]
    if isinstance(device, int) or (isinstance(device, str) and device.isdigit()):
        index = int(device)
        if index in outputs:
            return index
    elif device is None and outputs:
        default = api["default_output_device"]
        return default if default in outputs else outputs[0]
    elif device is not None:
        matches = [d for d in outputs if device.lower() in sd.query_devices(d)["name"].lower()]  # type: ignore[attr-defined]
        if matches:
            return matches[0]
    raise OutputError(f"no {kind} output device matches {device!r} with {CHANNELS} channels. Devices:\n{list_devices(sd)}\nOr try --output wav:FILE")
