"""Command-line data preparation: BraTS slices (``data_prep.brats``) and the demo tree (``data_prep.demo``)."""
