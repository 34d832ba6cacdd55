"""Generate a dirty cloud-resources inventory CSV for ``examples/inventory/pipelinerun.yaml``.

Run it with the project's Python (it needs ``pyarrow``)::

    .venv/bin/python examples/inventory/generate.py --rows 3000 --seed 7 --out examples/inventory/inventory.csv
    .venv/bin/python examples/inventory/generate.py --rows 1000000 --seed 1 --out /tmp/inventory-1m.csv

The same ``--rows``, ``--seed`` and ``--bad-fraction`` always give the same bytes: every random number comes
from one seeded ``random.Random`` (``getrandbits``, in a fixed order); Arrow compute kernels only turn those
numbers into cells and the file is written from one buffer, so a million rows (123 MB) take about three
seconds. Resource ids are ``res-000001`` upwards in order of first appearance. The columns are the spec's
``source.columns``, in that order. The dirt is what the pipeline is there to clean:

* 15% of the rows are later versions of an earlier ``resource_id`` (a later ``updated_at``, a changed
  ``monthly_cost``, more often deactivated), placed anywhere after the original; two later versions of one
  resource are not necessarily in ``updated_at`` order in the file. No two versions of a resource share an
  ``updated_at``, so "the latest version" is never a tie;
* whitespace and case noise in resource_name, resource_type, resource_group, location and owner
  (``" Compute.Instance "``, ``"EUROPE-WEST1"``); trimming and lower-casing undo it;
* the null markers ``""``, ``"NULL"`` and ``"N/A"`` (exactly these, never noised) in the optional columns,
  and ``"unknown"`` locations; ``cpu_cores`` is mostly empty for resources without cores and ``0`` for
  serverless functions and networks;
* ``--bad-fraction`` of the rows (default 0.3%) carry exactly one fault that the validate stage rejects:
  ``abc`` in cpu_cores, a negative monthly_cost, a malformed resource_id (``RES-000123``, ``res-12x``), an
  impossible created_date (``2024-13-45``) or an empty required value. Every other row passes typing, the
  required columns and the spec's expectations, so the rejected count is exactly the bad count printed.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

COLUMNS = (
    "resource_id",
    "resource_name",
    "resource_type",
    "resource_group",
    "location",
    "owner",
    "cpu_cores",
    "monthly_cost",
    "created_date",
    "updated_at",
    "is_active",
)
REQUIRED = ("resource_id", "resource_type", "resource_group", "monthly_cost", "updated_at")
NULL_MARKERS = ("", "", "", "NULL", "N/A")  # drawn uniformly: "" three times as often
UPDATE_FRACTION = 0.15
DEFAULT_BAD_FRACTION = 0.003
MAX_RESOURCES = 999_999  # resource_id is "res-" and six digits
BAD_KINDS = ("cpu_not_integer", "negative_cost", "malformed_id", "impossible_date", "missing_required")

CREATED_FROM = date(2019, 1, 1)
CREATED_DAYS = 6 * 365
UPDATED_FROM = date(2025, 1, 1)
FIRST_SEEN_SECONDS = 150 * 86400
MIN_GAP_SECONDS = 3600
MAX_GAP_SECONDS = 30 * 86400


@dataclass(frozen=True)
class ResourceType:
    """A resource type: how common it is, its name prefix, its core counts and its cost range."""

    name: str
    weight: int
    prefix: str
    cores: tuple[tuple[str, int], ...]  # (cell, weight out of 100)
    cost_low: float
    cost_high: float


COMPUTE_CORES = (("1", 8), ("2", 20), ("4", 26), ("8", 20), ("16", 12), ("32", 7), ("64", 4), ("96", 1),
                 ("NULL", 1), ("N/A", 1))  # fmt: skip
DATABASE_CORES = (("2", 25), ("4", 30), ("8", 25), ("16", 14), ("32", 5), ("", 1))
CLUSTER_CORES = (("8", 15), ("16", 25), ("32", 25), ("64", 20), ("128", 10), ("256", 5))
NO_CORES = (("", 100),)
TYPES = (
    ResourceType("compute.instance", 30, "vm", COMPUTE_CORES, 8.0, 2600.0),
    ResourceType("compute.disk", 12, "pd", NO_CORES, 2.0, 420.0),
    ResourceType("storage.bucket", 14, "gcs", (("", 97), ("NULL", 3)), 0.05, 950.0),
    ResourceType("database.instance", 8, "db", DATABASE_CORES, 90.0, 4800.0),
    ResourceType("kubernetes.cluster", 6, "gke", CLUSTER_CORES, 220.0, 9800.0),
    ResourceType("serverless.function", 8, "fn", (("0", 96), ("", 4)), 0.0, 65.0),
    ResourceType("network.loadbalancer", 6, "lb", NO_CORES, 18.0, 260.0),
    ResourceType("network.vpc", 6, "vpc", (("0", 90), ("", 10)), 0.0, 35.0),
    ResourceType("bigquery.dataset", 5, "bq", NO_CORES, 0.5, 3200.0),
    ResourceType("pubsub.topic", 5, "ps", NO_CORES, 0.1, 90.0),
)
GROUPS = (("payments-prod", 14), ("payments-dev", 6), ("data-prod", 14), ("data-dev", 7), ("web-prod", 12),
          ("web-dev", 5), ("ml-train", 9), ("shared-infra", 13), ("security", 6), ("sandbox", 8),
          ("analytics", 6))  # fmt: skip
LOCATIONS = (("europe-west1", 22), ("europe-west4", 12), ("us-central1", 20), ("us-east1", 12),
             ("us-west2", 6), ("asia-east1", 7), ("asia-southeast1", 5), ("australia-southeast1", 3),
             ("unknown", 4))  # fmt: skip
FIRST_NAMES = ("anna", "ben", "chen", "dara", "eva", "farid", "gus", "hana", "ivo", "jo", "kim", "lea")
LAST_NAMES = ("kim", "novak", "berg", "okoro", "sato")
APPS = ("pay", "ledger", "auth", "web", "api", "etl", "lake", "ml", "search", "cart", "mail", "logs",
        "cdn", "batch", "crm", "vault")  # fmt: skip
NAMES_PER_APP = 49
ACTIVE = (("true", 88), ("false", 11), ("NULL", 1))
ACTIVE_LATER = (("true", 72), ("false", 27), ("", 1))


@dataclass
class InventoryStats:
    """What a generated file holds: the count of each kind of row."""

    rows: int
    resources: int
    later_versions: int
    bad_rows: dict[str, int] = field(default_factory=dict)

    @property
    def bad(self) -> int:
        return sum(self.bad_rows.values())


class Draws:
    """Vectors of random numbers, all from one seeded ``random.Random`` (32 bits per number)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def bits(self, n: int) -> pa.Array:
        raw = self.rng.getrandbits(32 * n).to_bytes(4 * n, "little") if n else b""
        return pa.Array.from_buffers(pa.uint32(), n, [None, pa.py_buffer(raw)]).cast(pa.int64())

    def below(self, n: int, m: int) -> pa.Array:
        """``n`` integers uniform in ``[0, m)``."""
        return pc.shift_right(pc.multiply(self.bits(n), m), 32)

    def uniform(self, n: int) -> pa.Array:
        """``n`` floats uniform in ``[0, 1)``."""
        return pc.divide(self.bits(n).cast(pa.float64()), float(2**32))

    def pick(self, n: int, weighted: Sequence[tuple[str, int]]) -> pa.Array:
        """``n`` values drawn with the given integer weights."""
        bag = pa.array([value for value, weight in weighted for _ in range(weight)])
        return bag.take(self.below(n, len(bag)))


