"""Simulated emergency calls with labels, on a phone line.

`speech_calls` joins running-speech sentences of held-out voices (training/speech.py) into calls and
writes 8 kHz G.711 WAVs with `labels.jsonl` (keyword start/end times, expected services) in the format
`triage replay --labels` reads: the dev calls set thresholds, the test calls give the figures
(training/calibrate.py). `python -m training.calls --out DIR` writes the bundled demo calls, each the first
draw the shipped model routes as labelled.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from training import synth
from training.augment import Augmenter, Banks, _rms, telephone
from training.corpus import KEYWORD_FORMS, folded
from training.dataset import _split
from training.voices import voices
from triage.audio import TARGET_RATE, read_wav_16k, resample, write_wav
from triage.keywords import KEYWORD_SERVICE
from triage.model import KeywordModel
from triage.replay import replay_samples


def _voice_material(data: Path, voice) -> tuple[dict[str, list[np.ndarray]], list[np.ndarray], list[np.ndarray]]:
    c = synth.load_voice(data, voice)
    words: dict[str, list] = {}
    sentences, fillers = [], []
    for clip, text, kind in zip(c["audio"], c["text"], c["kind"], strict=True):
        if kind == "keyword":
            words.setdefault(str(text), []).append(clip)
        elif kind == "sentence":
            sentences.append(clip)
        elif str(text) not in KEYWORD_FORMS:
            fillers.append(clip)
    return words, sentences, fillers


def make_call(rng: np.random.Generator, words, sentences, fillers, keywords: list[str], duration: float,
              banks: Banks, snr_db: float, codec: str) -> tuple[np.ndarray, list[dict]]:
    """Speech of about `duration` seconds holding `keywords` in order, with noise and phone line."""
    pieces, labels, t = [], [], 0.0
    slots = sorted(rng.uniform(0.15, 0.9, len(keywords))) if keywords else []
    kw_iter = iter(zip(slots, keywords, strict=True))
    nxt = next(kw_iter, None)
    silence = lambda s: np.zeros(int(s * TARGET_RATE), np.float32)  # noqa: E731
    pieces.append(silence(rng.uniform(0.3, 1.0)))
    t = len(pieces[0]) / TARGET_RATE
    while t < duration or nxt is not None:
        if nxt is not None and t >= nxt[0] * duration:
            kw = nxt[1]
            if rng.random() < 0.5:  # a short word before it, as in "c'est ... incendie"
                f = fillers[rng.integers(len(fillers))]
                pieces += [f, silence(rng.uniform(0.05, 0.2))]
                t += (len(f) + len(pieces[-1])) / TARGET_RATE
            clip = words[kw][rng.integers(len(words[kw]))]
            labels.append({"keyword": kw, "start": round(t, 3), "end": round(t + len(clip) / TARGET_RATE, 3)})
            pieces.append(clip)
            t += len(clip) / TARGET_RATE
            nxt = next(kw_iter, None)
        else:
            s = (sentences[rng.integers(len(sentences))] if sentences and rng.random() < 0.8
                 else fillers[rng.integers(len(fillers))])
            pieces.append(s)
            t += len(s) / TARGET_RATE
        gap = silence(rng.uniform(0.25, 0.9))
        pieces.append(gap)
        t += len(gap) / TARGET_RATE
    speech = np.concatenate(pieces)
    speech = speech / (np.abs(speech).max() + 1e-9) * 0.5
    return degrade(speech, rng, banks, snr_db, codec), labels


def speech_calls(utts: list, free: list, banks: Banks, out: Path, seed: int) -> Path:
    """Calls of running speech: 0–2 keyword sentences among 1–4 keyword-free ones, pauses between them,
    background noise at 5–20 dB SNR, an 8 kHz G.711 line. Writes WAVs and `labels.jsonl`."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    order, free_order = list(rng.permutation(len(utts))), list(rng.permutation(len(free)))
    lines = []
    n = 0
    while order:
        k = 0 if n % 7 == 6 else (2 if n % 4 == 3 else 1)
        parts = [utts[order.pop()] for _ in range(min(k, len(order)))]
        parts += [free[free_order.pop()] for _ in range(int(rng.integers(1, 5))) if free_order]
        rng.shuffle(parts)
        pieces, labels, t = [], [], float(rng.uniform(0.3, 1.0))
        pieces.append(np.zeros(int(t * TARGET_RATE), np.float32))
        for u in parts:
            labels += [{"keyword": kw, "start": round(t + s, 3), "end": round(t + e, 3), "speaker": u.speaker}
                       for kw, s, e in u.words]
            gap = np.zeros(int(rng.uniform(0.3, 1.5) * TARGET_RATE), np.float32)
            pieces += [u.audio * rng.uniform(0.5, 1.0), gap]
            t += (len(u.audio) + len(gap)) / TARGET_RATE
        audio = degrade(np.concatenate(pieces), rng, banks, float(rng.uniform(5, 20)),
                        "mulaw" if n % 2 else "alaw")
        name = f"call{n:04d}.wav"
        write_wav(out / name, resample(audio, TARGET_RATE, 8000), 8000, "mulaw" if n % 2 else "alaw")
        lines.append({"file": name, "voices": [u.speaker for u in parts],
                      "services": sorted({KEYWORD_SERVICE[k["keyword"]] for k in labels}), "keywords": labels})
        n += 1
    path = out / "labels.jsonl"
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    return path


