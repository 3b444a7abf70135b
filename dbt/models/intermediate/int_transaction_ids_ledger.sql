{{
    config(
        materialized='incremental',
        unique_key='transaction_id',
        incremental_strategy='delete+insert',
        on_schema_change='fail',
        indexes=[{'columns': ['transaction_id'], 'unique': True}],
    )
}}
{#- One row per transaction id ever landed: the key of its latest copy (loaded_at, load_date,
    line_number: the copy staging keeps) and every transaction date any of its copies carried.
    The daily activity build looks the day's ids up here (an index probe each) instead of scanning
    all of raw twice: once for the old days a re-sent transaction leaves, once to tell whether a line
    is still the latest copy of its id. Incremental: the new lines (read from the partitions the load
    log names) merged with their ids' previous rows. -#}
{%- set load_dates = none -%}
{%- if execute and is_incremental() -%}
    {%- set watermark = run_query("select max(latest_loaded_at) from " ~ this).columns[0].values()[0] -%}
    {%- if watermark is not none -%}
        {%- set load_dates = new_load_dates('transactions', watermark) -%}
    {%- endif -%}
{%- endif %}

with

new_lines as (
    select
        transaction_id,
        transaction_date,
        loaded_at,
        load_date,
        line_number
    from {{ ref('base_raw__transactions') }}
    where
        {% if is_incremental() -%}
            loaded_at > (select coalesce(max(previous.latest_loaded_at), '-infinity') from {{ this }} as previous)
            {%- if load_dates is not none %}
                and load_date = any({{ date_array(load_dates) }})
            {%- endif %}
        {%- else -%}
            true
        {%- endif %}
        and transaction_id is not null
),

copies as (
    select
        transaction_id,
        loaded_at,
        load_date,
        line_number,
        array[transaction_date] as transaction_dates
    from new_lines
    {%- if is_incremental() %}
        union all
        select
            previous.transaction_id,
            previous.latest_loaded_at,
            previous.latest_load_date,
            previous.latest_line_number,
            previous.transaction_dates
        from {{ this }} as previous
        where previous.transaction_id in (select new_lines.transaction_id from new_lines)
    {%- endif %}
),

latest as (
    select distinct on (transaction_id)
        transaction_id,
        loaded_at,
        load_date,
        line_number
    from copies
    order by transaction_id asc, loaded_at desc, load_date desc, line_number desc
),

dates as (
    select
        copies.transaction_id,
        array_agg(distinct seen.transaction_date order by seen.transaction_date) as transaction_dates
    from copies
    cross join lateral unnest(copies.transaction_dates) as seen (transaction_date)
    where seen.transaction_date is not null
    group by copies.transaction_id
),

final as (
    select
        latest.transaction_id,
        latest.loaded_at as latest_loaded_at,
        latest.load_date as latest_load_date,
        latest.line_number as latest_line_number,
        coalesce(dates.transaction_dates, cast(array[] as date[])) as transaction_dates
    from latest
    left join dates on latest.transaction_id = dates.transaction_id
)

select * from final
