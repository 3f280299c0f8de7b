"""Write models/kws12.md from the manifest and the evaluation files: `python -m training.model_card`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from triage.keywords import CLASSES

ROOT = Path(__file__).resolve().parent.parent


PROVENANCE_LABELS = {"training_voices": "isolated-word training voices",
                     "held_out_voices": "isolated-word held-out voices"}


def smoothing_said(smoothing: int | dict[str, int]) -> str:
    """The smoothing as the card says it: one number of windows, or each keyword's."""
    if isinstance(smoothing, int):
        return f"{smoothing} windows"
    return "each keyword its own number of windows: " + ", ".join(f"{kw} {k}" for kw, k in smoothing.items())


def running_speech_voices() -> list[str]:
    """The running speech's voices by split, from the tables `training.speech` synthesizes with."""
    from training import speech

    def names(engine: dict, split: str) -> str:
        return ", ".join(n or "(default)" for n in engine[split])

    return ["Running speech (the calls above, and most training windows), voices by split; Kokoro blends are "
            "drawn at random per utterance (in training ff_siwis or im_nicola leads each blend), and 30 % of the "
            "training MBROLA and espeak-ng utterances go to a Praat \"Change gender\" pseudo-speaker:", "",
            "| split | MBROLA | espeak-ng | Kokoro styles |", "|---|---|---|---|",
            *[f"| {split} | {names(speech.MBROLA, split)} | {names(speech.ESPEAK, split)} | "
              f"{', '.join(speech.KOKORO_STYLES[split])} |" for split in speech.SPLITS]]


def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def ms(seconds: float) -> str:
    return f"{round(seconds * 1000)} ms"  # round() to an int: a detection 0.4 ms early reads "0 ms", not "-0 ms"


def condition_table(summary: dict) -> list[str]:
    lines = ["| condition | 14-class accuracy | keyword accuracy | unknown → keyword | near-miss → keyword |",
             "|---|---|---|---|---|"]
    for cond, r in summary.items():
        lines.append(f"| {cond} | {pct(r['accuracy'])} | {pct(r['keyword_accuracy'])} | "
                     f"{pct(r['unknown_taken_for_keyword'])} | {pct(r['near_miss_taken_for_keyword'])} |")
    return lines


def clips_lines(clips: dict | None) -> list[str]:
    """The silence weight `triage classify` uses (training/clips.py), and what it did on the test clips."""
    if not clips:
        return []
    by_weight = {r["silence_weight"]: r for r in clips["test"]}
    chosen, plain = by_weight[clips["silence_weight"]], by_weight[1.0]
    return [f"Where a clip holds no keyword, `_silence_` counts {clips['silence_weight']:g} times against `_unknown_` "
            f"(the table above is measured so): {clips['method']}. On the test half of the clips (test voices, the "
            "other `_silence_` clips), 14-class accuracy with it / without: " + ", ".join(
                f"{c} {pct(chosen['accuracy'][c])} / {pct(plain['accuracy'][c])}" for c in chosen["accuracy"])
            + f"; `_silence_` recognized {pct(chosen['silence_recall'])} / {pct(plain['silence_recall'])}; speech "
            f"clips taken for silence {chosen['speech_taken_for_silence']} / {plain['speech_taken_for_silence']} of "
            f"{chosen['speech_clips']}.", ""]


def phrasing_lines(phrasing: dict | None) -> list[str]:
    """Recall when the test voices say the keywords as callers do, against the templates (training/phrasing.py)."""
    if not phrasing:
        return []
    callers, templates = phrasing["callers"], phrasing["templates"]
    return ["", "**Phrased as callers say it.** Every sentence above follows the pipeline's templates (one fixed "
                f"article before each keyword). With {phrasing['method']}: keyword recall "
                f"{pct(callers['keyword_recall'])} of {callers['keywords']} in caller phrasings against "
                f"{pct(templates['keyword_recall'])} of {templates['keywords']} in template sentences. By keyword, "
                "callers / templates: " + ", ".join(f"{kw} {n} / {templates['recall_by_keyword'][kw]}"
                                                   for kw, n in callers["recall_by_keyword"].items()) + "."]