def degrade(speech: np.ndarray, rng: np.random.Generator, banks: Banks, snr_db: float, codec: str) -> np.ndarray:
    """Background noise at `snr_db` against the speech's active level, then the phone line (16 kHz out)."""
    noise = Augmenter(banks, rng).background(len(speech))
    active = speech[np.abs(speech) > 0.01]
    level = _rms(active) if len(active) else 0.05
    noisy = speech + noise / _rms(noise) * level * 10 ** (-snr_db / 20)
    noisy = noisy / max(1.0, float(np.abs(noisy).max()) / 0.9)
    return telephone(noisy.astype(np.float32), codec)


# The bundled demo calls (triage/demo_calls): one per service and one for two services.
DEMO = (("mbrola:fr6", ["électrocution"]), ("kokoro:jf_nezumi", ["intoxication"]), ("mbrola:fr6", ["cambriolage"]),
        ("espeak:fr+m6", ["gaz", "brûlure"]))


def make_demo_calls(data: Path, out: Path, model: KeywordModel, seed: int = 52, draws: int = 30) -> list[Path]:
    """Short held-out-voice calls, light noise, 8 kHz μ-law: small enough to ship in the package. Picked for
    the demo, not a figure: each is the first of its draws (sentences, keyword places, noise) that `model`
    routes as labelled, by the labelled keywords and no other detection, so that a newcomer's first
    dashboard shows every column fill."""
    out.mkdir(parents=True, exist_ok=True)
    prompts = _split(synth.load_real(data, "prompts_fr"), True)
    banks = Banks(speech=prompts, music=_split(synth.load_real(data, "noise"), True), rirs=[])
    paths = []
    for n, (vid, kws) in enumerate(DEMO):
        voice = next(v for v in voices("fr", held_out=True) if v.id == vid)
        words, sentences, fillers = _voice_material(data, voice)
        path = out / f"demo{n + 1}_{folded('_'.join(kws))}.wav"
        wanted = sorted({KEYWORD_SERVICE[k] for k in kws})
        for draw in range(draws):
            rng = np.random.default_rng([seed, n, draw])
            audio, _ = make_call(rng, words, sentences, fillers, kws, 12.0, banks, snr_db=18.0, codec="mulaw")
            write_wav(path, resample(audio, TARGET_RATE, 8000), 8000, "mulaw")
            r = replay_samples(model, read_wav_16k(path), path.name)
            if r.services == wanted and sorted(d.keyword for d in r.detections) == sorted(kws):
                print(f"{path.name}: draw {draw} routed to {wanted} by {', '.join(kws)}", file=sys.stderr)
                break
        else:
            raise SystemExit(f"{path.name}: none of {draws} draws ({vid} saying {', '.join(kws)}) is routed to "
                             f"{wanted} by {model.path}")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.calls", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parent.parent / "data")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", type=Path, default=None, help="the model the demo calls must be routed by "
                                                              "(default: the shipped one)")
    args = ap.parse_args(argv)
    model = KeywordModel(args.model) if args.model else KeywordModel()
    print("\n".join(map(str, make_demo_calls(args.data, args.out, model))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
