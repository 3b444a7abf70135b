{{
    config(
        unique_key=['as_of_date', 'customer_id'],
        pre_hook="{% if is_incremental() %}delete from {{ this }} where as_of_date = {{ as_of_date_literal() }}{% endif %}",
        post_hook="create index if not exists {{ this.identifier }}_as_of_date_idx on {{ this }} (as_of_date)",
    )
}}
{#- One row per customer active in the lookback window as of as_of_date: the snapshot the predictor
    scores. Incremental: each run replaces its own as_of_date (pre-hook delete + delete+insert on the
    key), so reruns are idempotent and backfills build a history of snapshots. -#}
with

metrics as (
    select * from {{ ref('int_customer_metrics_as_of_date') }}
),

final as (
    select
        metrics.cutoff_date as as_of_date,
        {{ feature_columns('metrics') }},
        metrics._last_event_date,
        cast('{{ invocation_id }}' as text) as _dbt_invocation_id
    from metrics
)

select * from final
