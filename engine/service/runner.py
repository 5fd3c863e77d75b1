"""`backline serve`: one engine under a service manager, from start-up to a faded stop.

Start-up reports each step as a `STATUS=` line and sends `READY=1` from the engine's
`on_ready` (audio is flowing and the generator has filled the first look-ahead), or once
audio flows with the fallback while a generator server refuses the token or cannot be
reached (waiting for the generator would only get the box killed at the start timeout and
restarted in a loop; `on_ready` sends READY again once the generator plays). The
scheduling loop feeds the watchdog from `on_tick`. Every applied change marks the crash
state dirty; after a restart the saved patch, parameters and tempo are restored.
SIGHUP reloads what can change live; SIGTERM fades out and exits 0.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from collections.abc import Callable
from typing import Any

from engine.audio.sinks import OutputSpec, open_sink
from engine.clock.driver import ClockDriver
from engine.clock.jack_out import JackClockOutput
from engine.clock.midi_clock_out import open_clock_output
from engine.clock.source import ClockSource
from engine.control.surfaces import ControlSurfaces
from engine.engine import Engine, format_status
from engine.errors import BacklineError
from engine.generator import Generator, create_generator
from engine.patch import Patch, load_patch
from engine.service.config import LIVE_FIELDS, ServiceConfig, load_config
from engine.service.notify import Notifier
from engine.service.signals import SignalThread
from engine.service.state import StateStore
from engine.web.server import WebServer, loopback

log = logging.getLogger(__name__)

STATUS_EVERY_S = 5.0
MAGENTA_START_S = 600.0  # a cold compile on a small GPU; systemd's TimeoutStartSec is extended by this


class Service:
    """Builds the engine from the config and keeps the service manager informed."""

    def __init__(self, config: ServiceConfig, *, notifier: Notifier,
                 reload_config: Callable[[], ServiceConfig] | None = None) -> None:
        """`reload_config` re-reads the config on SIGHUP (None: nothing to re-read, patches still reload)."""
        self.config = config
        self.reload_config = reload_config
        self.notifier = notifier
        self.store = StateStore(config.state_file, snapshot=self._snapshot) if config.state_file else None
        self.engine: Engine | None = None
        self.control: ControlSurfaces | None = None
        self.web: WebServer | None = None
        self.clock: ClockDriver | None = None
        self.clock_out: Any = None
        self._generators: list[Generator] = []
        self._announcements: list[Any] = []
        self._stop = threading.Event()
        self._digests: dict[Path, str] = {}
        self._next_status = 0.0
        self._ready_sent = False

    # -- start-up (main thread) ---------------------------------------------------------------
    def start(self) -> Engine:
        config, notify = self.config, self.notifier
        saved = self.store.load() if self.store else None
        patch = self._start_patch(saved)
        options = dict(config.generator_options)
        if config.generator == "magenta":
            options.setdefault("compilation_cache_dir", str(config.cache_dir / "jax"))
            # missing or corrupt weights or MusicCoCa files: the fallback plays (loudly logged), as documented
            options.setdefault("on_missing_assets", "synth" if config.fallback == "synth" else "refuse")
            notify.extend_timeout(MAGENTA_START_S)
        notify.status(f"starting the {config.generator} generator")
        frames_per_call = int(options.get("frames_per_call", 2))  # magenta: also its jitted step T
        if config.generator != "magenta":
            options.pop("frames_per_call", None)
        # magenta runs in its own process; the fallback plays while it loads, compiles or restarts
        generator = create_generator(config.generator, process=config.generator == "magenta", **options)
        self._generators.append(generator)
        fallback = None
        if config.fallback and config.fallback != config.generator:
            fallback = create_generator(config.fallback)
            self._generators.append(fallback)
        spec = OutputSpec.parse(config.output, device=config.device, blocksize=config.blocksize,
                                latency=config.latency, connect=config.connect, autoconnect=config.autoconnect,
                                resample=config.resample)
        source = clock_source(config, patch)
        notify.status(f"opening clock {source}")
        self.clock = ClockDriver.open(source, bpm=float(patch.bpm), beats_per_bar=patch.beats_per_bar, midi_api=config.midi_api,
                                     jack_output=spec.kind == "jack")
        if config.clock_out and config.midi_api == "jack" and spec.kind == "jack":
            self.clock_out = JackClockOutput(config.clock_out)  # written at its frames, like the audio
        elif config.clock_out:
            self.clock_out = open_clock_output(config.clock_out, api=config.midi_api)
        notify.status(f"opening output {config.output}")
        engine = Engine(patch=patch, generator=generator, fallback=fallback, lookahead_ms=config.lookahead_ms,
                        embedder=generator.style_model(cache_dir=config.cache_dir / "style"),
                        frames_per_call=frames_per_call,
                        sink_factory=lambda ring: open_sink(ring, spec, fade_s=config.fade_s),
                        patch_set=self._patch_set(config) or None, clock=self.clock, start_on=config.start_on,
                        clock_out=self.clock_out, realtime_priority=config.realtime_priority,
                        rollback=config.rollback, margin_ms=config.margin_ms, fit=config.fit or patch.fit)
        if saved is not None and saved.get("patch") == (str(patch.path) if patch.path else None):
            try:
                engine.restore_state(saved)
            except (BacklineError, ValueError, KeyError, TypeError) as err:
                log.error("cannot restore the saved parameters (%s): playing the patch as written", err)
            else:
                log.info("restored patch %s at %s BPM with its saved parameters", patch.name, dict(saved["values"]).get("tempo.bpm"))
        engine.on_ready = self._on_ready
        engine.on_tick = self._on_tick
        engine.add_listener(self._on_change)
        self.engine = engine
        self.control = ControlSurfaces(
            engine, mappings=config.mappings, learn_file=config.learn_file,
            midi_api=config.midi_api if config.midi_enabled else None, midi_inputs=config.midi_inputs,
            osc_host=config.osc_host, osc_port=config.osc_port if config.osc_enabled else None,
            osc_allow=config.osc_allow, osc_feedback=config.osc_feedback)
        engine.scheduler.add_input(self.control.drain)  # once per generated frame, on the scheduler thread
        engine.input_rejects = self.control.dispatcher.rejects.refused
        self.control.start()
        if config.web_port is not None:  # the page, its WebSocket and the health endpoint `/status`
            self.web = WebServer(engine, self.control.dispatcher, host=config.web_host, port=config.web_port,
                                 token=config.web_token, learn=self.control.learner.arm)
            try:
                self.web.start()
            except BacklineError as err:  # like any surface that cannot start: logged, the show plays on
                log.error("%s; the page is off (pick another port with --web-port or web.port)", err)
                self.web.close()
                self.web = None
        if config.zeroconf:
            self._announce()
        if self.store:
            self.store.start()
            self.store.mark_dirty()  # a crash before the first change still resumes this patch
        notify.status(f"filling {config.lookahead_ms:g} ms of look-ahead")
        return engine

    def _announce(self) -> None:
        """Zeroconf records for the page and OSC where they listen beyond loopback, as surfaces
        look for them (TouchOSC, Open Stage Control, a phone). No multicast: logged, not fatal."""
        hosts: dict[str, list[tuple[str, int, dict[str, str]]]] = {}
        if self.web is not None and not loopback(self.web.address[0]):
            hosts.setdefault(self.web.address[0], []).append(("_http._tcp.local.", self.web.address[1], {"path": "/"}))
        osc = self.control.osc if self.control is not None else None
        if osc is not None and not loopback(osc.address[0]):
            hosts.setdefault(osc.address[0], []).append(("_osc._udp.local.", osc.address[1], {}))
        for host, records in hosts.items():
            try:
                from engine.discovery import Announcement

                self._announcements.append(Announcement(host, records))
            except Exception as err:  # noqa: BLE001 - no multicast here, no zeroconf: play unannounced
                log.warning("not announced on the network (%s: %s)", type(err).__name__, err)

    def _start_patch(self, saved: dict[str, Any] | None) -> Patch:
        """The saved patch if it still loads, else the configured one."""
        if saved is not None and saved.get("patch"):
            try:
                return self._load(Path(str(saved["patch"])))
            except BacklineError as err:
                log.error("cannot resume the saved patch (%s): starting %s", err, self.config.patch)
        return self._load(self.config.patch)

    def _load(self, path: Path) -> Patch:
        self.notifier.status(f"loading patch {path}")
        patch = load_patch(path)
        self._digests[path.resolve()] = _digest(path)
        return patch

    @staticmethod
    def _patch_set(config: ServiceConfig) -> list[Path]:
        return sorted(config.patches.glob("*.yaml")) if config.patches else []

    # -- engine callbacks (scheduling-loop thread) ----------------------------------------------
    def _on_ready(self) -> None:
        """Loop thread, once: audio flows and the first look-ahead was generated."""
        assert self.engine is not None
        status = self.engine.status()
        self._ready_sent = True
        self.notifier.ready(f"playing {status['patch']} on {status['output']} at {status['tempo']:g} BPM")

    def _on_tick(self) -> None:
        """Loop thread, every iteration: watchdog, READY while the fallback covers a generator
        server that refuses the token or cannot be reached, and a STATUS line every few seconds."""
        self.notifier.watchdog_tick()
        if not self._ready_sent and self.notifier.enabled and self.engine is not None and self.engine.sink.playhead > 0:
            outage = getattr(self.engine.scheduler.generator, "outage", None)
            if outage:  # the show plays (the fallback); `on_ready` says so again once the generator plays
                self._ready_sent = True
                self.notifier.ready(f"playing the fallback: {outage}")
        now = time.monotonic()
        if now >= self._next_status and self.engine is not None:
            self._next_status = now + STATUS_EVERY_S
            self.notifier.status(format_status(self.engine.status()))

    def _on_change(self, path: str, value: object, source: str) -> None:
        """Loop thread, after a change applies: schedule a state save (coalesced by the store)."""
        if self.store:
            self.store.mark_dirty()

    def _snapshot(self) -> dict[str, Any]:
        """State-writer thread: the engine's own snapshot (immutable values it swaps whole)."""
        assert self.engine is not None
        return self.engine.snapshot_state()

    # -- running and stopping ------------------------------------------------------------------
    def run(self, *, duration_s: float | None = None) -> int:
        """Main thread: the scheduling loop until SIGTERM or `duration_s` (0), or until the audio stream dies (1)."""
        assert self.engine is not None
        if not self._stop.is_set():
            self.engine.run(self._stop, duration_s=duration_s)
        if not self.engine.stream_died:
            return 0
        log.error("the audio stream died; exiting 1 so that systemd (Restart=on-failure) restarts the engine")
        return 1

    def terminate(self) -> None:
        """`signals` thread (SIGTERM, SIGINT): tell the manager, fade out, let `run` return."""
        if self._stop.is_set():
            log.info("already stopping")
            return
        log.info("stopping: fading out over %g s", self.config.fade_s)
        self.notifier.stopping(f"fading out over {self.config.fade_s:g} s")
        if self.engine is not None:
            self.engine.request_stop()
        self._stop.set()

    def close(self) -> None:
        for announcement in self._announcements:
            announcement.close()
        for part in (self.web, self.control, self.clock, self.clock_out):  # the page first: it feeds the control route
            if part is not None:
                part.close()
        if self.engine is not None and self.store:
            self.store.close()
        for generator in self._generators:
            generator.close()
        self.notifier.close()

    # -- reload (`signals` thread, SIGHUP) -----------------------------------------------------
    def reload(self) -> None:
        """Re-read what can change live. A file with an error is reported; the running version stays."""
        self.notifier.reloading()
        try:
            self._reload_config()
            self._reload_patch()
        finally:
            self.notifier.ready("reloaded")

    def _reload_config(self) -> None:
        if self.reload_config is None:
            return
        try:
            new = self.reload_config()
        except BacklineError as err:
            log.error("%s (keeping the running config)", err)
            return
        changed = self.config.differences(new)
        later = sorted(set(changed) - LIVE_FIELDS)
        if later:
            log.warning("config changes that need a restart (systemctl restart backline): %s", ", ".join(later))
        if self.engine is not None:  # the folder is listed again: files added or removed since are seen
            self.engine.patch_set = self._patch_set(new)
        if self.control is not None:
            failed = self.control.load_mappings(new.mappings)
            self.control.set_midi_inputs(new.midi_inputs)
            log.info("mappings reloaded: %d files, %d kept at their running version", len(new.mappings), len(failed))
        self.config = replace(self.config, **{name: getattr(new, name) for name in LIVE_FIELDS})

    def _reload_patch(self) -> None:
        """Reload the playing patch only if its file changed (a reload resets its parameters)."""
        if self.engine is None:
            return
        current = self.engine.snapshot_state().get("patch")
        if not current:
            return
        path = Path(str(current)).resolve()
        try:
            digest = _digest(path)
        except OSError as err:
            log.error("cannot read the playing patch %s: %s (it keeps playing)", path, err)
            return
        if digest == self._digests.get(path):
            return
        try:
            self.engine.load_patch(path, quantize="bar", source="reload")
        except BacklineError as err:
            log.error("%s (the running patch keeps playing)", err)
            return
        self._digests[path] = digest


