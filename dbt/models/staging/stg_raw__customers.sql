{#- Customer attributes, one row per customer (the latest load wins). raw.customers may not exist:
    then this is an empty relation with the same columns, and demographic features become unknown. -#}
{%- set source_columns = ['customer_id', 'age', 'region', 'account_type', 'signup_date'] %}

with

source as (
    select * from {{ source_or_empty('raw', 'customers', source_columns) }}
),

typed as (
    select
        nullif(trim(customer_id), '') as customer_id,
        {{ safe_integer('age') }} as age,
        {{ clean_label('region') }} as region,
        {{ clean_label('account_type') }} as account_type,
        {{ safe_date('signup_date') }} as signup_date,
        _loaded_at as loaded_at,
        row_number() over (
            partition by nullif(trim(customer_id), '')
            order by _loaded_at desc, _partition_date desc, _line_number desc
        ) as load_rank
    from source
),

final as (
    select
        customer_id,
        case when age between 0 and 120 then age end as age,
        region,
        account_type,
        signup_date,
        loaded_at
    from typed
    where
        customer_id is not null
        and load_rank = 1
)

select * from final
