"""Other languages' MBROLA voices speaking French (training/diphones.py): renaming and the voice list."""

import re
from pathlib import Path

import numpy as np

from training import diphones, speech

ROOT = Path(__file__).resolve().parent.parent
RESERVED_MBROLA = {"fr4", "fr7", "ca2"}  # ../shared/DATA.md: the independent evaluation's


def test_renaming_keeps_durations_and_pitch_and_drops_comments():
    lines = ["; comment", "_\t50", "y\t80\t 0 94 50 110", "a~\t120\t 0 100", "", "R\t60"]
    rows = diphones.renamed(lines, {"y": "y:", "a~": "a", "R": "r"})
    assert rows == ["_ 50", "y: 80 0 94 50 110", "a 120 0 100", "r 60"]
    # one row per French phoneme: the keyword times counted on fr1's phonemes hold for the audio
    assert sum(float(r.split()[1]) for r in rows) == 50 + 80 + 120 + 60


def test_every_french_phoneme_has_itself_as_first_stand_in():
    assert all(candidates[0] == p for p, candidates in diphones.STAND_INS.items())


def test_voices_are_installed_by_the_project_and_none_is_reserved_or_french():
    script = (ROOT / "scripts" / "install-system.sh").read_text()
    packages = set(re.findall(r"mbrola-(\w+)", script))
    assert set(diphones.VOICES) <= packages
    assert not set(diphones.VOICES) & RESERVED_MBROLA and not packages & RESERVED_MBROLA
    assert not any(v.startswith(("fr", "ca")) for v in diphones.VOICES)
    assert diphones.FEMALE <= set(diphones.VOICES)


def test_diphone_speakers_only_in_training_extra_rounds():
    plans = {split: speech.plan(split, 200, 0, 0.0, extra="diphones" if split == "train" else "")
             for split in speech.SPLITS}
    foreign = [sp for _, sp, _ in plans["train"] if sp.foreign]
    assert 0.6 < len(foreign) / 200 < 0.95 and all(sp.engine == "mbrola" and sp.spec == "mb-fr1" for sp in foreign)
    assert {sp.foreign[0] for sp in foreign} <= set(diphones.VOICES)
    lo, hi = diphones.PITCH_RATIO["female"]
    assert all(lo <= sp.foreign[1] <= hi for sp in foreign if sp.foreign[0] in diphones.FEMALE)
    assert not any(sp.foreign for split in ("dev", "test") for _, sp, _ in plans[split])
    assert not any(sp.foreign for _, sp, _ in speech.plan("train", 200, 0, 0.0))


def test_pitch_ratio_is_drawn_from_the_voice_gender():
    rng = np.random.default_rng(0)
    assert all(1.6 <= diphones.pitch_ratio("de3", rng) <= 2.1 for _ in range(50))
    assert all(0.85 <= diphones.pitch_ratio("de4", rng) <= 1.25 for _ in range(50))
