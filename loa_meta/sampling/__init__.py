"""Sampling masks P (paper Eq. 1) and task specifications (one task = one mask, Section 5.2)."""

from loa_meta.sampling.mask_io import load_mask, looks_uncentred, render_mask_png, save_mask
from loa_meta.sampling.masks import GOLDEN_ANGLE, MASK_KINDS, make_mask, mask_options, sampling_ratio
from loa_meta.sampling.task_spec import (
    FILE_KIND,
    TaskSpec,
    build_masks,
    canonical_task_specs,
    match_task,
    model_task_ids,
    nearest_task,
    parse_task_spec,
    parse_task_specs,
)

__all__ = [
    "FILE_KIND",
    "GOLDEN_ANGLE",
    "MASK_KINDS",
    "TaskSpec",
    "build_masks",
    "canonical_task_specs",
    "load_mask",
    "looks_uncentred",
    "make_mask",
    "mask_options",
    "match_task",
    "model_task_ids",
    "nearest_task",
    "parse_task_spec",
    "parse_task_specs",
    "render_mask_png",
    "sampling_ratio",
    "save_mask",
]