def arange(start: int, stop: int) -> pa.Array:
    """The integers ``start <= i < stop`` (``pa.array(range(...))`` is a Python loop)."""
    return pc.add(pc.indices_nonzero(pa.repeat(True, stop - start)).cast(pa.int64()), start)


def noise_variants(cells: pa.Array) -> list[pa.Array]:
    """Spellings of every cell that trimming and lower-casing turn back into it."""
    title, upper = pc.utf8_title(cells), pc.utf8_upper(cells)
    return [
        pc.binary_join_element_wise(" ", cells, ""),
        pc.binary_join_element_wise(cells, " ", ""),
        upper,
        title,
        pc.binary_join_element_wise(" ", title, " ", ""),
        pc.binary_join_element_wise("  ", upper, ""),
    ]


def add_noise(draws: Draws, cells: pa.Array, fraction: float) -> pa.Array:
    """About ``fraction`` of the cells respelled with whitespace or case noise."""
    hit = pc.less(draws.uniform(len(cells)), fraction)
    chosen = cells.filter(hit)
    variants = noise_variants(chosen)
    which = draws.below(len(chosen), len(variants)).cast(pa.int8())
    return pc.replace_with_mask(cells, hit, pc.choose(which, *variants))


def add_nulls(draws: Draws, cells: pa.Array, fraction: float) -> pa.Array:
    """About ``fraction`` of the cells replaced by a null marker."""
    hit = pc.less(draws.uniform(len(cells)), fraction)
    markers = draws.pick(pc.sum(hit).as_py() or 0, [(m, 1) for m in NULL_MARKERS])
    return pc.replace_with_mask(cells, hit, markers)


