"""`make bench`: run every benchmark module in bench/ (each has ``main()``) and print results.

Benchmarks measure; they never assert. Their numbers go to docs/performance.md.
"""

from __future__ import annotations

import importlib
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent


def main() -> None:
    sys.path.insert(0, str(ROOT.parent))
    selected = set(sys.argv[1:])
    for path in sorted(ROOT.glob("bench_*.py")):
        name = path.stem
        if selected and name not in selected:
            continue
        print(f"\n## {name}", flush=True)
        importlib.import_module(f"bench.{name}").main()


if __name__ == "__main__":
    main()
