"""Benchmark: how long the ``finetuner`` command line takes to start, and what it imports.

Not a test. Times ``finetuner --help``, ``finetuner plugins`` and ``finetuner runs`` as a user
runs them: a new process each time, wall-clock from start to exit, the output thrown away. The
commands take turns (interleaved, the order rotating every repeat) and each figure is the median
of ``--repeats`` runs (at least 5). For each command it also reports whether torch or
transformers was imported, read from ``python -X importtime``.

    python bench/bench_cli.py                       # the finetuner on PATH (this checkout)
    python bench/bench_cli.py --baseline OLD/bin/finetuner

``--baseline`` names the ``finetuner`` executable of another install (for example a virtual
environment with an older commit installed); both sides are then timed in the same run, taking
turns, and the ratio of their medians is printed.

The figures leave out nothing a user waits for: interpreter start, imports, entry-point
discovery, argument parsing and printing. ``finetuner runs`` reads an empty run store (a fresh
temporary folder), so it measures start-up, not reading runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = (("--help",), ("plugins",), ("runs",))
HEAVY = ("torch", "transformers")


def _executable(value: str | None) -> str:
    found = shutil.which(value or "finetuner") if not value or os.sep not in value else value
    if not found or not Path(found).exists():
        sys.exit(f"error: no finetuner executable at {value or 'finetuner (on PATH)'}")
    return str(found)


def _python_of(executable: str) -> str:
    """The interpreter a console script runs with (its shebang line)."""
    first = Path(executable).read_text(encoding="utf-8", errors="replace").splitlines()[0]
    return first[2:].strip() if first.startswith("#!") else sys.executable


def _time_once(executable: str, args: tuple[str, ...], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        [executable, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - start


def _heavy_imports(executable: str, args: tuple[str, ...], env: dict[str, str]) -> list[str]:
    """Which of HEAVY the command imports, from ``-X importtime`` (printed on stderr)."""
    code = "import sys; from finetuner.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run(
        [_python_of(executable), "-X", "importtime", "-c", code, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=True,
    )
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    return [name for name in HEAVY if name in imported]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--finetuner", help="the finetuner executable to time (default: on PATH)")
    parser.add_argument("--baseline", help="another finetuner executable, timed alongside")
    args = parser.parse_args()
    if args.repeats < 5:
        sys.exit("error: --repeats must be at least 5 (figures are medians of at least 5 runs)")
    sides = {"this": _executable(args.finetuner)}
    if args.baseline:
        sides["baseline"] = _executable(args.baseline)
    with tempfile.TemporaryDirectory() as store:
        env = {**os.environ, "FINETUNER_RUNS_DIR": store, "COLUMNS": "80"}
        runs = [(side, command) for side in sides for command in COMMANDS]
        times: dict[tuple[str, tuple[str, ...]], list[float]] = {run: [] for run in runs}
        for run in runs:  # one warm-up each: the first start reads files from disk
            _time_once(sides[run[0]], run[1], env)
        for repeat in range(args.repeats):
            shift = repeat % len(runs)
            for side, command in runs[shift:] + runs[:shift]:
                times[(side, command)].append(_time_once(sides[side], command, env))
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPU(s), {args.repeats} repeats")
        for side, executable in sides.items():
            print(f"\n{side}: {executable}")
            for command in COMMANDS:
                samples = times[(side, command)]
                heavy = _heavy_imports(executable, command, env)
                print(
                    f"  finetuner {' '.join(command):<8} median {statistics.median(samples):.3f} s"
                    f"  (min {min(samples):.3f}, max {max(samples):.3f})"
                    f"  imports {', '.join(heavy) or 'neither torch nor transformers'}"
                )
        if "baseline" in sides:
            print("\nratio this / baseline (medians):")
            for command in COMMANDS:
                ratio = statistics.median(times[("this", command)]) / statistics.median(
                    times[("baseline", command)]
                )
                print(f"  finetuner {' '.join(command):<8} {ratio:.3f}")


if __name__ == "__main__":
    main()
