"""``make bench``: run every benchmark, write ``benchmarks/results/<date>/<name>.json``, print one table.

The records (and each benchmark's figures and data) go to today's dated folder, which is committed;
the README's and docs/benchmarks.md's tables are then regenerated from the newest records
(``benchmarks.tables``).
"""

from __future__ import annotations

import argparse
import math
import sys

from rich.console import Console
from rich.table import Table

from benchmarks import (
    common,
    design,
    discovery,
    drift,
    latency,
    loop,
    reliability,
    simulators,
    storage,
    surrogates,
    tables,
    training,
)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks (all, or those ``--only`` names) and print the table.

    Example: ``python -m benchmarks.run --only latency discovery`` re-measures two and regenerates the
    tables from the newest record of every benchmark.
    """
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=main.__doc__)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks")
    args = parser.parse_args(argv)
    console = Console(width=180)
    all_records = []
    modules = (
        ("loop", loop),
        ("storage", storage),
        ("simulators", simulators),
        ("surrogates", surrogates),
        ("latency", latency),
        ("discovery", discovery),
        ("drift", drift),
        ("training", training),
        ("design", design),
        ("reliability", reliability),
    )
    known = [name for name, _ in modules]
    if args.only and (unknown := sorted(set(args.only) - set(known))):
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(known)}")
    for name, module in modules:
        if args.only and name not in args.only:
            continue
        console.print(f"[bold]running {name}…[/]")
        records = module.run()
        path = common.write(name, records)
        console.print(f"  wrote {path}")
        all_records += records
    table = Table(title=f"dualscope benchmarks — {all_records[0].machine}")
    for col in ("benchmark", "metric", "value", "baseline", "ratio", "goal", "met"):
        table.add_column(col)
    for r in all_records:
        base = "" if math.isnan(r.baseline_value) else f"{r.baseline}: {r.baseline_value:,.1f} {r.unit}"
        ratio = "" if math.isnan(r.ratio) else f"{r.ratio:.2f}×"
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: ""}[r.meets_goal]
        value = "" if math.isnan(r.value) else f"{r.value:,.1f} {r.unit}"
        table.add_row(r.benchmark, r.metric, value, base, ratio, r.goal, met)
    console.print(table)
    tables.main([])
    console.print("README.md and docs/benchmarks.md tables regenerated from the records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
