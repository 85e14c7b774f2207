"""Start-up of every command-line app: quiet TensorFlow, one log format, short usage errors.

An app's entry module imports this module (importing it sets TensorFlow's C++ log level, so nothing
imported before it may import TensorFlow; the apps import TensorFlow lazily) and calls :func:`run`
instead of ``absl.app.run``::

  from experiments import cli, common
  ...
  if __name__ == "__main__":
      cli.run(main)

What a user sees:

* no TensorFlow start-up banner and no ``cuInit`` error on a CPU-only machine (a normal case): the
  first ``import tensorflow`` of the process, wherever it happens, and the initialisation of its
  devices run with the process's stderr captured (an import hook); captured lines that are not
  known start-up chatter are printed afterwards, so a real problem still shows. Usage errors found
  before TensorFlow is needed cost no TensorFlow import at all. ``--verbosity=1`` (or more) shows
  everything, TensorFlow's C++ INFO lines included (unless ``TF_CPP_MIN_LOG_LEVEL`` is set);
* one log format: absl's (``I1130 12:00:00.000000 pid file.py:line] message``), in the app and in
  the worker processes it starts (:func:`init_worker`); TensorFlow's and Keras' own INFO messages
  (e.g. ``Sharding callback duration``) only with ``--verbosity=1``;
* a usage error is one line ``<app>: error: --flag: what was expected`` followed by where the
  flags are listed; no module docstring, no flag list, no traceback.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging as _pylogging
import os
import re
import sys
import tempfile

_USER_CPP_LEVEL = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported anywhere in the process

# TensorFlow's start-up lines that say nothing to a user (CPU-only machine, CPU features, oneDNN).
STARTUP_NOISE = re.compile(
    "|".join((
        r"All log messages before absl::InitializeLog\(\) is called",
        r"oneDNN custom operations are on",
        r"cudart_stub\.cc", r"Could not find cuda drivers",
        r"cpu_feature_guard\.cc", r"^To enable the following instructions", r"rebuild TensorFlow with the appropriate",
        r"cuda_platform\.cc", r"failed call to cuInit", r"cuda_diagnostics\.cc", r"cuda_executor\.cc",
        r"Unable to register cu(DNN|FFT|BLAS) factory", r"TF-TRT Warning", r"computation_placer\.cc",
        r"^\s*$",
    ))
)
_THIRD_PARTY = (os.sep + "tensorflow" + os.sep, os.sep + "keras" + os.sep, os.sep + "tf_keras" + os.sep)


class _ThirdPartyInfoFilter(_pylogging.Filter):
    """Drops records below WARNING that TensorFlow or Keras log through absl/Python logging."""

    def filter(self, record: _pylogging.LogRecord) -> bool:
        if record.levelno >= _pylogging.WARNING:
            return True
        return not any(p in (record.pathname or "") for p in _THIRD_PARTY)


_FILTER = _ThirdPartyInfoFilter()


def configure_logging(verbosity: int) -> None:
    """absl's handler and format for all Python logging; TensorFlow/Keras INFO only if ``verbosity >= 1``.

    Call before TensorFlow is imported so that its C++ log level follows ``verbosity``.
    """
    from absl import logging

    logging.use_absl_handler()
    logging.set_verbosity(verbosity)
    handler = logging.get_absl_handler()
    if verbosity >= 1:
        handler.removeFilter(_FILTER)
        uninstall_quiet_import()
        if _USER_CPP_LEVEL is None and "tensorflow" not in sys.modules:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    else:
        handler.addFilter(_FILTER)
        install_quiet_import()


def filter_startup_lines(text: str) -> str:
    """The lines of ``text`` that are not TensorFlow start-up chatter (see :data:`STARTUP_NOISE`)."""
    return "".join(line for line in text.splitlines(keepends=True) if not STARTUP_NOISE.search(line))


_REAL_STDERR = [2]  # the descriptor of the process's own stderr, also while it is captured


def real_stderr() -> int:
    """The file descriptor of the process's stderr, also inside the quiet start-up window (for a
    process started there that must be able to report, e.g. a watchdog)."""
    return _REAL_STDERR[-1]


@contextlib.contextmanager
def _stderr_captured():
    """Capture file descriptor 2; afterwards write what is not start-up chatter back to stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    _REAL_STDERR.append(saved)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            _REAL_STDERR.pop()
            os.close(saved)
            captured.seek(0)
            rest = filter_startup_lines(captured.read().decode("utf-8", errors="replace"))
            if rest:
                sys.stderr.write(rest)
                sys.stderr.flush()


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Makes the first ``import tensorflow`` (wherever it happens) run with stderr captured, and
    initialises TensorFlow's devices inside the same window (cuInit on a CPU-only machine), unless
    :func:`start_tensorflow` initialises them itself."""

    skip_devices = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        uninstall_quiet_import()
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def quiet_exec_module(module):
            with _stderr_captured():
                exec_module(module)
                if not self.skip_devices:
                    module.config.list_logical_devices()

        spec.loader.exec_module = quiet_exec_module
        return spec


_FINDER = _QuietTensorFlowImport()


def start_tensorflow(init):
    """Import TensorFlow and call ``init()`` first thing, before its devices are initialised (a
    multi-worker strategy must be created then); quietly, like every first import. Returns ``init()``.

    If TensorFlow is imported already, ``init()`` is simply called (and may find it too late).
    """
    if "tensorflow" in sys.modules or _FINDER not in sys.meta_path:
        import tensorflow  # noqa: F401

        return init()
    # init runs after the import has returned: threads it starts may import TensorFlow modules,
    # which would wait forever for the import lock held during the import
    _FINDER.skip_devices = True
    try:
        import tensorflow  # noqa: F401
    finally:
        _FINDER.skip_devices = False
    with _stderr_captured():
        return init()


def install_quiet_import() -> None:
    """Hide TensorFlow's start-up lines when (and if) it is first imported in this process."""
    if "tensorflow" not in sys.modules and _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def uninstall_quiet_import() -> None:
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)


def init_worker(verbosity: int) -> None:
    """Logging and TensorFlow start-up of a worker process started by an app (same format, same quiet)."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()  # absl logs "before flag parsing" warnings otherwise
    os.environ["LOA_META_PROGRESS"] = "lines"  # workers share a terminal: log lines, no progress bars
    configure_logging(verbosity)


def _program() -> str:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return spec.name if spec is not None and spec.name else os.path.basename(sys.argv[0])


def usage_error_text(message: str, program: str) -> str:
    """The two lines printed for a usage error: the error first, then where the flags are listed."""
    return (f"{program}: error: {message}\n"
            f"{program}: see `python -m {program} --helpshort` for its flags (--helpfull: all flags)\n")


def run(main) -> None:
    """``absl.app.run(main)`` with :func:`configure_logging`, a quiet TensorFlow import and short usage errors.

    ``main(argv)`` raises :class:`absl.app.UsageError` for bad input: printed as
    :func:`usage_error_text`, exit status 1.
    """
    from absl import app, flags

    def wrapped(argv):
        verbosity = flags.FLAGS["verbosity"].value
        configure_logging(verbosity)
        try:
            if len(argv) > 1:
                raise app.UsageError(f"unexpected positional arguments: {argv[1:]}")
            return main(argv)
        except app.UsageError as e:
            sys.stdout.flush()
            sys.stderr.write(usage_error_text(str(e), _program()))
            sys.stderr.flush()
            sys.exit(e.exitcode)

    app.run(wrapped)
