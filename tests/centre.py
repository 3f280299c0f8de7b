"""A dispatch centre's labelled calls, made on the spot: espeak-ng speaking caller sentences in a voice no
model of this project trained on, over a noisy G.711 line, with each keyword's exact start and end (the
sentence is spoken in three parts: before the keyword, the keyword, after it)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from triage.audio import read_wav, resample, write_wav
from triage.keywords import KEYWORD_SERVICE

# A variant no split of training/voices.py uses (train, dev or test).
VOICE = "fr+klatt3"
TEMPLATES = (
    ("Allô, venez vite, il y a", "chez ma voisine au troisième étage."),
    ("Bonjour, je vous appelle pour", "dans la rue derrière la gare."),
    ("Oui, c'est une", "je crois, elle ne répond plus."),
    ("Écoutez, on a eu un", "il y a dix minutes, rue Victor Hugo."),
)


def available() -> bool:
    return shutil.which("espeak-ng") is not None


def _say(text: str, voice: str, speed: int, pitch: int) -> tuple[np.ndarray, int]:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "x.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-a", "80", "-w", str(out), text],
                       check=True, capture_output=True)
        wav = read_wav(out)
    x = wav.samples
    loud = np.nonzero(np.abs(x) > 0.02)[0]  # espeak pads with silence: the word is what is heard
    return (x[loud[0]: loud[-1] + 1] if len(loud) else x), wav.sample_rate


def make_calls(directory: Path, keywords: list[str], seed: int, voice: str = VOICE, snr_db: float = 15.0) -> Path:
    """One call per keyword in `keywords` (8 kHz mu-law WAV + labels.jsonl in `triage replay --labels` form)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for n, kw in enumerate(keywords):
        before, after = TEMPLATES[rng.integers(len(TEMPLATES))]
        speed, pitch = int(rng.integers(130, 175)), int(rng.integers(30, 70))
        parts, rate = [], 16000
        for text in (before, kw, after):
            x, r = _say(text, voice, speed, pitch)
            parts.append(resample(x, r, rate))
        gap = np.zeros(int(rate * rng.uniform(0.05, 0.15)), np.float32)
        lead = np.zeros(int(rate * rng.uniform(0.5, 1.5)), np.float32)
        audio = np.concatenate([lead, parts[0], gap, parts[1], gap, parts[2], lead])
        start = (len(lead) + len(parts[0]) + len(gap)) / rate
        end = start + len(parts[1]) / rate
        noise = rng.standard_normal(len(audio)).astype(np.float32)
        noise *= np.sqrt(np.mean(audio ** 2) / np.mean(noise ** 2) / 10 ** (snr_db / 10))
        line = resample(np.clip(audio + noise, -1, 1), rate, 8000)
        file = f"call{seed:03d}_{n:03d}.wav"
        write_wav(directory / file, line, 8000, "mulaw")
        lines.append({"file": file, "services": [KEYWORD_SERVICE[kw]],
                      "keywords": [{"keyword": kw, "start": round(start, 3), "end": round(end, 3)}]})
    (directory / "labels.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines),
                                            encoding="utf-8")
    return directory
