"""Running-speech synthesis: speaker splits, sentence plans, and keyword times from a real engine."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from training import corpus, speech
from triage.keywords import KEYWORDS


def test_style_families_never_straddle_splits():
    families = {split: {name[0] for name in names} for split, names in speech.KOKORO_STYLES.items()}
    assert not families["train"] & families["dev"]
    assert not families["train"] & families["test"]
    assert not families["dev"] & families["test"]
    for table in (speech.MBROLA, speech.ESPEAK):
        assert not set(table["train"]) & (set(table["dev"]) | set(table["test"]))
        assert not set(table["dev"]) & set(table["test"])


@pytest.mark.parametrize("split", ["dev", "test"])
def test_held_out_speakers_use_only_their_split(split):
    rng = np.random.default_rng(0)
    allowed = set(speech.KOKORO_STYLES[split])
    for _ in range(50):
        sp = speech.draw_speaker(rng, split, "kokoro")
        assert {p.split("*")[0] for p in sp.spec.split("+")} <= allowed
        assert speech.draw_speaker(rng, split, "mbrola").spec.removeprefix("mb-") in speech.MBROLA[split]
        assert sp.gender_shift is None


def test_plan_covers_every_keyword_and_keyword_free_sentences():
    jobs = speech.plan("train", 600, seed=0, kokoro_share=0.2)
    said = [kw for _, _, segs in jobs for _, kw in segs if kw]
    assert set(said) == set(KEYWORDS)
    counts = np.array([said.count(k) for k in KEYWORDS])
    assert counts.min() > 0.7 * counts.mean()
    free = [segs for _, _, segs in jobs if not any(kw for _, kw in segs)]
    assert 0.08 < len(free) / len(jobs) < 0.25
    assert speech.plan("train", 600, seed=0, kokoro_share=0.2)[5][2] == jobs[5][2]  # reproducible


def test_extra_voices_keep_to_their_kind():
    standard = speech.plan("train", 400, seed=1, kokoro_share=0.3)
    natural = speech.plan("train", 400, seed=1, kokoro_share=0.3, extra="natural")
    wide = speech.plan("train", 400, seed=1, kokoro_share=0.3, extra="wide")
    assert {sp.engine for _, sp, _ in natural} == {"kokoro", "mbrola"}
    leads = {sp.spec.split("*")[0] for _, sp, _ in natural if sp.engine == "kokoro"}
    assert leads <= set(speech._FRENCH_LEAD)  # the French-sounding styles lead, as in training
    shifted = [sp.gender_shift is not None for _, sp, _ in natural if sp.engine == "mbrola"]
    assert 0.6 < np.mean(shifted) < 0.8
    assert {sp.engine for _, sp, _ in wide} == {"kokoro", "mbrola", "espeak"}
    assert np.mean([sp.gender_shift is not None for _, sp, _ in standard if sp.engine == "mbrola"]) < 0.45


def test_keyword_free_sentences_name_no_keyword():
    rng = np.random.default_rng(1)
    for _ in range(200):
        text = " ".join(t for t, _ in corpus.sentence_segments(rng, ())).lower()
        words = set(text.replace(",", " ").replace(".", " ").split())
        assert not words & set(KEYWORDS), text


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_espeak_keyword_times_hold_the_keyword(tmp_path):
    sp = speech.Speaker("espeak:fr", "espeak", "fr", 1.0, 50)
    segs = [("Allô, il y a un", None), ("incendie", "incendie"), ("au deuxième étage.", None)]
    u = speech.speak(Path(tmp_path), sp, segs)
    (kw, start, end), = u.words
    assert kw == "incendie"
    duration = len(u.audio) / 16000
    # The keyword sits inside the sentence, after "Allô, il y a un" and before "au deuxième étage".
    assert 0.4 < start < end < duration - 0.4
    assert 0.25 < end - start < 1.0
    seg = u.audio[int(start * 16000): int(end * 16000)]
    assert np.sqrt(np.mean(seg ** 2)) > 0.02


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_a_build_comes_out_the_same_however_its_utterances_fall_to_workers(tmp_path, monkeypatch):
    """libespeak-ng carries state from one utterance to the next in a process: the material is only
    reproducible if no utterance's audio depends on which worker said what before it."""
    rng = np.random.default_rng(3)
    jobs = [(i, speech.Speaker(f"espeak:fr+{v}", "espeak", f"fr+{v}", 1.0, 50), corpus.sentence_segments(rng, (kw,)))
            for i, (v, kw) in enumerate(zip(["m1", "f2", "m3", "f4"] * 5, KEYWORDS * 2, strict=False))]
    monkeypatch.setattr(speech, "plan", lambda *a, **k: list(jobs))
    built = []
    for workers in (1, 2):
        data = tmp_path / f"w{workers}"
        built.append(speech.load(speech.build(data, "dev", len(jobs), kokoro_share=0, workers=workers)))
    one, two = built
    assert len(one) == len(two) == len(jobs)
    for a, b in zip(one, two, strict=True):
        assert a.text == b.text and a.words == b.words
        assert np.array_equal(a.audio, b.audio), a.text


