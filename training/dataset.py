"""Stage 3: labelled log-mel windows for training (training voices) and evaluation (held-out voices).

Evaluation conditions (each on voices never used in training, with noise and prompts held out too):
  clean  – 16 kHz, no noise, no room
  phone  – telephone μ-law 8 kHz + babble at 10 dB SNR
  room   – room + music at 5 dB SNR, A-law 8 kHz
"""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import signal
from tqdm import tqdm

from training import synth
from training.augment import WINDOW, Augmenter, Banks, _rms, make_rirs, telephone
from training.corpus import BASE_WORDS, KEYWORD_FORMS, NEAR_MISSES
from training.voices import voices
from triage.features import FeatureParams, LogMel
from triage.keywords import CLASSES, KEYWORDS, SILENCE, UNKNOWN

CONDITIONS = ("clean", "phone", "room")
# Bump when what goes into the windows changes: cached datasets and trained models are keyed by it.
VERSION = 3


def speech_cache_name(split: str, count: int, passes: int) -> str:
    """The file of a running-speech window set in the stages cache: keyed by VERSION too, since the
    windows' labels follow the same rules (triage/windowing.py)."""
    return f"speech_{split}_{count}x{passes}_v{VERSION}.npz"


@dataclass
class Pools:
    """Clips by label, each with the voice that said it."""
    words: dict[str, list[tuple[np.ndarray, str]]]  # label → [(clip, voice id)]
    unknown_words: list[tuple[np.ndarray, str, bool]]  # (clip, voice, is near-miss)
    banks: Banks


def _split(items: list, held_out: bool, seed: int = 3, kept: float = 0.75) -> list:
    """Deterministic split of real recordings (`kept` of them, or the rest if `held_out`) so evaluation
    noise and babble are unseen."""
    order = np.random.default_rng(seed).permutation(len(items))
    cut = int(len(items) * kept)
    idx = order[cut:] if held_out else order[:cut]
    return [items[i] for i in sorted(idx)]


def load_pools(data: Path, lang: str, held_out: bool) -> Pools:
    words: dict[str, list] = {}
    unknown, speech = [], []
    for v in voices(lang, held_out=held_out):
        c = synth.load_voice(data, v)
        for clip, text, kind in zip(c["audio"], c["text"], c["kind"], strict=True):
            if kind in ("keyword", "base"):
                words.setdefault(str(text), []).append((clip, v.id))
            elif kind == "unknown":
                if str(text) in KEYWORD_FORMS:
                    continue
                unknown.append((clip, v.id, str(text) in NEAR_MISSES))
                speech.append(clip)
            else:
                speech.append(clip)
    prompts = _split(synth.load_real(data, "prompts_fr"), held_out)
    music = _split(synth.load_real(data, "noise"), held_out)
    rirs = make_rirs(data / "rirs.npz")
    rirs = rirs[: 36] if not held_out else rirs[36:]
    return Pools(words, unknown, Banks(speech=speech + prompts, music=music, rirs=rirs))


# Worker state, set once per process (fork shares the clip pools without copying them).
_STATE: dict = {}


def _init(pools: Pools, params: FeatureParams, seed: int):
    _STATE.update(pools=pools, extractor=LogMel(params), seed=seed)


def _engine_balanced(rng: np.random.Generator, items: list[tuple]) -> tuple:
    """Pick a clip so that each engine (mbrola, espeak, kokoro, …) is equally likely."""
    engines = sorted({it[1].split(":")[0] for it in items})
    e = engines[rng.integers(len(engines))]
    sub = [it for it in items if it[1].split(":")[0] == e]
    return sub[rng.integers(len(sub))]


def _train_example(task: tuple[int, str]) -> tuple[np.ndarray, str]:
    i, label = task
    pools: Pools = _STATE["pools"]
    rng = np.random.default_rng((_STATE["seed"], i))
    aug = Augmenter(pools.banks, rng)
    if label == SILENCE:
        w = aug.silence_window()
        if rng.random() < 0.5:
            w = telephone(w, "mulaw")
        return _STATE["extractor"].frames(w), label
    if label == UNKNOWN:
        r = rng.random()
        if r < 0.55:  # words, near-misses (volet, gazon, brûler…) as often as all the others
            near = rng.random() < 0.5
            words = [u for u in pools.unknown_words if u[2] == near] or pools.unknown_words
            w = aug.place(_engine_balanced(rng, words)[0])
        elif r < 0.85:
            w = aug.speech_window()
        else:  # a keyword mostly outside the window is not (yet) that keyword
            kw = KEYWORDS[rng.integers(len(KEYWORDS))]
            w = aug.place(_engine_balanced(rng, pools.words[kw])[0], visible=(0.1, 0.4))
    else:
        w = aug.place(_engine_balanced(rng, pools.words[label])[0], visible=(0.85, 1.0)
                      if rng.random() < 0.25 else (1.0, 1.0))
    return _STATE["extractor"].frames(aug.channel(w)), label


