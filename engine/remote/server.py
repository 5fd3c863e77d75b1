"""`backline generator-server`: generators served over WebSocket to stage boxes (issue #17).

One session per connection, each with its own generator built by `factory` (the magenta one
in its own child process, as `run` does), so one client's crash, slowness or bad input never
touches another's state. websockets' threaded server gives each connection its own thread
("generator-session"): a slow client blocks only its own. Admission: `max_sessions` at once
(MRT2 steps one stream at a time, so a GPU serves one real-time `mrt2_small` session); the
next is refused with the reason and plays its own fallback.

A token (`--token-file` or BACKLINE_GENERATOR_TOKEN) is checked on the hello, before any
model work; it is required when listening beyond loopback. A malformed message is counted,
answered with ERROR and its connection closed; the server serves on.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from engine.errors import BacklineError, GeneratorError
from engine.generator.base import Generator
from engine.remote import protocol as p
from engine.style.embedder import Embedder, HashEmbedder

log = logging.getLogger(__name__)
HELLO_TIMEOUT_S = 5.0
MAX_WAITING = 16  # connections that have not said hello yet: beyond, closed at once (a flood holds no threads)
SNAPSHOTS_KEPT = 32  # as many as the scheduler keeps (MAX_SNAPSHOTS)
FRAME_MS = 40.0
MAX_LOAD = 0.8  # of real time the sessions together may use: the rest is margin for their jitter


@dataclass
class Session:
    """One client's generator and its figures (read by status from any thread)."""

    peer: str
    generator: Generator
    ws: Any = None  # its connection: websockets measures the round trip with its keepalive pings
    pcm: str = "f32"
    frames: int = 0
    ms_per_frame: float | None = None
    started: float = field(default_factory=time.monotonic)
    snapshots: OrderedDict[int, object] = field(default_factory=OrderedDict)
    frame: int = 0  # frames generated since the last reset: snapshots are named by it
    underruns: int | None = None  # the stage box's own, from its last REPORT
    lookahead_ms: float | None = None


