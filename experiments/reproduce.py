r"""The paper's whole protocol (Section 5) with presets: training, adaptation, Tables 1-5, Figs. 1-6.

Example::

  python -m experiments.reproduce --data_dir=data/demo_t1 --workdir=runs/reproduce_cpu --preset=cpu

Stages (each in its own sub-directory of ``--workdir``, skipped when its ``COMPLETE.json`` exists,
so re-running the same command resumes):

1. ``meta``                   meta-learning on the seen radial ratios (10/20/30/40 %);
2. ``meta_reduced``           the same on two thirds of the train/val data ("meta-learning*");
3. ``conv/<task>``            conventional learning per ratio: seen, unseen radial (15/25/35 %) and
                              Cartesian (10-40 %) ratios (Tables 1, 3, 5);
4. ``conv_reduced/<task>``    conventional on two thirds of the data ("conventional*");
5. ``ista/<task>``            ISTA-Net+ per seen ratio (Table 1);
6. ``adapt/<task>``           adaptation of the meta model's omega to each unseen task (Section 5.4);
7. ``evaluation``             Tables (Markdown + CSV), comparison figures, Fig. 6 convergence plot,
                              ``claims.json`` / ``summary.md`` comparing with the paper's claims; with
                              the preset's ``inference_iterations`` (cpu, quickstart) also the LOA rows
                              "(N on held-out)" and ``inference_iterations.json`` (beyond the paper).

All stages share the masks in ``<workdir>/masks`` (built once from ``--mask_seed``).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from absl import flags, logging

from experiments import cli, common, training_common as tc
from experiments.presets import Preset, get_preset
from experiments.protocol_eta import ProtocolProgress, StageWork, stair_plan

FLAGS = flags.FLAGS

ZF, META, META_R, CONV, CONV_R, ISTA, TV = ("Zero-filled", "Meta-learning", "Meta-learning*", "Conventional",
                                           "Conventional*", "ISTA-Net+", "TV")
# Beyond the paper (preset inference_iterations): the same LOA models run for the iteration count chosen per task
# on the held-out slices (loa_meta.evaluation.iterations).
META_N, CONV_N = "Meta-learning (N on held-out)", "Conventional (N on held-out)"
TV_TUNE_SLICES = 20  # val slices on which the TV weight of each task is chosen


class Stage:
    """A picklable stage: ``getattr(training_common, fn)(*before, stage_dir, *after, **kwargs)``.

    Picklable so that :meth:`StageRunner.run_all` can send it to a worker process.
    """

    def __init__(self, fn: str, before: Sequence = (), after: Sequence = (), **kwargs):
        self.fn, self.before, self.after, self.kwargs = fn, tuple(before), tuple(after), kwargs

    def __call__(self, stage_dir: str) -> dict:
        return getattr(tc, self.fn)(*self.before, stage_dir, *self.after, **self.kwargs)


def _execute(sub: str, stage: Callable[[str], dict], eta_hook=None) -> Tuple[dict, float]:
    """Run one stage in ``sub``, mark it complete; returns (info, seconds). Its progress lines show
    ``eta_hook``'s ETA (the whole protocol's) instead of the stage's own."""
    from loa_meta.training import progress

    t = time.time()
    progress.set_eta_hook(eta_hook)
    try:
        info = stage(sub)
    finally:
        progress.set_eta_hook(None)
    if not tc.is_complete(sub):
        tc.mark_complete(sub, info)
    return info, time.time() - t


def _run_in_worker(sub: str, stage: Callable[[str], dict], verbosity: int, eta_hook=None) -> Tuple[dict, float]:
    """Body of a worker process: :func:`_execute` after setting up logging (as the app's) and GPU memory growth."""
    cli.init_worker(verbosity)
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):  # several workers may share one GPU
        tf.config.experimental.set_memory_growth(gpu, True)
    return _execute(sub, stage, eta_hook)


