"""Package layout that pyproject.toml cannot express: kernels/ installs as ddakern.kernels.

The source tree keeps ddakern/, kernels/ and train/ at the top; the wheel holds ddakern (with the
Triton kernels under ddakern.kernels) and train, and no top-level `kernels` package. Metadata and
dependencies live in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["ddakern", "ddakern.*", "train", "train.*"]), "ddakern.kernels"],
    package_dir={"ddakern.kernels": "kernels"},
)
