{#- Outliers: fails (one row) when more than max_fraction of the rows lie further than threshold
    standard deviations from the mean. A few extreme customers are normal; many mean broken units
    or a bad load. Defaults from the vars z_score_threshold / z_score_max_fraction. One pass with
    window aggregates (a cross join to a stats subquery can be re-evaluated per row). -#}
{% test z_score_outliers(model, column_name, threshold=none, max_fraction=none) %}
{%- set threshold = threshold if threshold is not none else var('z_score_threshold') -%}
{%- set max_fraction = max_fraction if max_fraction is not none else var('z_score_max_fraction') -%}
with

scored as (
    select
        abs({{ column_name }} - avg({{ column_name }}) over ())
        / nullif(stddev_pop({{ column_name }}) over (), 0) as z_score
    from {{ model }}
    where {{ column_name }} is not null
),

summary as (
    select
        count(*) as scored_rows,
        count(*) filter (where z_score > {{ threshold }}) as outlier_rows
    from scored
)

select *
from summary
where outlier_rows > {{ max_fraction }} * scored_rows
{% endtest %}
