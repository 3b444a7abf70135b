{#- Text -> typed values without ever raising: raw columns are dirty text by contract, and one bad
    value must become NULL (and be counted by the audit), not abort the build. Nested CASEs because
    PostgreSQL does not promise short-circuit evaluation of AND. -#}

{#- Dates: the common case (day 01-28, year >= 1000) is one regex and a cast; only days 29-31 pay
    for the month-length check. This runs on every landed line, so it must stay cheap. -#}
{% macro safe_date(column) -%}
    case
        when trim({{ column }}) ~ '^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])$' then cast(trim({{ column }}) as date)
        when trim({{ column }}) ~ '^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(29|30|31)$' then
            case
                when
                    substr(trim({{ column }}), 9, 2)::int <= extract(
                        day from make_date(
                            substr(trim({{ column }}), 1, 4)::int, substr(trim({{ column }}), 6, 2)::int, 1
                        ) + interval '1 month - 1 day'
                    )
                    then cast(trim({{ column }}) as date)
            end
    end
{%- endmacro %}

{% macro safe_numeric(column) -%}
    case
        when trim({{ column }}) ~ '^[+-]?\d{1,12}(\.\d{1,6})?$' then cast(trim({{ column }}) as numeric(20, 6))
    end
{%- endmacro %}

{% macro safe_integer(column) -%}
    case
        when trim({{ column }}) ~ '^[+-]?\d{1,9}$' then cast(trim({{ column }}) as integer)
    end
{%- endmacro %}

{#- Lower-case, trimmed, inner whitespace collapsed; blank -> NULL. -#}
{% macro clean_label(column) -%}
    nullif(regexp_replace(lower(trim({{ column }})), '\s+', ' ', 'g'), '')
{%- endmacro %}

{#- A source table, or an empty relation with its columns (all text, plus the load metadata) when
    the table does not exist yet: raw.customers may be missing, because ingest creates raw tables on
    their first load. The model still depends on the source (for lineage and freshness). -#}
{% macro source_or_empty(source_name, table_name, columns) -%}
    {%- set src = source(source_name, table_name) -%}
    {%- set relation = adapter.get_relation(database=src.database, schema=src.schema, identifier=src.identifier) if execute else src -%}
    {%- if relation is not none -%}
        {{ src }}
    {%- else -%}
        (
            select
                {%- for column in columns %}
                cast(null as text) as {{ column }},
                {%- endfor %}
                cast(null as bigint) as _line_number,
                cast(null as date) as _partition_date,
                cast(null as uuid) as _batch_id,
                cast(null as text) as _source_file,
                cast(null as timestamptz) as _loaded_at
            where false
        ) as {{ table_name }}_not_loaded
    {%- endif -%}
{%- endmacro %}
