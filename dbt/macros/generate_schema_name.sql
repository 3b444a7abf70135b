{#- Schemas are exactly `staging`, `intermediate`, `marts` (the stage contract), never prefixed with the
    target schema: downstream stages read marts.* by name in every environment. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
