{#- The load dates (raw partitions) holding lines loaded after `watermark`, from ingest's batch log,
    so that an incremental build reads those partitions only instead of scanning all of raw for
    `_loaded_at > watermark`. Returns none (read every partition) when the log cannot say: no
    `raw.load_batches`, or a batch after the watermark without its dates (a history load, whose lines
    carry their own dates). A batch and its lines get the same `now()`: one load transaction. -#}
{% macro new_load_dates(table_name, watermark) -%}
    {%- set batches = adapter.get_relation(database=target.database, schema='raw', identifier='load_batches') -%}
    {%- if batches is none -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set query -%}
        select
            coalesce(bool_or(cardinality(batches.partition_dates) = 0), false) as undated,
            coalesce(string_agg(distinct cast(dates.load_date as text), ',' order by cast(dates.load_date as text)), '') as dates
        from {{ batches }} as batches
        left join lateral unnest(batches.partition_dates) as dates (load_date) on true
        where batches.table_name = '{{ table_name }}' and batches.loaded_at > cast('{{ watermark }}' as timestamptz)
    {%- endset -%}
    {%- set row = run_query(query).rows[0] -%}
    {%- if row[0] -%}
        {{ return(none) }}
    {%- endif -%}
    {{ return(row[1].split(',') | reject('equalto', '') | list) }}
{%- endmacro %}