def money_cells(cents: pa.Array) -> pa.Array:
    """Non-negative integer cents as ``1234.56``."""
    units = pc.divide(cents, 100)
    fraction = pc.utf8_lpad(
        pc.subtract(cents, pc.multiply(units, 100)).cast(pa.string()), width=2, padding="0"
    )
    return pc.binary_join_element_wise(units.cast(pa.string()), fraction, ".")


def date_pool(start: date, days: int) -> pa.Array:
    return pa.array([(start + timedelta(days=d)).isoformat() for d in range(days)])


def timestamp_cells(seconds: pa.Array) -> pa.Array:
    """Seconds since ``UPDATED_FROM`` as ``YYYY-MM-DDTHH:MM:SSZ``."""
    epoch = int(datetime(UPDATED_FROM.year, UPDATED_FROM.month, UPDATED_FROM.day, tzinfo=UTC).timestamp())
    spaced = pc.add(seconds, epoch).cast(pa.timestamp("s")).cast(pa.string())  # 2025-01-01 05:06:07
    return pc.binary_join_element_wise(
        pc.utf8_replace_slice(spaced, start=10, stop=11, replacement="T"), "Z", ""
    )


def later_version_seconds(draws: Draws, first_seen: pa.Array, targets: pa.Array) -> pa.Array:
    """``updated_at`` of each later version: strictly after every earlier version of its resource."""
    gaps = pc.add(draws.below(len(targets), MAX_GAP_SECONDS), MIN_GAP_SECONDS).to_pylist()
    latest: dict[int, int] = {}
    seen: list[int] = []
    for i, start, gap in zip(targets.to_pylist(), first_seen.take(targets).to_pylist(), gaps, strict=True):
        latest[i] = latest.get(i, start) + gap
        seen.append(latest[i])
    return pa.array(seen, pa.int64())


def file_order(draws: Draws, targets: pa.Array, resources: int) -> pa.Array:
    """Row positions in the file: originals in id order, each later version somewhere after its original.

    Row ``i < resources`` is the original of resource ``i``; row ``resources + j`` is later version ``j``,
    placed between original ``k`` and original ``k + 1`` for a uniform ``k`` not before its own original."""
    later = len(targets)
    after = pc.add(
        targets, pc.shift_right(pc.multiply(draws.bits(later), pc.subtract(resources, targets)), 32)
    )
    slot = pc.shift_left(arange(0, resources), 32)
    later_slot = pc.add(pc.shift_left(after, 32), pc.add(draws.bits(later), 1))
    keys = pa.table({"slot": pa.concat_arrays([slot, later_slot]), "row": arange(0, resources + later)})
    return pc.sort_indices(keys, sort_keys=[("slot", "ascending"), ("row", "ascending")])


