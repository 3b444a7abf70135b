{#- Feature rows (cutoff_date, customer_id, features..., _last_event_date) for a list of cutoff dates.
    The features mart calls it with [as_of_date], the training set with its snapshot cutoffs: one SQL
    text, so the two can never drift apart. Only events strictly before the cutoff are used; customers
    are those with any event in [cutoff - lookback_days, cutoff). -#}
{% macro customer_features(cutoffs) -%}
{%- set lookback = var('lookback_days') | int -%}
{%- set trend = var('trend_window_days') | int -%}
with

{# not materialized: every cutoff's branch below reads it, and a materialized CTE would hide the
    table's index from them #}
activity as not materialized (
    select * from {{ ref('int_customer_activity_aggregated_to_daily') }}
),

first_active as (
    select * from {{ ref('int_customers_first_active') }}
),

customers as (
    select * from {{ ref('stg_raw__customers') }}
),

{# One aggregation per cutoff, each over its own window with the cutoff as a literal, glued with
    union all: the planner then reads each window from the activity table's covering index in
    (customer, category, date) order and aggregates it as it comes, distinct counts included, with
    no sort (a cutoff list joined to the activity rows sorted every windowed row: 1.25 M per cutoff
    at 50 k customers). An empty list gives no rows. #}
aggregated as (
    {%- for cutoff in (cutoffs or [none]) %}
    {%- set cutoff_date = date_literal(cutoff) %}
    select
        {{ cutoff_date }} as cutoff_date,
        activity.customer_id,
        max(activity.activity_date) as last_event_date,
        sum(activity.purchase_count) as purchase_count,
        sum(activity.purchase_amount) as purchase_amount,
        sum(activity.purchase_amount_squared) as purchase_amount_squared,
        sum(activity.return_count) as return_count,
        sum(activity.return_amount) as return_amount,
        count(distinct activity.category) filter (where activity.purchase_count > 0) as distinct_categories,
        count(distinct activity.activity_date) filter (where activity.purchase_count > 0) as purchase_days,
        min(activity.activity_date) filter (where activity.purchase_count > 0) as first_purchase_date,
        max(activity.activity_date) filter (where activity.purchase_count > 0) as last_purchase_date,
        sum(activity.purchase_amount) filter (where activity.activity_date >= {{ cutoff_date }} - {{ trend }}) as recent_spend,
        sum(activity.purchase_amount) filter (
            where activity.activity_date < {{ cutoff_date }} - {{ trend }} and activity.activity_date >= {{ cutoff_date }} - {{ 2 * trend }}
        ) as earlier_spend,
        sum(activity.purchase_count) filter (where activity.activity_date >= {{ cutoff_date }} - {{ trend }}) as recent_purchases,
        sum(activity.purchase_count) filter (
            where activity.activity_date < {{ cutoff_date }} - {{ trend }} and activity.activity_date >= {{ cutoff_date }} - {{ 2 * trend }}
        ) as earlier_purchases
    from activity
    where
        {% if cutoff is none -%}
            false
        {%- else -%}
            activity.activity_date >= {{ cutoff_date }} - {{ lookback }}
            and activity.activity_date < {{ cutoff_date }}
        {%- endif %}
    group by activity.customer_id
    {%- if not loop.last %}

    union all
    {%- endif %}
    {%- endfor %}
),

final as (
    select
        aggregated.cutoff_date,
        aggregated.customer_id,
        cast(aggregated.cutoff_date - aggregated.last_event_date as integer) as recency_days,
        cast(aggregated.purchase_count as bigint) as frequency,
        cast(aggregated.purchase_amount as double precision) as monetary_total,
        cast(aggregated.purchase_amount / nullif(aggregated.purchase_count, 0) as double precision) as monetary_avg,
        cast(
            aggregated.cutoff_date
            - least(
                aggregated.first_purchase_date,
                first_active.first_activity_date,
                case when customers.signup_date < aggregated.cutoff_date then customers.signup_date end
            ) as integer
        ) as tenure_days,
        cast(aggregated.distinct_categories as integer) as distinct_categories,
        cast(
            case
                when aggregated.purchase_count > 1
                    then sqrt(greatest(
                        (
                            aggregated.purchase_amount_squared
                            - aggregated.purchase_amount * aggregated.purchase_amount / aggregated.purchase_count
                        ) / (aggregated.purchase_count - 1),
                        0
                    ))
            end as double precision
        ) as spend_volatility,
        cast(
            coalesce(
                (coalesce(aggregated.recent_spend, 0) - coalesce(aggregated.earlier_spend, 0))
                / nullif(coalesce(aggregated.recent_spend, 0) + coalesce(aggregated.earlier_spend, 0), 0),
                0
            ) as double precision
        ) as spend_trend,
        cast(
            coalesce(
                (coalesce(aggregated.recent_purchases, 0) - coalesce(aggregated.earlier_purchases, 0))::numeric
                / nullif(coalesce(aggregated.recent_purchases, 0) + coalesce(aggregated.earlier_purchases, 0), 0),
                0
            ) as double precision
        ) as frequency_trend,
        cast(
            (aggregated.last_purchase_date - aggregated.first_purchase_date)::numeric
            / nullif(aggregated.purchase_days - 1, 0) as double precision
        ) as mean_days_between_purchases,
        cast(
            aggregated.return_count::numeric / nullif(aggregated.return_count + aggregated.purchase_count, 0)
            as double precision
        ) as return_rate,
        cast(aggregated.return_amount as double precision) as return_amount_total,
        case
            when not (customers.signup_date < aggregated.cutoff_date or customers.signup_date is null) then 'unknown'
            when customers.age is null then 'unknown'
            when customers.age < 25 then 'under_25'
            when customers.age < 35 then '25_34'
            when customers.age < 45 then '35_44'
            when customers.age < 55 then '45_54'
            when customers.age < 65 then '55_64'
            else '65_plus'
        end as age_band,
        case
            when customers.signup_date < aggregated.cutoff_date or customers.signup_date is null
                then coalesce(customers.region, 'unknown')
            else 'unknown'
        end as region,
        case
            when customers.signup_date < aggregated.cutoff_date or customers.signup_date is null
                then coalesce(customers.account_type, 'unknown')
            else 'unknown'
        end as account_type,
        aggregated.last_event_date as _last_event_date
    from aggregated
    left join first_active on aggregated.customer_id = first_active.customer_id
    left join customers on aggregated.customer_id = customers.customer_id
)

select * from final
{%- endmacro %}
