"""Audio bytes → float32 mono at 16 kHz: decoders, G.711 codecs, a streaming resampler, WAV files.

Pure: nothing here touches a socket or a clock; `read_wav`/`write_wav` are the only functions that
take a path, and they are thin wrappers around the byte-level `parse_wav`/`encode_wav`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

ENCODINGS = ("pcm_s16le", "f32le", "mulaw", "alaw")
TARGET_RATE = 16_000


class AudioError(ValueError):
    """Audio that cannot be decoded; the message says what was expected."""


# --- G.711 -------------------------------------------------------------------------------------
# Tables follow ITU-T G.711 (the same values as Python's audioop / Sun's g711.c reference).

def _ulaw_decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def _alaw_decode_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    sign = a & 0x80
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1))
    return np.where(sign != 0, magnitude, -magnitude).astype(np.int16)


ULAW_TO_PCM16 = _ulaw_decode_table()
ALAW_TO_PCM16 = _alaw_decode_table()

# Segment ends of Sun's reference g711.c encoders (μ-law on 14-bit, A-law on 13-bit magnitudes).
_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)


def pcm16_to_ulaw(pcm: np.ndarray) -> np.ndarray:
    x = pcm.astype(np.int32) >> 2
    mask = np.where(x < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(x), 8159) + (0x84 >> 2)
    seg = np.searchsorted(_ULAW_SEG_END, mag, side="left")
    code = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | ((mag >> (np.minimum(seg, 7) + 1)) & 0x0F))
    return (code ^ mask).astype(np.uint8)


def pcm16_to_alaw(pcm: np.ndarray) -> np.ndarray:
    x = pcm.astype(np.int32) >> 3
    mask = np.where(x >= 0, 0xD5, 0x55)
    mag = np.where(x >= 0, x, -x - 1)
    seg = np.searchsorted(_ALAW_SEG_END, mag, side="left")
    s7 = np.minimum(seg, 7)
    code = np.where(s7 < 2, (s7 << 4) | ((mag >> 1) & 0x0F), (s7 << 4) | ((mag >> s7) & 0x0F))
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


# --- bytes → float32 ---------------------------------------------------------------------------

def float_to_pcm16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(samples, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def decode(data: bytes, encoding: str) -> np.ndarray:
    """Decode one chunk of mono audio bytes to float32 in [-1, 1]."""
    if encoding == "pcm_s16le":
        if len(data) % 2:
            raise AudioError(f"pcm_s16le audio needs an even number of bytes (2 per sample), got {len(data)}")
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    if encoding == "f32le":
        if len(data) % 4:
            raise AudioError(f"f32le audio needs a multiple of 4 bytes (4 per sample), got {len(data)}")
        out = np.frombuffer(data, dtype="<f4").astype(np.float32)
        bad = ~np.isfinite(out)
        if bad.any():
            raise AudioError(f"f32le audio must be finite; sample {int(np.argmax(bad))} is {out[bad][0]}")
        return out
    if encoding == "mulaw":
        return ULAW_TO_PCM16[np.frombuffer(data, dtype=np.uint8)].astype(np.float32) / 32768.0
    if encoding == "alaw":
        return ALAW_TO_PCM16[np.frombuffer(data, dtype=np.uint8)].astype(np.float32) / 32768.0
    raise AudioError(f"unknown audio encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}")


def encode(samples: np.ndarray, encoding: str) -> bytes:
    """Inverse of `decode` (lossy for G.711 and PCM16, by design of those codecs)."""
    if encoding == "f32le":
        return np.asarray(samples, dtype="<f4").tobytes()
    pcm = float_to_pcm16(samples)
    if encoding == "pcm_s16le":
        return pcm.astype("<i2").tobytes()
    if encoding == "mulaw":
        return pcm16_to_ulaw(pcm).tobytes()
    if encoding == "alaw":
        return pcm16_to_alaw(pcm).tobytes()
    raise AudioError(f"unknown audio encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}")


# --- streaming resampler -----------------------------------------------------------------------

class StreamResampler:
    """Streaming sample-rate conversion by libsoxr (python-soxr), keeping its state across chunks.

    `feed` returns what the filter can already produce, `flush` the tail held back for look-ahead.
    soxr compensates its own delay, so output sample m sits at input time m/out_rate.
    """

    def __init__(self, in_rate: int, out_rate: int = TARGET_RATE):
        if in_rate <= 0 or out_rate <= 0:
            raise AudioError(f"sample rates must be positive, got {in_rate} → {out_rate}")
        self.in_rate, self.out_rate = in_rate, out_rate
        self._stream = None if in_rate == out_rate else soxr.ResampleStream(
            in_rate, out_rate, 1, dtype="float32", quality="HQ")

    def feed(self, samples: np.ndarray) -> np.ndarray:
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        if self._stream is None:
            return samples.copy()
        return self._stream.resample_chunk(samples)

    def flush(self) -> np.ndarray:
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        return self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)


def resample(samples: np.ndarray, in_rate: int, out_rate: int = TARGET_RATE) -> np.ndarray:
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if in_rate == out_rate:
        return samples.copy()
    if in_rate <= 0 or out_rate <= 0:
        raise AudioError(f"sample rates must be positive, got {in_rate} → {out_rate}")
    return soxr.resample(samples, in_rate, out_rate, quality="HQ")


# --- WAV files ---------------------------------------------------------------------------------

_FORMAT_PCM, _FORMAT_FLOAT, _FORMAT_ALAW, _FORMAT_MULAW, _FORMAT_EXTENSIBLE = 1, 3, 6, 7, 0xFFFE
_ENCODING_FORMAT = {"pcm_s16le": (_FORMAT_PCM, 16), "f32le": (_FORMAT_FLOAT, 32), "mulaw": (_FORMAT_MULAW, 8),
                    "alaw": (_FORMAT_ALAW, 8)}


@dataclass(frozen=True)
class WavAudio:
    samples: np.ndarray  # float32 mono, as stored (not resampled)
    sample_rate: int
    encoding: str  # e.g. "pcm_s16le", "pcm_s24le", "f32le", "mulaw", "alaw"
    channels: int


def parse_wav(data: bytes, name: str = "<bytes>") -> WavAudio:
    """Parse a RIFF/WAVE file held in memory; errors name the file and what was expected."""
    def fail(what: str) -> AudioError:
        return AudioError(f"{name}: {what}")

    if len(data) == 0:
        raise fail("empty file, expected a WAV file")
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise fail("not a WAV file (expected a 'RIFF....WAVE' header)")
    pos, fmt, payload = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = data[pos + 8: pos + 8 + size]
        if cid == b"fmt ":
            if len(body) < 16:
                raise fail(f"'fmt ' chunk is {len(body)} bytes, expected at least 16")
            fmt = struct.unpack_from("<HHIIHH", body)
            if fmt[0] == _FORMAT_EXTENSIBLE:
                if len(body) < 26:
                    raise fail("WAVE_FORMAT_EXTENSIBLE 'fmt ' chunk is too short for its sub-format")
                fmt = (struct.unpack_from("<H", body, 24)[0], *fmt[1:])
        elif cid == b"data":
            if size in (0, 0xFFFFFFFF) or pos + 8 + size > len(data) and size >= 0x7FFFF000:
                body = data[pos + 8:]  # size left unset by a streaming writer
            elif pos + 8 + size > len(data):
                raise fail(f"truncated: data chunk declares {size} bytes, file holds {len(data) - pos - 8}")
            payload = body
            break
        pos += 8 + size + (size & 1)
    if fmt is None:
        raise fail("no 'fmt ' chunk before the audio data")
    if payload is None:
        raise fail("no 'data' chunk")
    tag, channels, rate, _, block, bits = fmt
    if channels < 1:
        raise fail(f"{channels} channels, expected at least 1")
    if rate < 1000 or rate > 384_000:
        raise fail(f"sample rate {rate} Hz, expected 1000..384000")
    payload = payload[: len(payload) - len(payload) % block] if block else payload
    if tag == _FORMAT_PCM and bits == 8:
        x, enc = (np.frombuffer(payload, np.uint8).astype(np.float32) - 128.0) / 128.0, "pcm_u8"
    elif tag == _FORMAT_PCM and bits == 16:
        x, enc = decode(payload, "pcm_s16le"), "pcm_s16le"
    elif tag == _FORMAT_PCM and bits == 24:
        b = np.frombuffer(payload, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x, enc = (np.where(v >= 1 << 23, v - (1 << 24), v) / float(1 << 23)).astype(np.float32), "pcm_s24le"
    elif tag == _FORMAT_PCM and bits == 32:
        x, enc = (np.frombuffer(payload, "<i4") / 2.0**31).astype(np.float32), "pcm_s32le"
    elif tag == _FORMAT_FLOAT and bits in (32, 64):
        x = np.frombuffer(payload, "<f4" if bits == 32 else "<f8").astype(np.float32)
        bad = ~np.isfinite(x)
        if bad.any():
            raise fail(f"float sample {int(np.argmax(bad)) // channels} is not finite")
        enc = "f32le" if bits == 32 else "f64le"
    elif tag == _FORMAT_MULAW and bits == 8:
        x, enc = decode(payload, "mulaw"), "mulaw"
    elif tag == _FORMAT_ALAW and bits == 8:
        x, enc = decode(payload, "alaw"), "alaw"
    else:
        raise fail(f"unsupported WAV format tag {tag} with {bits} bits; expected PCM 8/16/24/32-bit, "
                   "float 32/64-bit, G.711 mu-law or A-law")
    if len(x) == 0:
        raise fail("no audio samples in the data chunk")
    if channels > 1:
        x = x[: len(x) - len(x) % channels].reshape(-1, channels).mean(axis=1).astype(np.float32)
    return WavAudio(samples=x, sample_rate=rate, encoding=enc, channels=channels)


def read_wav(path: str | Path) -> WavAudio:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise AudioError(f"{path}: cannot read ({e.strerror or e})") from e
    return parse_wav(data, str(path))


def read_wav_16k(path: str | Path) -> np.ndarray:
    """A WAV file of any supported encoding and rate as float32 mono at 16 kHz."""
    wav = read_wav(path)
    return resample(wav.samples, wav.sample_rate, TARGET_RATE)


def encode_wav(samples: np.ndarray, sample_rate: int, encoding: str = "pcm_s16le") -> bytes:
    tag, bits = _ENCODING_FORMAT.get(encoding, (None, None))
    if tag is None:
        raise AudioError(f"cannot write WAV as {encoding!r}; expected one of {', '.join(_ENCODING_FORMAT)}")
    payload = encode(samples, encoding)
    block = bits // 8
    fmt = struct.pack("<HHIIHH", tag, 1, sample_rate, sample_rate * block, block, bits)
    if tag != _FORMAT_PCM:
        fmt += struct.pack("<H", 0)  # cbSize, required for non-PCM formats
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(payload)) + payload
    if len(payload) & 1:
        chunks += b"\0"
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int, encoding: str = "pcm_s16le") -> None:
    Path(path).write_bytes(encode_wav(samples, sample_rate, encoding))
