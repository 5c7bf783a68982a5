{#-
  pudato_version_columns()

  Emits the two lineage columns every Pudato model must carry:
    _pudato_logic_version  <- var('pudato_logic_version', 'unversioned')
    _pudato_job_id         <- var('pudato_job_id', 'adhoc')

  Call it inside a select list, e.g.

      select
          dept_code,
          amount,
          {{ pudato_version_columns() }}
      from {{ ref('...') }}

  It renders two comma-separated expressions with no trailing comma, so put it
  last (or follow it with a comma yourself).
-#}
{% macro pudato_version_columns() -%}
    {%- set logic_version = var('pudato_logic_version', 'unversioned') | string -%}
    {%- set job_id = var('pudato_job_id', 'adhoc') | string -%}
    cast('{{ logic_version | replace("'", "''") }}' as varchar) as _pudato_logic_version,
    cast('{{ job_id | replace("'", "''") }}' as varchar) as _pudato_job_id
{%- endmacro %}
