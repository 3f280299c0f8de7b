"""MBROLA voices of other languages speaking French: more real speakers for training.

Only four French MBROLA voices may be trained on (fr1, fr2, fr3, ca1), and MBROLA — diphones cut from
real recordings — is where unheard voices are missed most (training/README.md). Debian ships dozens of
MBROLA voices of other languages, each another real speaker. Here one of them says French: espeak-ng
gives fr1's French phonemes with their durations and pitch (`--pho`), each phoneme is renamed to the
first of its stand-ins (`STAND_INS`) that the voice can say, and the `mbrola` program speaks the renamed
list. Durations are untouched, so the keyword times that `speech.say_mbrola` counts on the French
phonemes hold for the audio. The result is French with that speaker's accent, as many callers speak it.
"""

from __future__ import annotations

import functools
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from training.voices import VoiceUnavailable
from triage.audio import read_wav

MBROLA_DIR = Path("/usr/share/mbrola")
# Training voices only (Debian packages mbrola-<name>); none of them is French, so none is reserved.
# Languages whose vowels can stand in for French y, ø and œ (German, Dutch, Swedish, Hungarian, Afrikaans,
# Estonian). Whisper-base heard the keyword in 12 of 55 sentences of these voices against 6 of 58 for
# Spanish, Italian, Portuguese, Polish, Czech, Lithuanian and Romanian ones, whose u and e stand in
# for y and ø (« brulure », « électrokusion »), and 14 of 31 for the French training voices: those
# others are left out.
VOICES = ("af1", "de1", "de2", "de3", "de4", "de5", "de6", "de7", "de8", "ee1", "hu1", "nl2", "nl3", "sw1", "sw2")
# The female voices get a pitch raised from fr1's (a man's) by this range of ratios; the others keep
# about fr1's. From each database's own description (`mbrola -i`) or its Debian package's.
FEMALE = frozenset({"de1", "de3", "de5", "de7", "hu1", "nl3", "sw2"})
PITCH_RATIO = {"female": (1.6, 2.1), "male": (0.85, 1.25)}
# fr1's phonemes (SAMPA) and what may stand in for each, nearest first. Nasal vowels fall back to the
# oral vowel, as in southern French accents; the French R to whatever R the language has.
STAND_INS = {
    "a": ("a", "a:", "A", "6"), "e": ("e", "e:", "E", "i"), "E": ("E", "E:", "e", "e:"), "i": ("i", "i:", "I"),
    "o": ("o", "o:", "O"), "O": ("O", "o", "o:"), "u": ("u", "u:", "U"),
    "y": ("y", "y:", "Y", "u", "u:", "U", "i", "i:"), "2": ("2", "2:", "9", "@", "e", "o"),
    "9": ("9", "2", "2:", "@", "E", "e"), "@": ("@", "9", "6", "e", "E", "a"), "a~": ("a~", "A~", "a", "a:"),
    "e~": ("e~", "E~", "E", "e"), "o~": ("o~", "O~", "o", "O", "o:"), "9~": ("9~", "e~", "E~", "E", "e"),
    "j": ("j", "i"), "w": ("w", "u", "u:", "U", "v"), "H": ("H", "y", "j", "w", "u"),
    "R": ("R", "r", "x", "X", "h", "4"), "J": ("J", "n"), "N": ("N", "n"), "S": ("S", "s", "tS"),
    "Z": ("Z", "S", "z", "s"), "z": ("z", "s"), "v": ("v", "f", "w"), "g": ("g", "k"), "b": ("b", "p"),
    "d": ("d", "t"),
}
# More unknown diphones than this share of an utterance's phonemes: the voice cannot say it.
MAX_UNKNOWN = 0.08


def available(name: str) -> bool:
    return (MBROLA_DIR / name / name).exists()


def _says(name: str, *phonemes: str) -> bool:
    with tempfile.TemporaryDirectory() as d:
        pho, wav = Path(d) / "p.pho", Path(d) / "o.wav"
        pho.write_text("_ 50\n" + "".join(f"{p} 100 50 110\n" for p in phonemes) + "_ 50\n")
        r = subprocess.run(["mbrola", str(MBROLA_DIR / name / name), str(pho), str(wav)], capture_output=True,
                           timeout=30)
        return r.returncode == 0


@functools.cache
def renaming(name: str) -> dict[str, str]:
    """fr1's phoneme → the first stand-in the voice can say between two open vowels (some languages
    never start a word with r or n, so a pause before it proves nothing)."""
    if not available(name):
        raise VoiceUnavailable(f"MBROLA voice {name}: not installed (scripts/install-system.sh train)")
    vowel = next((v for v in STAND_INS["a"] if _says(name, v)), None)
    if vowel is None:
        raise VoiceUnavailable(f"MBROLA voice {name}: no open vowel among {STAND_INS['a']}")
    out = {}
    for p, candidates in STAND_INS.items():
        said = next((c for c in candidates if _says(name, vowel, c, vowel)), None)
        if said is None:
            raise VoiceUnavailable(f"MBROLA voice {name}: none of {candidates} for French {p!r}")
        out[p] = said
    return out


def pitch_ratio(name: str, rng: np.random.Generator) -> float:
    lo, hi = PITCH_RATIO["female" if name in FEMALE else "male"]
    return float(rng.uniform(lo, hi))


def renamed(pho_lines: list[str], names: dict[str, str]) -> list[str]:
    """`--pho` lines with each phoneme renamed by `names` (others kept), durations and pitch untouched."""
    rows = []
    for line in pho_lines:
        parts = line.split()
        if parts and not line.startswith(";"):
            rows.append(" ".join([names.get(parts[0], parts[0]), *parts[1:]]))
    return rows


def speak(name: str, pho_lines: list[str], pitch: float) -> tuple[np.ndarray, int]:
    """Audio (float32, rate) of fr1's `--pho` lines said by voice `name`, pitch scaled by `pitch`."""
    rows = renamed(pho_lines, renaming(name))
    with tempfile.TemporaryDirectory() as d:
        pho, wav = Path(d) / "in.pho", Path(d) / "o.wav"
        pho.write_text("\n".join(rows) + "\n")
        r = subprocess.run(["mbrola", "-e", "-f", f"{pitch:.3f}", str(MBROLA_DIR / name / name), str(pho), str(wav)],
                           capture_output=True, timeout=60)
        unknown = r.stderr.decode(errors="replace").count("unknown")
        if r.returncode != 0 or not wav.exists() or wav.stat().st_size <= 44:
            raise VoiceUnavailable(f"mbrola {name}: {r.stderr.decode(errors='replace')[:200]}")
        if unknown > MAX_UNKNOWN * max(1, len(rows)):
            raise VoiceUnavailable(f"mbrola {name}: {unknown} unknown diphones in {len(rows)} phonemes")
        w = read_wav(wav)
        return w.samples, w.sample_rate