class StageRunner:
    """Runs named stages in sub-directories, skipping complete ones; logs which stage is done.

    :meth:`run` runs one stage in this process; :meth:`run_all` runs independent stages, optionally
    in ``workers`` processes at once (each stage is self-contained: its own directory, seeds and
    ``COMPLETE.json`` marker, so the results do not depend on the number of workers).
    """

    def __init__(self, workdir: str, total: int, protocol: Optional[ProtocolProgress] = None):
        self.workdir, self.total, self.done, self.t0 = workdir, total, 0, time.time()
        self.protocol = protocol
        self.skipped: List[str] = []
        self.ran: List[str] = []

    def _skip(self, name: str, sub: str) -> Optional[dict]:
        if not tc.is_complete(sub):
            return None
        self.done += 1
        self.skipped.append(name)
        logging.info("[%d/%d] stage %s already complete: skipped", self.done, self.total, name)
        return tc.read_complete(sub)

    def _finished(self, name: str, dt: float) -> None:
        self.done += 1
        self.ran.append(name)
        eta = ""
        if self.protocol is not None:
            from loa_meta.training.progress import format_seconds  # imports TensorFlow

            eta = " | ETA %s (%s)" % (format_seconds(self.protocol.eta()), self.protocol.LABEL)
        logging.info("[%d/%d] stage %s done in %.0f s; elapsed %.0f s; %d more stage(s)%s",
                     self.done, self.total, name, dt, time.time() - self.t0, self.total - self.done, eta)

    def _hook(self, name: str):
        return None if self.protocol is None else self.protocol.hook(name)

    def run(self, name: str, fn: Callable[[str], dict]) -> dict:
        sub = os.path.join(self.workdir, name)
        info = self._skip(name, sub)
        if info is not None:
            return info
        logging.info("[%d/%d] stage %s ...", self.done + 1, self.total, name)
        info, dt = _execute(sub, fn, self._hook(name))
        self._finished(name, dt)
        return info

    def run_all(self, stages: Sequence[Tuple[str, Callable[[str], dict]]], workers: int = 1) -> Dict[str, dict]:
        """Run independent stages (in order with ``workers=1``; else in a pool of processes).

        With ``workers > 1`` the stages must be picklable (:class:`Stage`) and are started in
        the given order (put the longest first). The first failing stage's exception is re-raised
        after cancelling the stages not yet started; stages already complete stay complete.
        """
        if workers <= 1:
            return {name: self.run(name, fn) for name, fn in stages}
        out, todo = {}, []
        for name, fn in stages:
            sub = os.path.join(self.workdir, name)
            info = self._skip(name, sub)
            if info is None:
                todo.append((name, sub, fn))
            else:
                out[name] = info
        if not todo:
            return out
        n = min(int(workers), len(todo))
        logging.info("running %d stage(s) in %d worker processes: %s", len(todo), n, ", ".join(t[0] for t in todo))
        ex = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"))
        try:
            futures = {ex.submit(_run_in_worker, sub, fn, logging.get_verbosity(), self._hook(name)): name
                       for name, sub, fn in todo}
            for fut in as_completed(futures):
                info, dt = fut.result()
                out[futures[fut]] = info
                self._finished(futures[fut], dt)
        except BaseException:
            ex.shutdown(wait=True, cancel_futures=True)
            raise
        ex.shutdown(wait=True)
        return {name: out[name] for name, _ in stages}


def _parse(specs) -> List:
    from loa_meta.sampling import parse_task_spec

    return [parse_task_spec(s) for s in specs]


def _per_task_results(images, masks, model_paths: Dict[str, str], batch: int, keep, specs=None, sigma=False):
    """Evaluate one model file per task (conventional, ISTA-Net+ or adapted meta models); with
    ``specs`` (task name -> spec) each task's id is looked up in the model's task specs."""
    from loa_meta.evaluation.evaluate import evaluate_model, model_reconstruct_fn
    from loa_meta.sampling import model_task_ids

    out = {}
    for name, path in model_paths.items():
        model = common.load_model(path, flag="model")
        tid = 0 if specs is None else model_task_ids(model, [specs[name]])[0]
        out.update(evaluate_model(model_reconstruct_fn(model), images, {name: masks[name]}, task_ids=[tid],
                                  batch_size=batch, model=model if sigma else None, keep=keep))
    return out


