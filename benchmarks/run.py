"""``make bench``: run every benchmark, write ``benchmarks/results/<date>/<name>.json``, print one table.

The records (and each benchmark's figures and data) go to today's dated folder, which is committed;
the README's and docs/benchmarks.md's tables are then regenerated from the newest records
(``benchmarks.tables``).
"""

from __future__ import annotations

import math
import sys

from rich.console import Console
from rich.table import Table

from benchmarks import common, design, discovery, latency, loop, reliability, simulators, storage, surrogates, tables


def main() -> int:
    """Run the benchmarks and print the table."""
    console = Console(width=180)
    all_records = []
    modules = (
        ("loop", loop),
        ("storage", storage),
        ("simulators", simulators),
        ("surrogates", surrogates),
        ("latency", latency),
        ("discovery", discovery),
        ("design", design),
        ("reliability", reliability),
    )
    for name, module in modules:
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
