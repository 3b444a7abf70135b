{#- Valid transactions, one row per transaction id (the latest load wins). Negative amounts are
    returns: their own event type with a positive amount, so that spend sums never mix the two. -#}
with

base as (
    select * from {{ ref('base_raw__transactions') }}
),

final as (
    select
        transaction_id,
        customer_id,
        transaction_date,
        coalesce(category, 'unknown') as category,
        merchant_id,
        case when amount < 0 then 'return' else 'purchase' end as event_type,
        abs(amount) as amount,
        load_date,
        loaded_at
    from base
    where
        not is_superseded
        and exclusion_reason is null
)

select * from final
