"""Keywords said the way callers say them, against the way the pipeline's sentence templates frame them.

Every running-speech sentence the pipeline makes (`corpus.sentence_segments`), for training, dev and test
alike, says a keyword right after one fixed article (« du gaz », « un vol ») behind one of 24 prefixes. The
held-out test voices thus say the keywords in the very frames the model trained on, and their recall says
nothing of a caller who says « ça sent le gaz » or « victime d'un vol ». This measures the gap: the test
voices (MBROLA fr6, espeak-ng m7/f5, Kokoro's held-out families) say every keyword in the caller phrasings
below, which no template of `corpus` contains (`tests/test_phrasing.py`) and which training never reads, and
in as many template sentences; each utterance goes alone through the test calls' line (held-out noise at
5–20 dB SNR, G.711) into the live core at the shipped operating point (`triage replay`'s code path).

    python -m training.phrasing                 # ~3 min here, most of it Kokoro
    triage replay data/calls/phrasing-callers/*.wav --labels data/calls/phrasing-callers/labels.jsonl

The calls stay under `data/calls/phrasing-{callers,templates}/` with their labels; the figures go into the
model's manifest (`metrics.phrasing`), and from there into the model card.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training import corpus, export, speech
from training.calibrate import call_banks, keyword_speakers
from training.calls import degrade
from triage.audio import TARGET_RATE, read_wav_16k, resample, write_wav
from triage.keywords import KEYWORD_SERVICE, KEYWORDS
from triage.model import KeywordModel, manifest_path_for
from triage.replay import load_labels, replay_samples, score

ROOT = Path(__file__).resolve().parent.parent

# (before, after) the keyword: what callers say around it, in contexts no corpus template has.
CALLER_PHRASINGS: dict[str, tuple[tuple[str, str], ...]] = {
    "malaise": (("Mon père vient de faire un", "dans la salle de bain."),
                ("Une dame vient d'avoir un", "dans le bus, elle est par terre."),
                ("Je crois qu'il fait un", "cardiaque, il ne parle plus."),
                ("Ma collègue a fait un gros", "au bureau."),
                ("Il ne se sent pas bien, sûrement un", ", je pense.")),
    "hémorragie": (("Il saigne beaucoup, une vraie", "à la tête."),
                   ("Ma femme fait une", "depuis une heure."),
                   ("Je pense qu'il fait une", "interne, il est tout pâle."),
                   ("Le blessé a une grosse", "à la jambe."),
                   ("Elle saigne, une", "du nez qui ne s'arrête pas.")),
    "brûlure": (("Mon fils s'est fait une", "avec l'eau bouillante."),
                ("Il a une grave", "sur tout le bras."),
                ("Le médecin a vu une", "au troisième degré."),
                ("Elle s'est renversé de l'huile, la", "est très profonde."),
                ("J'ai une", "à la main qui me fait très mal.")),
    "intoxication": (("Toute la famille souffre d'une", "au monoxyde de carbone."),
                     ("Le médecin parle d'une", "alimentaire, ils vomissent tous."),
                     ("Mon enfant a avalé des médicaments, une grave", ", que faire ?"),
                     ("On soupçonne une", "aux champignons."),
                     ("Les élèves ont fait une", "à la cantine.")),
    "violences": (("Ma voisine subit des", "de son mari."),
                  ("J'appelle à cause des", "conjugales chez les voisins."),
                  ("Ils se battent, des", "devant le bar."),
                  ("Je suis victime de", "à la maison."),
                  ("On entend des cris, des", "dans l'appartement d'à côté.")),
    "agression": (("Je viens d'assister à une", "dans la rue."),
                  ("Mon frère a été victime d'une", "à la sortie du métro."),
                  ("Il se passe une", "devant la pharmacie."),
                  ("Quelqu'un vient de subir une", "avec un couteau."),
                  ("On a été témoins d'une", "dans le parking.")),
    "vol": (("J'ai été victime d'un", "à l'arraché devant la gare."),
            ("C'est pour déclarer le", "de ma voiture cette nuit."),
            ("Il vient de se produire un", "dans la boutique en bas de chez moi."),
            ("Quelqu'un commet un", "dans la voiture d'à côté."),
            ("On a subi un", "avec effraction dans notre garage.")),
    "cambriolage": (("On vient de découvrir un", "dans notre maison."),
                    ("Des hommes font un", "chez le voisin en ce moment."),
                    ("C'est pour signaler le", "de notre appartement."),
                    ("Nous avons été victimes d'un", "cette nuit."),
                    ("Une tentative de", ", la porte est forcée.")),
    "incendie": (("Il y a le feu, un gros", "dans l'entrepôt."),
                 ("Je vois un", "de forêt près de la route."),
                 ("Nous avons un", "au sous-sol du bâtiment."),
                 ("Je signale un violent", "dans un garage."),
                 ("Le voisin a provoqué un", "avec son barbecue.")),
    "gaz": (("Ça sent très fort le", "dans la cage d'escalier."),
            ("Il y a une fuite de", "dans la cuisine de ma voisine."),
            ("Venez vite, une odeur de", "envahit tout l'immeuble."),
            ("Je crois que mon mari a laissé le", "ouvert."),
            ("Une bouteille de", "a pris feu sur le balcon.")),
    "effondrement": (("On a entendu un grand bruit, un", "de la toiture."),
                     ("Le balcon est tombé, un", "total."),
                     ("Des ouvriers sont bloqués après un", "sur le chantier."),
                     ("La route est coupée par un", "de terrain."),
                     ("Le mur du garage a subi un", "cette nuit.")),
    "électrocution": (("Mon mari a été victime d'une", "en réparant la prise."),
                      ("Il a pris une décharge, une", ", il ne bouge plus."),
                      ("Un ouvrier a subi une", "sur le chantier."),
                      ("Il a touché un fil, une", "grave."),
                      ("Mon fils a fait une", "avec le grille-pain.")),
}
assert set(CALLER_PHRASINGS) == set(KEYWORDS)
ENGINES = ("mbrola", "espeak", "kokoro")
METHOD = ("each keyword in 5 caller phrasings no sentence template has (training/phrasing.py) and in as many "
          "template sentences, each said by a test voice of MBROLA, espeak-ng and Kokoro, alone on the test calls' "
          "line, through the live core at the shipped operating point")
KINDS = ("callers", "templates")


def jobs(kind: str, seed: int) -> list[tuple[int, speech.Speaker, list]]:
    """Every keyword said in each of its caller phrasings (`callers`) or in as many template sentences
    (`templates`), each sentence by a test voice of each engine, drawn afresh (speed, pitch, Kokoro blend)."""
    rng = np.random.default_rng((seed, KINDS.index(kind)))
    out = []
    for kw in KEYWORDS:
        for before, after in CALLER_PHRASINGS[kw]:
            segs = ([(before, None), (kw, kw), (after, None)] if kind == "callers"
                    else corpus.sentence_segments(rng, (kw,)))
            out += [(len(out), speech.draw_speaker(rng, "test", engine), segs) for engine in ENGINES]
    return out


def recipe(planned: list[tuple[int, speech.Speaker, list]]) -> dict:
    """What a set of phrasing calls says and who says it, as stamped beside the calls."""
    text = json.dumps([(sp.id, sp.speed, sp.pitch, segs) for _, sp, segs in planned], ensure_ascii=False)
    return {"utterances": len(planned), "sha256": hashlib.sha256(text.encode()).hexdigest()}


def write_calls(utts: list[speech.Utterance], banks, out: Path, seed: int) -> Path:
    """One call per utterance: a short pause, the sentence, a second of pause, on the test calls' line."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for n, u in enumerate(utts):
        lead = float(rng.uniform(0.3, 1.0))
        x = np.concatenate([np.zeros(int(lead * TARGET_RATE), np.float32), u.audio,
                            np.zeros(TARGET_RATE, np.float32)])
        codec = "mulaw" if n % 2 else "alaw"
        name = f"call{n:04d}.wav"
        write_wav(out / name, resample(degrade(x, rng, banks, float(rng.uniform(5, 20)), codec), TARGET_RATE, 8000),
                  8000, codec)
        words = [{"keyword": kw, "start": round(lead + s, 3), "end": round(lead + e, 3), "speaker": u.speaker}
                 for kw, s, e in u.words]
        lines.append({"file": name, "voices": [u.speaker], "text": u.text,
                      "services": sorted({KEYWORD_SERVICE[w["keyword"]] for w in words}), "keywords": words})
    path = out / "labels.jsonl"
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    return path


