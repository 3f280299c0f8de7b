"""Training code on small inputs it makes itself (fast), and the whole pipeline on tiny sizes (slow)."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("audiomentations")

from training.augment import WINDOW, Augmenter, Banks, telephone  # noqa: E402
from training.synth import is_broken, trim  # noqa: E402
from training.voices import HELD_OUT, VOICES  # noqa: E402
from triage.model import KeywordModel  # noqa: E402

# The only voices the project leads allow (../shared/DATA.md); anything else may be reserved.
ALLOWED_MBROLA = {"fr1", "fr2", "fr3", "fr5", "fr6", "ca1", "us1", "us2", "us3", "en1"}
ALLOWED_KOKORO = {"jf_alpha", "jf_nezumi", "jf_tebukuro", "jm_kumo"}


def _banks(rng):
    speech = [(rng.standard_normal(int(rng.uniform(0.3, 3) * 16000)) * 0.1).astype(np.float32) for _ in range(6)]
    music = [np.sin(np.arange(32000) * 0.05).astype(np.float32) * 0.2]
    return Banks(speech=speech, music=music, rirs=[np.r_[1.0, np.zeros(200), 0.3].astype(np.float32)])


def test_only_allowed_voices_are_in_the_catalogue():
    assert {v.spec.removeprefix("mb-") for v in VOICES if v.engine == "mbrola"} <= ALLOWED_MBROLA
    assert {p for v in VOICES if v.engine == "kokoro" for p in v.spec.split("+")} <= ALLOWED_KOKORO
    assert HELD_OUT <= {v.id for v in VOICES}
    # whole voices are held out, of every engine
    assert {v.split(":")[0] for v in HELD_OUT} >= {"mbrola", "espeak", "kokoro"}


def test_augmented_windows_are_bounded_and_sized():
    rng = np.random.default_rng(0)
    aug = Augmenter(_banks(rng), rng)
    word = (np.sin(np.arange(9000) * 0.1) * 0.3).astype(np.float32)
    for _ in range(20):
        w = aug.channel(aug.place(word))
        assert w.shape == (WINDOW,) and np.all(np.isfinite(w)) and np.abs(w).max() <= 1.0
    # With silent "other speech" around it, what is not zero is what was kept of the word: at most 30 %
    # of it, stretched by at most 1/0.85 (TimeStretch).
    silent = Augmenter(Banks(speech=[np.zeros(20000, np.float32)], music=[], rirs=[]), rng)
    for _ in range(20):
        kept = np.count_nonzero(silent.place(word, visible=(0.2, 0.3)))
        assert 0 < kept <= 0.3 * len(word) / 0.85 + 1


def test_augmentation_depends_on_its_seed_alone():
    """audiomentations draws from the global generators; whatever else drew from them, an augmenter
    with the same seed makes the same audio (the held-out material is rebuilt on every calibration)."""
    import random

    word = (np.sin(np.arange(9000) * 0.1) * 0.3).astype(np.float32)

    def made(global_seed: int) -> np.ndarray:
        random.seed(global_seed)
        np.random.seed(global_seed)
        rng = np.random.default_rng(7)
        aug = Augmenter(_banks(np.random.default_rng(0)), rng)
        return np.concatenate([np.concatenate([aug.background(4000), aug.channel(aug.place(word))])
                               for _ in range(12)])

    assert np.array_equal(made(1), made(2))


def test_telephone_channel_removes_what_a_phone_line_cannot_carry():
    t = np.arange(16000) / 16000
    for f, kept in ((1000, True), (6000, False), (100, False)):
        y = telephone((0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32), "mulaw")
        rms = np.sqrt(np.mean(y[2000:-2000] ** 2))
        assert (rms > 0.2) == kept, (f, rms)


def test_trim_and_energy_check():
    x = np.r_[np.zeros(8000), np.sin(np.arange(8000) * 0.1) * 0.5, np.zeros(8000)].astype(np.float32)
    y = trim(x)
    assert 8000 <= len(y) <= 8000 + 2 * 480 + 160
    assert is_broken(np.zeros(16000, np.float32), "keyword") and is_broken(y[:1000], "keyword")
    assert is_broken(y, "keyword") is None


def test_synthesis_assembles_the_kokoro_model_before_its_workers_start(tmp_path, monkeypatch):
    """Two workers assembling it at once truncate each other's copy (seen on a new machine)."""
    from training import synth

    cache = tmp_path / "kokoro-cache"
    monkeypatch.setenv("KOKORO_JA_CACHE", str(cache))
    seen = []

    class Pool:
        def __init__(self, workers):
            seen.append(sorted(p.name for p in cache.glob("*")))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def imap_unordered(self, work, jobs):
            return iter(())

    monkeypatch.setattr(synth.mp, "get_context", lambda method: type("Context", (), {"Pool": Pool}))
    monkeypatch.setattr(synth, "collect_real", lambda data: {})
    synth.run(tmp_path, voices=[v for v in VOICES if v.engine == "kokoro"][:1])
    assert seen == [["kokoro-v1.0.int8.onnx"]]


