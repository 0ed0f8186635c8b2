#!/usr/bin/env python
"""``scripts/train_net.py`` with the tests' fault injection (``fault_injection.py``) registered in every process.

The registration runs at this module's top level, so DDP workers (spawned: they import this file as
``__mp_main__`` before running) register it too. Test-only: the package knows nothing of faults.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fault_injection  # noqa: E402

fault_injection.register()

from local2global.engine.launch import run  # noqa: E402

if __name__ == "__main__":
    run()
