"""Audio bytes → float32 mono at 16 kHz: decoders, G.711 codecs, a streaming resampler, WAV files.

Pure: nothing here touches a socket or a clock; the file functions at the end (AudioFile, read_wav,
write_wav) are the only ones that take a path, and they leave the file format to libsndfile.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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

def soxr_quality(in_rate: int, out_rate: int) -> str:
    """libsoxr's quality for one conversion; the stream, the one-shot `resample` and training's phone
    line (which upsamples through `resample`) all take it from here, so features never differ between them.

    Upsampling (a phone line's 8 kHz to 16 kHz) is "QQ": libsoxr's HQ stream holds back 64 ms of output
    on average when fed 20 ms chunks, QQ 4 samples, which took 35–70 ms off the live p95 detection latency
    at 100 calls (BENCHMARKS.md, session 21). QQ droops 2.5 dB at 3.4 kHz and leaves images above 4 kHz,
    where a phone line carries nothing and the features stop (fmax 4 kHz). Downsampling stays "HQ": its
    stop band is what keeps what 16 kHz cannot carry from folding into the speech band.
    """
    return "QQ" if out_rate > in_rate else "HQ"


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
            in_rate, out_rate, 1, dtype="float32", quality=soxr_quality(in_rate, out_rate))

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
    return soxr.resample(samples, in_rate, out_rate, quality=soxr_quality(in_rate, out_rate))


# --- audio files -------------------------------------------------------------------------------
# libsndfile (python-soundfile) reads and writes the files: WAV in every PCM/float/G.711 variant
# (and FLAC, AIFF, ...), in blocks, so an hour-long recording never has to be in memory at once.

_SUBTYPE_ENCODING = {"PCM_U8": "pcm_u8", "PCM_S8": "pcm_s8", "PCM_16": "pcm_s16le", "PCM_24": "pcm_s24le",
                     "PCM_32": "pcm_s32le", "FLOAT": "f32le", "DOUBLE": "f64le", "ULAW": "mulaw", "ALAW": "alaw"}
_ENCODING_SUBTYPE = {"pcm_s16le": "PCM_16", "f32le": "FLOAT", "mulaw": "ULAW", "alaw": "ALAW"}


@dataclass(frozen=True)
class WavAudio:
    samples: np.ndarray  # float32 mono, as stored (not resampled)
    sample_rate: int
    encoding: str  # e.g. "pcm_s16le", "pcm_s24le", "f32le", "mulaw", "alaw"
    channels: int


class AudioFile:
    """An audio file opened for reading in blocks: `with AudioFile(path) as f: for x in f.blocks(): ...`.

    Every failure is an AudioError that names the file and says what was expected.
    """

    def __init__(self, path: str | Path):
        import soundfile as sf

        self.name = str(path)
        try:
            self._raw = open(path, "rb")  # noqa: SIM115 - closed in close(); libsndfile's own open hides why it failed
        except OSError as e:
            raise AudioError(f"{path}: cannot read ({e.strerror or e})") from None
        if os.fstat(self._raw.fileno()).st_size == 0:
            self._raw.close()
            raise AudioError(f"{path}: empty file, expected a WAV file")
        try:
            self._file = sf.SoundFile(self._raw)
        except (sf.LibsndfileError, RuntimeError, OSError) as e:
            self._raw.close()
            detail = getattr(e, "error_string", None) or str(e)
            raise AudioError(f"{path}: not a readable audio file ({detail}); expected WAV in PCM 8/16/24/32-bit, "
                             "float 32/64-bit, G.711 mu-law or A-law") from None
        f = self._file
        self.sample_rate, self.channels, self.frames = f.samplerate, f.channels, f.frames
        self.encoding = _SUBTYPE_ENCODING.get(f.subtype, f.subtype.lower())
        if not 1000 <= self.sample_rate <= 384_000:
            self.close()
            raise AudioError(f"{path}: sample rate {self.sample_rate} Hz, expected 1000..384000")
        if self.frames == 0:
            self.close()
            raise AudioError(f"{path}: no audio samples in the file")

    def blocks(self, seconds: float = 10.0):
        """Float32 mono blocks of at most `seconds`, in order."""
        size = max(1, int(seconds * self.sample_rate))
        done = 0
        while True:
            try:
                x = self._file.read(size, dtype="float32", always_2d=True)
            except RuntimeError as e:
                raise AudioError(f"{self.name}: unreadable after sample {done} ({e})") from None
            if len(x) == 0:
                return
            x = x.mean(axis=1, dtype=np.float32) if self.channels > 1 else x[:, 0].copy()
            bad = ~np.isfinite(x)
            if bad.any():
                raise AudioError(f"{self.name}: sample {done + int(np.argmax(bad))} is not finite")
            done += len(x)
            yield x

    def read_range(self, start: int, frames: int) -> np.ndarray:
        """Float32 mono samples [start, start + frames) (fewer at the end of the file)."""
        try:
            self._file.seek(max(0, min(start, self.frames)))
            x = self._file.read(max(0, frames), dtype="float32", always_2d=True)
        except RuntimeError as e:
            raise AudioError(f"{self.name}: unreadable at sample {start} ({e})") from None
        return x.mean(axis=1, dtype=np.float32) if self.channels > 1 else x[:, 0].copy()

    def close(self) -> None:
        self._file.close()
        self._raw.close()

    def __enter__(self) -> AudioFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_wav(path: str | Path) -> WavAudio:
    """A whole (short) file in memory; for long recordings use AudioFile(path).blocks()."""
    with AudioFile(path) as f:
        samples = np.concatenate(list(f.blocks(60.0)))
        return WavAudio(samples=samples, sample_rate=f.sample_rate, encoding=f.encoding, channels=f.channels)


def read_wav_16k(path: str | Path) -> np.ndarray:
    """A WAV file of any supported encoding and rate as float32 mono at 16 kHz."""
    wav = read_wav(path)
    return resample(wav.samples, wav.sample_rate, TARGET_RATE)


def read_blocks_16k(path: str | Path, seconds: float = 10.0):
    """A recording of any length as float32 mono 16 kHz blocks, resampled as it streams (flat memory)."""
    with AudioFile(path) as f:
        rs = StreamResampler(f.sample_rate)
        for x in f.blocks(seconds):
            yield rs.feed(x)
        yield rs.flush()


class LineRecorder:
    """A WAV file written as a line's bytes arrive, in the line's own encoding (G.711 stays G.711)."""

    def __init__(self, path: str | Path, sample_rate: int, encoding: str):
        import soundfile as sf

        subtype = _ENCODING_SUBTYPE.get(encoding)
        if subtype is None:
            raise AudioError(f"cannot record {encoding!r}; expected one of {', '.join(_ENCODING_SUBTYPE)}")
        self.encoding = encoding
        self._file = sf.SoundFile(str(path), "w", samplerate=sample_rate, channels=1, format="WAV", subtype=subtype)

    def write(self, data: bytes) -> None:
        # G.711 expands to 14/13-bit values that libsndfile encodes back to the very same bytes.
        if self.encoding == "mulaw":
            self._file.write(ULAW_TO_PCM16[np.frombuffer(data, dtype=np.uint8)])
        elif self.encoding == "alaw":
            self._file.write(ALAW_TO_PCM16[np.frombuffer(data, dtype=np.uint8)])
        elif self.encoding == "pcm_s16le":
            self._file.write(np.frombuffer(data, dtype="<i2"))
        else:
            self._file.write(np.frombuffer(data, dtype="<f4"))

    def close(self) -> None:
        self._file.close()


def write_wav(path: str | Path | BinaryIO, samples: np.ndarray, sample_rate: int, encoding: str = "pcm_s16le") -> None:
    import soundfile as sf

    subtype = _ENCODING_SUBTYPE.get(encoding)
    if subtype is None:
        raise AudioError(f"cannot write WAV as {encoding!r}; expected one of {', '.join(_ENCODING_SUBTYPE)}")
    x = np.asarray(samples, dtype=np.float32)
    if encoding != "f32le":
        x = np.clip(x, -1.0, 32767 / 32768)
    sf.write(str(path) if isinstance(path, str | Path) else path, x, sample_rate, subtype=subtype, format="WAV")
