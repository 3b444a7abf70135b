{#- The exclusion gate on the audit model: for each recent load date (the last recent_load_days
    up to as_of_date) with at least excluded_rows_min_rows landed lines, severity_level is 1 when
    invalid lines exceed excluded_rows_warn_fraction of the day and 2 above excluded_rows_error_fraction.
    Configure with fail_calc max(severity_level), warn_if >0, error_if >1. Low-volume days are not judged:
    a handful of bad lines on a quiet day is chance, not a broken feed. -#}
{% test excluded_rows_within_threshold(model) %}
with

days as (
    select
        load_date,
        max(day_rows) as day_rows,
        sum(excluded_rows) as excluded_rows
    from {{ model }}
    where
        load_date <= {{ as_of_date_literal() }}
        and load_date > {{ as_of_date_literal() }} - {{ var('recent_load_days') | int }}
    group by load_date
),

judged as (
    select
        load_date,
        day_rows,
        excluded_rows,
        cast(excluded_rows as double precision) / day_rows as excluded_fraction
    from days
    where day_rows >= {{ var('excluded_rows_min_rows') | int }}
)

select
    *,
    case
        when excluded_fraction > {{ var('excluded_rows_error_fraction') }} then 2
        else 1
    end as severity_level
from judged
where excluded_fraction > {{ var('excluded_rows_warn_fraction') }}
{% endtest %}
