"""`triage call --say` as a new user tries it: one natural sentence per keyword, spoken by espeak-ng's
default French voice (what `--say` uses when MBROLA is not installed), through the live core.

    python bench/say.py [--voice fr] [--model models/kws12.onnx]
    → one JSON object: per sentence the services routed, and the total
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from triage.audio import TARGET_RATE, resample  # noqa: E402
from triage.client import synthesize  # noqa: E402
from triage.keywords import KEYWORD_SERVICE  # noqa: E402
from triage.model import KeywordModel  # noqa: E402
from triage.replay import replay_samples  # noqa: E402

SENTENCES = {
    "malaise": "Allô, mon père vient de faire un malaise dans la cuisine, venez vite.",
    "hémorragie": "Il saigne beaucoup, je crois que c'est une hémorragie, dépêchez-vous.",
    "brûlure": "Ma fille s'est fait une grave brûlure avec l'eau bouillante.",
    "intoxication": "Toute la famille a mal à la tête, c'est peut-être une intoxication.",
    "violences": "J'entends des violences chez les voisins, ils crient très fort.",
    "agression": "Je viens d'être témoin d'une agression devant la gare.",
    "vol": "Allô, je veux signaler un vol, on a pris mon sac dans le métro.",
    "cambriolage": "Je rentre chez moi et il y a eu un cambriolage, la porte est forcée.",
    "incendie": "Allô, il y a un incendie dans mon immeuble, venez vite.",
    "gaz": "Ça sent très fort le gaz dans la cage d'escalier.",
    "effondrement": "Il y a eu un effondrement du plafond dans l'appartement du dessus.",
    "électrocution": "Mon collègue a eu une électrocution en touchant le câble.",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--voice", default="fr", help="espeak-ng voice (default: its default French voice)")
    ap.add_argument("--model", type=Path, default=None, help="a keyword model other than the shipped one")
    args = ap.parse_args()
    model = KeywordModel(args.model) if args.model else KeywordModel()
    rows, routed = [], 0
    for kw, text in SENTENCES.items():
        samples, rate = synthesize(text, voice=args.voice)
        r = replay_samples(model, resample(samples, rate, TARGET_RATE), kw)
        ok = r.services == [KEYWORD_SERVICE[kw]]
        routed += ok
        rows.append({"keyword": kw, "services": r.services, "detections": [d.keyword for d in r.detections],
                     "routed_right": ok})
    print(json.dumps({"voice": args.voice, "routed_right": routed, "sentences": len(SENTENCES), "rows": rows},
                     ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
