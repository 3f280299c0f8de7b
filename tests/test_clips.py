"""`triage classify`'s speech-or-silence choice with the manifest's silence weight (training/clips.py)."""

import json

import numpy as np
import pytest
from onnx_models import loudness_model, tone

from training import clips, evaluate
from training.dataset import EvalSet
from triage.classify import classify, speech_or_silence
from triage.keywords import CLASSES, SILENCE, UNKNOWN
from triage.model import KeywordModel, ModelError

UNK, SIL, INCENDIE = CLASSES.index(UNKNOWN), CLASSES.index(SILENCE), CLASSES.index("incendie")


def _probs(*rows: dict) -> np.ndarray:
    p = np.zeros((len(rows), len(CLASSES)), np.float32)
    for i, row in enumerate(rows):
        for c, v in row.items():
            p[i, c] = v
    return p


def test_silence_counts_its_weight_against_unknown():
    p = _probs({UNK: 0.5, SIL: 0.3}, {UNK: 0.5, SIL: 0.05}, {UNK: 0.2, SIL: 0.6})
    assert list(speech_or_silence(p, CLASSES, 1.0)) == [UNK, UNK, SIL]
    assert list(speech_or_silence(p, CLASSES, 2.0)) == [SIL, UNK, SIL]


def test_the_weight_never_touches_a_keyword_and_weight_one_is_argmax():
    p = _probs({INCENDIE: 0.4, UNK: 0.35, SIL: 0.25}, {UNK: 0.5, SIL: 0.3}, {UNK: 0.1, SIL: 0.2, INCENDIE: 0.7})
    assert list(evaluate.labels(p.copy(), 1.0)) == list(p.argmax(axis=1))
    assert list(evaluate.labels(p.copy(), 100.0)) == [INCENDIE, SIL, INCENDIE]


def _with_clips(path, clips_section):
    mpath = path.with_suffix(".json")
    manifest = json.loads(mpath.read_text())
    manifest["clips"] = clips_section
    mpath.write_text(json.dumps(manifest))


def test_classify_labels_a_clip_with_the_manifests_weight(tmp_path, monkeypatch):
    path = loudness_model(tmp_path)
    assert KeywordModel(path).silence_weight == 1.0
    _with_clips(path, {"silence_weight": 3})
    model = KeywordModel(path)
    assert model.silence_weight == 3.0
    monkeypatch.setattr(model, "predict_full", lambda w: _probs(*[{UNK: 0.6, SIL: 0.3}] * len(w)))
    assert classify(model, tone(0.5)).label == SILENCE
    model.silence_weight = 1.0
    assert classify(model, tone(0.5)).label == UNKNOWN


@pytest.mark.parametrize("weight", [0, -1, "five", None, float("nan")])
def test_a_weight_that_is_no_positive_number_is_refused_at_load(tmp_path, weight):
    path = loudness_model(tmp_path)
    _with_clips(path, {"silence_weight": weight})
    with pytest.raises(ModelError, match="silence_weight"):
        KeywordModel(path)


def test_dev_and_test_clips_are_whole_voices_and_silence_by_turns():
    y = np.array([SIL, INCENDIE, SIL, UNK, SIL, SIL, INCENDIE])
    voice = ["none", "mbrola:fr5", "none", "mbrola:fr6", "none", "none", "espeak:fr+m7"]
    ev = EvalSet(x={}, y=y, voice=voice, near_miss=np.zeros(len(y), bool))
    s = clips.splits(ev)
    assert list(np.nonzero(s["dev"])[0]) == [0, 1, 4] and list(np.nonzero(s["test"])[0]) == [2, 3, 5, 6]


def test_the_chosen_weight_is_the_best_dev_accuracy_that_keeps_speech_from_silence():
    def row(w, acc, taken):
        return {"silence_weight": w, "mean_accuracy": acc, "speech_taken_for_silence": taken, "speech_clips": 5000}

    assert clips.choose([row(1, 0.90, 0), row(5, 0.92, 5), row(10, 0.93, 6)]) == 5
    assert clips.choose([row(1, 0.90, 0), row(2, 0.90, 0)]) == 1