def break_rows(draws: Draws, columns: dict[str, pa.Array], fraction: float) -> dict[str, int]:
    """Give a random ``fraction`` of the rows one fault each that validation rejects; count them by kind."""
    rng = draws.rng
    n = len(columns["resource_id"])
    counts = dict.fromkeys(BAD_KINDS, 0)
    overrides: dict[str, dict[int, str]] = {name: {} for name in COLUMNS}
    for k, row in enumerate(rng.sample(range(n), round(n * fraction))):
        kind = BAD_KINDS[k % len(BAD_KINDS)]  # each kind as often as the others
        counts[kind] += 1
        if kind == "cpu_not_integer":
            overrides["cpu_cores"][row] = "abc"
        elif kind == "negative_cost":
            overrides["monthly_cost"][row] = f"-{rng.uniform(1, 900):.2f}"
        elif kind == "malformed_id":
            digits = columns["resource_id"][row].as_py()[4:]
            overrides["resource_id"][row] = rng.choice(
                (f"RES-{digits}", f"RES-{digits[-2:]}x", f"res-{digits[-2:]}x", f"res_{digits}")
            )
        elif kind == "impossible_date":
            overrides["created_date"][row] = rng.choice(("2024-13-45", "2023-02-30", "2024-00-10"))
        else:
            overrides[rng.choice(REQUIRED)][row] = rng.choice(NULL_MARKERS)
    for name, cells in overrides.items():
        if cells:
            flags = bytearray(n)
            for row in cells:
                flags[row] = 1
            hit = pa.Array.from_buffers(pa.uint8(), n, [None, pa.py_buffer(flags)]).cast(pa.bool_())
            replacements = pa.array([cells[row] for row in sorted(cells)])
            columns[name] = pc.replace_with_mask(columns[name], hit, replacements)
    return counts


def originals(draws: Draws, resources: int) -> tuple[dict[str, pa.Array], pa.Array]:
    """One row per resource (its first version), and the cost of each in cents."""
    kinds = draws.pick(resources, [(str(t), kind.weight) for t, kind in enumerate(TYPES)]).cast(pa.int64())
    names = pa.array([f"{kind.prefix}-{app}-{k:02d}" for kind in TYPES for app in APPS
                      for k in range(1, NAMES_PER_APP + 1)])  # fmt: skip
    cores = pa.array([cell for kind in TYPES for cell, weight in kind.cores for _ in range(weight)])
    names_per_type = len(APPS) * NAMES_PER_APP
    low = pa.array([kind.cost_low for kind in TYPES]).take(kinds)
    span = pa.array([kind.cost_high - kind.cost_low for kind in TYPES]).take(kinds)
    skew = draws.uniform(resources)
    cents = pc.round(pc.multiply(pc.add(low, pc.multiply(span, pc.multiply(skew, skew))), 100)).cast(
        pa.int64()
    )
    owners = [(f"{first}.{last}@acme.io", 1) for first in FIRST_NAMES for last in LAST_NAMES]
    name_cells = names.take(
        pc.add(pc.multiply(kinds, names_per_type), draws.below(resources, names_per_type))
    )
    columns = {
        "resource_id": pc.binary_join_element_wise(
            "res",
            pc.utf8_lpad(arange(1, resources + 1).cast(pa.string()), width=6, padding="0"),
            "-",
        ),
        "resource_name": add_nulls(draws, add_noise(draws, name_cells, 0.04), 0.02),
        "resource_type": add_noise(draws, pa.array([kind.name for kind in TYPES]).take(kinds), 0.08),
        "resource_group": add_noise(draws, draws.pick(resources, GROUPS), 0.08),
        "location": add_nulls(draws, add_noise(draws, draws.pick(resources, LOCATIONS), 0.08), 0.03),
        "owner": add_nulls(draws, add_noise(draws, draws.pick(resources, owners), 0.06), 0.06),
        "cpu_cores": cores.take(pc.add(pc.multiply(kinds, 100), draws.below(resources, 100))),
        "created_date": add_nulls(
            draws, date_pool(CREATED_FROM, CREATED_DAYS).take(draws.below(resources, CREATED_DAYS)), 0.02
        ),
        "is_active": draws.pick(resources, ACTIVE),
    }
    return columns, cents


