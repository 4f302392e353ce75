"""Whether Triton runs kernels through its CPU interpreter: the one TRITON_INTERPRET parser.

It lives with the kernels (the side that launches Triton) and is re-exported by ddakern.dispatch; the
library, the engine and the benches all call it, so the variable has one meaning everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

TRUE_VALUES = ("1", "true", "on", "yes", "y")
"""The TRITON_INTERPRET values Triton (3.4+ `knobs.runtime.interpret`) reads as on, in any case."""


def triton_interpret_requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether TRITON_INTERPRET (in environ, default os.environ) asks Triton to run kernels through its CPU
    interpreter, parsed as Triton parses it: "1", "true", "on", "yes", "y" in any case; anything else, such as
    "0", "false" or unset, is off."""
    value = (os.environ if environ is None else environ).get("TRITON_INTERPRET", "")
    return value.lower() in TRUE_VALUES
