"""`make bench`: run every benchmark module (tests/bench/bench_*.py) one after another.

Each module's main() prints its own detailed table and records its headline figures (medians
over its repeated runs) in tests.bench.summary; this runner sequences them and ends with one
table of every headline figure against its baseline.
"""
import importlib
import pkgutil
import sys
import time
import traceback

import tests.bench as pkg
from tests.bench import summary


def main(argv):
    wanted = set(argv)
    names = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name.startswith("bench_"))
    failed = []
    for name in names:
        if wanted and name not in wanted and name[len("bench_"):] not in wanted:
            continue
        print(f"\n=== {name} ===", flush=True)
        started = time.monotonic()
        try:
            importlib.import_module(f"tests.bench.{name}").main()
        except Exception:  # keep going: one broken benchmark must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
        print(f"--- {name}: {time.monotonic() - started:.1f} s", flush=True)
    print("\n=== summary: ours vs baseline (ratio < 1: ours is smaller) ===")
    print(summary.table())
    if failed:
        print(f"\nbenchmarks that failed to run: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