def mining_said(rounds: list[dict]) -> str:
    extra = [r for r in rounds if "voices" in r]
    return f"{len(rounds)} mining rounds" + (f", the last {len(extra)} on {extra[-1]['voices']}" if extra else "")


def training_lines(m: dict) -> list[str]:
    """How one network was trained, from its manifest's metrics."""
    return [f"- Training windows: {m['train_windows']:,} (isolated words and running speech cut on a 100 ms grid, "
            "augmented).",
            f"- Stage times on 2 CPU cores (s): {json.dumps(m.get('stage_seconds', {}))}; "
            f"training (s): {m['shipped']['train_seconds']}.",
            f"- Hard-negative mining: {json.dumps(m.get('hard_negative_mining', []))}",
            f"- Keras vs ONNX max |Δ| on 256 windows: {m['keras_onnx_max_abs_delta']:.1e}."]


def member_lines(members: list[dict], depth: int = 0, number: str = "", weight: float = 1.0) -> list[str]:
    """One line per ensemble member, with its share of the averaged logits; a member that is itself an
    ensemble (a shipped model joined with a new network) lists its own members under it, so every network
    the file holds is named with its weight."""
    lines = []
    for i, e in enumerate(members, start=1):
        em = e["metrics"]
        share = weight * e.get("share", 1 / len(members))  # manifests before --shares: equal shares
        how = em.get("architecture") + ("" if "ensemble_members" in em
                                        else f"; {mining_said(em.get('hard_negative_mining', []))}")
        clips = (f"; its exported file alone on the held-out clips, phone condition: 14-class accuracy "
                 f"{pct(e['clips_exported']['phone']['accuracy'])}, near-miss → keyword "
                 f"{pct(e['clips_exported']['phone']['near_miss_taken_for_keyword'])}"
                 if "clips_exported" in e else "")
        lines.append(f"{'  ' * depth}- Member {number}{i} (sha256 {e['sha256'][:12]}, {share:.3g} of the logits): "
                     f"{how}{clips}.")
        if "ensemble_members" in em:
            lines += member_lines(em["ensemble_members"], depth + 1, f"{number}{i}.", share)
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.model_card", description=__doc__)
    ap.add_argument("--models", type=Path, default=ROOT / "models",
                    help="the folder holding kws12.onnx, its manifest and evaluation files (default: models/)")
    models = ap.parse_args(argv).models
    manifest = json.loads((models / "kws12.json").read_text(encoding="utf-8"))
    evals = json.loads((models / "kws12_eval.json").read_text(encoding="utf-8"))
    base8 = json.loads((models / "base8.json").read_text(encoding="utf-8"))
    m, prov = manifest["metrics"], manifest["provenance"]
    shipped = m["shipped"]
    ft = (evals.get("ensemble") or evals["ds_cnn"])["fine_tuned"]["conditions"]
    hop_ms = manifest["streaming"]["hop_s"] * 1000
    out = [
        "# kws12 — the triage keyword model",
        "",
        "Spots the 12 French emergency keywords (plus `_unknown_` speech and `_silence_`) in 1 s log-mel "
        f"windows; `triage` scores every live call with it every {hop_ms:.0f} ms.",
        "",
        "> **Every keyword example used to train and evaluate this model is synthetic speech.** "
        "No recording of a real person saying a keyword was available. The figures below are measured on "
        "*synthetic voices never used in training*, under simulated phone conditions. Expect real callers, "
        "real phone lines and real stress to do worse until the model is checked on real calls.",
        "",
        f"- Architecture: {m['architecture']}; ONNX (opset 17), input `[batch, "
        f"{manifest['input']['shape'][1]}, {manifest['features']['n_mels']}, 1]` log-mel dB.",
        f"- Features: {json.dumps(manifest['features'])}",
        f"- Streaming: {json.dumps(manifest['streaming'], ensure_ascii=False)}",
        *([f"- Served one hop at a time: `{manifest['step']['file']}` takes {manifest['step']['hop_frames']} new "
           "log-mel frames and the call's layer states and gives the latest window's probabilities, exactly "
           "what this model gives on that window (training/streaming.py)."] if "step" in manifest else []),
        f"- Classes, in output order: {', '.join(manifest['classes'])}",
        f"- Clip evaluation windows per condition: {m['eval_windows_per_condition']:,}.",
        *(training_lines(m) if "ensemble_members" not in m else member_lines(m["ensemble_members"])),
        "",
    ]
    cal, ev = m.get("calibration"), m.get("streaming_test")
    if cal and ev:
        f = ev["keyword_free_speech"]
        out += [
            "## Running speech on voices never heard (the figures that matter)",
            "",
            "Operating point chosen on the **dev** voices, figures measured on other **test** voices "
            "that set nothing (no threshold, no smoothing, no early stopping, no model choice).",
            "",
            f"- Dev: {cal['material']}; {cal['keyword_free_hours']} h keyword-free. {cal['method']}; "
            f"smoothing chosen: {smoothing_said(cal['smoothing'])}.",
            f"- Test: {ev['material']}.",
            "",
            "| live core on the test voices | this model |" + (" previous model |" if "baseline" in ev else ""),
            "|---|---|" + ("---|" if "baseline" in ev else ""),
        ]
        rows = [("calls", lambda e: str(e["simulated_calls"]["calls"])),
                ("route exact match", lambda e: pct(e["simulated_calls"]["route_exact_match"])),
                ("keyword recall", lambda e: f"{pct(e['simulated_calls']['keyword_recall'])} of "
                                             f"{e['simulated_calls']['keywords']}"),
                ("false alarms per hour, keyword-free speech",
                 lambda e: f"{e['keyword_free_speech']['false_alarms_per_hour']:.2f} "
                           f"({e['keyword_free_speech']['false_alarms']} in {e['keyword_free_speech']['hours']} h)"
                 if "keyword_free_speech" in e else "– (other material)"),
                ("false detections inside the calls", lambda e: str(e["simulated_calls"]["false_alarms"])),
                ("detection latency after the word ends, p50 / p95",
                 lambda e: " / ".join(ms(e["simulated_calls"][f"latency_{q}_s"]) for q in ("p50", "p95")))]
        for name, fn in rows:
            out.append(f"| {name} | {fn(ev)} |" + (f" {fn(ev['baseline'])} |" if "baseline" in ev else ""))
        by_kw = json.dumps(f["false_alarms_by_keyword"], ensure_ascii=False)
        if (sk := ev.get("skipping")) and sk["chosen"]["skip_windows"]:
            c, every = sk["chosen"], sk["every_window"]
            sure = (f", `skip_gate_below` {c['skip_gate_below']:g}: after a window the gate turned away only when it "
                    "scored it below that" if c.get("skip_gate_below", 1.0) < 1 else "")
            out += ["", f"Window skipping (`skip_below` {c['skip_below']:g}, `skip_windows` {c['skip_windows']}"
                        f"{sure}): the model scores {c['windows_scored']:.1%} of the test windows; offline on the same "
                        f"windows, {c['detections']} detections and {c['false_alarms']} false alarms against "
                        f"{every['detections']} and {every['false_alarms']} scoring every window. The per-keyword "
                        "table below scores every window"
                        + (" (with the gate: every window is offered to the gate, and its rejections count as "
                           "`_unknown_`, as in every figure of this section)." if "gate" in manifest else ".")]
        if gate := manifest.get("gate"):
            ungated = gate["test"][0]
            at = {r["tau"]: r for r in gate["test"]}.get(gate["threshold"])
            out += ["", f"Gate (`{gate['file']}`, τ {gate['threshold']:g}): {gate['method']}. Windows it turns away "
                        "count as `_unknown_` (live and `triage replay`; `triage classify` bypasses it)."
                        + (" Measured by `python -m training.gate` on the test material as built when τ was chosen "
                           "(so not the same draw as the figures above), with the window skipping the manifest had "
                           f"then: the gate scores {at['windows_scored_by_gate']:.1%} of the windows and the full "
                           f"model {at['windows_scored_by_full_model']:.1%} (without the gate "
                           f"{ungated['windows_scored_by_full_model']:.1%}), for {at['detections']} detections and "
                           f"{at['false_alarms']} false alarms against {ungated['detections']} and "
                           f"{ungated['false_alarms']} without it." if at else
                           " Its threshold is none of those `python -m training.gate` measured: no gate figures.")]
        split = "; ".join(f"{v['false_alarms']} in {v['hours']} h of {k}" for k, v in f.get("by_material", {}).items())
        out += ["", f"False alarms by keyword (test keyword-free speech): {by_kw}."
                + (f" By material: {split}." if split else "")]
        if heard := f.get("false_alarm_sentences"):
            out += ["", "What they fired on (each synthetic sentence is heard over several draws of noise and line, "
                        "so one sentence may fire more than once):", "",
                    "| keyword | stream, time | speaker | sentence |", "|---|---|---|---|",
                    *[f"| {h['keyword']} | {h['stream']} at {h['time']:.1f} s | {h.get('speaker', '–')} | "
                      f"{h.get('sentence', '(a real recording)')} |" for h in heard]]
        out += ["",
                "| keyword | threshold | dev recall | test recall | test instances "
                "| test false alarms (all material) | test latency p95 |", "|---|---|---|---|---|---|---|"]
        for kw, d in ev["per_keyword"].items():
            lat = "–" if d["latency_p95_s"] is None else ms(d["latency_p95_s"])
            out.append(f"| {kw} | {d['threshold']} | {pct(cal['dev_recall'].get(kw))} | {pct(d['recall'])} | "
                       f"{d['instances']} | {d['false_alarms']} | {lat} |")
        if engines := ev.get("recall_by_engine"):
            out += ["", "Test recall by the engine that spoke the keyword (per-keyword thresholds, every window "
                        "scored): " + ", ".join(f"{e} {pct(d['recall'])} of {d['instances']}"
                                                for e, d in engines.items()) + "."]
        if durations := ev.get("recall_by_duration"):
            out += ["", "Test recall by how long the keyword lasts: " + ", ".join(
                f"{g} {pct(d['recall'])} of {d['instances']}" for g, d in durations.items()) + "."]
        out += phrasing_lines(m.get("phrasing"))
        out += ["", "![miss rate against false alarms per hour, per keyword, on the test voices](kws12_det.png)", ""]
    out += [
        "## Isolated clips on held-out voices",
        "",
        f"Voices never used in training: {', '.join(prov['held_out_voices'])}. Noise, music and real "
        "prompts used in evaluation come from a 25 % split of the recordings kept out of training.",
        "",
        "Conditions: **clean** 16 kHz; **phone** μ-law 8 kHz + babble at 10 dB SNR; **room** room "
        "impulse response + music at 5 dB SNR, A-law 8 kHz.",
        "",
        *condition_table(shipped["fine_tuned"]),
        "",
        *clips_lines(manifest.get("clips")),
        "Per held-out voice (14-class accuracy):",
        "",
        "| voice | " + " | ".join(ft) + " |",
        "|---|" + "---|" * len(ft),
    ]
    voices = sorted(next(iter(ft.values()))["per_voice"])
    for v in voices:
        out.append(f"| {v} | " + " | ".join(pct(ft[c]["per_voice"][v]) for c in ft) + " |")
    out += ["", "Per class (phone condition):", "", "| class | accuracy |", "|---|---|"]
    out += [f"| {c} | {pct(ft['phone']['per_class'].get(c))} |" for c in CLASSES]
    out += ["", "![confusion matrices](kws12_confusion.png)", "",
            *(["Head-only stage (base frozen), for comparison:", "", *condition_table(shipped["head_only"]), ""]
              if "head_only" in shipped else []),
            f"Base 8-word English model, held-out-voice accuracy: {pct(base8['metrics']['held_out_voice_accuracy'])}."]
    if "seed_baseline" in m:
        out += ["", "Seed recipe baseline (fine-tuned):", "", *condition_table(m["seed_baseline"]["fine_tuned"])]
    out += ["", "## Data provenance", ""] + [f"- **{PROVENANCE_LABELS.get(k, k)}**: "
                                            f"{v if isinstance(v, str) else ', '.join(v)}" for k, v in prov.items()]
    out += ["", *running_speech_voices()]
    out += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in manifest["versions"].items()), ""]
    (models / "kws12.md").write_text("\n".join(out), encoding="utf-8")
    print(f"wrote {models / 'kws12.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
