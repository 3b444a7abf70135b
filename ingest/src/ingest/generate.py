"""Synthetic landing data: a retailer's customers and their transactions, day by day.

Deterministic for a seed, streamed to disk one day at a time (memory grows with the number of
customers, never with the number of transactions). The churn process is real enough to learn:
- each customer buys at their own rate (log-normal across customers), with weekly and yearly
  seasonality;
- each customer has a lifetime drawn from a hazard that depends a little on demographics
  (basic accounts and younger customers leave sooner); in the 60 days before leaving, purchase
  rate and basket size decline and returns rise (the signals a model can pick up);
- some customers sign up during the period, the rest before it.
With `bad_row_rate > 0`, realistic defects are planted in that share of rows (see DEFECTS).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from mlp_common.exit_codes import ExitCode, StageError

CATEGORIES = ("grocery", "electronics", "clothing", "home", "beauty", "sports", "books", "toys")
CATEGORY_WEIGHTS = np.array([0.34, 0.08, 0.16, 0.12, 0.1, 0.08, 0.07, 0.05])
CATEGORY_MEAN_AMOUNT = np.array([38.0, 220.0, 65.0, 90.0, 30.0, 75.0, 22.0, 35.0])
REGIONS = ("north", "south", "east", "west", "central")
REGION_WEIGHTS = np.array([0.22, 0.2, 0.2, 0.23, 0.15])
ACCOUNT_TYPES = ("basic", "plus", "premium")
ACCOUNT_WEIGHTS = np.array([0.6, 0.3, 0.1])
ACCOUNT_LIFETIME_FACTOR = np.array([0.8, 1.1, 1.6])
WEEKDAY_FACTOR = np.array([0.9, 0.9, 0.95, 1.0, 1.1, 1.3, 1.2])  # Monday .. Sunday
MERCHANTS = 400
DECLINE_DAYS = 60
MEAN_LIFETIME_DAYS = 3 * 365

DEFECTS = (
    "zero_amount",
    "blank_customer_id",
    "unparseable_date",
    "future_date",
    "duplicate_transaction",
    "odd_category",
    "non_utf8",
    "wrong_field_count",
)

TRANSACTION_HEADER = b"transaction_id,customer_id,amount,transaction_date,category,merchant_id\n"
CUSTOMER_HEADER = b"customer_id,age,region,account_type,signup_date\n"


@dataclass
class GenerationSummary:
    customers: int = 0
    transactions: int = 0
    files: int = 0
    bytes: int = 0
    defects: Counter[str] = field(default_factory=Counter)
    churned_in_period: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "customers": self.customers,
            "transactions": self.transactions,
            "files": self.files,
            "bytes": self.bytes,
            "defects": dict(sorted(self.defects.items())),
            "churned_in_period": self.churned_in_period,
        }


@dataclass(frozen=True)
class Population:
    ids: list[str]
    signup: np.ndarray  # day offset from start (negative: before the period)
    churn: np.ndarray  # day offset at which purchases stop (may be past the end)
    rate: np.ndarray  # base purchases per day
    age: np.ndarray
    region: np.ndarray
    account: np.ndarray
    category_pref: np.ndarray  # (customers, categories) probabilities


def _population(rng: np.random.Generator, customers: int, days: int) -> Population:
    account = rng.choice(len(ACCOUNT_TYPES), size=customers, p=ACCOUNT_WEIGHTS)
    age = np.clip(rng.normal(42, 14, size=customers), 18, 88).round().astype(int)
    region = rng.choice(len(REGIONS), size=customers, p=REGION_WEIGHTS)
    joined_before = rng.random(customers) < 0.7
    signup = np.where(
        joined_before,
        -rng.integers(1, 3 * 365, size=customers),
        rng.integers(0, max(days - 30, 1), size=customers),
    )
    lifetime_scale = MEAN_LIFETIME_DAYS * ACCOUNT_LIFETIME_FACTOR[account] * np.where(age < 30, 0.8, 1.0) * np.where(region == 4, 0.9, 1.0)
    # Memoryless lifetimes, measured from the later of signup and the period's start, so that the
    # pre-existing base keeps churning during the period instead of having mostly left already.
    churn = np.maximum(signup, 0) + rng.exponential(lifetime_scale).astype(int) + 14
    rate = np.clip(rng.lognormal(math.log(0.09), 0.75, size=customers), 0.004, 1.5)
    category_pref = rng.dirichlet(CATEGORY_WEIGHTS * 6, size=customers)
    ids = [f"C{n:07d}" for n in range(1, customers + 1)]
    return Population(ids, signup, churn, rate, age, region, account, category_pref)


def _seasonality(day: date) -> float:
    yearly = 1.0 + 0.25 * math.cos(2 * math.pi * (day.timetuple().tm_yday - 350) / 365.25)
    return float(WEEKDAY_FACTOR[day.weekday()] * yearly)


def _transaction_lines(
    rng: np.random.Generator,
    pop: Population,
    offset: int,
    day: date,
    next_id: int,
    bad_row_rate: float,
    summary: GenerationSummary,
) -> tuple[list[bytes], int]:
    active = np.flatnonzero((pop.signup <= offset) & (offset < pop.churn))
    if active.size == 0:
        return [], next_id
    to_churn = pop.churn[active] - offset
    declining = np.clip(to_churn / DECLINE_DAYS, 0.15, 1.0)  # 1 until the last 60 days, then falls
    counts = rng.poisson(pop.rate[active] * _seasonality(day) * declining)
    buyers = np.repeat(active, counts)
    n = buyers.size
    if n == 0:
        return [], next_id
    decline_per_row = np.repeat(declining, counts)
    # categories: per-row draw from each buyer's preferences (inverse-CDF on cumulative prefs)
    cumulative = np.cumsum(pop.category_pref[buyers], axis=1)
    category = (rng.random((n, 1)) > cumulative).sum(axis=1).clip(0, len(CATEGORIES) - 1)
    amount = rng.lognormal(np.log(CATEGORY_MEAN_AMOUNT[category]) - 0.3, 0.6) * (0.6 + 0.4 * decline_per_row)
    is_return = rng.random(n) < (0.03 + 0.07 * (1 - decline_per_row))
    amount = np.where(is_return, -amount, amount).round(2)
    amount[amount == 0] = 0.01
    merchant = np.minimum(rng.zipf(1.3, size=n), MERCHANTS)
    defective = rng.random(n) < bad_row_rate
    defect_kind = rng.integers(0, len(DEFECTS), size=n)
    iso = day.isoformat()
    lines: list[bytes] = []
    duplicates: list[bytes] = []
    for i in range(n):
        fields = [
            f"T{next_id + i:010d}",
            pop.ids[buyers[i]],
            f"{amount[i]:.2f}",
            iso,
            CATEGORIES[category[i]],
            f"M{merchant[i]:04d}",
        ]
        if defective[i]:
            kind = DEFECTS[defect_kind[i]]
            summary.defects[kind] += 1
            line = _plant_defect(kind, fields, day, rng)
            if kind == "duplicate_transaction":
                duplicates.append(line)
        else:
            line = ",".join(fields).encode()
        lines.append(line)
    lines.extend(duplicates)  # re-sent rows arrive later in the same file
    summary.transactions += len(lines)
    return lines, next_id + n


def _plant_defect(kind: str, fields: list[str], day: date, rng: np.random.Generator) -> bytes:
    if kind == "zero_amount":
        fields[2] = "0.00"
    elif kind == "blank_customer_id":
        fields[1] = "" if rng.random() < 0.5 else "   "
    elif kind == "unparseable_date":
        fields[3] = ("2024-13-45", "not a date", f"{day.day:02d}/{day.month:02d}/{day.year}")[int(rng.integers(0, 3))]
    elif kind == "future_date":
        fields[3] = (day + timedelta(days=int(rng.integers(30, 400)))).isoformat()
    elif kind == "odd_category":
        fields[4] = ("  " + fields[4].upper() + " ") if rng.random() < 0.5 else fields[4].title() + "\t"
    elif kind == "non_utf8":
        return ",".join(fields[:4]).encode() + b",caf\xe9-" + fields[4].encode() + b"," + fields[5].encode()
    elif kind == "wrong_field_count":
        fields = fields[:-1] if rng.random() < 0.5 else [*fields, "extra"]
    return ",".join(fields).encode()


def _customer_lines(
    pop: Population, members: np.ndarray, rng: np.random.Generator, start: date, bad_row_rate: float, summary: GenerationSummary
) -> list[bytes]:
    lines = []
    for idx in members:
        signup = (start + timedelta(days=int(pop.signup[idx]))).isoformat()
        age = "" if rng.random() < 0.04 else str(pop.age[idx])
        fields = [pop.ids[idx], age, REGIONS[pop.region[idx]], ACCOUNT_TYPES[pop.account[idx]], signup]
        if rng.random() < bad_row_rate:
            kind = ("blank_customer_id", "unparseable_date", "wrong_field_count")[int(rng.integers(0, 3))]
            summary.defects[f"customers:{kind}"] += 1
            if kind == "blank_customer_id":
                fields[0] = ""
            elif kind == "unparseable_date":
                fields[4] = "2023-02-30"
            else:
                fields = fields[:3]
        lines.append(",".join(fields).encode())
    summary.customers += len(lines)
    return lines


def _write(path: Path, header: bytes, lines: list[bytes], summary: GenerationSummary) -> None:
    """Write one day file atomically: a full landing folder (or a crash) never leaves half a day
    under the name a daily load reads; the partial file is removed and the error is one clear line."""
    payload = header + b"\n".join(lines) + (b"\n" if lines else b"")
    partial = path.with_name(f".{path.name}.partial")  # not .csv: no load ever picks it up
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(payload)
        partial.replace(path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise StageError(
            f"cannot write {path}: {exc.strerror or exc}; the landing folder keeps only the complete day files", ExitCode.LANDING_UNWRITABLE
        ) from exc
    summary.files += 1
    summary.bytes += len(payload)


def generate(out: Path, customers: int, start: date, end: date, seed: int = 7, bad_row_rate: float = 0.0) -> GenerationSummary:
    """Write `<out>/transactions/<day>.csv` for every day in [start, end] and `<out>/customers/<day>.csv`
    for every day with sign-ups (the first day's file holds everyone who joined before the period)."""
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    if customers < 1:
        raise ValueError("customers must be at least 1")
    if not 0.0 <= bad_row_rate < 1.0:
        raise ValueError("bad_row_rate must be in [0, 1)")
    days = (end - start).days + 1
    rng = np.random.default_rng(seed)
    pop = _population(rng, customers, days)
    summary = GenerationSummary()
    summary.churned_in_period = int(((pop.churn >= 0) & (pop.churn < days) & (pop.signup < days)).sum())
    signup_day = np.maximum(pop.signup, 0)
    order = np.argsort(signup_day, kind="stable")
    boundaries = np.searchsorted(signup_day[order], np.arange(days + 1))
    next_id = 1
    for offset in range(days):
        day = start + timedelta(days=offset)
        members = order[boundaries[offset] : boundaries[offset + 1]]
        if members.size:
            _write(
                out / "customers" / f"{day.isoformat()}.csv",
                CUSTOMER_HEADER,
                _customer_lines(pop, members, rng, start, bad_row_rate, summary),
                summary,
            )
        lines, next_id = _transaction_lines(rng, pop, offset, day, next_id, bad_row_rate, summary)
        _write(out / "transactions" / f"{day.isoformat()}.csv", TRANSACTION_HEADER, lines, summary)
    return summary
