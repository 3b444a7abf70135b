{#- First activity date per customer (any event). For a customer active before a cutoff, the first
    activity ever is before that cutoff, so tenure never looks past it. -#}
with

activity as (
    select * from {{ ref('int_customer_activity_aggregated_to_daily') }}
),

final as (
    select
        customer_id,
        min(activity_date) as first_activity_date
    from activity
    group by customer_id
)

select * from final
