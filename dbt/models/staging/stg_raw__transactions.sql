{#- Valid transactions, one row per transaction id: the latest load of an id wins (even when that
    latest copy is invalid, which then excludes the transaction). The de-duplication is an anti-join,
    not a window, so that filters on load or transaction dates reach the raw scan. Columns: see the
    macro valid_transaction_columns (returns are their own event type with a positive amount). -#}
with

lines as (
    select * from {{ ref('base_raw__transactions') }}
),

all_copies as (
    select
        transaction_id,
        loaded_at,
        load_date,
        line_number
    from {{ ref('base_raw__transactions') }}
),

latest_valid as (
    select lines.*
    from lines
    where
        lines.exclusion_reason is null
        and not exists (
            select 1
            from all_copies
            where
                all_copies.transaction_id = lines.transaction_id
                and (all_copies.loaded_at, all_copies.load_date, all_copies.line_number)
                > (lines.loaded_at, lines.load_date, lines.line_number)
        )
),

final as (
    select {{ valid_transaction_columns('latest_valid') }}
    from latest_valid
)

select * from final
