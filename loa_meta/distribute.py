"""Training on several machines: ``tf.distribute.MultiWorkerMirroredStrategy`` configured by ``TF_CONFIG``.

Every machine runs the same command with its own ``TF_CONFIG`` (the standard TensorFlow variable)::

  TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type": "worker", "index": 0}}'

The worker with index 0 (or the ``chief`` task, when the cluster has one) is the *chief*: it alone writes
the run directory (checkpoints, TensorBoard, ``config.json``, the model). The other workers write their
checkpoints to a temporary directory that is removed (saving may need every worker), and restore from
the chief's checkpoints, so resuming needs the run directory on a filesystem every worker can read.

Every worker reads the same global batches (same data, seeds and flags) and computes the gradient of
its contiguous share of them (:func:`loa_meta.training.algorithm2.replica_slice`); the shares are summed
with an all-reduce, so the weights equal those of one process with the same global batch.
:func:`check_agreement` stops a run whose workers disagree (different flags, data or checkpoints) with
an error naming what differs, instead of training on inconsistent replicas.

:func:`parse_tf_config` needs no TensorFlow; the strategy must be created before TensorFlow initialises
its devices (:func:`multi_worker_strategy` says so if it is too late).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging as pylogging
import os
import sys
from typing import Dict, List, Optional, Sequence

TF_CONFIG = "TF_CONFIG"


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """This process's place in the cluster described by ``TF_CONFIG``."""

    task_type: str
    index: int
    addresses: Dict[str, List[str]]

    @property
    def num_workers(self) -> int:
        return sum(len(v) for k, v in self.addresses.items() if k in ("chief", "worker"))

    @property
    def is_chief(self) -> bool:
        """TensorFlow's rule: the ``chief`` task, or worker 0 when the cluster has no chief."""
        if "chief" in self.addresses:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.index == 0

    @property
    def address(self) -> str:
        return self.addresses[self.task_type][self.index]

    def describe(self) -> str:
        role = "chief" if self.is_chief else "non-chief"
        return f"{self.task_type} {self.index} ({role}, {self.address}) of {self.num_workers} workers"


def parse_tf_config(text: Optional[str]) -> WorkerInfo:
    """Validate the JSON of ``TF_CONFIG`` (a cluster of ``worker`` and optional ``chief`` tasks).

    Raises:
      ValueError: naming ``TF_CONFIG`` and what is wrong (missing, not JSON, no cluster, a task
        that is not in the cluster, an address without a port).
    """
    if not text or not text.strip():
        raise ValueError(f"the environment variable {TF_CONFIG} is not set; multi-worker training needs it on every "
                         f"machine, e.g. {TF_CONFIG}='{{\"cluster\": {{\"worker\": [\"host0:12345\", \"host1:12345\"]}}, "
                         f"\"task\": {{\"type\": \"worker\", \"index\": 0}}}}'")
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{TF_CONFIG} is not valid JSON ({e}): {text!r}") from None
    cluster, task = (cfg.get("cluster"), cfg.get("task")) if isinstance(cfg, dict) else (None, None)
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError(f"{TF_CONFIG} must have a \"cluster\" object of job name -> addresses, but received: {text!r}")
    unknown = sorted(set(cluster) - {"chief", "worker"})
    if unknown:
        raise ValueError(f"{TF_CONFIG}: jobs {unknown} are not used by MultiWorkerMirroredStrategy; "
                         "give \"worker\" (and optionally one \"chief\")")
    addresses = {}
    for job, addrs in cluster.items():
        if not isinstance(addrs, list) or not addrs or not all(isinstance(a, str) and ":" in a for a in addrs):
            raise ValueError(f"{TF_CONFIG}: cluster job {job!r} must be a non-empty list of \"host:port\" "
                             f"addresses, but received: {addrs!r}")
        addresses[job] = list(addrs)
    if len(addresses.get("chief", [])) > 1:
        raise ValueError(f"{TF_CONFIG}: a cluster has at most one chief, but received {addresses['chief']}")
    if not isinstance(task, dict) or task.get("type") not in addresses or not isinstance(task.get("index", 0), int):
        raise ValueError(f"{TF_CONFIG} must have \"task\": {{\"type\": one of {sorted(addresses)}, \"index\": i}}, "
                         f"but received: {task!r}")
    index = int(task.get("index", 0))
    if not 0 <= index < len(addresses[task["type"]]):
        raise ValueError(f"{TF_CONFIG}: task index {index} is not in the cluster's {len(addresses[task['type']])} "
                         f"{task['type']} address(es)")
    return WorkerInfo(task["type"], index, addresses)


def worker_info(environ=None) -> WorkerInfo:
    """:func:`parse_tf_config` of ``TF_CONFIG`` in ``environ`` (default: ``os.environ``)."""
    return parse_tf_config((os.environ if environ is None else environ).get(TF_CONFIG))