def _at_chosen_counts(model, ids: Dict[str, int], masks, images, selection, grid, batch: int, keep
                      ) -> Tuple[dict, Dict[str, int], dict]:
    """One LOA model on the tasks ``ids`` (name -> task id), each run for the iteration count chosen on the
    ``selection`` slices (``select_iterations``): ``(results, {task: N}, {task: {N: scores}})``."""
    from loa_meta.evaluation.evaluate import evaluate_model, model_reconstruct_fn
    from loa_meta.evaluation.iterations import select_iterations

    chosen, scores = select_iterations(model, selection, {n: masks[n] for n in ids}, ids, grid)
    out = {}
    for name, tid in ids.items():
        out.update(evaluate_model(model_reconstruct_fn(model, num_iterations=chosen[name]), images,
                                  {name: masks[name]}, task_ids=[tid], batch_size=batch, keep=keep))
    return out, chosen, scores


def _per_task_results_n(images, masks, model_paths: Dict[str, str], batch: int, keep, selection, grid,
                        specs=None) -> Tuple[dict, Dict[str, int], dict]:
    """:func:`_at_chosen_counts` for one model file per task (as :func:`_per_task_results`)."""
    from loa_meta.sampling import model_task_ids

    out, chosen, scores = {}, {}, {}
    for name, path in model_paths.items():
        model = common.load_model(path, flag="model")
        tid = 0 if specs is None else model_task_ids(model, [specs[name]])[0]
        r, c, sc = _at_chosen_counts(model, {name: tid}, masks, images, selection, grid, batch, keep)
        out.update(r)
        chosen.update(c)
        scores.update(sc)
    return out, chosen, scores


def _strip(results):
    return {m: {t: {k: v for k, v in r.items() if k != "examples"} for t, r in pt.items()} for m, pt in results.items()}


def _mean(results, method, tasks) -> Optional[float]:
    vals = [float(np.mean(results[method][t]["psnr"])) for t in tasks if t in results.get(method, {})]
    return float(np.mean(vals)) if vals and len(vals) == len(tasks) else None


def claims(tables: Dict[str, dict], seen: Sequence[str], unseen: Sequence[str], cart: Sequence[str]) -> dict:
    """The paper's claims measured on this run (PSNR differences in dB; None when not run)."""
    out = {}
    t1 = tables.get("seen", {})

    def diff(res, a, b, tasks):
        ma, mb = _mean(res, a, tasks), _mean(res, b, tasks)
        return None if ma is None or mb is None else ma - mb

    def per_task_diff(res, a, b, tasks):
        if a not in res or b not in res:
            return None
        return {t: float(np.mean(res[a][t]["psnr"]) - np.mean(res[b][t]["psnr"])) for t in tasks
                if t in res[a] and t in res[b]}

    def slice_wins(res, a, b, tasks):
        """Per task: the fraction of test slices on which method a has the higher PSNR (paired)."""
        if a not in res or b not in res:
            return None
        return {t: float(np.mean(np.asarray(res[a][t]["psnr"]) > np.asarray(res[b][t]["psnr"]))) for t in tasks
                if t in res[a] and t in res[b]}

    out["meta_minus_conventional_seen_db"] = diff(t1, META, CONV, seen)  # paper: +1.54 (T1), +1.46 (T2)
    out["meta_minus_conventional_seen_per_task_db"] = per_task_diff(t1, META, CONV, seen)
    out["meta_minus_zero_filled_seen_per_task_db"] = per_task_diff(t1, META, ZF, seen)
    out["meta_above_zero_filled_seen_slice_fraction"] = slice_wins(t1, META, ZF, seen)
    out["meta_minus_tv_seen_per_task_db"] = per_task_diff(t1, META, TV, seen)
    out["meta_minus_tv_seen_db"] = diff(t1, META, TV, seen)
    out["conventional_minus_tv_seen_per_task_db"] = per_task_diff(t1, CONV, TV, seen)
    out["conventional_minus_ista_seen_db"] = diff(t1, CONV, ISTA, seen)  # paper: > 0 at every ratio
    out["conventional_minus_ista_per_task_db"] = per_task_diff(t1, CONV, ISTA, seen)
    out["meta_reduced_minus_conventional_reduced_db"] = diff(t1, META_R, CONV_R, seen)
    out["meta_reduced_minus_conventional_db"] = diff(t1, META_R, CONV, seen)
    if META in t1:
        sig = [t1[META][t].get("sigma_omega") for t in seen if t in t1[META]]
        out["sigma_omega_seen"] = dict(zip(seen, sig))
        s = [x for x in sig if x is not None]
        out["sigma_omega_decreasing_with_ratio"] = bool(len(s) == len(seen) and all(a >= b for a, b in zip(s, s[1:])))
    # beyond the paper: the rows at the iteration count chosen on held-out slices (None when not run)
    out["meta_n_minus_tv_seen_per_task_db"] = per_task_diff(t1, META_N, TV, seen)
    out["meta_n_minus_tv_seen_db"] = diff(t1, META_N, TV, seen)
    out["meta_n_minus_zero_filled_seen_per_task_db"] = per_task_diff(t1, META_N, ZF, seen)
    out["meta_n_minus_conventional_n_seen_db"] = diff(t1, META_N, CONV_N, seen)
    out["meta_n_minus_conventional_n_seen_per_task_db"] = per_task_diff(t1, META_N, CONV_N, seen)
    out["meta_n_minus_meta_seen_per_task_db"] = per_task_diff(t1, META_N, META, seen)
    for key, tasks in (("unseen", unseen), ("cartesian", cart)):
        res = tables.get(key, {})
        out[f"meta_n_minus_tv_{key}_per_task_db"] = per_task_diff(res, META_N, TV, tasks)
        out[f"meta_n_minus_conventional_n_{key}_db"] = diff(res, META_N, CONV_N, tasks)
        out[f"meta_minus_conventional_{key}_db"] = diff(res, META, CONV, tasks)
        out[f"meta_minus_conventional_{key}_per_task_db"] = per_task_diff(res, META, CONV, tasks)
        out[f"meta_minus_zero_filled_{key}_per_task_db"] = per_task_diff(res, META, ZF, tasks)
        out[f"meta_minus_tv_{key}_per_task_db"] = per_task_diff(res, META, TV, tasks)
    return out