def measure(model: KeywordModel, calls_dir: Path) -> dict:
    """Keyword recall and routes through the live core, by keyword and by engine."""
    labels = load_labels(calls_dir / "labels.jsonl")
    speakers = keyword_speakers(calls_dir / "labels.jsonl")
    results = [replay_samples(model, read_wav_16k(calls_dir / f), f)
               for f in tqdm(labels, desc=f"replay {calls_dir.name}", unit="call")]
    m = score(results, labels)
    by: dict[str, dict[str, list[int]]] = {"keyword": {}, "engine": {}}
    for row in m.per_call:
        lbl = labels[row["file"]]
        for group, key in (("keyword", lbl.keywords[0].keyword), ("engine", speakers[row["file"]][0].split(":")[0])):
            hit = by[group].setdefault(key, [0, 0])
            hit[0] += row["detected"]
            hit[1] += row["keywords"]
    summary = m.summary()
    return {"calls": summary["calls"], "keywords": summary["keywords"],
            "keyword_recall": round(summary["keyword_recall"], 4),
            "route_exact_match": round(summary["route_exact_match"], 4), "false_detections": summary["false_alarms"],
            "latency_p95_s": round(summary["latency_p95_s"], 3),
            **{f"recall_by_{g}": {k: f"{h}/{n}" for k, (h, n) in sorted(v.items())} for g, v in by.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.phrasing", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "kws12.onnx")
    ap.add_argument("--data", type=Path, default=ROOT / "data")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    model, banks = KeywordModel(args.model), call_banks(args.data, held_out=True)
    report = {}
    for kind in KINDS:
        calls_dir = args.data / "calls" / f"phrasing-{kind}"
        planned = jobs(kind, args.seed)
        # Remade whenever what they say changes, not only when missing: stale calls would pass for the new ones.
        stamp, said = calls_dir / "recipe.json", recipe(planned)
        if not (calls_dir / "labels.jsonl").exists() or not stamp.exists() or json.loads(stamp.read_text()) != said:
            with speech.speaking_pool(args.data, planned, args.workers) as pool:
                utts = speech.say_all(pool, args.data, planned, f"speech {kind}")
            shutil.rmtree(calls_dir, ignore_errors=True)  # no call of the old set left beside the new ones
            write_calls([u for u in utts if u.words], banks, calls_dir, seed=61 + KINDS.index(kind))
            stamp.write_text(json.dumps(said) + "\n")
        report[kind] = measure(model, calls_dir)
    mpath = manifest_path_for(args.model)
    manifest = json.loads(mpath.read_text(encoding="utf-8"))
    manifest["metrics"]["phrasing"] = {"method": METHOD, **report}
    export.save_manifest(mpath, manifest)
    print(json.dumps(report, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
