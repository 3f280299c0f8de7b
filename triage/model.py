"""KeywordModel: an ONNX file plus the JSON manifest that travels beside it.

The manifest is the single place serving learns the class list, the feature parameters, the
streaming schedule and the per-keyword thresholds; nothing here has defaults of its own for them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from triage.features import FeatureParams, LogMel
from triage.keywords import KEYWORD_SERVICE, SILENCE, UNKNOWN

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL = MODELS_DIR / "kws12.onnx"
MANIFEST_VERSION = 1
MAX_BATCH = 8


class ModelError(RuntimeError):
    """A model or manifest that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class StreamingParams:
    hop_s: float  # how often a window is scored
    # Posteriors averaged over this many consecutive windows: one number for every class, or a table giving
    # each keyword its own (a short word's brief peak wants fewer windows than a long word's steady one,
    # training/README.md); the classes that are not keywords then take the table's largest.
    smoothing: int | dict[str, int]
    refractory_s: float  # the same keyword cannot fire twice within this time
    # After a window whose likeliest keyword scores below `skip_below`, the next `skip_windows` windows are
    # not scored and count as `_unknown_`: a keyword's posterior climbs over several windows, so the model
    # scores about half the windows of running speech for the same detections (training/README.md).
    # Absent: every window is scored.
    skip_below: float = 0.0
    skip_windows: int = 0
    # A window the gate turned away starts a skip only when its gate score is below `skip_gate_below`, a sure
    # rejection: a window the gate was unsure of may precede a keyword, and skipping the next window then
    # delays or loses it (training/README.md). The default lets every window the gate turned away start one.
    skip_gate_below: float = 1.0

    @classmethod
    def from_dict(cls, d: dict) -> StreamingParams:
        table = isinstance(d["smoothing"], dict)
        smoothing = {str(k): int(v) for k, v in d["smoothing"].items()} if table else int(d["smoothing"])
        if (min(smoothing.values(), default=0) if table else smoothing) < 1:
            raise ValueError(f"smoothing must be a number of windows ≥ 1 or a table of them, got {d['smoothing']!r}")
        gate_below = float(d.get("skip_gate_below", 1.0))
        if not 0.0 < gate_below <= 1.0:  # NaN too: a NaN would read as 1.0 and silently skip after any rejection
            raise ValueError(f"skip_gate_below must be a gate score in (0, 1] (1, or absent, lets every window the "
                             f"gate turned away start a skip), got {d['skip_gate_below']!r}")
        return cls(hop_s=float(d["hop_s"]), smoothing=smoothing, refractory_s=float(d["refractory_s"]),
                   skip_below=float(d.get("skip_below", 0.0)), skip_windows=int(d.get("skip_windows", 0)),
                   skip_gate_below=gate_below)

    def smoothing_windows(self, classes: tuple[str, ...]) -> np.ndarray:
        """How many windows each class's posterior is averaged over, in the order of `classes`."""
        if isinstance(self.smoothing, int):
            return np.full(len(classes), self.smoothing, np.intp)
        most = max(self.smoothing.values())
        return np.array([self.smoothing.get(c, most) for c in classes], np.intp)


def manifest_path_for(onnx_path: Path) -> Path:
    return onnx_path.with_suffix(".json")


def default_model_path() -> Path:
    return Path(os.environ.get("TRIAGE_MODEL", DEFAULT_MODEL))


class _OnnxNetwork:
    """One ONNX file in an onnxruntime session on `threads` threads: log-mel windows in, its output out.
    Refused at load unless its input is (batch, frames, n_mels, 1) as the manifest's features say."""

    def __init__(self, path: Path, threads: int, expected: tuple[int, int]):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own untyped errors
            raise ModelError(f"{path}: onnxruntime cannot load it: {e}") from None
        shape = self.session.get_inputs()[0].shape
        if tuple(shape[1:3]) != expected:
            raise ModelError(f"{path}: input shape {shape} does not match the manifest's features "
                             f"(expected [batch, {expected[0]}, {expected[1]}, 1])")
        self.input_name, self._output = self.session.get_inputs()[0].name, self.session.get_outputs()[0].name

    def run(self, x: np.ndarray) -> np.ndarray:
        """(N, frames, n_mels) float32 → (N, ...). One session call per few windows: measured on one core
        with v5.1, 8 windows a call cost 328 µs each and 64 a call 369 µs each (the activations of big
        batches fall out of cache)."""
        x = x[..., None]
        return np.concatenate([self.session.run([self._output], {self.input_name: x[i: i + MAX_BATCH]})[0]
                               for i in range(0, len(x), MAX_BATCH)])


