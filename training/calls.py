"""Simulated emergency calls with labels: sentences, pauses and keywords from one voice, on a phone line.

`python -m training.calls --voices held-out --out DIR` writes 8 kHz μ-law WAV calls and
`labels.jsonl` (keyword start/end times, expected services) in the format `triage replay --labels`
reads. Calls from held-out voices are the development set; calls from training voices calibrate
thresholds, so the figures reported on held-out voices are not tuned on them.
"""

from __future__ import annotations

import argparse
import json
import unicodedata
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training import synth
from training.augment import Augmenter, Banks, _rms, make_rirs, telephone
from training.corpus import KEYWORD_FORMS
from training.dataset import _split_half
from training.voices import voices
from triage.audio import TARGET_RATE, resample, write_wav
from triage.keywords import KEYWORD_SERVICE, KEYWORDS


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
            s = sentences[rng.integers(len(sentences))] if rng.random() < 0.8 else fillers[rng.integers(len(fillers))]
            pieces.append(s)
            t += len(s) / TARGET_RATE
        gap = silence(rng.uniform(0.25, 0.9))
        pieces.append(gap)
        t += len(gap) / TARGET_RATE
    speech = np.concatenate(pieces)
    speech = speech / (np.abs(speech).max() + 1e-9) * 0.5
    aug = Augmenter(banks, rng)
    noise = aug.background(len(speech))
    active = speech[np.abs(speech) > 0.01]
    noisy = speech + noise / _rms(noise) * _rms(active) * 10 ** (-snr_db / 20)
    noisy = noisy / max(1.0, float(np.abs(noisy).max()) / 0.9)
    return telephone(noisy.astype(np.float32), codec), labels


def generate(data: Path, out: Path, held_out: bool, per_voice: int = 8, seed: int = 5) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    prompts = _split_half(synth.load_real(data, "prompts_fr"), held_out)
    music = _split_half(synth.load_real(data, "noise"), held_out)
    rirs = make_rirs(data / "rirs.npz")
    banks = Banks(speech=prompts, music=music, rirs=rirs[36:] if held_out else rirs[:36])
    rng = np.random.default_rng(seed + held_out)
    lines = []
    vs = voices("fr", held_out=held_out)
    for v in tqdm(vs, desc="simulated calls", unit="voice"):
        words, sentences, fillers = _voice_material(data, v)
        for n in range(per_voice):
            kind = n % 4
            if kind == 0:  # no keyword at all
                kws = []
            elif kind == 3:  # two services
                a = KEYWORDS[rng.integers(len(KEYWORDS))]
                b = rng.choice([k for k in KEYWORDS if KEYWORD_SERVICE[k] != KEYWORD_SERVICE[a]])
                kws = [a, str(b)]
            else:
                kws = [KEYWORDS[rng.integers(len(KEYWORDS))]]
            kws = [k for k in kws if k in words]
            duration = float(rng.uniform(10, 40))
            audio, labels = make_call(rng, words, sentences, fillers, kws, duration, banks,
                                      snr_db=float(rng.uniform(5, 20)), codec="mulaw" if n % 2 else "alaw")
            name = f"{v.id.replace(':', '_').replace('+', '-')}_{n:02d}.wav"
            write_wav(out / name, resample(audio, TARGET_RATE, 8000), 8000, "mulaw")
            lines.append({"file": name, "voice": v.id,
                          "services": sorted({KEYWORD_SERVICE[k["keyword"]] for k in labels}), "keywords": labels})
    path = out / "labels.jsonl"
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    return path


# The bundled demo calls (triage/demo_calls): one per service and one for two services.
DEMO = (("mbrola:fr6", ["incendie"]), ("kokoro:jf_nezumi", ["malaise"]), ("mbrola:fr6", ["cambriolage"]),
        ("espeak:fr+m6", ["gaz", "brûlure"]))


def make_demo_calls(data: Path, out: Path, seed: int = 21) -> list[Path]:
    """Short held-out-voice calls, light noise, 8 kHz μ-law: small enough to ship in the package."""
    out.mkdir(parents=True, exist_ok=True)
    prompts = _split_half(synth.load_real(data, "prompts_fr"), True)
    banks = Banks(speech=prompts, music=_split_half(synth.load_real(data, "noise"), True), rirs=[])
    rng = np.random.default_rng(seed)
    paths = []
    for n, (vid, kws) in enumerate(DEMO):
        voice = next(v for v in voices("fr", held_out=True) if v.id == vid)
        words, sentences, fillers = _voice_material(data, voice)
        audio, labels = make_call(rng, words, sentences, fillers, kws, 12.0, banks, snr_db=18.0, codec="mulaw")
        slug = unicodedata.normalize("NFKD", "_".join(kws)).encode("ascii", "ignore").decode()
        path = out / f"demo{n + 1}_{slug}.wav"
        write_wav(path, resample(audio, TARGET_RATE, 8000), 8000, "mulaw")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.calls", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parent.parent / "data")
    ap.add_argument("--voices", choices=["held-out", "training"], default="held-out")
    ap.add_argument("--per-voice", type=int, default=8)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--demo", action="store_true", help="write the bundled demo calls instead")
    args = ap.parse_args(argv)
    if args.demo:
        print("\n".join(map(str, make_demo_calls(args.data, args.out))))
        return 0
    print(generate(args.data, args.out, args.voices == "held-out", args.per_voice))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
