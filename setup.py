"""Package layout that pyproject.toml cannot express: folders installed under other names.

The source tree keeps ddakern/, kernels/ and train/ at the top. The wheel holds ddakern (with the Triton
kernels as ddakern.kernels) and the training engine as ddakern_train: no top-level `kernels` or `train`
package, generic names that PyPI's unrelated `kernels` and `train` projects own. The engine imports its
own modules relatively, so it runs under either name: `python -m train.run` from a checkout,
`ddakern train` (or `python -m ddakern_train.run`) once installed. Metadata and dependencies live in
pyproject.toml.
"""

from setuptools import find_packages, setup

ENGINE = "ddakern_train"
engine = [ENGINE + name[len("train") :] for name in find_packages(include=["train", "train.*"])]

setup(
    packages=[*find_packages(include=["ddakern", "ddakern.*"]), "ddakern.kernels", *engine],
    package_dir={"ddakern.kernels": "kernels", ENGINE: "train"},
)
