{#- The leakage guard: a feature row for cutoff C may only use events strictly before C.
    Fails every row whose latest contributing event (event_column) is on or after its cutoff, whose
    recency is below one day, or that has no contributing event at all. The mart builds these columns
    from the same filtered events as the features, so a window or join that lets a later event in
    shows up here. -#}
{% test point_in_time(model, cutoff_column, event_column, recency_column=none) %}
select *
from {{ model }}
where
    {{ event_column }} is null
    or {{ event_column }} >= {{ cutoff_column }}
    {%- if recency_column is not none %}
        or {{ recency_column }} < 1
        or {{ recency_column }} != {{ cutoff_column }} - {{ event_column }}
    {%- endif %}
{% endtest %}
