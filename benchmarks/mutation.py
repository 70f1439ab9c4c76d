"""`make mutation`: mutation testing of the tests themselves (mutmut), module by module, with the fast tests.

Each module's mutants run under a time limit (nice'd: this is CPU-heavy); then, per module, how many mutants
the tests killed, how many survived, and how many were not reached in the time.  The survivors that are left
are listed, with why each is equivalent, in docs/mutation.md.  Settings: [tool.mutmut] in pyproject.toml.
Not part of CI.

    python -m benchmarks.mutation [--modules training.recipes modelfile] [--minutes 20] [--max-children 2]
"""

import argparse
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from benchmarks.common import machine

MODULES = ["training.recipes", "training.checkpoint", "modelfile", "imaging.decode", "imaging.ink", "imaging.segment",
           "imaging.prepare", "imaging.layout", "training.train", "serve.http", "serve.records", "serve.middleware",
           "serve.config", "serve.routers.predict", "serve.routers.read", "serve.routers.status"]


def module_results(module: str) -> Counter:
    """Counts of mutmut's verdicts for one module, from the .meta file mutmut writes beside its mutants."""
    from mutmut.stats import status_by_exit_code

    meta = Path("mutants/src/digitrec") / (module.replace(".", "/") + ".py.meta")
    if not meta.is_file():
        return Counter()
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    return Counter(status_by_exit_code[code] for code in codes.values())


def survivors(module: str) -> list[str]:
    from mutmut.stats import status_by_exit_code

    meta = Path("mutants/src/digitrec") / (module.replace(".", "/") + ".py.meta")
    if not meta.is_file():
        return []
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    return sorted(name for name, code in codes.items() if status_by_exit_code[code] == "survived")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modules", nargs="+", default=MODULES, help=f"default: {' '.join(MODULES)}")
    p.add_argument("--minutes", type=float, default=20, help="time limit per module (default 20)")
    p.add_argument("--max-children", type=int, default=2)
    args = p.parse_args()
    print(f"machine: {machine()}", flush=True)
    # Subprocesses the tests start (`python -m digitrec ...`) import the unmutated sources of this checkout.
    env = dict(os.environ, PYTHONPATH=str(Path("src").resolve()))
    for module in args.modules:
        cmd = ["nice", "-n", "10", "timeout", str(int(args.minutes * 60)), sys.executable, "-m", "mutmut", "run",
               "--max-children", str(args.max_children), f"digitrec.{module}.*"]
        rc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if rc.returncode not in (0, 124):  # 124: the time limit; what was done is kept in mutants/
            print(f"{module}: mutmut failed (exit {rc.returncode}): {rc.stderr.strip()[-1500:]}", flush=True)
    print("\n| module | mutants | killed | survived | timeout | no tests | not checked | survival |")
    print("|---|---|---|---|---|---|---|---|")
    for module in args.modules:
        r = module_results(module)
        # A mutant that hangs the tests counts as caught; one that no selected test runs counts as surviving.
        checked = r["killed"] + r["survived"] + r["timeout"] + r["no tests"]
        rate = f"{100 * (r['survived'] + r['no tests']) / checked:.1f}%" if checked else "n/a"
        print(f"| {module} | {sum(r.values())} | {r['killed']} | {r['survived']} | {r['timeout']} | {r['no tests']} "
              f"| {r['not checked']} | {rate} |")
    for module in args.modules:
        names = survivors(module)
        if names:
            print(f"\n{module} survivors (`mutmut show NAME`): {' '.join(names)}")


if __name__ == "__main__":
    main()