def _pinned_digest(path: Path, sha256: str | None, missing: str, differs: str) -> str:
    """The short digest of a file a manifest names beside its model, refused if it is missing or is not
    the file the manifest pins (sha256)."""
    if not path.is_file():
        raise ModelError(f"{path}: {missing}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if sha256 and digest != sha256:
        raise ModelError(f"{path}: {differs} (sha256 differs)")
    return digest[:12]


class StepNetwork:
    """The model computed one hop at a time (training/streaming.py): a hop of new log-mel frames and the
    states the call's last hop left → the latest window's probabilities and the new states. It gives
    what the windowed model gives on each window, for a fraction of the work."""

    def __init__(self, path: Path, sha256: str | None, hop_frames: int, threads: int, n_mels: int,
                 what: str = "the step model"):
        self.digest = _pinned_digest(path, sha256, f"{what} the manifest names is missing",
                                     f"not {what} exported with this model")
        self.path, self.hop_frames = path, hop_frames
        self._network = _OnnxNetwork(path, threads, (hop_frames, n_mels))
        inputs = self._network.session.get_inputs()
        self.state_names = [i.name for i in inputs[1:]]
        self.state_shapes = [tuple(int(d) for d in i.shape[1:]) for i in inputs[1:]]
        self._outputs = [o.name for o in self._network.session.get_outputs()]

    def initial_states(self) -> list[np.ndarray]:
        return [np.zeros(shape, np.float32) for shape in self.state_shapes]

    def run(self, hops: np.ndarray, states: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """(N, hop_frames, n_mels) frames and each state stacked over the N calls → (N, n_classes)
        probabilities and the N calls' new states, stacked likewise."""
        feeds = {self._network.input_name: hops[..., None], **dict(zip(self.state_names, states, strict=True))}
        probs, *new = self._network.session.run(self._outputs, feeds)
        return probs, new


class KeywordGate:
    """A cheap network in front of the full model (training/gate.py): only windows it scores at or above
    its threshold are worth the full model's time.

    A gate may also come as a step model (`step`): the same network computed one hop at a time, which the
    spotter runs on every hop of a live call for a fraction of the windowed gate's work; the windowed file
    stays what offline tools score whole windows with, and both give the same score for a window."""

    def __init__(self, path: Path, threshold: float, sha256: str | None, threads: int, expected: tuple[int, int],
                 step: StepNetwork | None = None):
        self.digest = _pinned_digest(path, sha256, "the gate the manifest names is missing (train it with "
                                     "`python -m training.gate`)", "not the gate the manifest was calibrated with")
        self.path, self.threshold, self.step = path, threshold, step
        self._network = _OnnxNetwork(path, threads, expected)

    @property
    def files(self) -> tuple[Path, ...]:
        """The gate's ONNX files: the windowed one, and its step model if it has one."""
        return (self.path, self.step.path) if self.step else (self.path,)

    def scores(self, windows: np.ndarray) -> np.ndarray:
        """(N, frames, n_mels) float32 → (N,) scores in [0, 1]."""
        return self._network.run(windows).reshape(-1)


class KeywordModel:
    def __init__(self, onnx_path: str | Path | None = None, threads: int = 1):
        self.path = Path(onnx_path) if onnx_path else default_model_path()
        mpath = manifest_path_for(self.path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: model file not found (train one with `python -m training`)")
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelError(f"{mpath}: manifest not found; a model is its .onnx file plus this JSON") from None
        except json.JSONDecodeError as e:
            raise ModelError(f"{mpath}: not valid JSON ({e})") from None
        self.manifest = manifest
        # What feedback, the audit log and reports attribute a decision to: the manifest's name and the
        # ONNX file's own digest, so two trainings under one name are never confused.
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:12]
        self.version = f"{manifest.get('name', self.path.stem)}@{digest}"
        try:
            self.classes: tuple[str, ...] = tuple(manifest["classes"])
            self.features = FeatureParams.from_dict(manifest["features"])
            self.streaming = (StreamingParams.from_dict(manifest["streaming"])
                              if "streaming" in manifest else None)
            thresholds = manifest.get("thresholds", {})
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(f"{mpath}: manifest is missing or has a bad field: {e}") from None
        self.keywords = tuple(c for c in self.classes if c not in (UNKNOWN, SILENCE))
        strangers = [k for k in self.keywords if k not in KEYWORD_SERVICE and self.streaming is not None]
        if strangers:
            raise ModelError(f"{mpath}: classes {strangers} are not triage keywords (see triage/keywords.py)")
        if self.streaming is not None and isinstance(self.streaming.smoothing, dict):
            table = set(self.streaming.smoothing)
            if table != set(self.keywords):
                raise ModelError(f"{mpath}: streaming.smoothing must give every keyword of the model its number of "
                                 f"windows and nothing else; missing {sorted(set(self.keywords) - table)}, "
                                 f"unknown {sorted(table - set(self.keywords))}")
        # What a window counts as when it is not scored (window skipping, or turned away by the gate).
        self.unknown_posterior: np.ndarray | None = None
        if UNKNOWN in self.classes:
            self.unknown_posterior = np.zeros(len(self.classes), np.float32)
            self.unknown_posterior[self.classes.index(UNKNOWN)] = 1.0
        elif (self.streaming and self.streaming.skip_windows) or "gate" in manifest:
            raise ModelError(f"{mpath}: skipping windows or a gate needs an {UNKNOWN} class to count "
                             "unscored windows as")
        if self.streaming is not None and self.streaming.skip_gate_below < 1.0 and "gate" not in manifest:
            raise ModelError(f"{mpath}: streaming.skip_gate_below is a gate score; this model has no gate (remove the "
                             "field, or give the model its gate)")
        self.thresholds = {k: float(thresholds.get(k, 0.5)) for k in self.keywords}
        # How much `_silence_` counts against `_unknown_` when `triage classify` labels a clip with no keyword.
        try:
            self.silence_weight = float(manifest.get("clips", {}).get("silence_weight", 1.0))
        except (AttributeError, TypeError, ValueError) as e:
            raise ModelError(f"{mpath}: the manifest's clips.silence_weight is not a number: {e}") from None
        if not 0 < self.silence_weight < float("inf"):
            raise ModelError(f"{mpath}: the manifest's clips.silence_weight must be positive and finite, "
                             f"got {self.silence_weight}")
        # One filterbank and window for every call this model scores.
        self.extractor = LogMel(self.features)

        expected = (self.features.window_frames, self.features.n_mels)
        self._network = _OnnxNetwork(self.path, threads, expected)
        self.gate: KeywordGate | None = None
        if "gate" in manifest:
            try:
                g = manifest["gate"]
                step = self._step_network(g["step"], threads, "the gate's step model") if "step" in g else None
                self.gate = KeywordGate(self.path.parent / g["file"], float(g["threshold"]), g.get("sha256"),
                                        threads, expected, step)
            except (KeyError, TypeError, ValueError) as e:
                raise ModelError(f"{mpath}: the manifest's gate is missing or has a bad field: {e}") from None
            self.version += f"+gate@{self.gate.digest}"
            if self.gate.step is not None:
                self.version += f"+step@{self.gate.step.digest}"
                if not self._hop_is(self.gate.step.hop_frames):
                    raise ModelError(f"{mpath}: the gate's step model needs streaming.hop_s of exactly "
                                     f"{self.gate.step.hop_frames} frames")
        self.stepper: StepNetwork | None = None
        if "step" in manifest:
            try:
                self.stepper = self._step_network(manifest["step"], threads, "the step model")
            except (KeyError, TypeError, ValueError) as e:
                raise ModelError(f"{mpath}: the manifest's step model is missing or has a bad field: {e}") from None
            if not self._hop_is(self.stepper.hop_frames) or self.gate or self.streaming.skip_windows:
                raise ModelError(f"{mpath}: a step model needs streaming.hop_s of exactly {self.stepper.hop_frames} "
                                 "frames, and no gate or window skipping (every hop moves its states on)")

    def _step_network(self, section: dict, threads: int, what: str) -> StepNetwork:
        return StepNetwork(self.path.parent / section["file"], section.get("sha256"), int(section["hop_frames"]),
                           threads, self.features.n_mels, what)

    def _hop_is(self, frames: int) -> bool:
        """Whether the manifest's streaming hop is exactly `frames` log-mel frames."""
        p = self.features
        return self.streaming is not None and abs(self.streaming.hop_s * p.sample_rate / p.hop_length - frames) < 1e-6

    @property
    def lead_frames(self) -> int:
        """Frames of zeros a step gate hears before a call's first frame, so that each of its hops ends where a
        window ends (triage.spotter; training.gate exports the gate for them)."""
        return -self.features.window_frames % self.hop_frames

    @property
    def hop_frames(self) -> int:
        """Log-mel frames between two scored windows: the manifest's hop_s on the features' frame grid."""
        p = self.features
        return max(1, round(self.streaming.hop_s * p.sample_rate / p.hop_length))

    @staticmethod
    def _windows(windows: np.ndarray) -> np.ndarray:
        x = np.asarray(windows, dtype=np.float32)
        return x[None] if x.ndim == 2 else x

    def predict_full(self, windows: np.ndarray) -> np.ndarray:
        """(N, frames, n_mels) log-mel windows → (N, n_classes) class probabilities of the full model alone."""
        x = self._windows(windows)
        if len(x) == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return self._network.run(x)

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """(N, frames, n_mels) log-mel windows → (N, n_classes) class probabilities. With a gate, windows it
        turns away are `_unknown_` with certainty and cost the full model nothing."""
        return self.predict_gated(windows)[0]

    def predict_gated(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """`predict`, and the gate's score of each window (None without a gate): the spotter's window skipping
        reads how sure the gate was of the windows it turned away."""
        x = self._windows(windows)
        if self.gate is None or len(x) == 0:
            return self.predict_full(x), None if self.gate is None else np.zeros(0, np.float32)
        scores = self.gate.scores(x)
        keep = scores >= self.gate.threshold
        out = np.tile(self.unknown_posterior, (len(x), 1))
        if keep.any():
            out[keep] = self.predict_full(x[keep])
        return out, scores
