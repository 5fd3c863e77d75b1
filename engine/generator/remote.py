"""`--generator remote`: the model on a generator server across the network (issue #17).

The stage box keeps the clock, the controls, the bar grid and the audio; frames come from a
`backline generator-server` over WebSocket (`engine/remote/protocol.py`). The contract is the
child process's (`process.py`), so the scheduler treats a remote generator like a local one:

- `generate()` answers, or raises GeneratorUnavailable at once while the link is down and
  after `deadline_s` without an answer, so the scheduler's fallback (the synth) plays;
- a connector thread ("remote-connect") reconnects with backoff; a new session has a fresh
  generator, reset to the seed, and none of the old session's snapshots;
- a server that refuses the token is a fault of the link too, not of the show: the state is
  `refused`, the fallback plays, and each retry reads the token file again, so a token
  fixed or rotated on the stage box is taken up with no restart. `wait_ready()` gives up at
  once on a refused token (waiting cannot mend it): an offline render fails with the reason;
- a server that cannot be reached plays the fallback live (said once, as it first plays);
  offline, `wait_reachable()` gives up after CONNECT_TRIES connections in a row, in seconds;
- snapshots stay on the server, named by frame index: `snapshot()` only asks the next
  GENERATE to keep one (no round trip a chunk), `restore()` names that frame.

Prompts are embedded where the style model is: `style_model()` is an embedder that asks the
server over a connection of its own (the engine embeds off the scheduling thread), so
MusicCoCa runs on the GPU box and the mixed embedding travels with the conditioning.
Used from the scheduling thread (generate, snapshot, restore) and the connector.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.conditioning import STYLE_DIM, FrameConditioning
from engine.errors import GeneratorError, GeneratorUnavailable
from engine.generator.base import Generator
from engine.remote import protocol as p
from engine.style.embedder import AUDIO_PROMPT_SECONDS, Embedder, HashEmbedder, read_audio_span

log = logging.getLogger(__name__)
_MAX_BACKOFF_S = 10.0
CONNECT_TRIES = 4  # connections an offline render tries before it gives up on a server (`wait_reachable`)


class Refused(GeneratorError):
    """The server answered the hello with a refusal (a token, a full server): not a network fault.
    `token`: it was the token (wrong or missing), which waiting alone will not mend."""

    def __init__(self, message: str, *, token: bool = False) -> None:
        super().__init__(message)
        self.token = token


def token_source(token_file: Path | None, token: str | None) -> str:
    """Where a token comes from, for a message: never the token itself."""
    if token_file is not None:
        return f"the token file {token_file}"
    if token is None:
        return "no token (--remote-token-file, options: {token_file: ...} or $BACKLINE_GENERATOR_TOKEN)"
    return "$BACKLINE_GENERATOR_TOKEN" if os.environ.get("BACKLINE_GENERATOR_TOKEN") == token else "the token given"


def _token_now(token_file: Path | None, token: str | None) -> str | None:
    """The token for the next hello: the file read again (it may have been fixed since), else `token`."""
    if token_file is None:
        return token
    from engine.generator import read_token

    return read_token(token_file)


@dataclass(frozen=True, slots=True)
class RemoteSnapshot:
    """A snapshot kept by the server: which session (reconnects count up) and which frame."""

    session: int
    frame: int


def tls_context(ca: Path | None, *, check_hostname: bool = True) -> Any:
    """For wss://: the system's trusted CAs, or `ca` (a server's self-signed certificate)."""
    import ssl

    try:
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
    except (OSError, ssl.SSLError) as err:
        raise GeneratorError(f"cannot read the CA file {ca}: {getattr(err, 'strerror', None) or err}") from err
    context.check_hostname = check_hostname
    return context


def _connect(url: str, *, token: str | None, pcm: str, role: str, timeout: float,
             tls: Any = None, source: str = "the token given") -> tuple[Any, dict[str, Any]]:
    """Open a connection and say hello; (connection, welcome). OSError; Refused on a refusal
    (`source` says where the token came from, for its message)."""
    from websockets.sync.client import connect

    secure = {"ssl": tls if tls is not None else tls_context(None)} if url.startswith("wss://") else {}
    ws = connect(url, open_timeout=timeout, close_timeout=1.0, max_size=p.MAX_MESSAGE, legacy=True,
                 compression=None, **secure)
    try:
        ws.send(p.pack_json(p.HELLO, {"version": p.VERSION, "token": token or "", "pcm": pcm, "role": role}))
        answer = p.unpack(ws.recv(timeout=timeout))
        if answer.kind == p.ERROR:
            body = answer.json()
            if body.get("refused") == "token" or body.get("error") == "wrong or missing token":  # or an older server's
                raise Refused(f"generator server {url} refused the token ({source}): {body.get('error')}", token=True)
            raise Refused(f"generator server {url} refused: {body.get('error')}")
        if answer.kind != p.WELCOME:
            raise GeneratorError(f"generator server {url}: expected welcome, got {answer.name}")
        return ws, answer.json()
    except BaseException:
        ws.close()
        raise


