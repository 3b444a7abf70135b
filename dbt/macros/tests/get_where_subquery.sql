{#- dbt's hook for a test's `where` config, extended with two placeholders:
    - __rows_written_by_this_run__ becomes "rows this invocation wrote" (_dbt_invocation_id) during
      `dbt build` / `dbt run`, and "all rows" for a standalone `dbt test`. A daily build thus tests the
      training snapshots it added (older ones were tested by the run that wrote them), while `dbt test`
      still checks the whole table.
    - __as_of_date__ becomes the run's date as a SQL date (as_of_date_literal). dbt renders `where`
      when it parses; a date written there as {{ var('as_of_date') }} would tie the parse to the date,
      this placeholder is resolved here, at execution (see macros/as_of_date.sql). -#}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where') -%}
    {%- if where -%}
        {%- if '__rows_written_by_this_run__' in where -%}
            {%- if flags.WHICH in ('build', 'run') -%}
                {%- set written = "_dbt_invocation_id = '" ~ invocation_id ~ "'" -%}
            {%- else -%}
                {%- set written = "true" -%}
            {%- endif -%}
            {%- set where = where | replace('__rows_written_by_this_run__', written) -%}
        {%- endif -%}
        {%- if '__as_of_date__' in where -%}
            {%- set where = where | replace('__as_of_date__', as_of_date_literal()) -%}
        {%- endif -%}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ where }}) dbt_subquery
        {%- endset -%}
        {{ return(filtered) }}
    {%- else -%}
        {{ return(relation) }}
    {%- endif -%}
{%- endmacro %}
