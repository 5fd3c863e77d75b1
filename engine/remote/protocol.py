"""The generator server's wire format: binary WebSocket messages with a small versioned header.

Every message is HEADER (magic, version, kind, flags, a frame index or seed, a count) then a
body. A session starts with HELLO (JSON: version, token, PCM format) answered by WELCOME
(JSON: the generator's name, audio lead, limits) or ERROR (JSON: `error`, the reason, and
`refused: "token"` when the token was wrong or missing). After that the client asks and
the server answers, one request at a time: a GENERATE of `count` frames is the client's
credit, and the server never generates a frame it was not asked for (flow control: it
cannot run ahead of the stage box's look-ahead).

GENERATE carries the conditioning, one fixed-size record a frame (`encode_conditioning`),
and flags: KEEP (keep a snapshot before its first frame, named by that frame index, as
the child process does), RESET (reset to the seed in `value` first). AUDIO answers with
float32 PCM, or int16 where the hello asked for it (half the bytes, for Wi-Fi). RESTORE
names a kept frame. READY asks whether the session's generator can generate, waiting up to
`value` ms (a magenta child loads for a while); READIED answers 1 or 0. EMBED asks the server's style model for a text's embedding, or (flag
AUDIO_PROMPT) an audio prompt's, its samples read on the stage box: no file path crosses.
REPORT (JSON: `underruns`, `lookahead_ms`) tells the server how playback goes on the stage
box, about once a second, sent before the next request; it has no answer.

Any thread; no state. Decoding checks every length and range: a malformed message raises
ProtocolError, which the server counts before it closes that connection.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.conditioning import NUM_NOTES, STYLE_DIM, STYLE_TOKENS, FrameConditioning, Sampling
from engine.units import CHANNELS, FRAME_SAMPLES

VERSION = 2  # 2: REPORT
MAGIC = b"BLGS"
HEADER = struct.Struct("<4sBBHqI")  # magic, version, kind, flags, value (frame index or seed), count
MAX_FRAMES = 64  # per GENERATE: what one answer may carry (64 frames float32: 983 kB)
MAX_MESSAGE = 8 * 1024 * 1024  # bytes: 30 s of a 48 kHz audio prompt is 5.8 MB
MAX_TEXT = 4096  # bytes of one prompt to embed

HELLO, WELCOME, GENERATE, AUDIO, RESTORE, RESTORED, EMBED, EMBEDDING, ERROR, READY, READIED, REPORT = range(1, 13)
KINDS = {HELLO: "hello", WELCOME: "welcome", GENERATE: "generate", AUDIO: "audio", RESTORE: "restore",
         RESTORED: "restored", EMBED: "embed", EMBEDDING: "embedding", ERROR: "error", READY: "ready",
         READIED: "readied", REPORT: "report"}
KEEP, RESET = 1, 2  # GENERATE flags
AUDIO_PROMPT = 1  # EMBED flag: the body is a sample rate (uint32) and mono float32 samples, not text
MAX_PROMPT_SECONDS = 30.0
PCM_FORMATS = ("f32", "i16")

# One frame's conditioning: style kind (0 embedding, 1 tokens), drum, top_k, four sampling
# floats, 128 note states, then the style: 768 float32 or 12 int32 (padded to the same size).
_RECORD_HEAD = struct.Struct("<BbH4f")
_RECORD = _RECORD_HEAD.size + NUM_NOTES + 4 * STYLE_DIM


def parse_report(message: "Message") -> tuple[int, float]:
    """A REPORT's (underruns, lookahead_ms), checked: ProtocolError for anything else."""
    body = message.json()
    underruns, lookahead = body.get("underruns"), body.get("lookahead_ms")
    if (not isinstance(underruns, int) or isinstance(underruns, bool) or not 0 <= underruns < 2**63
            or not isinstance(lookahead, (int, float)) or isinstance(lookahead, bool) or not 0 <= lookahead < 1e6):
        raise ProtocolError(f"report: underruns (an int >= 0) and lookahead_ms (ms >= 0), got {body!r}")
    return underruns, float(lookahead)


class ProtocolError(ValueError):
    """A message that does not follow this protocol (its kind, a length, a range)."""


@dataclass(frozen=True, slots=True)
class Message:
    kind: int
    flags: int
    value: int
    count: int
    body: bytes

    @property
    def name(self) -> str:
        return KINDS.get(self.kind, f"kind {self.kind}")

    def json(self) -> dict[str, Any]:
        """The body as a JSON object (HELLO, WELCOME, ERROR)."""
        try:
            data = json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ProtocolError(f"{self.name}: the body is not JSON ({err})") from None
        if not isinstance(data, dict):
            raise ProtocolError(f"{self.name}: the body is not a JSON object")
        return data