def test_hard_negatives_are_the_windows_taken_for_a_keyword_and_none_of_none():
    from training.mining import hard_negatives
    from triage.keywords import CLASSES

    def predict(x):  # window i scores x[i, 0, 0] on its keyword columns, the rest on _unknown_
        p = np.zeros((len(x), len(CLASSES)), np.float32)
        p[:, 0], p[:, -1] = x[:, 0, 0], 1 - x[:, 0, 0]
        return p
    x = np.zeros((5, 2, 2), np.float16)
    x[:, 0, 0] = [0.1, 0.5, 0.19, 0.25, 0.9]
    assert hard_negatives(predict, x, batch=2).tolist() == [1, 3, 4]
    assert hard_negatives(predict, x, batch=2, rows=np.array([0, 2, 4])).tolist() == [4]  # indices into x
    assert hard_negatives(predict, x[:0]).tolist() == []


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs the training voices")
@pytest.mark.parametrize("variant", ["windowed", "streamable", "contexts-from-start"])
def test_whole_pipeline_on_tiny_sizes(tmp_path, variant):
    options = {"windowed": [], "streamable": ["--streamable"],
               "contexts-from-start": ["--extra-voices", "contexts,templates", "--extra-speech", "8",
                                       "--extra-from-start", "--mining-rounds", "1", "--extra-rounds", "1"]}[variant]
    r = subprocess.run([sys.executable, "-m", "training", "--per-keyword", "10", "--per-base-word", "10",
                        "--base-epochs", "1", "--head-epochs", "1", "--finetune-epochs", "1", "--ds-epochs", "1",
                        "--speech-train", "30", "--speech-passes", "1", "--mining-epochs", "1", *options,
                        "--models", str(tmp_path / "models"),
                        "--stages", str(tmp_path / "stages")], capture_output=True, text=True,
                       timeout=3600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "models" / "kws12.onnx").exists() and (tmp_path / "models" / "kws12.json").exists()
    model = KeywordModel(tmp_path / "models" / "kws12.onnx")
    assert (model.stepper is not None) == (variant == "streamable")
    if variant == "contexts-from-start":
        arch = next((tmp_path / "stages").glob("ds_cnn*"))
        assert (arch / "base.keras").exists() and not (arch / "kws.keras").exists()  # the base is shared
        assert {p.name for p in (arch / "with-contexts+templates8").glob("*.keras")} == {
            "kws.keras", "kws_fresh_mined1-v3.keras", "kws_fresh_mined2-contexts+templates8-v3.keras"}
        assert "8 utterances of each of the contexts, templates extra voices" in json.loads(
            (tmp_path / "models" / "kws12.json").read_text())["metrics"]["architecture"]
