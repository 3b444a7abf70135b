{#- The columns of a valid transaction, from a line of base_raw__transactions (`alias`): negative
    amounts are returns, their own event type with a positive amount, so spend sums never mix the
    two. Shared by staging (stg_raw__transactions) and the daily activity build, which picks the
    latest copies through the id ledger instead of staging's anti-join but must shape them the same. -#}
{% macro valid_transaction_columns(alias) -%}
    {{ alias }}.transaction_id,
    {{ alias }}.customer_id,
    {{ alias }}.transaction_date,
    coalesce({{ alias }}.category, 'unknown') as category,
    {{ alias }}.merchant_id,
    case when {{ alias }}.amount < 0 then 'return' else 'purchase' end as event_type,
    abs({{ alias }}.amount) as amount,
    {{ alias }}.load_date,
    {{ alias }}.loaded_at
{%- endmacro %}
