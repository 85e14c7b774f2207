"""tf.data pipelines: Eq. 1 k-space, single-task and cross-task batches, determinism, checkpoints."""

import os

import numpy as np
import pytest
import tensorflow as tf

from loa_meta.data.pipeline import cross_task_dataset, simulate_kspace, task_dataset
from loa_meta.physics import SingleCoilOperator, add_kspace_noise

H, W = 12, 14


@pytest.fixture
def images(rng):
    return rng.random((6, H, W)).astype(np.float32)


@pytest.fixture
def mask(rng):
    return rng.random((H, W)) < 0.4


def _index_of(targets, images):
    """Row index in ``images`` of every target (exact match), or -1."""
    t = np.asarray(targets).real.reshape(len(targets), -1)
    im = images.reshape(len(images), -1)
    eq = np.all(t[:, None, :] == im[None, :, :], axis=2)
    return np.where(eq.any(1), eq.argmax(1), -1)


def test_simulate_kspace_is_eq1(images, mask):
    y = simulate_kspace(images, mask)
    x = tf.complex(images, tf.zeros_like(images))
    np.testing.assert_array_equal(y.numpy(), SingleCoilOperator(mask.astype(np.float32)).forward(x).numpy())
    assert y.dtype == tf.complex64
    assert np.all(y.numpy()[:, ~mask] == 0)
    yn = simulate_kspace(images, mask, noise_sigma=0.05, seed=7)
    ref = add_kspace_noise(y, mask.astype(np.float32), sigma=0.05, seed=7)
    np.testing.assert_allclose(yn.numpy(), ref.numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="noise_sigma"):
        simulate_kspace(images, mask, noise_sigma=-1.0)


def test_task_dataset_batches_match_operator(images, mask):
    ds = task_dataset(images, mask, task_id=3, batch_size=2, seed=0)
    seen = []
    for b in ds.take(6):  # two epochs of 3 batches
        assert b["kspace"].dtype == tf.complex64 and b["target"].dtype == tf.complex64
        assert b["mask"].dtype == tf.float32 and b["task_id"].dtype == tf.int32
        assert b["kspace"].shape == (2, H, W) and b["mask"].shape == (2, H, W)
        np.testing.assert_array_equal(b["task_id"].numpy(), [3, 3])
        np.testing.assert_array_equal(b["mask"].numpy(), np.broadcast_to(mask, (2, H, W)))
        op = SingleCoilOperator(b["mask"])
        np.testing.assert_allclose(b["kspace"].numpy(), op.forward(b["target"]).numpy(), atol=1e-6)
        assert np.all(b["target"].numpy().imag == 0)
        seen += list(_index_of(b["target"].numpy(), images))
    # Each epoch is a permutation of the images; the two epochs are shuffled differently.
    assert sorted(seen[:6]) == list(range(6)) and sorted(seen[6:]) == list(range(6))
    assert seen[:6] != seen[6:]


def test_evaluation_mode_keeps_order_and_remainder(images, mask):
    ds = task_dataset(images, mask, 0, batch_size=4, shuffle=False, repeat=False, drop_remainder=False)
    sizes, order = [], []
    for b in ds:
        sizes.append(int(b["kspace"].shape[0]))
        order += list(_index_of(b["target"].numpy(), images))
    assert sizes == [4, 2] and order == list(range(6))
    with pytest.raises(ValueError, match="batch_size"):
        task_dataset(images, mask, 0, batch_size=7, shuffle=False, repeat=False, drop_remainder=True)


