"""The optimizer-step benchmark: ``python benchmarks/bench_step.py [--quick] [...]``.

The same as ``python -m learned_optim bench`` (the code is in ``learned_optim/bench.py``); the
naive baseline, column (a), is ``benchmarks/naive.py``. See the README's Performance section.
"""

import sys

from learned_optim.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["bench"] + sys.argv[1:]))
