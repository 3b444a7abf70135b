{#- Invalid transaction lines by load date and reason: staging drops them, never silently.
    A day's fraction is invalid lines / all lines landed that day (re-sent duplicates are not
    invalid and are not counted here). The gate is the test excluded_rows_within_threshold.
    The base view is referenced once per CTE (not through a shared CTE) so that a filter on
    load_date reaches the raw partition index. -#}
with

day_totals as (
    select
        load_date,
        count(*) as day_rows
    from {{ ref('base_raw__transactions') }}
    group by load_date
),

excluded as (
    select
        load_date,
        exclusion_reason,
        count(*) as excluded_rows
    from {{ ref('base_raw__transactions') }}
    where exclusion_reason is not null
    group by load_date, exclusion_reason
),

final as (
    select
        excluded.load_date,
        excluded.exclusion_reason,
        excluded.excluded_rows,
        day_totals.day_rows,
        cast(excluded.excluded_rows as double precision) / day_totals.day_rows as excluded_fraction
    from excluded
    inner join day_totals on excluded.load_date = day_totals.load_date
)

select * from final