def server_status(url: str, *, token: str | None, timeout: float, ca: Path | None = None,
                  check_hostname: bool = True) -> dict[str, Any]:
    """A generator server's sessions and counters (`backline status --server`); BacklineError if unreachable."""
    from engine.errors import BacklineError

    try:
        tls = tls_context(ca, check_hostname=check_hostname) if url.startswith("wss://") else None
        ws, welcome = _connect(url, token=token, pcm="f32", role="status", timeout=timeout, tls=tls)
    except (OSError, TimeoutError, p.ProtocolError) as err:
        raise BacklineError(f"no generator server answers at {url}: {err}") from err
    except GeneratorError as err:
        raise BacklineError(str(err)) from err
    except Exception as err:  # noqa: BLE001 - websockets' handshake errors (InvalidURI, InvalidStatus)
        raise BacklineError(f"no generator server answers at {url}: {type(err).__name__}: {err}") from err
    ws.close()
    return {key: value for key, value in welcome.items() if key not in ("version", "role")}


class RemoteGenerator(Generator):
    """Frames from the generator server at `url` (ws:// or wss://; `engine.generator.remote_settings`
    checks the options a user gives)."""

    def __init__(self, url: str, *, token: str | None = None, token_file: Path | None = None, pcm: str = "f32",
                 seed: int = 0, deadline_s: float = 2.0, connect_timeout_s: float = 3.0, ca: Path | None = None) -> None:
        self.name = "remote"
        self.url, self._token, self._token_file, self.pcm = url, token, token_file, pcm
        self._source = token_source(token_file, token)
        self._tls = tls_context(ca) if url.startswith("wss://") else None  # a bad CA file fails here, at start
        self.deadline_s, self._connect_timeout = deadline_s, connect_timeout_s
        self._seed, self._seed_pending = seed, True
        self._keep = False
        self._frame = 0
        self._session = 0
        self._ws: Any = None
        self.state = "connecting"
        self.last_error: str | None = None
        self.refused: str | None = None  # why, while the server refuses the token (state "refused")
        self._refusal_told = False  # logged loudly once a refusal, when the fallback first plays for it
        self._failures = 0  # connections failed in a row since the last session (connector thread)
        self._first_failure = 0.0  # when the first of them failed (time.monotonic)
        self._unreachable_told = False  # the server unreachable logged once, when the fallback first plays for it
        self.reconnects = 0
        self.ms_per_frame: float | None = None  # round trip, server compute included
        self.remote_generator: str | None = None
        self._report: bytes | None = None  # how playback goes, sent before the next request
        self._lock = threading.Lock()  # the connection handed between connector and scheduler
        self._tried = threading.Condition(self._lock)  # notified after each connection attempt
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._connector = threading.Thread(target=self._connect_loop, name="remote-connect", daemon=True)
        self._connector.start()

    # -- connector thread ----------------------------------------------------------------------
    def _connect_loop(self) -> None:
        backoff = 0.2
        while not self._closed.is_set():
            if self._ws is None:
                try:
                    token = _token_now(self._token_file, self._token)  # read again: it may have been fixed
                    ws, welcome = _connect(self.url, token=token, pcm=self.pcm, role="generate",
                                           timeout=self._connect_timeout, tls=self._tls, source=self._source)
                # logged at debug here: `_ask` says it once as the fallback first plays for it, and an
                # offline render that gives up (`wait_reachable`) prints only its own one line
                except Refused as err:
                    if err.token:
                        self._refuse(str(err))
                    else:
                        self._down(f"cannot reach {self.url}: {err}", quiet=True)
                except GeneratorError as err:  # the token file cannot be read (now)
                    self._down(str(err), quiet=True)
                except (OSError, TimeoutError, p.ProtocolError) as err:
                    self._down(f"cannot reach {self.url}: {err}", quiet=True)
                except Exception as err:  # noqa: BLE001 - websockets' handshake errors (InvalidURI, InvalidStatus)
                    self._down(f"cannot reach {self.url}: {type(err).__name__}: {err}", quiet=True)
                else:
                    with self._lock:
                        self._ws, self._session = ws, self._session + 1
                        self._seed_pending, self._frame, self._keep = True, 0, False
                        self.audio_lead = int(welcome.get("audio_lead", 0))
                        self.remote_generator = str(welcome.get("generator"))
                        was_refused, self.refused, self._refusal_told = self.refused, None, False
                        self.state, self._failures = "ready", 0
                        self._tried.notify_all()
                    backoff = 0.2
                    log.info("generator remote: session %d with %s (%s generator)%s", self._session, self.url,
                             self.remote_generator, f"; it took the token from {self._source}" if was_refused else "")
                    continue
                with self._lock:
                    if not self._failures:
                        self._first_failure = time.monotonic()
                    self._failures += 1
                    self._tried.notify_all()
                self._closed.wait(backoff)  # the same backoff, refused or unreachable: never a spin
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
                continue
            self._wake.wait(1.0)
            self._wake.clear()

    @property
    def outage(self) -> str | None:
        """Why the fallback plays for this generator now, as far as the link can tell: the token
        refused, or the last connection failed (a server down at start, or not back yet). None
        while connected (a server's generator may still be loading) or before a first attempt
        has failed. Any thread: `backline serve` sends READY on it once the fallback plays."""
        if self.refused is not None:
            return self.refused
        return self.last_error if self._ws is None and self._failures else None

    def _refuse(self, why: str) -> None:
        """Connector: the server refused the token. The fallback plays; the next retry reads it again."""
        with self._lock:
            if self.state != "closed":
                self.state = "refused"
            self.refused = self.last_error = why
        log.debug("generator remote: %s; retrying with backoff", why)

    def _down(self, why: str, *, quiet: bool = False) -> GeneratorUnavailable:
        """The link is gone: drop it, let the connector reconnect, return the error to raise."""
        with self._lock:
            ws, self._ws = self._ws, None
            if self.state != "closed":  # connecting until a first session, then restarting
                self.state = "restarting" if self._session else "connecting"
            self.last_error, self.refused = why, None
        if ws is not None:
            self.reconnects += 1
            ws.close()
        if not quiet:
            log.warning("generator remote: %s; the fallback plays until it is back", why)
        self._wake.set()
        return GeneratorUnavailable(f"generator remote: {why}")

    # -- the scheduling thread -----------------------------------------------------------------
    def wait_reachable(self, *, tries: int = CONNECT_TRIES) -> None:
        """Return once a session is up, or the server refused the token (`wait_ready` then says
        so); GeneratorUnavailable naming the server and why once `tries` connections in a row
        have failed: about 1.4 s of backoff where the port is closed, `tries` x `connect_timeout_s`
        more where the host drops packets. An offline render has no fallback, and a server that
        cannot be reached will not come up by waiting out the ready timeout."""
        with self._tried:
            self._tried.wait_for(lambda: self._ws is not None or self.refused is not None
                                 or self._failures >= tries or self._closed.is_set())
            if self._ws is not None or self.refused is not None or self._failures < tries:
                return
            why = self.last_error or "no answer"
            took = time.monotonic() - self._first_failure
        if self.url not in why:
            why = f"generator server {self.url}: {why}"
        raise GeneratorUnavailable(f"{why} (gave up after {tries} tries in {took:.1f} s)")

    def wait_ready(self, timeout: float) -> bool:
        """Connected, and the server's generator itself ready (a magenta child loads for a while).
        False at once while the server refuses the token (`refused` says why): waiting cannot
        mend it, so an offline render fails with that reason; live, the fallback plays."""
        deadline = time.monotonic() + timeout
        while not self._closed.is_set():
            left = deadline - time.monotonic()
            if self.refused is not None:
                return False
            if self.state == "ready":
                wait_ms = int(max(0.0, min(left, 1.0)) * 1000)
                try:
                    if self._ask(p.pack(p.READY, value=wait_ms), wait_s=wait_ms / 1000).value == 1:
                        return True
                except GeneratorError:
                    pass  # the link dropped: the connector is at it
            elif left > 0:
                time.sleep(min(0.02, left))
            if time.monotonic() >= deadline:
                return False
        return False

    def _ask(self, message: bytes, *, wait_s: float = 0.0) -> p.Message:
        """Send one request and read its answer within the deadline (plus `wait_s` the server was asked to wait)."""
        ws = self._ws
        if ws is None:
            if self.refused is not None and not self._refusal_told:  # once, as the fallback takes over for it
                self._refusal_told = True
                log.error("GENERATOR SERVER %s REFUSED THE TOKEN (%s): THE FALLBACK PLAYS until it takes one. "
                          "A token file is read again at each retry (every %g s at most): fix it, no restart needed",
                          self.url, self._source, _MAX_BACKOFF_S)
            elif self._failures and not self._session and not self._unreachable_told:  # down at start: said once
                self._unreachable_told = True
                log.warning("generator remote: %s; the fallback plays until it is back", self.last_error)
            raise GeneratorUnavailable(f"generator remote: {self.state} ({self.last_error or self.url})")
        try:
            if self._report is not None:
                ws.send(self._report)
                self._report = None
            ws.send(message)
            answer = p.unpack(ws.recv(timeout=self.deadline_s + wait_s))
        except TimeoutError:
            raise self._down(f"no answer within {self.deadline_s} s") from None
        except p.ProtocolError as err:
            raise self._down(f"a malformed answer ({err})") from None
        except Exception as err:  # noqa: BLE001 - ConnectionClosed and OSError: the link is down
            raise self._down(f"the link dropped ({type(err).__name__})") from None
        if answer.kind == p.ERROR:
            body = answer.json()
            if body.get("unavailable"):
                raise GeneratorUnavailable(f"generator remote: {body.get('error')}")
            raise GeneratorError(f"generator remote: {body.get('error')}")
        return answer

    def heard(self, *, underruns: int, lookahead_ms: float) -> None:
        """Told by the scheduling loop: the server lists it in `backline status --server`."""
        self._report = p.pack_json(p.REPORT, {"underruns": underruns, "lookahead_ms": lookahead_ms})

    def reset(self, seed: int) -> None:
        """Start again from `seed` with the next generate() (sent with it: no round trip)."""
        self._seed, self._seed_pending, self._frame = seed, True, 0

    def snapshot(self) -> RemoteSnapshot:
        if self.state != "ready":
            raise GeneratorUnavailable(f"generator remote is {self.state}: no snapshot")
        self._keep = True
        return RemoteSnapshot(self._session, self._frame)

    def restore(self, snapshot: object) -> None:
        if not isinstance(snapshot, RemoteSnapshot) or snapshot.session != self._session:
            raise GeneratorError("generator remote: the snapshot was kept by a session that has since ended")
        if snapshot.frame == self._frame and self._keep:
            return  # nothing generated since it was named
        answer = self._ask(p.pack(p.RESTORE, value=snapshot.frame))
        if answer.kind != p.RESTORED or answer.value != snapshot.frame:
            raise self._down(f"restore answered with {answer.name}")
        self._frame, self._keep = snapshot.frame, False

    def generate(self, conditioning: Sequence[FrameConditioning]) -> np.ndarray:
        n = len(conditioning)
        if not 1 <= n <= p.MAX_FRAMES:
            raise ValueError(f"1..{p.MAX_FRAMES} frames per call, got {n}")
        flags = (p.KEEP if self._keep else 0) | (p.RESET if self._seed_pending else 0)
        began = time.perf_counter()
        answer = self._ask(p.pack(p.GENERATE, p.encode_conditioning(list(conditioning)), flags=flags,
                                  value=self._seed if self._seed_pending else 0, count=n))
        if answer.kind != p.AUDIO or answer.count != n:
            raise self._down(f"generate answered with {answer.name} of {answer.count} frames for {n}")
        try:
            audio = p.decode_audio(answer.body, n, self.pcm)
        except p.ProtocolError as err:
            raise self._down(str(err)) from None
        self._seed_pending = self._keep = False
        self._frame += n
        self.ms_per_frame = 1000.0 * (time.perf_counter() - began) / n
        return audio

    def style_model(self, *, cache_dir: Path | None = None) -> Embedder:
        return RemoteEmbedder(self.url, token=self._token, token_file=self._token_file,
                              timeout=min(max(self.deadline_s, 2.0), 10.0), tls=self._tls,
                              cache_dir=cache_dir / "remote" if cache_dir else None)

    def health(self) -> dict[str, Any]:
        return {"state": self.state, "restarts": self.reconnects, "last_error": self.last_error, "refused": self.refused,
                "ms_per_frame": self.ms_per_frame, "url": self.url, "remote_generator": self.remote_generator}

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        with self._lock:
            ws, self._ws, self.state = self._ws, None, "closed"
            self._tried.notify_all()
        if ws is not None:
            ws.close()


