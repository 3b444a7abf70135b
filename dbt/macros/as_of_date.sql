{#- The logical date of the run, as an ISO string: the var as_of_date (`--vars '{as_of_date: D}'`)
    or, when that is not set, the environment variable PIPELINE_AS_OF_DATE (what dbt-stage sets).
    Required: a model that reads time without it would silently depend on when it ran.

    Read at execution only. Parsing gets a placeholder (nothing is executed then), and nothing the
    parse stores depends on the date (tests name it as __as_of_date__ in their `where`, resolved by
    get_where_subquery at execution). So a new date through the environment re-uses the previous
    parse, where a new `--vars` makes dbt parse the whole project again (~1.5 s per invocation). -#}
{% macro as_of_date() -%}
    {%- if not execute -%}
        {{ return('1970-01-01') }}
    {%- endif -%}
    {%- set value = var('as_of_date', none) -%}
    {%- if value is none or (value | string | trim) == '' -%}
        {%- set value = env_var('PIPELINE_AS_OF_DATE', '') -%}
    {%- endif -%}
    {%- set text = value | string | trim -%}
    {%- if text == '' -%}
        {{ exceptions.raise_compiler_error("as_of_date is required: --vars '{as_of_date: 2024-06-01}' or PIPELINE_AS_OF_DATE=2024-06-01") }}
    {%- endif -%}
    {%- if not modules.re.match('^\\d{4}-\\d{2}-\\d{2}$', text) -%}
        {{ exceptions.raise_compiler_error("as_of_date must be a date YYYY-MM-DD, got '" ~ text ~ "'") }}
    {%- endif -%}
    {%- set parsed = modules.datetime.date.fromisoformat(text) -%}
    {{ return(parsed.isoformat()) }}
{%- endmacro %}

{#- An ISO date (a string or a date) as a SQL date literal; none gives a typed NULL. -#}
{% macro date_literal(value) -%}
    {%- if value is none -%}
        cast(null as date)
    {%- else -%}
        cast('{{ value }}' as date)
    {%- endif -%}
{%- endmacro %}

{#- The as_of_date as a SQL date literal. -#}
{% macro as_of_date_literal() -%}
    {{ date_literal(as_of_date()) }}
{%- endmacro %}

{#- Training snapshot cutoffs for the run: grid dates anchor + k * cadence whose label window
    [cutoff, cutoff + horizon) has closed by as_of_date, newest first, at most snapshot_count.
    A fixed grid (not "as_of_date minus k * cadence") means consecutive daily runs share their
    snapshots, so the training set only computes a new snapshot when another window closes. -#}
{% macro training_cutoffs() -%}
    {%- set as_of = modules.datetime.date.fromisoformat(as_of_date()) -%}
    {%- set anchor = modules.datetime.date.fromisoformat(var('snapshot_anchor_date') | string) -%}
    {%- set cadence = var('snapshot_cadence_days') | int -%}
    {%- set horizon = var('churn_horizon_days') | int -%}
    {%- set count = var('snapshot_count') | int -%}
    {%- if cadence < 1 or horizon < 1 or count < 1 -%}
        {{ exceptions.raise_compiler_error("snapshot_cadence_days, churn_horizon_days and snapshot_count must be positive") }}
    {%- endif -%}
    {%- set last_cutoff = as_of - modules.datetime.timedelta(days=horizon) -%}
    {%- set steps = ((last_cutoff - anchor).days // cadence) -%}
    {%- set cutoffs = [] -%}
    {%- for k in range(steps, steps - count, -1) if k >= 0 -%}
        {%- do cutoffs.append((anchor + modules.datetime.timedelta(days=k * cadence)).isoformat()) -%}
    {%- endfor -%}
    {{ return(cutoffs) }}
{%- endmacro %}

{#- A list of ISO dates as a SQL date array literal (empty list included). -#}
{% macro date_array(dates) -%}
    cast(array[{%- for d in dates -%}'{{ d }}'{{ ", " if not loop.last }}{%- endfor -%}] as date [])
{%- endmacro %}
