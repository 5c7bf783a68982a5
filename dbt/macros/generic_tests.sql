{#- Project-local generic tests (no dbt packages are installed). -#}

{#-
  unique_combination_of_columns: fails with one row per duplicated key
  (NULLs compare equal here, so a NULL-bearing duplicate is still a duplicate).
-#}
{% test unique_combination_of_columns(model, combination_of_columns) %}
select
    {{ combination_of_columns | join(', ') }},
    count(*) as n_rows
from {{ model }}
group by {{ combination_of_columns | join(', ') }}
having count(*) > 1
{% endtest %}

{#- matches_regex: every non-NULL value must fully match `pattern` (DuckDB RE2). -#}
{% test matches_regex(model, column_name, pattern) %}
select {{ column_name }}
from {{ model }}
where {{ column_name }} is not null
  and not regexp_full_match({{ column_name }}, '{{ pattern }}')
{% endtest %}
