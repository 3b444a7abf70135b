{#- The feature column list, in contract order (customer_id first): shared by both marts. -#}
{% macro feature_columns(relation_alias) -%}
    {%- set columns = [
        'customer_id', 'recency_days', 'frequency', 'monetary_total', 'monetary_avg', 'tenure_days',
        'distinct_categories', 'spend_volatility', 'spend_trend', 'frequency_trend',
        'mean_days_between_purchases', 'return_rate', 'return_amount_total', 'age', 'region', 'account_type',
    ] -%}
    {%- for column in columns -%}
        {{ relation_alias }}.{{ column }}{{ ",\n        " if not loop.last }}
    {%- endfor -%}
{%- endmacro %}