def generate_lines(
    rows: int, seed: int, bad_fraction: float = DEFAULT_BAD_FRACTION
) -> tuple[pa.Array, InventoryStats]:
    """The CSV's data lines, each ending in a newline, and what they hold. Same arguments, same lines."""
    if rows < 1:
        raise ValueError(f"--rows must be at least 1, got {rows}")
    if not 0 <= bad_fraction <= 1:
        raise ValueError(f"--bad-fraction must be between 0 and 1, got {bad_fraction}")
    later = round(rows * UPDATE_FRACTION)
    resources = rows - later
    if resources > MAX_RESOURCES:
        raise ValueError(
            f"--rows {rows} needs {resources} resource ids but res-NNNNNN allows {MAX_RESOURCES}:"
            f" use at most {int(MAX_RESOURCES / (1 - UPDATE_FRACTION))} rows"
        )
    draws = Draws(seed)
    first, cents = originals(draws, resources)
    first_seen = draws.below(resources, FIRST_SEEN_SECONDS)

    # Later versions: the same resource, a later updated_at, a changed cost, more often inactive.
    targets = draws.below(later, resources)
    later_seen = later_version_seconds(draws, first_seen, targets)
    factor = pc.add(draws.uniform(later), 0.6)
    later_cents = pc.round(pc.multiply(cents.take(targets).cast(pa.float64()), factor)).cast(pa.int64())
    columns = {name: pa.concat_arrays([cells, cells.take(targets)]) for name, cells in first.items()}
    columns["is_active"] = pa.concat_arrays([first["is_active"], draws.pick(later, ACTIVE_LATER)])
    columns["monthly_cost"] = money_cells(pa.concat_arrays([cents, later_cents]))
    columns["updated_at"] = timestamp_cells(pa.concat_arrays([first_seen, later_seen]))
    order = file_order(draws, targets, resources)
    bad_rows = break_rows(draws, columns, bad_fraction)

    cells: list[pa.Array | str] = []
    for name in COLUMNS:
        cells += [columns[name], ","]
    lines = pc.binary_join_element_wise(*cells[:-1], "\n", "").take(order)
    stats = InventoryStats(rows=rows, resources=resources, later_versions=later, bad_rows=bad_rows)
    return lines, stats


def write_csv(out: Path, lines: pa.Array) -> None:
    """Write the header, then the lines back to back: a string array's data buffer is their bytes."""
    offsets = pa.Array.from_buffers(
        pa.int32(), len(lines) + 1, [None, lines.buffers()[1]], offset=lines.offset
    )
    start, end = offsets[0].as_py(), offsets[len(lines)].as_py()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as f:
        f.write((",".join(COLUMNS) + "\n").encode())
        f.write(memoryview(lines.buffers()[2])[start:end])


def generate(out: Path, rows: int, seed: int, bad_fraction: float = DEFAULT_BAD_FRACTION) -> InventoryStats:
    """Write the inventory CSV to ``out`` (parent folders created) and say what it holds."""
    lines, stats = generate_lines(rows, seed, bad_fraction)
    write_csv(out, lines)
    return stats


def run(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate a dirty cloud-resources inventory CSV.")
    parser.add_argument("--rows", type=int, required=True, help="data rows to write (the header not counted)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--out", type=Path, required=True, help="CSV file to write")
    parser.add_argument("--bad-fraction", type=float, default=DEFAULT_BAD_FRACTION,
                        help=f"share of rows with one fault (default {DEFAULT_BAD_FRACTION})")  # fmt: skip
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        stats = generate(args.out, args.rows, args.seed, args.bad_fraction)
    except ValueError as exc:
        parser.error(str(exc))
    seconds = time.perf_counter() - started
    bad = ", ".join(f"{kind} {count}" for kind, count in stats.bad_rows.items())
    print(
        f"wrote {stats.rows} rows to {args.out} in {seconds:.2f}s: {stats.resources} resources,"
        f" {stats.later_versions} later versions, {stats.bad} bad rows ({bad})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run())