class RemoteEmbedder:
    """Prompts embedded by the server's style model, over a connection of its own opened on
    first use. An audio prompt's span is read here and its samples sent (no path crosses).

    The stage box must start, and keep playing, with the server down: every embedding the
    server gave is kept on disk (`cache_dir`), and answers while it cannot be reached or
    refuses the token (read again from `token_file` at each connection); a prompt never
    embedded there gets the hash stand-in meanwhile, loudly logged (the fallback synth plays
    until the server is back). A text prompt's stand-in is kept in
    `take_stand_ins`, and the engine sends the prompt again once the server's session is up,
    so its model hears the real embedding (an audio prompt's stays until the patch loads
    again). The engine's embedding threads call it; one call at a time."""

    def __init__(self, url: str, *, token: str | None, timeout: float, tls: Any = None,
                 cache_dir: Path | None = None, token_file: Path | None = None) -> None:
        self._url, self._token, self._timeout, self._tls = url, token, timeout, tls
        self._token_file, self._source = token_file, token_source(token_file, token)
        self._cache = cache_dir
        self._ws: Any = None
        self._lock = threading.Lock()
        self.version = "remote"  # the server's style model once connected: "remote/<its version>"
        self._stand_ins: set[str] = set()  # text prompts given the hash stand-in, to embed again

    def embed_text(self, text: str) -> np.ndarray:
        data = text.encode("utf-8")
        if len(data) > p.MAX_TEXT:
            raise ValueError(f"a prompt of {len(data)} bytes (at most {p.MAX_TEXT})")
        return self._embed(f"text\0{text}", p.pack(p.EMBED, data), lambda: HashEmbedder().embed_text(text), repr(text),
                           text=text)

    def embed_audio(self, path: Path, *, start: float = 0.0, duration: float = AUDIO_PROMPT_SECONDS) -> np.ndarray:
        mono, rate = read_audio_span(path, start=start, duration=min(duration, p.MAX_PROMPT_SECONDS))
        body = int(rate).to_bytes(4, "little") + np.asarray(mono, dtype="<f4").tobytes()
        key = f"audio\0{hashlib.sha256(body).hexdigest()}"
        return self._embed(key, p.pack(p.EMBED, body, flags=p.AUDIO_PROMPT),
                           lambda: HashEmbedder().embed_audio(path, start=start, duration=duration), str(path))

    def take_stand_ins(self) -> set[str]:
        """The text prompts that got the stand-in since the last call (any thread): the engine
        sends them again once the server is back, so its model hears the real prompt."""
        with self._lock:
            taken, self._stand_ins = self._stand_ins, set()
        return taken

    def _embed(self, key: str, message: bytes, stand_in: Any, what: str, *, text: str | None = None) -> np.ndarray:
        cached = self._cache / f"{hashlib.sha256(key.encode()).hexdigest()}.npy" if self._cache else None
        try:
            vector = self._ask(message)
        except GeneratorError as err:  # unreachable, or the token refused: the stage box plays on
            if cached is not None and cached.exists():
                log.warning("generator remote: %s; prompt %s embedded from the cache of the server's answers", err, what)
                return np.load(cached)
            log.error("generator remote: %s; PROMPT %s GETS THE HASH STAND-IN until the server is back", err, what)
            if text is not None:
                with self._lock:
                    self._stand_ins.add(text)
            return np.asarray(stand_in(), dtype=np.float32)
        if cached is not None:
            try:
                cached.parent.mkdir(parents=True, exist_ok=True)
                np.save(cached.with_suffix(".tmp.npy"), vector)
                os.replace(cached.with_suffix(".tmp.npy"), cached)
            except OSError as err:
                log.warning("generator remote: cannot keep an embedding in %s: %s", cached.parent, err)
        return vector

    def _ask(self, message: bytes) -> np.ndarray:
        with self._lock:
            for attempt in (1, 2):  # a dropped link is reopened once
                try:
                    if self._ws is None:
                        self._ws, welcome = _connect(self._url, token=_token_now(self._token_file, self._token),
                                                     pcm="f32", role="embed", timeout=self._timeout, tls=self._tls,
                                                     source=self._source)
                        self.version = f"remote/{welcome.get('style_model')}"
                    self._ws.send(message)
                    answer = p.unpack(self._ws.recv(timeout=self._timeout))
                    break
                except GeneratorError:
                    raise
                except Exception as err:  # noqa: BLE001 - the link: retry once on a fresh one
                    if self._ws is not None:
                        self._ws.close()
                    self._ws = None
                    if attempt == 2:
                        raise GeneratorError(f"cannot embed a prompt at {self._url}: {err}") from err
        if answer.kind == p.ERROR:
            raise GeneratorError(f"generator remote: {answer.json().get('error')}")
        if answer.kind != p.EMBEDDING or len(answer.body) != 4 * STYLE_DIM:
            raise GeneratorError(f"generator remote: an embedding answer of {len(answer.body)} bytes")
        return np.frombuffer(answer.body, dtype="<f4").copy()
