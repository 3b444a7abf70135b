{{
    config(
        materialized='incremental',
        unique_key='activity_date',
        incremental_strategy='delete+insert',
        on_schema_change='fail',
        pre_hook="{{ delete_touched_activity_days() }}",
        post_hook=[
            "create index if not exists {{ this.identifier }}_activity_date_idx on {{ this }} (activity_date)",
            "create index if not exists {{ this.identifier }}_customer_window_idx on {{ this }}
                (customer_id, category, activity_date)
                include (purchase_count, purchase_amount, purchase_amount_squared, return_count, return_amount)",
            after_commit("vacuum {{ this }}"),
        ],
    )
}}
{#- Customer activity per day and category: the one input of every feature and label. Sums of
    squares travel along so that spend volatility can be computed from daily rows exactly.
    Incremental by activity date: a run recomputes only the days touched by lines loaded after the
    table's watermark (max _loaded_at seen), including the old days of re-sent transactions;
    those days are deleted first (pre_hook: delete+insert alone would keep a day that no row is left
    for, such as the old day of a re-dated transaction) and inserted again. A correction that deletes
    raw lines without re-sending them needs --full-refresh.
    Cost follows the day's new lines, not the history: the new lines come from the raw partitions
    the load log names (new_load_dates), the days their ids ever carried and whether a line is still
    the latest copy of its id come from the id ledger (an index probe per line). Which copy counts
    is staging's rule (latest load wins, an invalid latest copy excludes the transaction), and the
    columns are staging's (valid_transaction_columns).
    Two indexes: activity_date for the day deletes and the label windows; (customer, category, date)
    with the sums included for customer_features, which reads its windows from it in group order.
    The vacuum after each run (only the pages the run changed) keeps those reads index-only. -#}
{%- set touched = activity_touched_days() %}

with

lines as (
    select * from {{ ref('base_raw__transactions') }}
),

ledger as (
    select * from {{ ref('int_transaction_ids_ledger') }}
),

changed as (
    select {{ valid_transaction_columns('lines') }}
    from lines
    inner join ledger
        on
            lines.transaction_id = ledger.transaction_id
            and lines.loaded_at = ledger.latest_loaded_at
            and lines.load_date = ledger.latest_load_date
            and lines.line_number = ledger.latest_line_number
    where
        {% if touched is none -%}
            true
        {%- elif touched | length == 0 -%}
            false
        {%- else -%}
            {#- a valid transaction is never dated after its load date, so the touched days' rows all have
                load_date >= the first touched day: that bound reaches the raw partitions -#}
            lines.transaction_date = any({{ date_array(touched) }})
            and lines.load_date >= {{ date_literal(touched[0]) }}
        {%- endif %}
        and lines.exclusion_reason is null
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