def multi_worker_strategy(timeout_seconds: float = 600.0, stderr=None):
    """The ``MultiWorkerMirroredStrategy`` of ``TF_CONFIG``; waits for every worker to join.

    Must run before TensorFlow initialises its devices (before any tensor is made).

    Args:
      timeout_seconds: how long to wait for the other workers to join, and the timeout of each
        collective operation afterwards (a worker that died stops the others with an error). A
        worker still waiting after it is killed, with the reason on ``stderr`` (a file object or
        descriptor; default: the process's).

    Raises:
      ValueError: bad ``TF_CONFIG``.
      RuntimeError: TensorFlow was initialised already, or the cluster did not form in time
        (names the addresses and what to check).
    """
    info = worker_info()
    import tensorflow as tf
    from tensorflow.python.eager import context

    ctx = context.context()
    if ctx._context_handle is not None:  # noqa: SLF001 - the check TensorFlow itself makes, with a clearer message
        raise RuntimeError("MultiWorkerMirroredStrategy must be created before TensorFlow initialises its devices "
                           "(create it first thing, before any tensor or model is made)")
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_seconds)
    # The training loop runs strategy.run eagerly by design (the host tests every gradient before it
    # is applied, loa_meta.training.loop); TensorFlow warns about that at every call.
    pylogging.getLogger("tensorflow").addFilter(_EagerRunWarningFilter())
    # TensorFlow waits for the cluster inside C++, holding the GIL and ignoring SIGTERM, without a
    # usable timeout: a watcher process ends this one with a clear message if the cluster has not
    # formed in time.
    watcher = start_watcher(_start_failure(info, timeout_seconds, ""), timeout_seconds, stderr=stderr)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        check_agreement(strategy, {"cluster": _digest(json.dumps(info.addresses, sort_keys=True))})
    except (tf.errors.OpError, RuntimeError) as e:
        raise RuntimeError(_start_failure(info, timeout_seconds, f"{type(e).__name__}: {e}")) from e
    finally:
        watcher.stdin.close()  # the watcher exits quietly on end of input
        watcher.wait()
    return strategy


class _EagerRunWarningFilter(pylogging.Filter):
    def filter(self, record: pylogging.LogRecord) -> bool:
        return "eagerly has significant overhead" not in record.getMessage()


def _start_failure(info: WorkerInfo, timeout_seconds: float, cause: str) -> str:
    return (f"multi-worker training could not start as {info.describe()}: the workers "
            f"{sum(info.addresses.values(), [])} did not all join within {timeout_seconds:.0f} s, or their first "
            f"collective failed. Start the same command on every machine with its own TF_CONFIG task index, and "
            f"check that the addresses are reachable and the ports free. {cause}".rstrip())


_WATCHER = r"""
import os, select, signal, sys
ready, _, _ = select.select([sys.stdin], [], [], float(sys.argv[2]))
if not ready:
    sys.stderr.write("error: " + sys.argv[3] + "\n")
    sys.stderr.flush()
    os.kill(int(sys.argv[1]), signal.SIGKILL)
"""


def start_watcher(message: str, timeout_seconds: float, pid: Optional[int] = None, stderr=None):
    """A process that SIGKILLs process ``pid`` (default: this one) after ``timeout_seconds``, writing
    ``error: <message>`` to ``stderr`` (default: this process's), unless its stdin is closed first."""
    import subprocess

    return subprocess.Popen([sys.executable, "-c", _WATCHER, str(os.getpid() if pid is None else pid),
                             str(float(timeout_seconds)), message], stdin=subprocess.PIPE, stderr=stderr)


def is_multi_worker(strategy) -> bool:
    return strategy is not None and getattr(strategy.extended, "_num_workers", 1) > 1


def is_chief(strategy) -> bool:
    """True unless ``strategy`` is a multi-worker strategy and this worker is not its chief."""
    return strategy is None or bool(strategy.extended.should_checkpoint)


def _digest(text: str) -> float:
    """48 bits of the SHA-256 of ``text`` as a float64 (exact), for comparing across workers."""
    return float(int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:12], 16))


def fingerprint(value) -> float:
    """A number that equals across workers exactly when ``value`` (JSON-able or array) does."""
    import numpy as np

    if hasattr(value, "numpy"):
        value = value.numpy()
    if isinstance(value, np.ndarray):
        return _digest(value.dtype.str + str(value.shape) + hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest())
    return _digest(json.dumps(value, sort_keys=True, default=str))


def check_agreement(strategy, values: Dict[str, float]) -> None:
    """All workers must hold the same ``values`` (numbers, e.g. :func:`fingerprint`\\ s); also a barrier.

    Without a multi-worker strategy this does nothing.

    Raises:
      RuntimeError: naming the keys whose values differ between workers.
    """
    if not is_multi_worker(strategy):
        return
    import numpy as np
    import tensorflow as tf

    keys = sorted(values)
    mine = tf.constant([float(values[k]) for k in keys] or [0.0], tf.float64)

    def gather(x):  # row r of a zero table holds replica r's values; the sum over replicas is exact
        ctx = tf.distribute.get_replica_context()
        rows = tf.one_hot(ctx.replica_id_in_sync_group, ctx.num_replicas_in_sync, dtype=tf.float64)
        return ctx.all_reduce(tf.distribute.ReduceOp.SUM, rows[:, None] * x[None, :])

    out = strategy.run(gather, args=(mine,))
    table = np.asarray(strategy.experimental_local_results(out)[0])
    differ = [k for i, k in enumerate(keys) if np.any(table[:, i] != table[0, i])]
    if differ:
        raise RuntimeError(f"the workers disagree on {', '.join(differ)}: every worker must run the same command "
                           "(same flags and data) and see the same run directory (a filesystem shared by all "
                           "workers, for resuming)")


def barrier(strategy) -> None:
    """Wait until every worker reaches this point (nothing without a multi-worker strategy)."""
    check_agreement(strategy, {})


def worker_scratch_dir(prefix: str = "loa_meta_worker_") -> str:
    """A fresh temporary directory for the files a non-chief worker must write (removed by the caller)."""
    import tempfile

    return tempfile.mkdtemp(prefix=prefix)


__all__: Sequence[str] = ("WorkerInfo", "parse_tf_config", "worker_info", "multi_worker_strategy", "is_chief",
                          "is_multi_worker", "check_agreement", "barrier", "fingerprint", "worker_scratch_dir")
