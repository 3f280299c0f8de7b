"""The caller-phrasing measurement: phrasings outside every template, test voices only, honest labels."""

import json
import re
from pathlib import Path

import numpy as np

from training import corpus, phrasing, speech
from training.augment import Banks
from triage.audio import read_wav
from triage.keywords import KEYWORD_SERVICE, KEYWORDS

TRAINING = Path(__file__).resolve().parent.parent / "training"


def _last_words(text: str) -> tuple[str, ...]:
    return tuple(re.findall(r"[\w']+", text.lower())[-2:])


def _template_contexts(kw: str) -> set[tuple[str, ...]]:
    """The last two words of everything `corpus.sentence_segments` can say right before `kw`: about what a
    window ending on the keyword still hears of its left."""
    article = corpus.ARTICLE[kw].rsplit(" ", 1)[0]
    leads = {*corpus.PREFIXES, *(f"{p}, {h}," for p in corpus.PREFIXES for h in corpus.HESITATIONS),
             *corpus.CONNECTORS, ", oui,"}
    return {_last_words(f"{lead} {article}") for lead in leads}


def test_no_caller_phrasing_frames_a_keyword_as_a_template_does():
    for kw, phrasings in phrasing.CALLER_PHRASINGS.items():
        assert len(phrasings) == 5
        for before, after in phrasings:
            assert _last_words(before) not in _template_contexts(kw), (kw, before)
            assert after not in corpus.SUFFIXES, (kw, after)


def test_training_never_reads_the_caller_phrasings():
    for path in TRAINING.glob("*.py"):
        if path.name != "phrasing.py":
            reads = re.search(r"CALLER_PHRASINGS|training\.phrasing|from training import[^\n]*\bphrasing\b",
                              path.read_text(encoding="utf-8"))
            assert not reads, path.name


def test_every_keyword_in_every_phrasing_by_a_test_voice_of_each_engine():
    for kind in phrasing.KINDS:
        jobs = phrasing.jobs(kind, seed=0)
        assert len(jobs) == len(KEYWORDS) * 5 * len(phrasing.ENGINES)
        said = [kw for _, _, segs in jobs for _, kw in segs if kw]
        assert {k: said.count(k) >= 15 for k in KEYWORDS} == {k: True for k in KEYWORDS}
        for _, sp, _ in jobs:
            if sp.engine == "mbrola":
                assert sp.spec.removeprefix("mb-") in speech.MBROLA["test"]
            elif sp.engine == "espeak":
                assert sp.spec.removeprefix("fr+") in speech.ESPEAK["test"]
            else:
                assert {p.split("*")[0] for p in sp.spec.split("+")} <= set(speech.KOKORO_STYLES["test"])
    callers = phrasing.jobs("callers", seed=0)
    first = callers[0][2]
    assert first == [("Mon père vient de faire un", None), ("malaise", "malaise"), ("dans la salle de bain.", None)]
    assert [j[1] for j in phrasing.jobs("callers", seed=0)] == [j[1] for j in callers]  # the same voices each run


def test_each_utterance_becomes_one_labelled_call(tmp_path):
    rate = 16000
    utts = [speech.Utterance(np.full(rate, 0.1, np.float32), "il y a une fuite de gaz", "mbrola:fr6",
                             [("gaz", 0.4, 0.7)]),
            speech.Utterance(np.full(2 * rate, 0.1, np.float32), "victime d'un vol", "espeak:fr+m7",
                             [("vol", 1.1, 1.3)])]
    banks = Banks(speech=[np.zeros(rate, np.float32)], music=[np.full(rate, 0.01, np.float32)],
                  rirs=[np.r_[1.0, 0.2].astype(np.float32)])
    phrasing.write_calls(utts, banks, tmp_path, seed=0)
    lines = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [line["file"] for line in lines] == ["call0000.wav", "call0001.wav"]
    for u, line in zip(utts, lines, strict=True):
        wav = read_wav(tmp_path / line["file"])
        assert wav.sample_rate == 8000
        (kw, s, e), = u.words
        (label,) = line["keywords"]
        lead = label["start"] - s
        assert 0.3 <= lead <= 1.0 and np.isclose(label["end"] - label["start"], e - s, atol=1e-3)
        # the sentence, then a second of pause, all of it in the call
        assert np.isclose(len(wav.samples) / 8000, lead + len(u.audio) / rate + 1.0, atol=0.01)
        assert line["services"] == [KEYWORD_SERVICE[kw]] and line["voices"] == [u.speaker]


def test_training_contexts_never_end_as_a_caller_phrasing():
    caller = {_last_words(before) for phrasings in phrasing.CALLER_PHRASINGS.values() for before, _ in phrasings}
    for kw, leads in corpus.KEYWORD_CONTEXTS.items():
        for lead in leads:
            assert _last_words(lead) not in caller, (kw, lead)


def test_training_endings_never_begin_as_a_caller_phrasing_continues():
    def first_words(text: str) -> tuple[str, ...]:
        return tuple(re.findall(r"[\w']+", text.lower())[:2])

    caller = {first_words(after) for phrasings in phrasing.CALLER_PHRASINGS.values() for _, after in phrasings}
    for ending in corpus.CONTEXT_ENDINGS:
        assert first_words(ending) not in caller, ending


def test_the_calls_are_remade_when_a_phrasing_changes(monkeypatch):
    before = phrasing.recipe(phrasing.jobs("callers", seed=0))
    assert phrasing.recipe(phrasing.jobs("callers", seed=0)) == before
    changed = dict(phrasing.CALLER_PHRASINGS, gaz=(("Ça sent le", "partout."), *phrasing.CALLER_PHRASINGS["gaz"][1:]))
    monkeypatch.setattr(phrasing, "CALLER_PHRASINGS", changed)
    assert phrasing.recipe(phrasing.jobs("callers", seed=0)) != before
    assert phrasing.recipe(phrasing.jobs("callers", seed=1)) != phrasing.recipe(phrasing.jobs("callers", seed=0))