def _eval_example(task: tuple[int, str, np.ndarray, str]) -> np.ndarray:
    i, condition, clip, _ = task
    pools: Pools = _STATE["pools"]
    rng = np.random.default_rng((_STATE["seed"], i))
    aug = Augmenter(pools.banks, rng)
    w = np.zeros(WINDOW, np.float32)
    if clip is not None:
        clip = clip[:WINDOW]
        start = rng.integers(0, WINDOW - len(clip) + 1)
        w[start: start + len(clip)] = clip
    level = _rms(w) if clip is not None else 0.03
    if condition == "phone":
        b = aug.babble(WINDOW)
        w = telephone(w + b / _rms(b) * level * 10 ** (-10 / 20), "mulaw")
    elif condition == "room":
        h = pools.banks.rirs[rng.integers(len(pools.banks.rirs))]
        w = signal.fftconvolve(w, h)[:WINDOW].astype(np.float32)
        w *= level / max(_rms(w), 1e-9) if clip is not None else 1
        m = aug._loop(pools.banks.music[rng.integers(len(pools.banks.music))], WINDOW)
        w = telephone(w + m / _rms(m) * level * 10 ** (-5 / 20), "alaw")
    w = w / max(1.0, float(np.abs(w).max()))
    return _STATE["extractor"].frames(w)


def _run(fn, tasks, pools, params, seed, workers, desc):
    with mp.get_context("fork").Pool(workers, initializer=_init, initargs=(pools, params, seed)) as pool:
        return list(tqdm(pool.imap(fn, tasks, chunksize=64), total=len(tasks), desc=desc, unit="window"))


def build_train(data: Path, params: FeatureParams, per_keyword: int, seed: int = 0,
                workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Augmented French training windows: (X (N, frames, mels) float16, y class indices)."""
    pools = load_pools(data, "fr", held_out=False)
    labels = [k for k in KEYWORDS for _ in range(per_keyword)]
    labels += [UNKNOWN] * (per_keyword * 5) + [SILENCE] * (per_keyword * 3)
    out = _run(_train_example, list(enumerate(labels)), pools, params, seed, workers, "augmenting train windows")
    x = np.stack([f for f, _ in out]).astype(np.float16)
    y = np.array([CLASSES.index(lbl) for _, lbl in out], dtype=np.int64)
    return x, y


def build_base(data: Path, params: FeatureParams, per_word: int, held_out: bool, seed: int = 1,
               workers: int = 2) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """English 8-word windows for the base model (training voices, or held-out voices for its score)."""
    pools = load_pools(data, "en", held_out=held_out)
    fr = load_pools(data, "fr", held_out=held_out)
    pools.banks = fr.banks  # babble and noise come from the French side
    pools.unknown_words = fr.unknown_words
    labels = [w for w in BASE_WORDS for _ in range(per_word)]
    out = _run(_train_example, list(enumerate(labels)), pools, params, seed + (7 if held_out else 0), workers,
               "augmenting base windows")
    x = np.stack([f for f, _ in out]).astype(np.float16)
    y = np.array([BASE_WORDS.index(lbl) for _, lbl in out], dtype=np.int64)
    return x, y, [lbl for _, lbl in out]


@dataclass
class EvalSet:
    x: dict[str, np.ndarray]  # condition → windows
    y: np.ndarray
    voice: list[str]
    near_miss: np.ndarray  # bool: an `_unknown_` window that is a near-miss word

    @classmethod
    def from_arrays(cls, z) -> EvalSet:
        """From the arrays the pipeline caches (`x_<condition>`, y, voice, near_miss)."""
        return cls(x={c: z[f"x_{c}"] for c in CONDITIONS}, y=z["y"], voice=list(z["voice"]), near_miss=z["near_miss"])


def build_eval(data: Path, params: FeatureParams, seed: int = 11, workers: int = 2,
               silence_count: int = 200) -> EvalSet:
    """Every held-out-voice keyword and unknown word clip once, in each condition."""
    pools = load_pools(data, "fr", held_out=True)
    items: list[tuple[np.ndarray | None, str, str, bool]] = []
    for kw in KEYWORDS:
        items += [(clip, kw, vid, False) for clip, vid in pools.words.get(kw, [])]
    items += [(clip, UNKNOWN, vid, nm) for clip, vid, nm in pools.unknown_words]
    items += [(None, SILENCE, "none", False)] * silence_count
    xs = {}
    for ci, cond in enumerate(CONDITIONS):
        tasks = [(i * 3 + ci, cond, clip, lbl) for i, (clip, lbl, _, _) in enumerate(items)]
        xs[cond] = np.stack(_run(_eval_example, tasks, pools, params, seed, workers, f"eval windows ({cond})"))
    return EvalSet(x={k: v.astype(np.float16) for k, v in xs.items()},
                   y=np.array([CLASSES.index(lbl) for _, lbl, _, _ in items]),
                   voice=[vid for _, _, vid, _ in items],
                   near_miss=np.array([nm for *_, nm in items]))