def _meta_outer_iterations(preset: Preset, n_train: int) -> int:
    """Outer iterations of one meta-learning stage: until delta <= delta_tol at one decay per epoch
    (``Algorithm2Schedule.outer_iterations_to_tol``; run_meta passes no ``epochs`` here)."""
    decays = math.ceil(math.log(preset.delta_tol / preset.delta0) / math.log(preset.nu_delta) - 1e-12)
    return decays * math.ceil(n_train / preset.per_task_batch)


def protocol_work(data_dir: str, preset: Preset, seen, conv_tasks, new_tasks, reduced: bool, ista: bool
                  ) -> List[StageWork]:
    """The step budget of every training stage of :func:`run_protocol`, in its start order
    (group 0: the training stages, group 1: the adaptations); see :mod:`experiments.protocol_eta`."""
    sizes = {1.0: tc.split_data(data_dir, preset)}
    if reduced:
        sizes[preset.reduced_fraction] = tc.split_data(data_dir, preset, preset.reduced_fraction)
    p0, p1, stair = preset.initial_phases, preset.num_phases, preset.stairwise

    def meta(name, frac):
        n_tr = len(sizes[frac]["train"])
        outer = _meta_outer_iterations(preset, n_tr)
        spo = float(preset.theta_steps + 1)
        plan = stair_plan(outer * (p1 - p0 + 1 if stair else 1), p0, p1, stair, outer)
        if preset.meta_max_steps:  # a cap on optimizer steps: at the guessed steps per outer iteration
            plan = stair_plan(min(sum(n for n, _ in plan), int(preset.meta_max_steps / spo)), p0, p1, stair, outer)
        return StageWork(name, "meta", 0, plan, 2 * preset.per_task_batch * len(seen), spo)

    def conv(name, frac, model_type):
        n = len(sizes[frac]["pool"])
        total = tc.conventional_steps(preset, n, model_type)
        kind = "conventional" if model_type == "loa" else "ista"
        return StageWork(name, kind, 0, stair_plan(total, p0, p1, stair and model_type == "loa"),
                         min(preset.conv_batch, n))

    work = [meta("meta", 1.0)] + ([meta("meta_reduced", preset.reduced_fraction)] if reduced else [])
    work += [conv(f"conv/{t.name}", 1.0, "loa") for t in conv_tasks]
    if reduced:
        work += [conv(f"conv_reduced/{t.name}", preset.reduced_fraction, "loa") for t in seen]
    if ista:
        work += [conv(f"ista/{t.name}", 1.0, "ista_net_plus") for t in seen]
    n_train = len(tc.load_images(data_dir, "train"))
    n_img = min(preset.adapt_images, n_train) if preset.adapt_images else n_train
    batch = min(preset.adapt_batch, n_img)
    steps = tc.adapt_steps(preset, n_img, batch)
    work += [StageWork(f"adapt/{t.name}", "adapt", 1, ((steps, p1),), batch) for t in new_tasks]
    return work


