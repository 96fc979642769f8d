"""Servicers for xmpl.tc.resources-functions-v1: your code.

Created by scaffold; from now on this file is yours. Each class subclasses the generated base
in base.py, which implements the standard methods on Firestore with the proto's current
patterns and fields (regenerated with the proto) and answers UNIMPLEMENTED for the rest.
Override a method here only to customise it. `scaffold neuron update` adds a stub for each new
custom RPC and never changes what you wrote.
"""

from __future__ import annotations

import base


class FunctionsService(base.FunctionsServiceBase):
    """Manages Function resources."""