def test_real_speech_that_says_a_keyword_in_any_form_is_kept_out_of_the_keyword_free_material():
    for said in ("Une bonbonne de gaz.", "Deux BRÛLURES", "des hémorragies", "une maison incendiée",
                 "la violence", "Un vol de nuit", "Effondrée !", "Ils volent tout"):
        assert corpus.says_a_keyword(said), said
    for said in ("Un cerf-volant.", "Un gazania rouge.", "Une des géantes gazeuses.", "Une voiture Volkswagen.",
                 "Un ballon de volleyball.", "Un problème électronique.", ""):
        assert not corpus.says_a_keyword(said), said


def test_the_cached_plans_draw_as_they_did():
    """The training speech on disk was synthesized from these plans (names key the cache, not the draws):
    a change to the random draws would mix old utterances with new labels. Digests taken 2026-11-24."""
    import hashlib

    def digest(jobs):
        # Speaker.foreign came later (diphones.py); absent, it is left out so the old digests still hold
        text = repr([(sp, segs) for _, sp, segs in jobs]).replace(", foreign=None)", ")")
        return hashlib.sha256(text.encode()).hexdigest()[:16]
    assert digest(speech.plan("train", 8000, 0, 0.15)) == "91ed77c8f62b46ab"
    assert digest(speech.plan("train", 2000, 1, 0.3, extra="wide")) == "3e3d9e47ddb9174e"


def test_templates_extra_speech_is_the_training_plan_drawn_again():
    assert speech.plan("train", 200, seed=1, kokoro_share=0.15, extra="templates") == speech.plan(
        "train", 200, seed=1, kokoro_share=0.15)
    assert speech.plan("train", 200, seed=1, kokoro_share=0.15) != speech.plan("train", 200, seed=0, kokoro_share=0.15)


def test_contexts_speech_keeps_training_voices_and_says_keywords_after_their_contexts():
    jobs = speech.plan("train", 300, seed=1, kokoro_share=0.15, extra="contexts")
    said = [(segs[i - 1][0], kw) for _, _, segs in jobs for i, (_, kw) in enumerate(segs) if kw]
    assert {kw for _, kw in said} == set(KEYWORDS)
    for before, kw in said:
        assert any(before.lower().endswith(c.lower()) for c in corpus.KEYWORD_CONTEXTS[kw]), (before, kw)
    free = [segs[0][0] for _, _, segs in jobs if not any(kw for _, kw in segs)]
    assert free and all(any(f.endswith(w) for ws in corpus.NEAR_MISSES_OF.values() for w in ws) for f in free)
    for _, sp, _ in jobs:
        if sp.engine == "kokoro":
            assert {p.split("*")[0] for p in sp.spec.split("+")} <= set(speech.KOKORO_STYLES["train"])
        elif sp.engine == "mbrola":
            assert sp.id.removeprefix("mbrola:") in speech.MBROLA["train"]
        else:
            assert sp.id.removeprefix("espeak:fr").removeprefix("+") in speech.ESPEAK["train"]
    # the standard plan keeps the templates: each keyword right after its one article
    plain = speech.plan("train", 300, seed=1, kokoro_share=0.15)
    for _, _, segs in plain:
        for i, (_, kw) in enumerate(segs):
            if kw:
                assert segs[i - 1][0].endswith(" " + corpus.ARTICLE[kw].rsplit(" ", 1)[0])


def test_a_cached_chunk_is_said_again_when_the_plan_says_something_else(tmp_path, monkeypatch):
    """Cache names carry the plan's parameters, not its sentences: a chunk made before a corpus change must not
    pair its old audio with the new plan."""
    def jobs(seed):
        rng = np.random.default_rng(seed)
        return [(i, speech.Speaker(f"espeak:fr+m{i % 7 + 1}", "espeak", f"fr+m{i % 7 + 1}", 1.0, 50),
                 corpus.sentence_segments(rng, (kw,))) for i, kw in enumerate(KEYWORDS[:10])]
    first, changed = jobs(5), jobs(6)
    monkeypatch.setattr(speech, "plan", lambda *a, **k: list(first))
    [path] = speech.build(tmp_path, "dev", 10, kokoro_share=0, workers=1)
    said = speech.load([path])
    assert [u.text for u in said] == [" ".join(t for t, _ in segs) for _, _, segs in first]

    speech.save(path, said[:2] + said[3:])  # an utterance a voice could not say is left out of its chunk
    assert speech.holds_plan(path, first)
    assert not speech.holds_plan(path, [first[1], first[0], *first[2:]])  # the same sentences in another order
    made = path.stat().st_mtime_ns
    speech.build(tmp_path, "dev", 10, kokoro_share=0, workers=1)
    assert path.stat().st_mtime_ns == made  # kept: it says what the plan says

    monkeypatch.setattr(speech, "plan", lambda *a, **k: list(changed))
    assert not speech.holds_plan(path, changed)
    speech.build(tmp_path, "dev", 10, kokoro_share=0, workers=1)
    assert [u.text for u in speech.load([path])] == [" ".join(t for t, _ in segs) for _, _, segs in changed]
