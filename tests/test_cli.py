"""The `triage classify` / `triage replay` contract of ../shared/DESIGN.md, run as a real subprocess."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx_models import silence, tone

from triage.audio import write_wav


def run(*args):
    return subprocess.run([sys.executable, "-m", "triage.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def clips(tmp_path):
    write_wav(tmp_path / "loud.wav", tone(0.9), 16000)
    write_wav(tmp_path / "quiet8k.wav", silence(1.0, 8000), 8000, "mulaw")
    write_wav(tmp_path / "loud44.wav", tone(0.8, rate=44100), 44100, "f32le")
    (tmp_path / "notaudio.wav").write_text("hello")
    (tmp_path / "empty.wav").write_bytes(b"")
    return tmp_path


def test_classify_json_contract(clips, loud_model_path):
    files = [clips / "loud.wav", clips / "notaudio.wav", clips / "quiet8k.wav", clips / "empty.wav",
             clips / "loud44.wav"]
    r = run("classify", *files, "--json", "--model", loud_model_path)
    assert r.returncode == 1  # some files could not be read
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["file"] for x in lines] == [str(files[0]), str(files[2]), str(files[4])]
    assert [x["label"] for x in lines] == ["incendie", "_silence_", "incendie"]
    assert all(0 <= x["confidence"] <= 1 for x in lines)
    assert "notaudio.wav: not a readable audio file" in r.stderr and "empty.wav: empty file" in r.stderr


def test_classify_all_good_exits_zero(clips, loud_model_path):
    r = run("classify", clips / "loud.wav", "--json", "--model", loud_model_path)
    assert r.returncode == 0 and r.stdout.count("\n") == 1


def test_replay_json_contract_and_labels(clips, loud_model_path, tmp_path):
    call = np.concatenate([silence(2), tone(0.8), silence(3)])
    write_wav(tmp_path / "call.wav", call, 16000, "alaw")
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"file": "call.wav", "services": [18],
                                  "keywords": [{"keyword": "incendie", "start": 2.0, "end": 2.8}]}) + "\n")
    r = run("replay", tmp_path / "call.wav", clips / "notaudio.wav", "--json", "--model", loud_model_path,
            "--labels", labels, "--report", tmp_path / "report")
    assert r.returncode == 1
    (line,) = [json.loads(x) for x in r.stdout.splitlines()]
    assert line["file"] == str(tmp_path / "call.wav") and line["services"] == [18]
    (d,) = line["detections"]
    assert d["keyword"] == "incendie" and d["service"] == 18 and 2.0 < d["time"] < 3.2
    assert '"keyword_recall": 1.0' in r.stderr and '"route_exact_match": 1.0' in r.stderr
    assert (tmp_path / "report" / "index.html").exists() and (tmp_path / "report" / "call000.png").exists()


def test_missing_model_is_a_clear_error(clips, tmp_path):
    r = run("classify", clips / "loud.wav", "--model", tmp_path / "none.onnx")
    assert r.returncode == 3 and "none.onnx: model file not found" in r.stderr


@pytest.mark.parametrize("cmd", ["classify", "replay", "demo", "serve", "call", "dispatch", "users add",
                                 "users list", "users remove", "recordings list", "recordings purge",
                                 "feedback export", "report", "audit export"])
def test_every_command_has_help(cmd):
    r = run(*cmd.split(), "--help")
    assert r.returncode == 0 and "usage: triage " + cmd in r.stdout


ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p for d in ("training", "bench") for p in (ROOT / d).glob("*.py")
                 if 'if __name__ == "__main__":' in p.read_text(encoding="utf-8"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_training_and_bench_script_answers_help_without_working(script):
    # a script that ignores its arguments starts its work instead (hours of training, or the model card
    # rewritten): what it prints then is not a usage
    if script.parent.name == "training":
        pytest.importorskip("keras")
        cmd = [sys.executable, "-m", "training" if script.stem == "__main__" else f"training.{script.stem}"]
    else:
        cmd = [sys.executable, str(script)]
    r = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.startswith("usage: "), r.stderr[-2000:]


def test_the_scoring_interval_reaches_the_server_and_bad_ones_are_refused():
    from triage import cli
    from triage.server import ServerConfig

    args = cli.build_parser().parse_args(["serve", "--score-interval", "0.2"])
    assert cli._server_config(args).score_interval_s == 0.2
    default = cli._server_config(cli.build_parser().parse_args(["serve"]))
    assert default.score_interval_s == ServerConfig.score_interval_s
    assert f"default {ServerConfig.score_interval_s:g}," in " ".join(run("serve", "--help").stdout.split())
    r = run("serve", "--score-interval", "5")
    assert r.returncode == 2 and "5: the scoring interval is 0.01 to 1 s" in r.stderr
