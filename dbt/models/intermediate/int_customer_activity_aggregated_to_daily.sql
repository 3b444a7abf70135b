{#- Customer activity per day and category: the one input of every feature and label. Sums of
    squares travel along so that spend volatility can be computed from daily rows exactly. -#}
with

transactions as (
    select * from {{ ref('stg_raw__transactions') }}
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
        coalesce(sum(amount) filter (where event_type = 'return'), 0) as return_amount
    from transactions
    group by customer_id, transaction_date, category
)

select * from final