def run_protocol(data_dir: str, workdir: str, preset: Preset, seed: int = 0, mask_seed: int = 0,
                 seen=None, unseen=None, cartesian=None, reduced: bool = True, ista: bool = True,
                 conventional_unseen: bool = True, figures: bool = True, title: str = "", workers: int = 1) -> dict:
    """Run the protocol; returns ``{"tables": paths, "claims": ..., "stages_run": [...], ...}``.

    ``workers > 1`` trains that many stages at once in separate processes (then the adaptations,
    then the evaluation); the numbers do not depend on it. Eager training of the small presets
    keeps about one core busy, so on a 2-core machine ``workers=2`` nearly halves the wall time
    of the training stages (docs/benchmarks_quality.md).
    """
    from loa_meta.evaluation.evaluate import evaluate_model, evaluate_tv, model_reconstruct_fn, zero_filled_fn
    from loa_meta.evaluation.tables import atomic_write_text, write_tables
    from loa_meta.sampling import model_task_ids

    seen = _parse(preset.seen_tasks if seen is None else seen)
    unseen = _parse(preset.unseen_tasks if unseen is None else unseen)
    cart = _parse(preset.cartesian_tasks if cartesian is None else cartesian)
    new_tasks = unseen + cart
    t_start = time.time()
    mask_dir = os.path.join(workdir, "masks")
    shape = tc.load_images(data_dir, "test", 1).shape[1:]
    tc.task_masks(seen + new_tasks, shape, mask_seed, mask_dir)

    conv_tasks = seen + (new_tasks if conventional_unseen else [])
    n_stages = (1 + int(reduced) + len(conv_tasks) + (len(seen) if reduced else 0) + (len(seen) if ista else 0)
                + len(new_tasks) + 1)
    runner = StageRunner(workdir, n_stages, ProtocolProgress(
        workdir, protocol_work(data_dir, preset, seen, conv_tasks, new_tasks, reduced, ista), workers))
    kw = dict(seed=seed, mask_seed=mask_seed, mask_dir=mask_dir)
    frac = dict(data_fraction=preset.reduced_fraction)
    training = [("meta", Stage("run_meta", (data_dir, seen), (preset,), **kw))]
    if reduced:
        training.append(("meta_reduced", Stage("run_meta", (data_dir, seen), (preset,), **frac, **kw)))
    training += [(f"conv/{t.name}", Stage("run_conventional", (data_dir, t), (preset, "loa"), **kw))
                 for t in conv_tasks]
    if reduced:
        training += [(f"conv_reduced/{t.name}", Stage("run_conventional", (data_dir, t), (preset, "loa"), **frac, **kw))
                     for t in seen]
    if ista:
        training += [(f"ista/{t.name}", Stage("run_conventional", (data_dir, t), (preset, "ista_net_plus"), **kw))
                     for t in seen]
    runner.run_all(training, workers)
    meta_model = os.path.join(workdir, "meta", tc.MODEL_FILE)
    runner.run_all([(f"adapt/{t.name}", Stage("run_adapt", (meta_model, data_dir, t), (preset,), **kw))
                    for t in new_tasks], workers)

    def evaluation(d):
        os.makedirs(d, exist_ok=True)
        test = tc.load_images(data_dir, "test", preset.max_test)
        masks = tc.task_masks(seen + new_tasks, test.shape[1:], mask_seed, mask_dir)
        keep, batch = (0,), 8
        tables: Dict[str, dict] = {}
        outputs: Dict[str, str] = {}
        names = [t.name for t in seen]
        zf = evaluate_model(zero_filled_fn, test, masks, batch_size=batch, keep=keep)
        # TV baseline: lambda chosen per task on the val split (never on test).
        val = tc.load_images(data_dir, "val", TV_TUNE_SLICES)
        tv, tv_lambdas = evaluate_tv(test, masks, val, num_iters=preset.tv_iters, batch_size=batch, keep=keep)
        # Tables 1 / 2: seen radial ratios.
        res = {ZF: {n: zf[n] for n in names}, TV: {n: tv[n] for n in names}}
        if ista:
            res[ISTA] = _per_task_results(test, masks, {n: os.path.join(workdir, "ista", n, tc.MODEL_FILE)
                                                        for n in names}, batch, keep)
        if reduced:
            res[CONV_R] = _per_task_results(test, masks, {n: os.path.join(workdir, "conv_reduced", n, tc.MODEL_FILE)
                                                          for n in names}, batch, keep)
        res[CONV] = _per_task_results(test, masks, {n: os.path.join(workdir, "conv", n, tc.MODEL_FILE)
                                                    for n in names}, batch, keep)
        if reduced:
            mr = common.load_model(os.path.join(workdir, "meta_reduced", tc.MODEL_FILE), flag="model")
            res[META_R] = evaluate_model(model_reconstruct_fn(mr), test, {n: masks[n] for n in names},
                                         task_ids=model_task_ids(mr, seen), batch_size=batch, model=mr, keep=keep)
        mm = common.load_model(meta_model, flag="model")
        seen_ids = model_task_ids(mm, seen)
        res[META] = evaluate_model(model_reconstruct_fn(mm), test, {n: masks[n] for n in names},
                                   task_ids=seen_ids, batch_size=batch, model=mm, keep=keep)
        grid = tuple(preset.inference_iterations)
        chosen: Dict[str, Dict[str, int]] = {}
        sel_scores: Dict[str, dict] = {}
        if grid:  # beyond the paper: every LOA model also at the count chosen on the held-out slices
            heldout = tc.split_data(data_dir, preset)["heldout"]
            res[CONV_N], chosen[CONV_N], sel_scores[CONV_N] = _per_task_results_n(
                test, masks, {n: os.path.join(workdir, "conv", n, tc.MODEL_FILE) for n in names}, batch, keep,
                heldout, grid)
            res[META_N], chosen[META_N], sel_scores[META_N] = _at_chosen_counts(
                mm, dict(zip(names, seen_ids)), masks, test, heldout, grid, batch, keep)
        tables["seen"] = res
        # Tables 3 / 4 (unseen radial) and 5 (Cartesian): adapted meta models vs conventional.
        for key, tasks in (("unseen", unseen), ("cartesian", cart)):
            if not tasks:
                continue
            tn = [t.name for t in tasks]
            r = {ZF: {n: zf[n] for n in tn}, TV: {n: tv[n] for n in tn}}
            if conventional_unseen:
                r[CONV] = _per_task_results(test, masks, {n: os.path.join(workdir, "conv", n, tc.MODEL_FILE)
                                                          for n in tn}, batch, keep)
            adapted = {n: os.path.join(workdir, "adapt", n, tc.MODEL_FILE) for n in tn}
            r[META] = _per_task_results(test, masks, adapted, batch, keep, specs={t.name: t for t in tasks}, sigma=True)
            if grid:
                if conventional_unseen:
                    r[CONV_N], c, sc = _per_task_results_n(
                        test, masks, {n: os.path.join(workdir, "conv", n, tc.MODEL_FILE) for n in tn}, batch, keep,
                        heldout, grid)
                    chosen[CONV_N].update(c)
                    sel_scores[CONV_N].update(sc)
                r[META_N], c, sc = _per_task_results_n(test, masks, adapted, batch, keep, heldout, grid,
                                                       specs={t.name: t for t in tasks})
                chosen[META_N].update(c)
                sel_scores[META_N].update(sc)
            tables[key] = r
        captions = {"seen": "Tables 1-2: seen radial ratios", "unseen": "Tables 3-4: unseen radial ratios (adapted)",
                    "cartesian": "Table 5: random Cartesian masks (adapted)"}
        table_captions = dict(captions)
        if grid:  # the figures keep the short captions
            note = (f" (rows \"(N on held-out)\": the same models run for the Algorithm 1 iteration count chosen per "
                    f"task on {len(heldout)} held-out val slices, beyond the paper; counts in inference_iterations.json)")
            table_captions = {k: v + note for k, v in captions.items()}
        orders = {"seen": [ZF, TV, ISTA, CONV_R, CONV, META_R, META, CONV_N, META_N],
                  "unseen": [ZF, TV, CONV, META, CONV_N, META_N], "cartesian": [ZF, TV, CONV, META, CONV_N, META_N]}
        md = [f"# Reproduction ({preset.name} preset){' - ' + title if title else ''}", ""]
        for key, res_k in tables.items():
            order = [m for m in orders[key] if m in res_k]
            tn = list(next(iter(res_k.values())).keys())
            paths = write_tables(_strip(res_k), os.path.join(d, f"table_{key}"), title=table_captions[key],
                                 task_order=tn, method_order=order)
            outputs[f"table_{key}"] = paths["markdown"]
            outputs[f"table_{key}_csv"] = paths["csv"]
            md += [open(paths["markdown"], encoding="utf-8").read(), ""]
            if figures:
                from loa_meta.evaluation.figures import comparison_figure

                rec = {m: {t: res_k[m][t]["examples"][0] for t in tn} for m in order if m != ZF}
                p = comparison_figure(os.path.join(d, f"figure_{key}.png"), np.abs(test[0]), rec,
                                      {t: masks[t] for t in tn}, title=captions[key])
                outputs[f"figure_{key}"] = p["path"]
        # Fig. 6: phi and PSNR versus phase for the meta model on the seen tasks.
        conv_curves = {}
        if figures:
            from loa_meta.evaluation.evaluate import convergence_curves
            from loa_meta.evaluation.figures import convergence_figure

            phi, ps = {}, {}
            for i, n in enumerate(names):
                c = convergence_curves(mm, test[:batch], masks[n], seen_ids[i])
                if c is not None:
                    phi[n], ps[n] = c["phi"], c["psnr"]
                    conv_curves[n] = {"phi": [float(v) for v in c["phi"]], "psnr": [float(v) for v in c["psnr"]]}
            if phi:
                outputs["figure_convergence"] = convergence_figure(os.path.join(d, "convergence.png"), phi, ps,
                                                                   title="Fig. 6: meta-learning")["path"]
        cl = claims(tables, names, [t.name for t in unseen], [t.name for t in cart])
        cl["tv_lambda"] = tv_lambdas
        if grid:
            cl["inference_iterations"] = {"grid": list(grid), "selection": f"{len(heldout)} held-out val slices",
                                          "chosen": chosen}
            sel = {"grid": list(grid), "selection_slices": len(heldout), "chosen": chosen,
                   "mean_psnr_ssim_on_selection": {m: {t: {str(k): v for k, v in s.items()} for t, s in pt.items()}
                                                   for m, pt in sel_scores.items()}}
            outputs["inference_iterations"] = atomic_write_text(os.path.join(d, "inference_iterations.json"),
                                                                json.dumps(sel, indent=2) + "\n")
        cl["tv_iters"] = preset.tv_iters
        cl["convergence"] = conv_curves
        if conv_curves:
            cl["phi_decreasing_over_phases"] = {n: bool(np.all(np.diff(c["phi"]) <= 1e-6 * max(1.0, abs(c["phi"][0]))))
                                                for n, c in conv_curves.items()}
        atomic_write_text(os.path.join(d, "claims.json"), json.dumps(cl, indent=2, default=float) + "\n")
        md += ["## Claims measured on this run", "", "```json", json.dumps(cl, indent=2, default=float), "```", ""]
        outputs["summary"] = atomic_write_text(os.path.join(d, "summary.md"), "\n".join(md))
        return {"outputs": outputs, "claims": cl}

    ev = runner.run("evaluation", evaluation)
    summary = {"workdir": workdir, "preset": preset.to_dict(), "stages_run": runner.ran, "stages_skipped": runner.skipped,
               "seconds": time.time() - t_start, "outputs": ev["outputs"], "claims": ev["claims"]}
    common.write_config_json(workdir, summary, name="reproduce_summary.json")
    return summary


