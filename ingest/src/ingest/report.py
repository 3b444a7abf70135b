"""A short human summary of what the raw schema holds (for `make demo` and operators)."""

from __future__ import annotations

import psycopg
from psycopg import sql

from ingest.contract import RAW_SCHEMA, TABLES


def raw_summary(conn: psycopg.Connection) -> tuple[str, dict[str, object]]:
    figures: dict[str, object] = {}
    lines = ["raw data in the warehouse:"]
    for table in TABLES.values():
        exists = conn.execute("select to_regclass(%s)", (f"{RAW_SCHEMA}.{table.name}",)).fetchone()
        if not exists or exists[0] is None:
            lines.append(f"  {table.name:<14} (not loaded)")
            continue
        loaded = conn.execute(
            sql.SQL("select count(*), count(distinct _partition_date), min(_partition_date), max(_partition_date) from {}").format(
                sql.Identifier(RAW_SCHEMA, table.name)
            )
        ).fetchone()
        assert loaded is not None
        reasons = conn.execute(
            sql.SQL("select reason, count(*) from {} group by 1 order by 2 desc, 1").format(sql.Identifier(RAW_SCHEMA, table.rejected))
        ).fetchall()
        rejected = sum(n for _, n in reasons)
        figures[table.name] = {"rows": loaded[0], "partitions": loaded[1], "rejected": rejected, "rejected_by_reason": dict(reasons)}
        span = f"{loaded[2]} .. {loaded[3]}" if loaded[2] else "-"
        lines.append(f"  {table.name:<14} {loaded[0]:>10,} rows on {loaded[1]:,} days ({span}); {rejected:,} lines rejected")
        for reason, count in reasons:
            lines.append(f"      {count:>8,}  {reason}")
    return "\n".join(lines), figures
