{{ config(materialized='ephemeral') }}
{#- Customer metrics as of the run's as_of_date. Ephemeral: it depends on the date, so it must not be
    a shared relation that two runs for different dates could overwrite; the marts inline it. -#}
{{ customer_features([as_of_date()]) }}