# ----------------------------------------------------------------------------- app

def define_flags():
    """Flags of the reproduce app (defined only when it runs, so quickstart can import this module)."""
    flags.DEFINE_string("data_dir", None, "Prepared dataset directory (data_prep.brats output).")
    flags.DEFINE_string("workdir", None, "Output directory; re-running with the same one skips finished stages.")
    flags.DEFINE_string("preset", "cpu", "paper, cpu or tiny (experiments/presets.py).")
    flags.DEFINE_integer("seed", 0, "Training seed.")
    flags.DEFINE_integer("mask_seed", 0, "Seed of every task mask.")
    flags.DEFINE_list("tasks", None, "Override: seen tasks (default radial 10/20/30/40%).")
    flags.DEFINE_list("unseen_tasks", None, "Override: unseen radial tasks (default radial 15/25/35%); 'none' for none.")
    flags.DEFINE_list("cartesian_tasks", None, "Override: Cartesian tasks (default cartesian 10-40%); 'none' for none.")
    flags.DEFINE_boolean("reduced", True, "Run the two-thirds-data variants (meta-learning*, conventional*).")
    flags.DEFINE_boolean("ista", True, "Train the ISTA-Net+ baseline on the seen tasks.")
    flags.DEFINE_boolean("figures", True, "Write comparison figures and the Fig. 6 convergence plot.")
    flags.DEFINE_string("title", "", "Caption added to the summary (e.g. 'T1, demo data').")
    flags.DEFINE_integer("workers", 1, "Training stages run at once, each in its own process (results do not "
                         "depend on it; 2 nearly halves the wall time of the cpu preset on 2 CPU cores).")
    define_inference_iterations_flag()
    tc.define_model_option_flags()


