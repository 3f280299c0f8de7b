import io
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from triage import audio
from triage.audio import AudioError, StreamResampler, decode, encode, resample

# Reference values from ITU-T G.711 / Sun's g711.c (the same as Python's audioop).
ULAW_REFERENCE = {0x00: -32124, 0x0F: -16764, 0x7F: 0, 0x80: 32124, 0xFF: 0, 0x35: -3260, 0xA2: 7420}
ALAW_REFERENCE = {0x00: -5504, 0x55: -8, 0xD5: 8, 0x80: 5504, 0x2A: -32256, 0xAA: 32256, 0x7F: -848}


def test_g711_decode_tables_match_reference_points():
    for code, value in ULAW_REFERENCE.items():
        assert audio.ULAW_TO_PCM16[code] == value
    for code, value in ALAW_REFERENCE.items():
        assert audio.ALAW_TO_PCM16[code] == value


def test_g711_against_audioop_all_codes_and_all_pcm_values():
    audioop = pytest.importorskip("audioop")
    codes = bytes(range(256))
    assert (audio.ULAW_TO_PCM16 == np.frombuffer(audioop.ulaw2lin(codes, 2), "<i2")).all()
    assert (audio.ALAW_TO_PCM16 == np.frombuffer(audioop.alaw2lin(codes, 2), "<i2")).all()
    pcm = np.arange(-32768, 32768, dtype=np.int16)
    assert (audio.pcm16_to_ulaw(pcm) == np.frombuffer(audioop.lin2ulaw(pcm.tobytes(), 2), np.uint8)).all()
    assert (audio.pcm16_to_alaw(pcm) == np.frombuffer(audioop.lin2alaw(pcm.tobytes(), 2), np.uint8)).all()


@pytest.mark.parametrize("encoding", ["mulaw", "alaw"])
def test_g711_code_round_trip_is_exact(encoding):
    codes = bytes(range(256))
    again = encode(decode(codes, encoding), encoding)
    table = audio.ULAW_TO_PCM16 if encoding == "mulaw" else audio.ALAW_TO_PCM16
    # Codes that decode to the same value (μ-law's two zeros) may come back as either.
    assert (table[np.frombuffer(again, np.uint8)] == table[np.frombuffer(codes, np.uint8)]).all()


@given(st.binary(max_size=4096), st.sampled_from(["mulaw", "alaw"]))
def test_g711_decodes_any_bytes_to_bounded_floats(data, encoding):
    x = decode(data, encoding)
    assert x.dtype == np.float32 and len(x) == len(data)
    assert np.all(np.abs(x) <= 1.0)


@given(st.binary(max_size=4096))
def test_pcm16_decodes_even_lengths_and_rejects_odd(data):
    if len(data) % 2:
        with pytest.raises(AudioError, match="even number of bytes"):
            decode(data, "pcm_s16le")
    else:
        x = decode(data, "pcm_s16le")
        assert len(x) == len(data) // 2 and np.all(np.abs(x) <= 1.0)
        assert encode(x, "pcm_s16le") == data


@given(st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), max_size=256))
def test_f32_rejects_non_finite_and_keeps_finite_exactly(values):
    data = struct.pack(f"<{len(values)}f", *values)
    if all(np.isfinite(values)):
        assert (decode(data, "f32le") == np.array(values, dtype=np.float32)).all()
    else:
        with pytest.raises(AudioError, match="finite"):
            decode(data, "f32le")


def test_unknown_encoding_names_the_expected_ones():
    with pytest.raises(AudioError, match="pcm_s16le, f32le, mulaw, alaw"):
        decode(b"\0\0", "opus")


