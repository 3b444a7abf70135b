{{
    config(
        materialized='incremental',
        unique_key='activity_date',
        incremental_strategy='delete+insert',
        on_schema_change='fail',
        post_hook="create index if not exists {{ this.identifier }}_activity_date_idx on {{ this }} (activity_date)",
    )
}}
{#- Customer activity per day and category: the one input of every feature and label. Sums of
    squares travel along so that spend volatility can be computed from daily rows exactly.
    Incremental by activity date: a run recomputes only the days touched by lines loaded after the
    table's watermark (max _loaded_at seen), including old days of re-sent transactions; delete+insert
    on activity_date replaces those days whole. A correction that deletes raw lines without
    re-sending them needs --full-refresh. -#}
-- depends_on: {{ ref('base_raw__transactions') }}
{%- set watermark = none -%}
{%- if execute and is_incremental() -%}
    {%- set watermark = run_query("select max(_loaded_at_max) from " ~ this).columns[0].values()[0] -%}
{%- endif %}

with

transactions as (
    select * from {{ ref('stg_raw__transactions') }}
),

touched_dates as (
    select distinct landed.transaction_date as activity_date
    from {{ ref('base_raw__transactions') }} as landed
    where
        landed.transaction_date is not null
        and landed.transaction_id in (
            select new_lines.transaction_id
            from {{ ref('base_raw__transactions') }} as new_lines
            where new_lines.loaded_at > cast('{{ watermark if watermark is not none else "-infinity" }}' as timestamptz)
        )
),

changed as (
    select transactions.*
    from transactions
    where
        {% if watermark is none -%}
            true
        {%- else -%}
            transactions.transaction_date in (select touched_dates.activity_date from touched_dates)
        {%- endif %}
),

final as (
    select
        customer_id,
        transaction_date as activity_date,
        category,
        count(*) filter (where event_type = 'purchase') as purchase_count,
        coalesce(sum(amount) filter (where event_type = 'purchase'), 0) as purchase_amount,
        coalesce(sum(amount * amount) filter (where event_type = 'purchase'), 0) as purchase_amount_squared,
        count(*) filter (where event_type = 'return') as return_count,
        coalesce(sum(amount) filter (where event_type = 'return'), 0) as return_amount,
        max(loaded_at) as _loaded_at_max
    from changed
    group by customer_id, transaction_date, category
)

select * from final
