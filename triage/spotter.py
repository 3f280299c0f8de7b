"""KeywordSpotter: one per call, sans-I/O. Audio in (16 kHz float32), keyword detections out.

Time is the number of samples fed divided by the sample rate; there is no clock here. Scoring is
split from feeding so that one model call can score the due windows of many calls at once
(`score_batch`), which is what lets one core carry hundreds of live calls.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from triage.features import FeatureParams, LogMelStream
from triage.keywords import KEYWORD_SERVICE
from triage.model import KeywordModel, StepNetwork

# What `take_due` hands over in place of a window that a step gate turned away: scored as `_unknown_`.
GATED = np.zeros((0, 0), np.float32)


@dataclass(frozen=True)
class Detection:
    keyword: str
    service: int
    time: float  # seconds from the start of the call: the end of the window that fired
    confidence: float

    def to_dict(self) -> dict:
        return {"keyword": self.keyword, "service": self.service, "time": round(self.time, 3),
                "confidence": round(self.confidence, 4)}


class Trigger:
    """When one keyword's smoothed posterior fires: on crossing its threshold, once per utterance.

    After firing it re-arms only when the score has fallen below half the threshold, and never
    within `refractory_s` of the last firing: one spoken keyword gives one detection.
    """

    def __init__(self, threshold: float, refractory_s: float):
        self.threshold = threshold
        self.refractory_s = refractory_s
        self._armed = True
        self._last = -1e9

    def step(self, t: float, score: float) -> bool:
        if score < self.threshold * 0.5:
            self._armed = True
        if score >= self.threshold and self._armed and t - self._last >= self.refractory_s:
            self._armed = False
            self._last = t
            return True
        return False


class KeywordSpotter:
    def __init__(self, model: KeywordModel, thresholds: dict[str, float] | None = None, trace: bool = False):
        if model.streaming is None:
            raise ValueError(f"{model.path}: manifest has no 'streaming' section; it is not a spotting model")
        self.model = model
        p = model.features
        self._params = p
        self._frames = LogMelStream(p, model.extractor)
        self._window = p.window_frames
        self._hop_frames = model.hop_frames
        # With a step model every hop is due from the call's start (its states must see every frame); the
        # hops before the first whole window only warm the states up.
        self.states = model.stepper.initial_states() if model.stepper else None
        # A gate computed one hop at a time (KeywordGate.step) likewise sees every hop, each one ending where a
        # window may end: its first hop is `lead` frames of zeros and then the call's first frames. The lead
        # is a whole number of the gate's time strides (training/export.py checks it), so no position a window
        # averages hears those zeros and the step gives each window the windowed gate's score exactly.
        gate = model.gate
        self._gate_step = gate.step if gate is not None else None
        self.gate_states = self._gate_step.initial_states() if self._gate_step else None
        self._gate_lead = model.lead_frames if self._gate_step else 0
        self._gate_score: float | None = None  # the step gate's score of the first due hop, until it is taken
        self._taken_gate = float("nan")  # the step gate's score of the hop last taken
        # Ring buffer of the latest `window` frames; never grows with call length.
        self._ring = np.zeros((self._window, p.n_mels), dtype=np.float32)
        self._ring_pos = 0
        self._placed = 0  # frames written to the ring so far
        # (frames seen when due, window or None before the first whole one, the hop a step gate takes or None)
        self._due: list[tuple[int, np.ndarray | None, np.ndarray | None]] = []
        # Handed to a scorer, awaiting `accept`; a window of None is skipped (streaming.skip_windows), one of
        # GATED was turned away by a step gate.
        self._taken: list[tuple[int, np.ndarray | None]] = []
        self._skip = 0  # windows still to skip
        self._skip_after = model.streaming.skip_below if model.streaming.skip_windows else 0.0
        # A window the gate turned away with a score in [skip_gate_below, gate threshold) starts no skip.
        self._unsure = (model.streaming.skip_gate_below, gate.threshold) if gate is not None else (1.0, 1.0)
        self._smoothing = model.streaming.smoothing_windows(model.classes)
        self._columns = np.arange(len(model.classes))
        self._recent = deque(maxlen=int(self._smoothing.max()))
        self._keyword_index = [(i, c) for i, c in enumerate(model.classes) if c in KEYWORD_SERVICE]
        self._keyword_cols = np.array([i for i, _ in self._keyword_index], dtype=np.intp)
        self.thresholds = dict(model.thresholds if thresholds is None else thresholds)
        self._triggers = {k: Trigger(self.thresholds[k], model.streaming.refractory_s) for _, k in self._keyword_index}
        self.samples_fed = 0
        self.windows_scored = 0
        self.last_posteriors: np.ndarray | None = None  # smoothed, for dashboards
        # (time, smoothed posteriors, gate score or NaN) of every scored window, for replay plots and
        # calibration; off live (it grows).
        self.trace: list[tuple[float, np.ndarray, float]] | None = [] if trace else None

    @property
    def time(self) -> float:
        return self.samples_fed / self._params.sample_rate

    def push(self, samples: np.ndarray) -> None:
        """Add audio; windows that come due are kept until they are scored."""
        self.place(self.model.extractor.of_framed(self.frame(samples)))

    def frame(self, samples: np.ndarray) -> np.ndarray:
        """The first half of `push`: take the audio, return the windowed frames it completes. Their
        log-mel (`LogMel.of_framed`, batched across calls by the live engine) goes to `place`, in order."""
        samples = np.asarray(samples, dtype=np.float32)
        self.samples_fed += len(samples)
        return self._frames.take(samples)

    def place(self, frames: np.ndarray) -> None:
        """The second half of `push`: log-mel frames into the ring; windows that come due are kept."""
        for frame in frames:
            self._ring[self._ring_pos] = frame
            self._ring_pos = (self._ring_pos + 1) % self._window
            self._placed += 1
            seen = self._placed
            if self.states is not None and seen % self._hop_frames == 0:
                self._due.append((seen, self._latest(self._hop_frames), None))
            elif self._gate_step is not None and (seen + self._gate_lead) % self._hop_frames == 0:
                self._due.append((seen, self._latest(self._window) if seen >= self._window else None,
                                  self._latest(self._hop_frames)))
            elif self.states is None and seen >= self._window and (seen - self._window) % self._hop_frames == 0:
                self._due.append((seen, self._latest(self._window), None))

    def _latest(self, n: int) -> np.ndarray:
        """The last n frames placed, oldest first (zeros before the call's first frame)."""
        if n > self._placed:
            return np.concatenate([np.zeros((n - self._placed, self._ring.shape[1]), np.float32),
                                   self._latest(self._placed)])
        at = (self._ring_pos - n) % self._window
        if at + n <= self._window:
            return self._ring[at: at + n].copy()
        return np.concatenate([self._ring[at:], self._ring[: at + n - self._window]])

    def samples_until_due(self) -> int:
        """How many more samples complete the next window (the next hop, with a step model)."""
        emitted, window, hop = self._frames.frames_emitted, self._window, self._hop_frames
        if self.states is not None:
            seen = (emitted // hop + 1) * hop
        elif self._gate_step is not None:
            seen = ((emitted + self._gate_lead) // hop + 1) * hop - self._gate_lead
        else:
            seen = window if emitted < window else window + ((emitted - window) // hop + 1) * hop
        p = self._params
        return (seen - 1) * p.hop_length + p.n_fft - self.samples_fed

    @property
    def has_due(self) -> bool:
        """Whether a window waits to be handed over (the engine asks this of every call every tick)."""
        return bool(self._due)

    def take_due(self) -> list[np.ndarray]:
        """Hand the due windows over for scoring; `accept` then takes their posteriors, in order.

        Audio pushed between the two is kept for the next round, so scoring may run in a worker
        thread while the call goes on receiving audio. When the manifest skips windows, whether a
        window is scored depends on the posterior of the one before: then only the windows up to the
        next one to score are handed over, and `has_due` says whether another round is needed.
        """
        if self.states is not None:  # one hop a round: the next needs the states this one leaves
            self._taken, self._due = [d[:2] for d in self._due[:1]], self._due[1:]
            return [w for _, w in self._taken]
        if self._gate_step is not None and self._due:  # likewise, the hop the gate has just scored (`gate_scored`)
            if self._gate_score is None:
                raise RuntimeError("the step gate must score a spotter's due hop before it is taken")
            (seen, window, _), self._due = self._due[0], self._due[1:]
            if window is not None and self._skip:
                self._skip -= 1
                window = None
            elif window is not None and self._gate_score < self.model.gate.threshold:
                window = GATED
            self._taken, self._taken_gate, self._gate_score = [(seen, window)], self._gate_score, None
            return [w for _, w in self._taken if w is not None and w is not GATED]
        if not self._skip_after:
            self._taken, self._due = [d[:2] for d in self._due], []
            return [w for _, w in self._taken]
        taken, i = [], 0
        while i < len(self._due):
            seen, window, _ = self._due[i]
            i += 1
            if self._skip:
                self._skip -= 1
                taken.append((seen, None))
            else:
                taken.append((seen, window))
                break  # the windows after it wait for its posterior
        self._taken, self._due = taken, self._due[i:]
        return [w for _, w in self._taken if w is not None]

    def gate_hop(self) -> np.ndarray:
        """The hop a step gate scores next: that of the first due window (or warm-up hop)."""
        return self._due[0][2]

    def gate_scored(self, score: float, states: list[np.ndarray]) -> None:
        """The step gate's score of `gate_hop` and the states it left: the window it ends goes to the full model
        only if the score reaches the gate's threshold."""
        self.gate_states = states
        self._gate_score = score

    def accept(self, posteriors: np.ndarray, states: list[np.ndarray] | None = None,
               gate_scores: np.ndarray | None = None) -> list[Detection]:
        """Posteriors for the windows of the last `take_due`, in order → the detections they trigger
        (with a step model, also the states its hop left; with a windowed gate, its score of each row)."""
        scored = sum(1 for _, w in self._taken if w is not None and w is not GATED)
        if len(posteriors) != scored:
            raise ValueError(f"expected {scored} posterior rows, got {len(posteriors)}")
        if self.states is not None and scored:
            self.states = states
        out = []
        row = 0
        for seen, window in self._taken:
            if seen < self._window:  # a step model's (or step gate's) warm-up hop: no whole window yet
                row += window is not None
                continue
            gate = self._taken_gate
            if window is None or window is GATED:
                post = self.model.unknown_posterior
            else:
                post = posteriors[row]
                if gate_scores is not None:
                    gate = float(gate_scores[row])
                row += 1
            # A window the gate turned away counts as scored `_unknown_`, so it starts a skip as the windowed
            # gate's `KeywordModel.predict` would make it, unless the gate was unsure of it.
            if (window is not None and self._skip_after and post[self._keyword_cols].max() < self._skip_after
                    and not self._unsure[0] <= gate < self._unsure[1]):
                self._skip = self.model.streaming.skip_windows
            self._recent.append(post)
            smooth = self._smoothed()
            self.last_posteriors = smooth
            self.windows_scored += 1
            t = window_end(self._params, seen)
            if self.trace is not None:
                self.trace.append((t, smooth, gate if window is not None else float("nan")))
            for i, kw in self._keyword_index:
                score = float(smooth[i])
                if self._triggers[kw].step(t, score):
                    out.append(Detection(kw, KEYWORD_SERVICE[kw], t, score))
        self._taken, self._taken_gate = [], float("nan")
        return out

    def _smoothed(self) -> np.ndarray:
        """Each class's mean over its own number of latest windows. Runs for every window of every call:
        the sums of the latest 1, 2, … windows in one cumsum, each class reading its own (9 µs a window,
        against 11 for np.mean of the deque and 23 for `smooth_posteriors` of it)."""
        if self._recent.maxlen == 1:
            return self._recent[-1]
        recent = np.array(self._recent)
        sums = np.cumsum(recent[::-1], axis=0)
        n = np.minimum(self._smoothing, len(recent))
        return sums[n - 1, self._columns] / n

    def feed(self, samples: np.ndarray) -> list[Detection]:
        """Push and score this call alone (use `score_batch` to score many calls in one model call)."""
        self.push(samples)
        return score_batch(self.model, [self])[0]


def smooth_posteriors(posteriors: np.ndarray, windows: int | np.ndarray) -> np.ndarray:
    """The spotter's smoothing of a whole call at once: each row becomes the mean of the latest `windows`
    rows up to it (fewer at the start), one number for every class or one per class."""
    n, classes = posteriors.shape
    k = np.broadcast_to(np.asarray(windows, np.intp), (classes,))
    c = np.cumsum(np.vstack([np.zeros((1, classes)), posteriors]), axis=0)
    upto = np.arange(1, n + 1)[:, None]
    since = np.maximum(upto - k[None, :], 0)
    cols = np.arange(classes)[None, :]
    return (c[upto, cols] - c[since, cols]) / (upto - since)


def call_windows(model: KeywordModel, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every window the spotter scores in a whole call (16 kHz samples), and the call time each ends at.
    With a step model these are the windows its hops give the probabilities of."""
    p = model.features
    frames = model.extractor.of_framed(LogMelStream(p, model.extractor).take(np.asarray(samples, np.float32)))
    seen = np.arange(p.window_frames, len(frames) + 1, model.hop_frames)
    windows = (np.stack([frames[n - p.window_frames: n] for n in seen]) if len(seen)
               else np.zeros((0, p.window_frames, p.n_mels), dtype=np.float32))
    return window_end(p, seen), windows


def window_end(p: FeatureParams, frames_seen):
    """Call time at which the window completed by the `frames_seen`-th frame ends (numbers or arrays)."""
    return ((frames_seen - 1) * p.hop_length + p.n_fft) / p.sample_rate


def take_batch(spotters: Sequence[KeywordSpotter]) -> tuple[list[int], np.ndarray | None]:
    """Take every spotter's due windows as one batch: (windows per spotter, stacked windows or None)."""
    taken = [s.take_due() for s in spotters]
    counts = [len(t) for t in taken]
    windows = [w for t in taken for w in t]
    return counts, (np.stack(windows) if windows else None)


def accept_batch(spotters: Sequence[KeywordSpotter], counts: list[int], posteriors: np.ndarray,
                 states: list[np.ndarray] | None = None,
                 gate_scores: np.ndarray | None = None) -> list[list[Detection]]:
    out, i = [], 0
    for s, n in zip(spotters, counts, strict=True):
        # A step model takes one hop per spotter a round: row i of every stacked state is this spotter's.
        out.append(s.accept(posteriors[i: i + n], [st[i] for st in states] if states and n else None,
                            None if gate_scores is None else gate_scores[i: i + n]))
        i += n
    return out


def gate_batch(gate: StepNetwork, spotters: Sequence[KeywordSpotter]) -> None:
    """One step of the gate for every spotter's next due hop, in one session call (each spotter's states
    stacked along the batch axis)."""
    due = [s for s in spotters if s.has_due]
    if not due:
        return
    hops = np.stack([s.gate_hop() for s in due])
    scores, states = gate.run(hops, [np.stack(st) for st in zip(*(s.gate_states for s in due), strict=True)])
    for i, s in enumerate(due):
        s.gate_scored(float(scores[i, 0]), [st[i] for st in states])


def score_batch(model: KeywordModel, spotters: Sequence[KeywordSpotter]) -> list[list[Detection]]:
    """Score every due window of every spotter, a single model call per round."""
    return score_rounds(model, spotters)[0]


def score_rounds(model: KeywordModel, spotters: Sequence[KeywordSpotter]) -> tuple[list[list[Detection]], int]:
    """(detections per spotter, windows the model scored). One model call per round; there is more than one
    round only when the manifest skips windows and a spotter held several due windows (a replayed block,
    or a late tick), so that which windows are scored never depends on how the audio was cut."""
    out: list[list[Detection]] = [[] for _ in spotters]
    scored = 0
    pending = list(range(len(spotters)))
    gate_step = model.gate.step if model.gate is not None else None
    while pending:
        group = [spotters[i] for i in pending]
        if gate_step is not None:
            gate_batch(gate_step, group)
        counts, windows = take_batch(group)
        states = gate_scores = None
        if windows is None:
            posteriors = np.zeros((0, len(model.classes)), np.float32)
        elif model.stepper is not None:
            held = [s.states for s, n in zip(group, counts, strict=True) if n]
            posteriors, states = model.stepper.run(windows, [np.stack(st) for st in zip(*held, strict=True)])
        elif gate_step is not None:  # it has already turned windows away
            posteriors = model.predict_full(windows)
        else:
            posteriors, gate_scores = model.predict_gated(windows)
        scored += len(posteriors)
        for i, dets in zip(pending, accept_batch(group, counts, posteriors, states, gate_scores), strict=True):
            out[i] += dets
        pending = [i for i in pending if spotters[i].has_due]
    return out, scored