def test_determinism_with_seed(images, mask):
    def seq(seed):
        ds = task_dataset(images, mask, 0, batch_size=3, seed=seed, noise_sigma=0.01)
        return [b["kspace"].numpy() for b in ds.take(4)]

    a, b, c = seq(5), seq(5), seq(6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_order_depends_on_seed_only_and_epochs_are_permutations(images, mask):
    """The sample order must not depend on TF's global seed (a stage run after another stage in the
    same process must see the same batches as in a fresh process) and each epoch is a permutation."""
    n = len(images)

    def order(seed):
        ds = task_dataset(images, mask, 0, batch_size=1, seed=seed)
        return [int(_index_of(b["target"].numpy(), images)[0]) for b in ds.take(3 * n)]

    first = order(3)
    tf.random.set_seed(1234)
    assert order(3) == first
    tf.random.set_seed(99)
    assert order(3) == first
    for e in range(3):
        assert sorted(first[e * n:(e + 1) * n]) == list(range(n))
    assert first[:n] != first[n:2 * n]  # reshuffled every epoch
    assert order(4) != first


def test_noise_statistics(rng, mask):
    imgs = rng.random((64, H, W)).astype(np.float32)
    sigma = 0.1
    ds = task_dataset(imgs, mask, 0, batch_size=64, shuffle=False, repeat=True, noise_sigma=sigma)
    it = iter(ds)
    b1, b2 = next(it), next(it)
    n1 = (b1["kspace"] - SingleCoilOperator(b1["mask"]).forward(b1["target"])).numpy()
    n2 = (b2["kspace"] - SingleCoilOperator(b2["mask"]).forward(b2["target"])).numpy()
    assert np.all(n1[:, ~mask] == 0)
    s = n1[:, mask]
    np.testing.assert_allclose([s.real.std(), s.imag.std()], [sigma, sigma], rtol=0.1)
    assert abs(np.corrcoef(n1[:, mask].real.ravel(), n2[:, mask].real.ravel())[0, 1]) < 0.1  # fresh noise per batch


def test_pipeline_noise_is_add_kspace_noise(images, mask):
    """One noise model: batch k of the pipeline is add_kspace_noise(P F x, seed=seed * 2**32 + k)."""
    sigma, seed = 0.05, 9
    ds = task_dataset(images, mask, 0, batch_size=3, seed=seed, shuffle=False, noise_sigma=sigma)
    for k, batch in enumerate(ds.take(2)):
        clean = SingleCoilOperator(batch["mask"]).forward(batch["target"])
        ref = add_kspace_noise(clean, batch["mask"], sigma=sigma, seed=tf.constant(seed * 2**32 + k, tf.int64))
        np.testing.assert_allclose(batch["kspace"].numpy(), ref.numpy(), atol=1e-6)
        assert np.abs(batch["kspace"].numpy() - clean.numpy()).max() > 0.01  # noise really present
    ct = cross_task_dataset([images, images], [mask, ~mask], per_task_batch=2, seed=seed, shuffle=False,
                            noise_sigma=sigma)
    batch = next(iter(ct))
    clean = SingleCoilOperator(batch["mask"]).forward(batch["target"])
    ref = add_kspace_noise(clean, batch["mask"], sigma=sigma, seed=tf.constant(seed * 2**32, tf.int64))
    np.testing.assert_allclose(batch["kspace"].numpy(), ref.numpy(), atol=1e-6)


def test_cross_task_batches(rng):
    sets = [rng.random((4, H, W)).astype(np.float32) + 2 * i for i in range(3)]  # disjoint value ranges
    masks = [rng.random((H, W)) < r for r in (0.2, 0.4, 0.6)]
    j = 2
    ds = cross_task_dataset(sets, masks, per_task_batch=j, seed=1, task_ids=[5, 6, 7])
    per_task = [[] for _ in sets]
    for b in ds.take(4):  # two epochs of each task's 4 images
        assert b["kspace"].shape == (3 * j, H, W)
        tid = b["task_id"].numpy()
        np.testing.assert_array_equal(tid, [5, 5, 6, 6, 7, 7])
        for i in range(3):
            rows = slice(i * j, (i + 1) * j)
            np.testing.assert_array_equal(b["mask"].numpy()[rows], np.broadcast_to(masks[i], (j, H, W)))
            idx = _index_of(b["target"].numpy()[rows], sets[i])
            assert np.all(idx >= 0)
            per_task[i] += list(idx)
        np.testing.assert_allclose(
            b["kspace"].numpy(), SingleCoilOperator(b["mask"]).forward(b["target"]).numpy(), atol=1e-6
        )
    for i in range(3):
        assert sorted(per_task[i][:4]) == [0, 1, 2, 3] and sorted(per_task[i][4:]) == [0, 1, 2, 3]
    # Same image array shared by all tasks, default ids.
    ds = cross_task_dataset([sets[0]] * 2, masks[:2], per_task_batch=3, seed=0)
    b = next(iter(ds))
    np.testing.assert_array_equal(b["task_id"].numpy(), [0, 0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match="one mask per task"):
        cross_task_dataset(sets, masks[:2], 2)
    with pytest.raises(ValueError, match=r"masks\[1\]"):
        cross_task_dataset(sets[:2], [masks[0], masks[1][:, :5]], 2)


@pytest.mark.parametrize("kind", ["task", "cross"])
def test_iterator_checkpoint_resumes_exact_sequence(kind, rng, mask, tmp_path):
    imgs = rng.random((64, 32, 32)).astype(np.float32)  # 256 KB of images
    m = rng.random((32, 32)) < 0.3
    if kind == "task":
        ds = task_dataset(imgs, m, 0, batch_size=5, seed=2, noise_sigma=0.01)
    else:
        ds = cross_task_dataset([imgs, imgs[:20]], [m, ~m], per_task_batch=3, seed=2, noise_sigma=0.01)
    it = iter(ds)
    for _ in range(7):
        next(it)
    ckpt = tf.train.Checkpoint(iterator=it)
    path = ckpt.save(str(tmp_path / "ck"))
    after = [next(it)["kspace"].numpy() for _ in range(15)]
    ckpt.restore(path)
    again = [next(it)["kspace"].numpy() for _ in range(15)]
    assert all(np.array_equal(a, b) for a, b in zip(after, again))
    # A fresh iterator restored from the checkpoint resumes too.
    it2 = iter(ds)
    tf.train.Checkpoint(iterator=it2).restore(path)
    np.testing.assert_array_equal(next(it2)["kspace"].numpy(), after[0])
    size = sum(os.path.getsize(tmp_path / f) for f in os.listdir(tmp_path) if f.startswith("ck"))
    assert size < 64 * 1024, size  # indices only, not the 256 KB of images


def test_input_validation(images, mask):
    with pytest.raises(ValueError, match=r"`mask` must have shape \(12, 14\)"):
        task_dataset(images, mask[:, :3], 0, 2)
    with pytest.raises(ValueError, match="`mask` must be binary"):
        task_dataset(images, mask * 0.5, 0, 2)
    with pytest.raises(ValueError, match=r"`images` must have shape \(N, H, W\)"):
        task_dataset(images[0], mask, 0, 2)
    bad = images.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        task_dataset(bad, mask, 0, 2)


def test_bad_arguments_name_the_argument(images, mask):
    with pytest.raises(ValueError, match="`images`.*NaN"):
        simulate_kspace(np.where(images > 0.5, np.nan, images), mask)
    with pytest.raises(ValueError, match="`mask`.*shape"):
        simulate_kspace(images, mask[:5])
    with pytest.raises(ValueError, match="`mask`.*binary"):
        simulate_kspace(images, mask * 0.5)
    with pytest.raises(ValueError, match="`images`"):
        simulate_kspace(np.full((2, H, W), "a"), mask)
    with pytest.raises(ValueError, match="`task_id`"):
        task_dataset(images, mask, "a", batch_size=2)
    with pytest.raises(ValueError, match=r"`task_ids\[1\]`"):
        cross_task_dataset([images, images], [mask, mask], per_task_batch=1, task_ids=[0, 1.5])
    # A (B, H, W) mask stack is accepted and matches the broadcast (H, W) mask.
    stack = np.broadcast_to(mask, images.shape)
    np.testing.assert_array_equal(simulate_kspace(images, stack).numpy(), simulate_kspace(images, mask).numpy())