class GeneratorServer:
    """Serves `factory()` generators; `serve_forever` on the caller's thread, `stop` from any."""

    def __init__(self, factory: Callable[[], Generator], *, host: str = "127.0.0.1", port: int = 9400,
                 token: str | None = None, max_sessions: int = 1, embedder: Embedder | None = None,
                 tls: tuple[Path, Path] | None = None) -> None:
        if token is None and not _loopback(host):
            raise BacklineError(f"listening on {host} needs a token (--token-file or BACKLINE_GENERATOR_TOKEN)")
        self._factory = factory
        self._token = token
        self.max_sessions = max_sessions
        self._embedder = embedder or HashEmbedder()  # the style model of the generators served
        self._embed_lock = threading.Lock()  # one style model for all sessions
        self._lock = threading.Lock()  # the sessions table and counters (status reads them from any thread)
        self._admit_lock = threading.Lock()  # one admission at a time
        self._waiting = threading.BoundedSemaphore(MAX_WAITING)
        self.sessions: dict[int, Session] = {}
        self.refused = 0
        self.malformed = 0
        self._stopper: threading.Thread | None = None
        from websockets.sync.server import serve

        context = None
        if tls is not None:  # wss://: the certificate chain and its key, PEM
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            try:
                context.load_cert_chain(str(tls[0]), str(tls[1]))
            except (OSError, ssl.SSLError) as err:
                raise BacklineError(f"generator server: cannot load the TLS certificate {tls[0]} and key {tls[1]}: "
                                    f"{getattr(err, 'strerror', None) or err}") from err
        self.scheme = "wss" if context else "ws"
        try:
            self._server = serve(self._handle, host, port, max_size=p.MAX_MESSAGE, compression=None, close_timeout=1.0,
                                 ssl=context)
        except OSError as err:
            raise BacklineError(f"generator server: cannot listen on {host}:{port}: {err.strerror or err}") from err
        self.port = self._server.socket.getsockname()[1]
        log.info("generator server on %s://%s:%d (%d session(s) at most%s)", self.scheme, host, self.port, max_sessions,
                 ", token required" if token else "")

    def serve_forever(self) -> None:
        """Serve until `stop()`; returns once every session is closed."""
        self._server.serve_forever()
        if self._stopper is not None:
            self._stopper.join()  # closing the sessions outlives the listening socket

    def stop(self) -> None:
        """From a signal handler or any thread: close the listening socket, then every session."""
        if self._stopper is None:
            self._stopper = threading.Thread(target=self._server.shutdown, name="generator-server-stop")
            self._stopper.start()

    def status(self) -> dict[str, Any]:
        with self._lock:
            sessions = [{"peer": s.peer, "generator": s.generator.name, "frames": s.frames, "pcm": s.pcm,
                         "ms_per_frame": None if s.ms_per_frame is None else round(s.ms_per_frame, 3),
                         "rtt_ms": round(1000 * s.ws.latency, 2) if s.ws is not None and s.ws.latency else None,
                         "underruns": s.underruns, "lookahead_ms": s.lookahead_ms,
                         "seconds": round(time.monotonic() - s.started, 1)} for s in self.sessions.values()]
        return {"sessions": sessions, "max_sessions": self.max_sessions, "refused": self.refused,
                "malformed": self.malformed}

    # -- one connection's thread ("generator-session") ---------------------------------------
    def _handle(self, ws: Any) -> None:
        peer = "%s:%s" % ws.remote_address[:2]
        threading.current_thread().name = "generator-session"
        if not self._waiting.acquire(blocking=False):
            self._refuse(ws, peer, f"{MAX_WAITING} connections are already waiting to say hello")
            return
        try:
            try:
                hello = p.unpack(ws.recv(timeout=HELLO_TIMEOUT_S))
            finally:
                self._waiting.release()
            if hello.kind != p.HELLO:
                raise p.ProtocolError(f"expected hello, got {hello.name}")
            data = hello.json()
            if self._token is not None and not hmac.compare_digest(str(data.get("token", "")).encode(),
                                                                   self._token.encode()):
                self._refuse(ws, peer, "wrong or missing token", token=True)
                return
            pcm = data.get("pcm", "f32")
            if pcm not in p.PCM_FORMATS:
                raise p.ProtocolError(f"hello: pcm {pcm!r} (one of {', '.join(p.PCM_FORMATS)})")
            if data.get("role") == "status":  # `backline status --server`
                ws.send(p.pack_json(p.WELCOME, {"version": p.VERSION, "role": "status", **self.status()}))
                return
            if data.get("role") == "embed":
                ws.send(p.pack_json(p.WELCOME, {"version": p.VERSION, "role": "embed",
                                                "style_model": self._embedder.version}))
                self._serve_embeddings(ws)
                return
            with self._admit_lock:  # checked and taken together: two clients at once cannot both fit
                why = self._no_room()
                if why is None:
                    session = Session(peer, self._factory(), ws=ws, pcm=pcm)
                    with self._lock:
                        self.sessions[id(session)] = session
            if why is not None:
                self._refuse(ws, peer, why)
                return
            try:
                ws.send(p.pack_json(p.WELCOME, {"version": p.VERSION, "generator": session.generator.name,
                                                "audio_lead": session.generator.audio_lead,
                                                "max_frames": p.MAX_FRAMES}))
                log.info("generator server: session from %s (%s PCM)", peer, pcm)
                self._serve(ws, session)
            finally:
                with self._lock:
                    self.sessions.pop(id(session), None)
                session.generator.close()
                log.info("generator server: session from %s ended after %d frames", peer, session.frames)
        except p.ProtocolError as err:
            with self._lock:
                self.malformed += 1
            log.warning("generator server: %s sent a malformed message (%s); closing it", peer, err)
            _send_error(ws, f"malformed: {err}")
        except TimeoutError:
            log.warning("generator server: %s said nothing within %.0f s; closing it", peer, HELLO_TIMEOUT_S)
        except Exception as err:  # noqa: BLE001 - a closed connection, a failing generator: this session only
            if type(err).__name__ not in ("ConnectionClosedOK", "ConnectionClosedError", "ConnectionClosed"):
                log.warning("generator server: session from %s ended: %s: %s", peer, type(err).__name__, err)

    def _no_room(self) -> str | None:
        """Why one more real-time session would not fit, or None. Sessions share the machine
        (MRT2 steps one stream at a time on a GPU): their measured compute per frame, as a share
        of a frame's 40 ms, plus one more like the busiest, must stay under MAX_LOAD."""
        with self._lock:
            if len(self.sessions) >= self.max_sessions:
                return f"the server is full ({self.max_sessions} session(s))"
            shares = [s.ms_per_frame / FRAME_MS for s in self.sessions.values() if s.ms_per_frame is not None]
        if shares and sum(shares) + max(shares) > MAX_LOAD:
            return (f"no room for another real-time session: the {len(shares)} playing use {100 * sum(shares):.0f} % "
                    f"of real time, one more would need {100 * (sum(shares) + max(shares)):.0f} %")
        return None

    def _refuse(self, ws: Any, peer: str, why: str, *, token: bool = False) -> None:
        """Answer a hello with ERROR and close; `token`: the token was wrong or missing (the stage
        box then says so, and reads its token file again at each retry)."""
        with self._lock:
            self.refused += 1
        log.warning("generator server: refused %s: %s", peer, why)
        _send_error(ws, why, **({"refused": "token"} if token else {}))

    def _serve(self, ws: Any, session: Session) -> None:
        for data in ws:
            message = p.unpack(data)
            if message.kind == p.GENERATE:
                ws.send(self._generate(session, message))
            elif message.kind == p.RESTORE:
                if message.value not in session.snapshots:
                    ws.send(p.pack_json(p.ERROR, {"error": f"no snapshot at frame {message.value}"}))
                    continue
                session.generator.restore(session.snapshots[message.value])
                session.frame = message.value
                for later in [f for f in session.snapshots if f > message.value]:
                    del session.snapshots[later]
                ws.send(p.pack(p.RESTORED, value=message.value))
            elif message.kind == p.REPORT:  # no answer: the stage box sends it before its next request
                session.underruns, session.lookahead_ms = p.parse_report(message)
            elif message.kind == p.READY:
                ready = session.generator.wait_ready(min(max(message.value, 0), 5000) / 1000)
                ws.send(p.pack(p.READIED, value=int(ready)))
            else:
                raise p.ProtocolError(f"{message.name} is not a request of a generator session")

    def _generate(self, session: Session, message: p.Message) -> bytes:
        conditioning = p.decode_conditioning(message.body, message.count)
        if message.flags & p.RESET:
            session.generator.reset(message.value)
            session.frame = 0
            session.snapshots.clear()
        try:
            if message.flags & p.KEEP:
                session.snapshots[session.frame] = session.generator.snapshot()
                while len(session.snapshots) > SNAPSHOTS_KEPT:
                    session.snapshots.popitem(last=False)
            began = time.perf_counter()
            audio = session.generator.generate(conditioning)
        except GeneratorError as err:  # a child loading or restarting: the stage box plays its fallback
            return p.pack_json(p.ERROR, {"error": str(err), "unavailable": True})
        session.ms_per_frame = 1000.0 * (time.perf_counter() - began) / len(conditioning)
        session.frame += len(conditioning)
        session.frames += len(conditioning)
        return p.pack(p.AUDIO, p.encode_audio(audio, session.pcm), value=session.frame - len(conditioning),
                      count=len(conditioning))

    def _serve_embeddings(self, ws: Any) -> None:
        for data in ws:
            message = p.unpack(data)
            if message.kind != p.EMBED:
                raise p.ProtocolError(f"{message.name} on an embedding connection")
            with self._embed_lock:
                embedding = self._embed(message)
            ws.send(p.pack(p.EMBEDDING, np.asarray(embedding, dtype="<f4").tobytes()))

    def _embed(self, message: p.Message) -> np.ndarray:
        """A text's embedding, or an audio prompt's: its samples written to a file of our own
        (the embedder reads files; no path is taken from the network)."""
        if not message.flags & p.AUDIO_PROMPT:
            if len(message.body) > p.MAX_TEXT:
                raise p.ProtocolError(f"embed: a prompt of {len(message.body)} bytes (at most {p.MAX_TEXT})")
            try:
                return self._embedder.embed_text(message.body.decode("utf-8"))
            except UnicodeDecodeError:
                raise p.ProtocolError("embed: the text is not UTF-8") from None
        if len(message.body) < 8 or len(message.body) % 4:
            raise p.ProtocolError(f"embed: an audio prompt of {len(message.body)} bytes")
        rate = int.from_bytes(message.body[:4], "little")
        mono = np.frombuffer(message.body, dtype="<f4", offset=4)
        if not 8000 <= rate <= 192_000 or len(mono) > rate * p.MAX_PROMPT_SECONDS or not np.all(np.isfinite(mono)):
            raise p.ProtocolError(f"embed: an audio prompt of {len(mono)} samples at {rate} Hz")
        with tempfile.NamedTemporaryFile(suffix=".wav") as wav:
            soundfile.write(wav.name, mono, rate, subtype="FLOAT")
            return self._embedder.embed_audio(Path(wav.name), start=0.0, duration=len(mono) / rate)


def _send_error(ws: Any, why: str, **fields: str) -> None:
    try:
        ws.send(p.pack_json(p.ERROR, {"error": why, **fields}))
        ws.close()
    except Exception:  # noqa: BLE001 - the client may be gone already
        pass


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