def pack(kind: int, body: bytes = b"", *, flags: int = 0, value: int = 0, count: int = 0) -> bytes:
    return HEADER.pack(MAGIC, VERSION, kind, flags, value, count) + body


def pack_json(kind: int, data: dict[str, Any]) -> bytes:
    return pack(kind, json.dumps(data, separators=(",", ":")).encode("utf-8"))


def unpack(data: bytes | str) -> Message:
    """Parse one message; ProtocolError for text frames, a short or foreign header, a newer version."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError("a text message (this protocol is binary)")
    data = bytes(data)
    if len(data) < HEADER.size:
        raise ProtocolError(f"a message of {len(data)} bytes is shorter than the {HEADER.size}-byte header")
    magic, version, kind, flags, value, count = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ProtocolError(f"not a backline generator message (magic {magic!r})")
    if version != VERSION:
        raise ProtocolError(f"protocol version {version}; this side speaks {VERSION}")
    if kind not in KINDS:
        raise ProtocolError(f"unknown message kind {kind}")
    return Message(kind, flags, value, count, data[HEADER.size:])


def encode_conditioning(frames: list[FrameConditioning] | tuple[FrameConditioning, ...]) -> bytes:
    """Fixed-size binary records, one a frame (3.2 kB each)."""
    out = bytearray()
    for c in frames:
        tokens = c.style.dtype.kind in "iu"
        s = c.sampling
        out += _RECORD_HEAD.pack(int(tokens), int(c.drum), int(s.top_k), s.temperature, s.cfg_style, s.cfg_notes,
                                 s.cfg_drums)
        out += np.asarray(c.notes, dtype=np.int8).tobytes()
        style = np.zeros(STYLE_DIM, dtype=np.float32)
        if tokens:
            style.view(np.int32)[:STYLE_TOKENS] = np.asarray(c.style, dtype=np.int32)
        else:
            style[:] = np.asarray(c.style, dtype=np.float32)
        out += style.tobytes()
    return bytes(out)


def decode_conditioning(body: bytes, count: int) -> list[FrameConditioning]:
    """The records of a GENERATE; ProtocolError on a wrong length or a value out of range."""
    if not 1 <= count <= MAX_FRAMES:
        raise ProtocolError(f"generate: {count} frames (1..{MAX_FRAMES} a request)")
    if len(body) != count * _RECORD:
        raise ProtocolError(f"generate: {len(body)} bytes of conditioning for {count} frames ({_RECORD} a frame)")
    frames = []
    for i in range(count):
        at = i * _RECORD
        tokens, drum, top_k, temperature, cfg_style, cfg_notes, cfg_drums = _RECORD_HEAD.unpack_from(body, at)
        at += _RECORD_HEAD.size
        notes = np.frombuffer(body, dtype=np.int8, count=NUM_NOTES, offset=at)
        style = np.frombuffer(body, dtype=np.float32, count=STYLE_DIM, offset=at + NUM_NOTES)
        if tokens not in (0, 1) or drum not in (-1, 0, 1) or notes.min() < -1 or notes.max() > 3:
            raise ProtocolError(f"generate: frame {i}: a style kind, drum or note state out of range")
        style = style.view(np.int32)[:STYLE_TOKENS].copy() if tokens else style.copy()
        if not tokens and not np.all(np.isfinite(style)):
            raise ProtocolError(f"generate: frame {i}: the style embedding is not finite")
        try:
            sampling = Sampling(temperature, top_k, cfg_style, cfg_notes, cfg_drums)
        except ValueError as err:
            raise ProtocolError(f"generate: frame {i}: {err}") from None
        frames.append(FrameConditioning(style, notes.copy(), drum=drum, sampling=sampling))
    return frames


def encode_audio(audio: np.ndarray, pcm: str) -> bytes:
    if pcm == "i16":
        return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
    return np.ascontiguousarray(audio, dtype="<f4").tobytes()


def decode_audio(body: bytes, count: int, pcm: str) -> np.ndarray:
    """(count * 1920, 2) float32; ProtocolError on a length that is not `count` frames."""
    width = 2 if pcm == "i16" else 4
    if len(body) != count * FRAME_SAMPLES * CHANNELS * width:
        raise ProtocolError(f"audio: {len(body)} bytes for {count} frames of {pcm}")
    if pcm == "i16":
        return (np.frombuffer(body, dtype="<i2").astype(np.float32) / 32767.0).reshape(-1, CHANNELS)
    return np.frombuffer(body, dtype="<f4").reshape(-1, CHANNELS).copy()