def test_f32_needs_whole_samples():
    with pytest.raises(AudioError, match="multiple of 4"):
        decode(b"\0\0\0", "f32le")


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_resampler_is_chunk_invariant(rate):
    rng = np.random.default_rng(rate)
    x = (rng.standard_normal(rate // 2) * 0.2).astype(np.float32)
    whole = resample(x, rate)
    assert len(whole) == -(-len(x) * 16000 // rate)
    for trial in range(3):
        r, parts, i = StreamResampler(rate), [], 0
        while i < len(x):
            n = int(rng.integers(1, 1500 if trial else 3))
            parts.append(r.feed(x[i: i + n]))
            i += n
        parts.append(r.flush())
        assert np.abs(np.concatenate(parts) - whole).max() <= 1e-6


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampler_keeps_a_tone_in_place(rate):
    t = np.arange(rate) / rate
    y = resample(np.sin(2 * np.pi * 440 * t).astype(np.float32), rate)
    tt = np.arange(len(y)) / 16000
    # Zero phase: the 440 Hz tone comes out where it went in (edges excluded).
    assert np.abs(y[300:-300] - np.sin(2 * np.pi * 440 * tt[300:-300])).max() < 1e-3


@pytest.mark.parametrize("tone", [300, 1000, 2000, 3000, 3400])
def test_phone_line_upsampling_keeps_the_feature_band(tone):
    # 8 -> 16 kHz is libsoxr's quickest quality (it holds back 4 samples, not 64 ms): the phone band may
    # droop (2.5 dB at 3.4 kHz) but nothing may appear below the features' 4 kHz but the tone itself.
    t = np.arange(8000) / 8000
    y = resample(np.sin(2 * np.pi * tone * t).astype(np.float32), 8000)
    gain_db = 20 * np.log10(np.sqrt(2 * np.mean(y[300:-300] ** 2)))
    assert -3.0 < gain_db < 0.1
    seg = y[2000:-2000]
    spectrum = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    freq = np.fft.rfftfreq(len(seg), 1 / 16000)
    assert spectrum[(freq < 4000) & (np.abs(freq - tone) > 50)].max() < spectrum.max() * 1e-4


def test_resampler_removes_what_16k_cannot_carry():
    rate = 48000
    t = np.arange(rate) / rate
    y = resample(np.sin(2 * np.pi * 12000 * t).astype(np.float32), rate)
    assert np.sqrt(np.mean(y[300:-300] ** 2)) < 0.01


@pytest.mark.parametrize("encoding", ["pcm_s16le", "f32le", "mulaw", "alaw"])
@pytest.mark.parametrize("rate", [8000, 16000, 44100])
def test_wav_round_trip(tmp_path, encoding, rate):
    x = (np.sin(np.arange(rate // 4) * 0.05) * 0.5).astype(np.float32)
    path = tmp_path / "a.wav"
    audio.write_wav(path, x, rate, encoding)
    wav = audio.read_wav(path)
    assert wav.sample_rate == rate and wav.encoding == encoding and len(wav.samples) == len(x)
    tol = {"f32le": 0, "pcm_s16le": 1 / 32768, "mulaw": 0.02, "alaw": 0.02}[encoding]
    assert np.abs(wav.samples - x).max() <= tol


def _wav_bytes(samples, rate: int = 8000, encoding: str = "pcm_s16le") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.asarray(samples, np.float32), rate, subtype={"pcm_s16le": "PCM_16", "mulaw": "ULAW"}[encoding],
             format="WAV")
    return buf.getvalue()


def test_wav_stereo_is_mixed_to_mono(tmp_path):
    left, right = np.full(100, 0.5), np.full(100, -0.25)
    pcm = (np.stack([left, right], axis=1) * 32768).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 2, 8000, 32000, 4, 16)
    data = b"RIFF" + struct.pack("<I", 4 + 8 + 16 + 8 + len(pcm)) + b"WAVEfmt " + struct.pack("<I", 16) + fmt
    data += b"data" + struct.pack("<I", len(pcm)) + pcm
    (tmp_path / "stereo.wav").write_bytes(data)
    wav = audio.read_wav(tmp_path / "stereo.wav")
    assert wav.channels == 2 and np.allclose(wav.samples, 0.125)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty file"),
        (b"hello, this is not audio at all", "not a readable audio file"),
        (b"RIFF\x04\x00\x00\x00WAVE", "not a readable audio file"),
        (_wav_bytes(np.zeros(0)), "no audio samples"),
    ],
)
def test_bad_wav_files_raise_clear_errors(tmp_path, data, message):
    (tmp_path / "call.wav").write_bytes(data)
    with pytest.raises(AudioError, match=message) as e:
        audio.read_wav(tmp_path / "call.wav")
    assert str(e.value).startswith(f"{tmp_path / 'call.wav'}: ")


def test_truncated_wav_gives_the_audio_it_holds(tmp_path):
    x = np.linspace(-0.5, 0.5, 1000, dtype=np.float32)
    (tmp_path / "cut.wav").write_bytes(_wav_bytes(x)[:-400])  # 200 samples lost
    assert len(audio.read_wav(tmp_path / "cut.wav").samples) == 800


def test_unsupported_wav_format_names_the_supported_ones(tmp_path):
    data = bytearray(_wav_bytes(np.zeros(10)))
    data[20:22] = struct.pack("<H", 0x55)  # MP3-in-WAV
    (tmp_path / "mp3.wav").write_bytes(bytes(data))
    with pytest.raises(AudioError, match="expected WAV in PCM 8/16/24/32-bit"):
        audio.read_wav(tmp_path / "mp3.wav")


def test_blocks_stream_a_long_file_exactly(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(8000 * 25) * 0.1).astype(np.float32)
    audio.write_wav(tmp_path / "long.wav", x, 8000, "mulaw")
    whole = audio.read_wav_16k(tmp_path / "long.wav")
    streamed = np.concatenate(list(audio.read_blocks_16k(tmp_path / "long.wav", seconds=3.3)))
    assert len(streamed) == len(whole)
    assert np.abs(streamed - whole).max() < 1e-4


def test_read_wav_missing_file_names_it(tmp_path):
    with pytest.raises(AudioError, match="nope.wav: cannot read"):
        audio.read_wav(tmp_path / "nope.wav")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_reading_any_bytes_fails_with_nothing_but_audio_error(data):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.wav"
        path.write_bytes(b"RIFF" + data[:4] + b"WAVE" + data[4:])
        try:
            wav = audio.read_wav(path)
        except AudioError:
            return
    assert np.all(np.isfinite(wav.samples))


