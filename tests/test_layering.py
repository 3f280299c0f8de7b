"""Serving imports no TensorFlow, and the pure core touches no socket, Redis or clock."""

import ast
import subprocess
import sys
from pathlib import Path

TRIAGE = Path(__file__).resolve().parent.parent / "triage"
PURE = ("audio", "features", "spotter", "router", "protocol", "classify", "keywords")
FORBIDDEN = {"socket", "asyncio", "redis", "websockets", "time", "datetime", "tensorflow", "keras", "training"}


def test_serving_never_imports_tensorflow_or_training():
    code = ("import sys, triage.cli, triage.server, triage.client, triage.replay, triage.store, triage.app; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'training', 'librosa')]; "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_pure_core_modules_import_no_io():
    for name in PURE:
        tree = ast.parse((TRIAGE / f"{name}.py").read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not imported & FORBIDDEN, (name, imported & FORBIDDEN)
