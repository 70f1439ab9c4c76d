"""`make bench-seed`: the full seed recipe (10 epochs, the course report's) for several seeds.

    python -m benchmarks.seed --data-dir data --seeds 0 1 2
"""

import argparse
import statistics

from benchmarks.common import machine, mean_std, train_run


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    print(f"machine: {machine()}")
    runs = []
    for seed in args.seeds:
        r = train_run("seed", seed, args.data_dir, "--device", args.device)
        runs.append(r)
        print(f"seed {seed}: Test Accuracy {r['accuracy']:.2f}%, {r['wall']:.0f} s", flush=True)
    accuracies = [r["accuracy"] for r in runs]
    print(f"seed recipe, {len(runs)} seeds: Test Accuracy {mean_std(accuracies)}% "
          f"(min {min(accuracies):.2f}, max {max(accuracies):.2f}); "
          f"{statistics.mean(r['wall'] for r in runs):.0f} s per run; course report: 99.32%")


if __name__ == "__main__":
    main()
