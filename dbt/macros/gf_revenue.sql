{#- Helpers shared by the two General Fund Revenue staging models. -#}

{#-
  normalise_code(expr, width): trim + upper a code; if it is purely numeric,
  left-pad it with zeros to `width` (FY17-18 wrote dept 2 / program 201, FY21-22
  writes 02 / 0201). Non-numeric codes (e.g. 53LVL4, OTHERSPF, 53BD) are kept
  as-is apart from trim/upper. Empty -> NULL (caught by not_null tests).
-#}
{% macro normalise_code(expr, width=none) -%}
    {%- set trimmed = "upper(nullif(trim(" ~ expr ~ "), ''))" -%}
    {%- if width -%}
    case
        when regexp_full_match({{ trimmed }}, '[0-9]+')
            then lpad({{ trimmed }}, greatest({{ width }}, length({{ trimmed }}))::integer, '0')
        else {{ trimmed }}
    end
    {%- else -%}
    {{ trimmed }}
    {%- endif -%}
{%- endmacro %}

{#- normalise_name(expr): trim + upper for matching across releases (names change case). -#}
{% macro normalise_name(expr) -%}
    upper(nullif(trim({{ expr }}), ''))
{%- endmacro %}

{#-
  unpivot_fiscal_year_columns(relation):
  Turns the wide amount columns of a raw release into rows.

  The platform normalises headers like "2016-17 Adopted Budget" to
  _2016_17_adopted_budget, so every amount column matches
  ^_YYYY_YY_<label>$. We unpivot every such column (whatever fiscal years a
  release carries) into (amount_column, amount_raw) and parse:
    fiscal_year  '2016-17'
    amount_type  actuals | adopted | estimates | proposed
  An unknown label yields amount_type NULL, which the not_null /
  accepted_values tests turn into a failed build rather than silent loss.
  Blank or NULL amounts are dropped; anything else must cast to DECIMAL(18,2)
  (cast, not try_cast: a malformed amount fails the build).
-#}
{% macro unpivot_fiscal_year_columns(relation) -%}
    select
        *,
        regexp_extract(amount_column, '^_([0-9]{4})_([0-9]{2})_', 1)
            || '-' || regexp_extract(amount_column, '^_([0-9]{4})_([0-9]{2})_', 2) as fiscal_year,
        case regexp_extract(amount_column, '^_[0-9]{4}_[0-9]{2}_(.+)$', 1)
            when 'actuals' then 'actuals'
            when 'adopted' then 'adopted'
            when 'adopted_budget' then 'adopted'
            when 'estimates' then 'estimates'
            when 'proposed' then 'proposed'
            when 'proposed_budget' then 'proposed'
        end as amount_type,
        cast(trim(amount_raw) as decimal(18, 2)) as amount
    from (
        unpivot {{ relation }}
        on columns('^_[0-9]{4}_[0-9]{2}_')
        into name amount_column value amount_raw
    )
    where nullif(trim(amount_raw), '') is not null
{%- endmacro %}
