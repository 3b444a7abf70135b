{#- Label sanity: snapshots whose churn rate lies outside [min_rate, max_rate]. A rate of 0 or 1
    usually means a broken label window (e.g. no data after the cutoff), not real behaviour. -#}
{% test churn_rate_within_bounds(model, column_name, cutoff_column, min_rate=none, max_rate=none) %}
{%- set min_rate = min_rate if min_rate is not none else var('churn_rate_min') -%}
{%- set max_rate = max_rate if max_rate is not none else var('churn_rate_max') -%}
with

rates as (
    select
        {{ cutoff_column }} as cutoff,
        count(*) as customers,
        avg(case when {{ column_name }} then 1.0 else 0.0 end) as churn_rate
    from {{ model }}
    group by {{ cutoff_column }}
)

select *
from rates
where churn_rate < {{ min_rate }} or churn_rate > {{ max_rate }}
{% endtest %}
