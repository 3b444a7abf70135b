{#- Every landed transaction line, typed, with the reason it is excluded (NULL = valid). Kept apart
    from stg_raw__transactions so that the audit counts exactly what staging drops. No window
    functions here: a filter on load_date (the tests of recent loads) pushes down to raw. -#}
with

source as (
    select * from {{ source('raw', 'transactions') }}
),

typed as (
    select
        nullif(trim(transaction_id), '') as transaction_id,
        nullif(trim(customer_id), '') as customer_id,
        {{ safe_numeric('amount') }} as amount,
        {{ safe_date('transaction_date') }} as transaction_date,
        {{ clean_label('category') }} as category,
        nullif(trim(merchant_id), '') as merchant_id,
        _partition_date as load_date,
        _loaded_at as loaded_at,
        _batch_id as batch_id,
        _line_number as line_number
    from source
),

final as (
    select
        *,
        case
            when transaction_id is null then 'missing_transaction_id'
            when customer_id is null then 'missing_customer'
            when amount is null then 'unparseable_amount'
            when amount = 0 then 'zero_amount'
            when transaction_date is null then 'unparseable_date'
            when transaction_date > load_date then 'future_date'
        end as exclusion_reason
    from typed
)

select * from final
