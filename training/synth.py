"""Stage 1: every allowed voice says every word and sentence, with prosody variation, cached per voice.

Output: one `<data>/clips/<voice>.npz` per voice (16 kHz float32 clips, trimmed, with text, kind,
speed, pitch), plus `<data>/real/*.npz` for installed real recordings (prompts, noise).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training import corpus
from training.voices import VOICES, Voice, VoiceUnavailable, kokoro_model_file
from triage.audio import TARGET_RATE, read_wav, resample
from triage.keywords import KEYWORDS

# (speed, pitch) grids per engine and kind of text; richer for keywords, the scarce class.
_GRID = {
    ("mbrola", "keyword"): [(s, p) for s in (0.75, 0.9, 1.0, 1.15, 1.3, 1.5) for p in (25, 40, 55, 70, 85)],
    ("espeak", "keyword"): [(s, p) for s in (0.8, 1.0, 1.2, 1.4) for p in (30, 50, 70)],
    # Kokoro is the slow engine (~1 s of CPU per word): few isolated clips, its variety comes from the
    # running speech of training/speech.py, where every utterance has a new blended voice.
    ("kokoro", "keyword"): [(s, 50) for s in (0.85, 1.05, 1.3)],
    ("mbrola", "unknown"): [(s, p) for s in (0.8, 1.0, 1.25) for p in (35, 65)] + [(1.5, 50)],
    ("espeak", "unknown"): [(0.9, 40), (1.2, 60), (1.0, 75)],
    ("kokoro", "unknown"): [(1.05, 50)],
    ("mbrola", "sentence"): [(1.0, 50), (1.2, 70)],
    ("espeak", "sentence"): [(1.1, 50)],
    ("mbrola", "base"): [(s, p) for s in (0.8, 1.0, 1.2, 1.4) for p in (30, 50, 70, 85)],
    ("espeak", "base"): [(s, p) for s in (0.8, 1.0, 1.3) for p in (35, 65)],
    ("kokoro", "base"): [(s, 50) for s in (0.9, 1.2)],
    ("flite", "base"): [(1.0, 50)],
}


@dataclass(frozen=True)
class Job:
    text: str
    kind: str  # keyword | unknown | sentence | base
    speed: float
    pitch: int


def jobs_for(voice: Voice) -> list[Job]:
    if voice.lang == "en":
        texts = [(w, "base") for w in corpus.BASE_WORDS]
    else:
        texts = [(w, "keyword") for w in KEYWORDS] + [(w, "unknown") for w in corpus.UNKNOWN_WORDS]
        if voice.engine != "kokoro":
            texts += [(s, "sentence") for s in corpus.NO_KEYWORD_SENTENCES]
    return [Job(t, kind, s, p) for t, kind in texts for s, p in _GRID[(voice.engine, kind)]]


def voiced_bounds(x: np.ndarray, rate: int = TARGET_RATE, pad_s: float = 0.03) -> tuple[int, int]:
    """(start, end) sample indices of `x` without leading and trailing silence: 10 ms frames more than
    30 dB under the loudest frame, `pad_s` of margin kept."""
    hop = rate // 100
    n = len(x) // hop
    if n == 0:
        return 0, len(x)
    rms = np.sqrt(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)
    loud = np.nonzero(rms > max(rms.max() * 10 ** (-30 / 20), 1e-4))[0]
    if len(loud) == 0:
        return 0, 0
    pad = int(pad_s * rate)
    return max(0, loud[0] * hop - pad), min(len(x), (loud[-1] + 1) * hop + pad)


def trim(x: np.ndarray, rate: int = TARGET_RATE, pad_s: float = 0.03) -> np.ndarray:
    """`x` without its leading and trailing silence (see `voiced_bounds`)."""
    start, end = voiced_bounds(x, rate, pad_s)
    return x[start:end]


def is_broken(x: np.ndarray, kind: str) -> str | None:
    """Why a synthetic clip is unusable (energy check), or None."""
    dur = len(x) / TARGET_RATE
    if dur < 0.12:
        return f"too short ({dur:.2f} s)"
    if kind in ("keyword", "unknown", "base") and dur > 1.8:
        return f"too long for a word ({dur:.2f} s)"
    peak = float(np.abs(x).max())
    if peak < 0.02:
        return f"nearly silent (peak {peak:.3f})"
    if np.mean(np.abs(x) > 0.999) > 0.01:
        return "clipped"
    return None


def _voice_file(data: Path, voice: Voice) -> Path:
    return data / "clips" / (voice.id.replace(":", "_").replace("+", "-") + ".npz")


def _jobs_hash(jobs: list[Job]) -> str:
    return hashlib.sha256(json.dumps([j.__dict__ for j in jobs]).encode()).hexdigest()[:16]


def synthesize_voice(args: tuple[Voice, Path]) -> tuple[str, int, int, str | None]:
    voice, data = args
    out = _voice_file(data, voice)
    jobs = jobs_for(voice)
    digest = _jobs_hash(jobs)
    if out.exists():
        with np.load(out, allow_pickle=True) as z:
            if str(z["digest"]) == digest:
                return voice.id, len(z["text"]), 0, None
    clips, meta, dropped = [], [], 0
    try:
        for j in jobs:
            audio, rate = voice.say(j.text, j.speed, j.pitch)
            x = trim(resample(audio, rate, TARGET_RATE) if rate != TARGET_RATE else audio)
            if is_broken(x, j.kind):
                dropped += 1
                continue
            clips.append(x.astype(np.float32))
            meta.append(j)
    except VoiceUnavailable as e:
        return voice.id, 0, 0, str(e)
    out.parent.mkdir(parents=True, exist_ok=True)
    arr = np.empty(len(clips), dtype=object)
    arr[:] = clips
    np.savez(out, audio=arr, text=np.array([m.text for m in meta]), kind=np.array([m.kind for m in meta]),
             speed=np.array([m.speed for m in meta]), pitch=np.array([m.pitch for m in meta]),
             voice=voice.id, digest=digest)
    return voice.id, len(clips), dropped, None


def load_voice(data: Path, voice: Voice) -> dict:
    with np.load(_voice_file(data, voice), allow_pickle=True) as z:
        return {k: z[k] for k in ("audio", "text", "kind", "speed", "pitch")}


def _sox_to_16k(path: Path) -> np.ndarray:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "o.wav"
        subprocess.run(["sox", str(path), "-r", str(TARGET_RATE), "-c", "1", "-b", "16", str(out)],
                       check=True, capture_output=True)
        return read_wav(out).samples


REAL_SOURCES = {"prompts_fr": corpus.french_prompts, "noise": corpus.noise_recordings,
                "tuxpaint_fr": corpus.tuxpaint_descriptions}


def collect_real(data: Path, sources: tuple[str, ...] = ("prompts_fr", "noise")) -> dict[str, int]:
    """Real recordings installed by Debian packages, converted once to 16 kHz. Training needs the prompts
    and the noise; only calibration hears Tux Paint's descriptions ("tuxpaint_fr")."""
    counts = {}
    for name in sources:
        out = data / "real" / f"{name}.npz"
        if out.exists():
            with np.load(out, allow_pickle=True) as z:
                counts[name] = len(z["audio"])
            continue
        clips, names = [], []
        for p in tqdm(REAL_SOURCES[name](), desc=f"converting {name}", unit="file"):
            try:
                clips.append(_sox_to_16k(p).astype(np.float32))
                names.append(str(p))
            except subprocess.CalledProcessError:
                continue
        if not clips:
            raise RuntimeError(f"no {name} recordings found: run scripts/install-system.sh train")
        out.parent.mkdir(parents=True, exist_ok=True)
        arr = np.empty(len(clips), dtype=object)
        arr[:] = clips
        np.savez(out, audio=arr, path=np.array(names))
        counts[name] = len(clips)
    return counts


def load_real(data: Path, name: str) -> list[np.ndarray]:
    with np.load(data / "real" / f"{name}.npz", allow_pickle=True) as z:
        return list(z["audio"])


def run(data: Path, workers: int = 2, voices: list[Voice] | None = None) -> None:
    voices = list(voices or VOICES)
    # Slow neural voices first so that the two workers finish together.
    voices.sort(key=lambda v: v.engine != "kokoro")
    if any(v.engine == "kokoro" for v in voices):
        kokoro_model_file()
    with mp.get_context("spawn").Pool(workers) as pool:
        bar = tqdm(pool.imap_unordered(synthesize_voice, [(v, data) for v in voices]), total=len(voices),
                   desc="synthesizing voices", unit="voice")
        for vid, n, dropped, err in bar:
            if err:
                raise RuntimeError(f"voice {vid} failed: {err}")
            bar.write(f"  {vid}: {n} clips" + (f", {dropped} dropped by the energy check" if dropped else ""))
    print(collect_real(data))
