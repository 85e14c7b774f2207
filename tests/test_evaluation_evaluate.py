"""evaluate_model: per-slice metrics agree with an independent NumPy computation; task ids, sigma(omega)."""

import numpy as np
import pytest
import tensorflow as tf

from loa_meta import metrics
from loa_meta.evaluation import evaluate as ev
from loa_meta.sampling import make_mask


def _images(rng, n=5, h=12, w=14):
    x = np.zeros((n, h, w), np.float32)
    for i in range(n):
        x[i, 2 + i % 3 : 9, 3:11] = 0.5 + 0.1 * i
    return x + 0.05 * rng.random((n, h, w)).astype(np.float32)


def _numpy_zero_filled(x, mask):
    k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k * mask, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def test_zero_filled_matches_numpy(rng):
    x = _images(rng)
    masks = {"radial:0.3": make_mask("radial", x.shape[1:], 0.3, seed=1),
             "cartesian:0.4": make_mask("cartesian", x.shape[1:], 0.4, seed=2)}
    res = ev.evaluate_zero_filled(x, masks, batch_size=2, keep=(0, 4))
    assert list(res) == list(masks)
    for name, m in masks.items():
        zf = np.abs(_numpy_zero_filled(x, m))
        np.testing.assert_allclose(res[name]["psnr"], metrics.psnr(zf, x), rtol=1e-4)
        np.testing.assert_allclose(res[name]["ssim"], metrics.ssim(zf, x), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(res[name]["nmse"], metrics.nmse(zf, x), rtol=1e-3)
        assert res[name]["psnr"].shape == (5,)
        np.testing.assert_allclose(res[name]["examples"][4], zf[4], atol=1e-5)
        assert res[name]["sigma_omega"] is None
    # more samples -> better zero filling, on every slice (a property that can fail)
    more = ev.evaluate_zero_filled(x, {str(r): make_mask("radial", x.shape[1:], r, seed=1) for r in (0.2, 0.5)})
    assert np.all(more["0.5"]["psnr"] > more["0.2"]["psnr"] + 1.0) and np.all(more["0.5"]["nmse"] < more["0.2"]["nmse"])


def test_task_ids_and_batches(rng):
    x = _images(rng, n=5)
    masks = [make_mask("radial", x.shape[1:], r, seed=0) for r in (0.2, 0.5)]
    seen = []

    def fn(kspace, mask, task_id):
        seen.append((int(kspace.shape[0]), task_id.numpy().tolist(), float(tf.reduce_mean(mask))))
        return tf.cast(tf.constant(x[: kspace.shape[0]]), tf.complex64)

    res = ev.evaluate_model(fn, x, masks, task_ids=[3, 7], batch_size=2)
    assert [s[0] for s in seen] == [2, 2, 1, 2, 2, 1]
    assert [s[1][0] for s in seen] == [3, 3, 3, 7, 7, 7]
    assert seen[0][2] == pytest.approx(masks[0].mean()) and seen[3][2] == pytest.approx(masks[1].mean())
    assert res["task0"]["task_id"] == 3 and res["task1"]["task_id"] == 7
    # fn returns x[:b] for every batch: slices 0-1 exact (inf PSNR), later ones not
    assert np.isinf(res["task0"]["psnr"][0]) and np.isfinite(res["task0"]["psnr"][2])


def test_bad_arguments(rng):
    x = _images(rng)
    with pytest.raises(ValueError, match="shape"):
        ev.evaluate_zero_filled(x, {"t": np.ones((5, 5))})
    with pytest.raises(ValueError, match="task_ids"):
        ev.evaluate_model(ev.zero_filled_fn, x, [np.ones((12, 14))], task_ids=[0, 1])
    with pytest.raises(ValueError, match="images"):
        ev.evaluate_zero_filled(x[0], {"t": np.ones((12, 14))})
    with pytest.raises(ValueError, match="batch_size"):
        ev.evaluate_zero_filled(x, {"t": np.ones((12, 14))}, batch_size=0)


def _tiny_loanet(num_tasks=2, num_phases=2):
    from loa_meta.models import LOANet

    keras_seed = 3
    tf.keras.utils.set_random_seed(keras_seed)
    return LOANet(num_phases=num_phases, num_tasks=num_tasks)


@pytest.mark.slow
def test_loanet_sigma_omega_and_convergence(rng):
    x = _images(rng, n=3)
    model = _tiny_loanet()
    model.omegas[0].assign(2.0)
    model.omegas[1].assign(-1.0)
    masks = {"radial:0.2": make_mask("radial", x.shape[1:], 0.2, seed=0),
             "radial:0.4": make_mask("radial", x.shape[1:], 0.4, seed=0)}
    res = ev.evaluate_model(ev.model_reconstruct_fn(model), x, masks, batch_size=3, model=model)
    assert res["radial:0.2"]["sigma_omega"] == pytest.approx(1 / (1 + np.exp(-2.0)), rel=1e-6)
    assert res["radial:0.4"]["sigma_omega"] == pytest.approx(1 / (1 + np.exp(1.0)), rel=1e-6)
    curves = ev.convergence_curves(model, x, masks["radial:0.4"], 1)
    assert curves["phi"].shape == (2,) and curves["psnr"].shape == (2,)
    assert np.all(np.isfinite(curves["phi"])) and np.all(np.isfinite(curves["psnr"]))
    # the last point of the PSNR curve is the model's output PSNR computed by evaluate_model
    assert curves["psnr"][-1] == pytest.approx(res["radial:0.4"]["psnr"].mean(), rel=1e-4)


def test_evaluate_tv_chooses_lambda_on_val_only(rng):
    from loa_meta.evaluation import classical

    val = _images(rng, n=4)
    test = _images(rng, n=3)
    masks = {"radial:0.3": make_mask("radial", val.shape[1:], 0.3, seed=1)}
    grid = (1e-4, 1e-2, 1.0)
    res, lams = ev.evaluate_tv(test, masks, val, grid=grid, num_iters=15, batch_size=2)
    best, scores = classical.tune_lambda(val, masks["radial:0.3"], grid, 15)
    assert lams == {"radial:0.3": best} and scores[best] == max(scores.values())
    # the rows are exactly TV with that lambda on the test images
    ref = ev.evaluate_model(classical.tv_reconstruct_fn(best, 15), test, masks, batch_size=2)
    np.testing.assert_allclose(res["radial:0.3"]["psnr"], ref["radial:0.3"]["psnr"], rtol=1e-6)
    # the test images do not influence the choice: a different test set gives the same lambda
    _, lams2 = ev.evaluate_tv(test[::-1] * 0.5, masks, val, grid=grid, num_iters=15, batch_size=2)
    assert lams2 == lams
    # a huge lambda flattens the image: it must lose on val against the small ones
    assert scores[1.0] < max(scores[1e-4], scores[1e-2])
    with pytest.raises(ValueError, match="val_images"):
        ev.evaluate_tv(test, masks, val[0], grid=grid, num_iters=15)
