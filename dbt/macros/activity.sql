{#- The days the daily activity build recomputes (int_customer_activity_aggregated_to_daily): every
    transaction date ever carried by an id that has a line loaded after the table's watermark (its
    latest _loaded_at), from the id ledger; the new lines are read from the partitions the load log
    names. none on a full build (or an empty table): every day. Called by the model and by its
    pre_hook, both before the table changes, so they agree. -#}
{% macro activity_touched_days() -%}
    {%- if not (execute and is_incremental()) -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set watermark = run_query("select max(_loaded_at_max) from " ~ this).columns[0].values()[0] -%}
    {%- if watermark is none -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set ledger = ref('int_transaction_ids_ledger') -%}
    {%- if adapter.get_relation(database=ledger.database, schema=ledger.schema, identifier=ledger.identifier) is none -%}
        {{ return(none) }}  {#- not built yet (compiling alone, e.g. sqlfluff): without it, recompute every day -#}
    {%- endif -%}
    {%- set load_dates = new_load_dates('transactions', watermark) -%}
    {%- set touched_query -%}
        select distinct cast(seen.transaction_date as text)
        from {{ ledger }} as ledger
        cross join lateral unnest(ledger.transaction_dates) as seen (transaction_date)
        where ledger.transaction_id in (
            select new_lines.transaction_id
            from {{ ref('base_raw__transactions') }} as new_lines
            where
                new_lines.loaded_at > cast('{{ watermark }}' as timestamptz)
                {%- if load_dates is not none %}
                    and new_lines.load_date = any({{ date_array(load_dates) }})
                {%- endif %}
        )
    {%- endset -%}
    {{ return(run_query(touched_query).columns[0].values() | reject('none') | list | sort) }}
{%- endmacro %}

{#- The activity model's pre_hook: empty the days it is about to recompute, so that a day left with
    no row (the old day of a re-dated transaction) does not keep its stale aggregate. -#}
{% macro delete_touched_activity_days() -%}
    {%- set touched = activity_touched_days() -%}
    {%- if touched -%}
        delete from {{ this }} where activity_date = any({{ date_array(touched) }})
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}