def clock_source(config: ServiceConfig, patch: Patch) -> ClockSource:
    """The clock to follow: `--clock` or the config's clock.source (the CLI flag overrides the
    config key), else the start patch's `clock:`, else internal. A patch loaded later never
    switches the clock."""
    if config.clock_source is not None:
        return ClockSource(config.clock_source, config.clock_port if config.clock_source == "midi" else None)
    return patch.clock or ClockSource("internal")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def serve(config_path: str | Path | None = None, *, web_port: int | None = None) -> int:
    """`backline serve`: the config file (re-read on SIGHUP) under a service manager;
    `web_port` (`--web-port`) turns the web page on over the config's `web.port`."""
    def read() -> ServiceConfig:
        config = load_config(config_path)
        return config if web_port is None else replace(config, web_port=web_port)

    return run_service(read)


def run_service(read_config: Callable[[], ServiceConfig], *, duration_s: float | None = None) -> int:
    """Main thread: config, signals, start-up, the loop, and a clean stop. Returns the exit status.

    `backline serve` and `backline run` both come here, so a stage box and a terminal
    session build the same engine from the same config fields.
    """
    notifier = Notifier()
    notifier.status("reading config")
    service = Service(read_config(), notifier=notifier, reload_config=read_config)
    handlers = {signal.SIGHUP: service.reload, signal.SIGTERM: service.terminate, signal.SIGINT: service.terminate}
    with SignalThread(handlers):
        try:
            service.start()
            code = service.run(duration_s=duration_s)
        except BacklineError as err:
            notifier.status(f"failed: {err}")  # shown by `systemctl status` until the restart
            raise
        finally:
            service.close()
    if service.engine is not None and service.engine.sink.stuck:
        # PortAudio's own shutdown would wait for the dead server forever; the state is saved
        logging.shutdown()
        os._exit(code)
    return code
