"""Speed and memory of LOANet inference against the TV baseline (issue 6 item 5; a script, not a test).

  PYTHONPATH=. TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/bench_scaling.py --repeats 3

Sections (``--sections a,b,c``):
  a. time per 160x180 slice, T = 11: LOANet (safeguard on / off; tf.function graph and
     ``reconstruct(jit_compile=True)``) against ``tv_reconstruct`` (100 Chambolle-Pock iterations)
     of the same slice, all in this run with interleaved repeats;
  b. how inference time grows with phases (1, 3, 6, 11), batch (1, 4, 8) and image size
     (80x90, 160x180, 240x240), plus a forward+backward training step at a few points;
  c. peak memory: process RSS (``resource.getrusage(...).ru_maxrss``) of a fresh subprocess per
     configuration, inference at T = 11, batch 8, 160x180 (and a process that only builds the model).
     Linux keeps ru_maxrss across fork/exec (a child reports at least its parent's peak), so the
     section runs first, while the parent is small, and VmHWM of /proc/self/status (reset at exec)
     is reported next to it.

Random Glorot weights (speed does not depend on training), a smooth synthetic image and a 30%
random mask. Prints JSON; ``--output`` writes it atomically (temp file + rename).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from loa_meta.evaluation.classical import tv_reconstruct  # noqa: E402
from loa_meta.models import LOANet  # noqa: E402
from benchmarks._timing import median_times, sync  # noqa: E402

flags.DEFINE_integer("repeats", 3, "timed runs per measurement (median reported)")
flags.DEFINE_list("sections", ["a", "b", "c"], "which sections to run")
flags.DEFINE_float("tv_lam", 1e-3, "TV weight of the classical baseline")
flags.DEFINE_string("output", None, "optional JSON output file")
flags.DEFINE_string("child", None, "internal: 'T,B,H,W,safeguard,jit,build_only' -> print peak RSS")
FLAGS = flags.FLAGS


def _data(batch, h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.exp(-(((yy - h / 2) / (0.3 * h)) ** 2 + ((xx - w / 2) / (0.33 * w)) ** 2)) + 0.05 * rng.random((batch, h, w))
    img = img / img.max(axis=(1, 2), keepdims=True)
    mask = (rng.random((h, w)) < 0.3).astype(np.float32)
    mask[h // 2 - 4 : h // 2 + 4, w // 2 - 4 : w // 2 + 4] = 1.0
    k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(img, axes=(1, 2)), norm="ortho"), axes=(1, 2)) * mask
    masks = np.broadcast_to(mask, (batch, h, w)).copy()
    return tf.constant(k.astype(np.complex64)), tf.constant(masks), tf.constant(img.astype(np.complex64))


def _model(T, safeguard=True):
    tf.keras.utils.set_random_seed(0)
    return LOANet(num_phases=T, safeguard=safeguard)


def _infer_fn(model, y, m):
    fwd = tf.function(lambda d: model(d))
    feed = {"kspace": y, "mask": m, "task_id": tf.zeros([y.shape[0]], tf.int32)}
    return lambda: fwd(feed)


def _train_fn(model, y, m, x):
    feed = {"kspace": y, "mask": m, "task_id": tf.zeros([y.shape[0]], tf.int32)}
    params = model.trainable_variables

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = 0.5 * tf.reduce_sum(tf.abs(model(feed, training=True) - x) ** 2)
        return loss, tape.gradient(loss, params)

    return step


def section_a(r):
    y, m, _ = _data(1, 160, 180)
    fns = {}
    for sg in (True, False):
        model = _model(11, sg)
        fns[f"loanet_T11_safeguard={sg}_graph"] = _infer_fn(model, y, m)
        fns[f"loanet_T11_safeguard={sg}_reconstruct"] = lambda model=model: model.reconstruct(y, m)
        fns[f"loanet_T11_safeguard={sg}_reconstruct_jit"] = (
            lambda model=model: model.reconstruct(y, m, jit_compile=True)
        )
    lam = FLAGS.tv_lam
    fns["tv_100_iterations"] = lambda: tv_reconstruct(y, m[0], lam, 100)
    res = median_times(fns, r)
    tv = res["tv_100_iterations"]
    res.update({f"ratio_{k}_over_tv": v / tv for k, v in list(res.items()) if k.startswith("loanet")})
    return res


def section_b(r):
    res = {}
    y, m, _ = _data(1, 160, 180)
    res.update(median_times({f"infer_T{T}_B1_160x180": _infer_fn(_model(T), y, m) for T in (1, 3, 6, 11)}, r))
    fns = {}
    for b in (1, 4, 8):
        yb, mb, _ = _data(b, 160, 180)
        fns[f"infer_T11_B{b}_160x180"] = _infer_fn(_model(11), yb, mb)
    res.update(median_times(fns, r))
    fns = {}
    for h, w in ((80, 90), (160, 180), (240, 240)):
        yb, mb, _ = _data(1, h, w)
        fns[f"infer_T11_B1_{h}x{w}"] = _infer_fn(_model(11), yb, mb)
    res.update(median_times(fns, r))
    fns = {}
    for T, b in ((3, 1), (3, 4), (11, 1)):
        yb, mb, xb = _data(b, 160, 180)
        fns[f"train_fwd_bwd_T{T}_B{b}_160x180"] = _train_fn(_model(T), yb, mb, xb)
    res.update(median_times(fns, r))
    return res


def _child(spec):
    T, B, H, W, sg, jit, build_only = spec.split(",")
    T, B, H, W = int(T), int(B), int(H), int(W)
    model = _model(T, sg == "1")
    y, m, _ = _data(B, H, W)
    t0 = time.perf_counter()
    if build_only != "1":
        if jit == "1":
            sync(model.reconstruct(y, m, jit_compile=True))
        else:
            sync(_infer_fn(model, y, m)())
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    print(json.dumps({"ru_maxrss_mb": peak_kb / 1024.0, "vm_hwm_mb": _vm_hwm_mb(), "seconds": time.perf_counter() - t0}))


def _vm_hwm_mb():
    """Peak RSS of this process image from /proc/self/status (VmHWM), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def section_c():
    res = {}
    configs = {
        "rss_build_model_only_T11": "11,8,160,180,1,0,1",
        "rss_infer_T11_B8_160x180_safeguard=True": "11,8,160,180,1,0,0",
        "rss_infer_T11_B8_160x180_safeguard=False": "11,8,160,180,0,0,0",
        "rss_infer_T11_B8_160x180_safeguard=True_reconstruct_jit": "11,8,160,180,1,1,0",
    }
    for name, spec in configs.items():
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), f"--child={spec}"],
            capture_output=True, text=True, check=True,
        )
        res[name] = json.loads(out.stdout.strip().splitlines()[-1])
    return res


def main(_):
    if FLAGS.child:
        _child(FLAGS.child)
        return
    results = {"load_average_start": os.getloadavg()}
    if "c" in FLAGS.sections:  # first: children inherit the parent's ru_maxrss
        results["c"] = section_c()
        print(json.dumps(results, indent=1), flush=True)
    if "a" in FLAGS.sections:
        results["a"] = section_a(FLAGS.repeats)
        print(json.dumps(results, indent=1), flush=True)
    if "b" in FLAGS.sections:
        results["b"] = section_b(FLAGS.repeats)
        print(json.dumps(results, indent=1), flush=True)
    results["load_average_end"] = os.getloadavg()
    text = json.dumps(results, indent=1)
    print(text, flush=True)
    if FLAGS.output:
        out_dir = os.path.dirname(os.path.abspath(FLAGS.output))
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".bench_tmp_")
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, FLAGS.output)


if __name__ == "__main__":
    app.run(main)
