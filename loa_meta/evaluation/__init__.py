"""Paper Section 5 evaluation: per-slice metrics, Tables 1-5, Figs. 1-6, a classical TV baseline.

* :mod:`loa_meta.evaluation.evaluate`  -- ``evaluate_model`` (per-task, per-slice PSNR/SSIM/NMSE).
* :mod:`loa_meta.evaluation.tables`    -- Tables 1-5 layout, Markdown and CSV.
* :mod:`loa_meta.evaluation.figures`   -- Figs. 1-5 comparison grids, Fig. 6 convergence plot.
* :mod:`loa_meta.evaluation.classical` -- TV-regularised CS baseline (Chambolle-Pock) and ``tune_lambda``.

Submodules are imported on use so that importing tables does not pull in matplotlib or TensorFlow.
"""
