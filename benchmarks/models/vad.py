"""Silero VAD from silero-vad 6.2.3: silero_vad_openvino_16k.onnx (one LSTM, state in/out, fixed [1, 576]).

Audio (16 kHz): seeded sentences spoken by espeak-ng (voice, speed and pitch varied) when the
``espeak-ng`` program is installed; otherwise a synthetic voiced signal (harmonic stack, f0 jittered
in 90-250 Hz, syllable-rate amplitude envelope).  Utterances alternate with near-silence and with
white/brown noise segments of known length, so every 512-sample frame has a speech/non-speech label.

Streaming protocol: state starts at zeros, context at zeros(64); frame k feeds concat(context, chunk)
and the model's own stateN of frame k-1.  Calibration samples are the (input, state) pairs the FLOAT
model sees while streaming the calibration audio (seed 0); evaluation audio uses another seed, and each
model (float or quantized) streams it with its own state.
Metrics: agreement of the p > 0.5 speech decision with float, frame accuracy vs the labels, SQNR of p.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import tempfile
import wave
from functools import cache
from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.common import BenchModel, Feeds, RunFn

SR, CHUNK, CONTEXT = 16000, 512, 64
EVAL_SEED = 777
WORDS = (
    "hello world please open the window today we measure how fast the small model runs on a quiet "
    "morning seven green boxes arrive later than expected thank you for calling our office"
).split()


def model_path() -> Path:
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("silero-vad is not installed: see benchmarks/requirements.txt")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad_openvino_16k.onnx"


def _espeak(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "s.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(out), text],
            check=True,
            capture_output=True,
        )
        with wave.open(str(out)) as w:
            sr = w.getframerate()
            x = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768.0
    t = np.arange(0.0, len(x) / sr, 1.0 / SR)
    return np.interp(t, np.arange(len(x)) / sr, x).astype(np.float32)


def _synthetic_voice(rng: np.random.Generator, seconds: float) -> np.ndarray:
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = rng.uniform(90, 250) * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = np.clip(np.sin(2 * np.pi * rng.uniform(3, 6) * t), 0, None) ** 0.5
    return (0.3 * voiced * env / np.abs(voiced).max()).astype(np.float32)


def _speech(rng: np.random.Generator) -> np.ndarray:
    if shutil.which("espeak-ng"):
        text = " ".join(str(w) for w in rng.choice(WORDS, size=int(rng.integers(4, 10))))
        voice = str(rng.choice(["en", "en-us", "en-gb-scotland", "en+f3", "en+m3"]))
        x = _espeak(text, voice, int(rng.integers(120, 190)), int(rng.integers(30, 70)))
        return x * rng.uniform(0.4, 1.0)
    return _synthetic_voice(rng, rng.uniform(1.0, 3.0))


@cache
def audio(seed: int, segments: int) -> tuple[np.ndarray, np.ndarray]:
    """(audio, per-sample speech label): near-silence / noise / speech segments in seeded order."""
    rng = np.random.default_rng(seed)
    parts, labels = [], []
    for _ in range(segments):
        kind = rng.choice(["silence", "noise", "speech", "speech"])
        if kind == "speech":
            x = _speech(rng)
        else:
            n = int(rng.uniform(0.5, 1.5) * SR)
            x = rng.normal(0, 0.003 if kind == "silence" else rng.uniform(0.01, 0.08), n).astype(np.float32)
            if kind == "noise" and rng.random() < 0.5:  # brown noise
                x = np.cumsum(x).astype(np.float32)
                x = (x - x.mean()) / (np.abs(x).max() + 1e-9) * 0.1
        parts.append(x.astype(np.float32))
        labels.append(np.full(len(x), kind == "speech"))
    return np.concatenate(parts), np.concatenate(labels)


def frames(x: np.ndarray) -> np.ndarray:
    """[F, 576]: each 512-sample chunk with the 64 samples before it (zeros at the start)."""
    n = len(x) // CHUNK
    padded = np.concatenate([np.zeros(CONTEXT, np.float32), x[: n * CHUNK]])
    return np.stack([padded[i * CHUNK : i * CHUNK + CHUNK + CONTEXT] for i in range(n)]).astype(np.float32)


def stream(run: RunFn, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Speech probability per frame and the state fed at each frame."""
    state = np.zeros((2, 1, 128), np.float32)
    probs, states = [], []
    for frame in frames(x):
        states.append(state)
        out = run({"input": frame[None], "state": state})
        probs.append(float(out["output"].reshape(-1)[0]))
        state = out["stateN"]
    return np.array(probs, np.float32), np.stack(states)


def _float_run() -> RunFn:
    sess = ort.InferenceSession(str(model_path()), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return lambda feeds: dict(zip(names, sess.run(None, feeds), strict=True))


def _calib(n: int, seed: int) -> Feeds:
    segments = 8
    while True:
        x, _ = audio(seed, segments)
        if len(x) // CHUNK >= n:
            break
        segments *= 2
    fr = frames(x)[:n]
    _, states = stream(_float_run(), x[: n * CHUNK])
    return {"input": fr[:, None, :], "state": states}  # one frame per sample, fed unbatched


@cache
def _eval_audio() -> tuple[np.ndarray, np.ndarray]:
    x, lab = audio(EVAL_SEED, 16)
    n = len(x) // CHUNK
    frame_lab = lab[: n * CHUNK].reshape(n, CHUNK).mean(1) > 0.5
    return x, frame_lab


def _predict(run: RunFn) -> dict[str, np.ndarray]:
    probs, _ = stream(run, _eval_audio()[0])
    return {"p_speech": probs}


def _metrics(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, float]:
    _, lab = _eval_audio()
    dr, dg = ref["p_speech"] > 0.5, got["p_speech"] > 0.5
    return {
        "frame_agree": float((dr == dg).mean()),
        "accuracy": float((dg == lab).mean()),
        "float_accuracy": float((dr == lab).mean()),
        "max_abs_dp": float(np.abs(ref["p_speech"] - got["p_speech"]).max()),
    }


def make(name: str) -> BenchModel:
    return BenchModel(
        name=name,
        title="Silero VAD openvino_16k (silero-vad 6.2.3)",
        path=model_path(),
        source="silero-vad==6.2.3",
        make_calib=_calib,
        predict=_predict,
        metrics=_metrics,
        latency_feed=lambda: {
            "input": frames(_eval_audio()[0])[10][None],
            "state": np.zeros((2, 1, 128), np.float32),
        },
        calib_batch=1,
        unbatched=True,
        conv_net=False,
        notes=[
            "speech from espeak-ng" if shutil.which("espeak-ng") else "synthetic voiced audio (no espeak-ng)"
        ],
    )
