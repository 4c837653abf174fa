"""An exported LoPRo model in plain onnxruntime (Python): its logits against the engine's (bench/dump_logits.ts),
whole windows with an empty cache and a prefill + token-by-token decode through present -> past_key_values.

    python3 bench/device/onnx_check.py EXPORT_DIR DUMP_DIR [EXPORT_DIR ...]
"""
import json
import sys

import numpy as np
import onnxruntime as ort


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def run(sess, ids, past, pos0):
    B, T = ids.shape
    feeds = {
        "input_ids": ids,
        "attention_mask": np.ones((B, pos0 + T), np.int64),
        "position_ids": np.tile(np.arange(pos0, pos0 + T, dtype=np.int64), (B, 1)),
        **past,
    }
    outs = sess.run(None, feeds)
    names = [o.name for o in sess.get_outputs()]
    res = dict(zip(names, outs))
    return res["logits"], {n.replace("present.", "past_key_values."): v for n, v in res.items() if n.startswith("present.")}


def main():
    dump = sys.argv[-1]
    meta = json.load(open(f"{dump}/meta.json"))
    W, T, V = meta["windows"], meta["ctx"], meta["vocab"]
    ids = np.fromfile(f"{dump}/ids.bin", np.int64).reshape(W, T)
    ref = np.fromfile(f"{dump}/logits.bin", np.float32).reshape(W, T, V)
    print(f"onnxruntime {ort.__version__}, providers {ort.get_available_providers()}")
    for d in sys.argv[1:-1]:
        sess = ort.InferenceSession(f"{d}/model.onnx", providers=["CPUExecutionProvider"])
        empty = {
            i.name: np.zeros((W, meta["kvHeads"], 0, meta["headDim"]), np.float32) for i in sess.get_inputs() if i.name.startswith("past_key_values.")
        }
        whole, _ = run(sess, ids, empty, 0)
        # One window as a prefill of 64 tokens, then 16 tokens one at a time with the cache.
        past = {k: v[:1] for k, v in empty.items()}
        rows, (lg, past) = [], run(sess, ids[:1, :64], past, 0)
        rows.append(lg[0])
        for t in range(64, 80):
            lg, past = run(sess, ids[:1, t : t + 1], past, t)
            rows.append(lg[0])
        cached = np.concatenate(rows, 0)
        print(
            f"{d}: whole windows vs engine: max|Δ|/max|ref| = {rel(whole, ref):.3e}; "
            f"argmax agreement {float((whole.argmax(-1) == ref.argmax(-1)).mean()):.4f}; "
            f"prefill 64 + 16 cached decode steps vs engine: {rel(cached, ref[0, :80]):.3e}; "
            f"vs its own whole window: {rel(cached, whole[0, :80]):.3e}"
        )


main()
