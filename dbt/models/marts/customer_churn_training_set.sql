{%- set cutoffs = training_cutoffs() -%}
{{
    config(
        unique_key=['cutoff_date', 'customer_id'],
        post_hook=[
            "delete from {{ this }} where cutoff_date <> all({{ date_array(training_cutoffs()) }})",
            "create index if not exists {{ this.identifier }}_invocation_idx on {{ this }} (_dbt_invocation_id)",
        ],
    )
}}
{#- Labelled snapshots for training: features at each grid cutoff C whose label window [C, C + H) has
    closed by as_of_date (newest snapshot_count of them), churned = no transaction in the window.
    Incremental on a fixed cutoff grid: a run computes only cutoffs it does not hold yet and drops
    those outside the run's set (post-hook), so the table equals a full rebuild for as_of_date. -#}
{%- set missing = cutoffs -%}
{%- if execute and is_incremental() -%}
    {%- set present = run_query("select distinct cast(cutoff_date as text) from " ~ this).columns[0].values() -%}
    {%- set missing = cutoffs | reject('in', present) | list -%}
{%- endif %}

with

snapshots as (
    {{ customer_features(missing) | indent(4) }}
),

activity as (
    select * from {{ ref('int_customer_activity_aggregated_to_daily') }}
),

label_windows as (
    select
        cutoff_date,
        cutoff_date + {{ var('churn_horizon_days') | int }} as label_window_end
    from unnest({{ date_array(missing) }}) as cutoff_list (cutoff_date)
),

active_in_window as (
    select distinct
        label_windows.cutoff_date,
        activity.customer_id
    from label_windows
    inner join activity
        on
            label_windows.cutoff_date <= activity.activity_date
            and label_windows.label_window_end > activity.activity_date
),

final as (
    select
        snapshots.cutoff_date,
        {{ feature_columns('snapshots') }},
        label_windows.label_window_end,
        active_in_window.customer_id is null as churned,
        snapshots._last_event_date,
        cast('{{ invocation_id }}' as text) as _dbt_invocation_id
    from snapshots
    inner join label_windows on snapshots.cutoff_date = label_windows.cutoff_date
    left join active_in_window
        on
            snapshots.cutoff_date = active_in_window.cutoff_date
            and snapshots.customer_id = active_in_window.customer_id
)

select * from final