def define_inference_iterations_flag():
    """--inference_iterations of reproduce and quickstart (the preset field ``inference_iterations``)."""
    flags.DEFINE_list("inference_iterations", None, "Override: iteration counts among which each LOA model's count "
                      "per task is chosen on the held-out slices, for the extra '(N on held-out)' rows (beyond the "
                      "paper; quickstart/cpu presets: 1,2,3,4,5,7,9,11,15,20,30); 'none': the trained T phases only.")


def inference_iterations_override(preset: Preset) -> Preset:
    """The preset with --inference_iterations applied (unchanged when the flag is not given)."""
    v = FLAGS.inference_iterations
    if v is None:
        return preset
    if len(v) == 1 and v[0].strip().lower() == "none":
        return preset.override(inference_iterations=())
    grid = common.parse_int_list(v, "inference_iterations")
    if not grid or min(grid) < 1:
        raise common.usage_error("inference_iterations", f"expected positive integers or 'none', but received: {v!r}")
    return preset.override(inference_iterations=tuple(sorted(set(grid))))


def _task_flag(name):
    v = FLAGS[name].value
    if v is None:
        return None
    if len(v) == 1 and v[0].lower() == "none":
        return []
    return [str(t) for t in common.parse_tasks(v, flag=name)]


def _main():
    try:
        preset = get_preset(FLAGS.preset)
    except ValueError as e:
        raise common.usage_error("preset", str(e)) from None
    preset = inference_iterations_override(preset.override(**tc.model_option_overrides()))
    tc.check_init_weights(preset)
    seen = _task_flag("tasks")
    if seen is not None and not seen:
        raise common.usage_error("tasks", "at least one seen task is required")
    unseen, cart = _task_flag("unseen_tasks"), _task_flag("cartesian_tasks")
    if FLAGS.workers < 1:
        raise common.usage_error("workers", f"must be a positive integer, but received: {FLAGS.workers}")
    common.require_dir("data_dir", FLAGS.data_dir)
    tc.load_images(FLAGS.data_dir, "test", 1)  # fail early on a bad dataset
    workdir = common.prepare_workdir(FLAGS.workdir)
    common.write_config_json(workdir, dict(common.flag_values_dict(_OWN), resolved_preset=preset.to_dict()),
                             name="config.json")
    s = run_protocol(FLAGS.data_dir, workdir, preset, FLAGS.seed, FLAGS.mask_seed, seen, unseen, cart,
                     FLAGS.reduced, FLAGS.ista, True, FLAGS.figures, FLAGS.title, FLAGS.workers)
    print(open(s["outputs"]["summary"], encoding="utf-8").read())
    print(f"stages run: {len(s['stages_run'])}, skipped: {len(s['stages_skipped'])}; "
          f"TensorBoard: tensorboard --logdir {workdir}")


_OWN = ("data_dir", "workdir", "preset", "seed", "mask_seed", "tasks", "unseen_tasks", "cartesian_tasks", "reduced",
        "ista", "figures", "title", "workers", "filters", "eps0_floor", "regularizer_init", "global_clipnorm",
        "safeguard", "loss_reduction", "average_checkpoints", "init_weights", "inference_iterations")


def main(argv):
    tc.run_app(_main, argv)


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["data_dir", "workdir"])
    cli.run(main)
