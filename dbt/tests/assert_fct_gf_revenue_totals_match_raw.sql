-- Totals per (source_release, fiscal_year, amount_type) in the mart must equal
-- the totals computed straight from the raw source tables, for every slice the
-- mart keeps from that release; row counts must equal the raw non-blank cells.
--
-- Independence: the raw side does NOT reuse the staging unpivot. It lists the
-- raw columns from the warehouse catalog and parses their names here, in Jinja
-- (Python regex), then sums each raw column directly. A raw amount column whose
-- suffix is not recognised fails the test rather than being skipped.
--
-- Failure rows:
--   'totals or row counts differ'   kept slice does not reconcile with raw
--   'mart slice has no raw column'  mart carries a slice no raw column supports
--   'raw slice missing from mart'   raw amounts that the mart carries from no release
--   'unrecognised raw amount column'
{%- set releases = [
    ('fy2017-18', 'raw_gf_revenue_fy2017_18'),
    ('fy2021-22', 'raw_gf_revenue_fy2021_22'),
] %}
{%- set kinds = {
    'actuals': 'actuals',
    'adopted': 'adopted', 'adopted_budget': 'adopted',
    'estimates': 'estimates',
    'proposed': 'proposed', 'proposed_budget': 'proposed',
} %}
{%- set selects = [] %}
{%- if execute %}
  {%- for release, table in releases %}
    {%- set rel = source('raw', table) %}
    {%- for col in adapter.get_columns_in_relation(rel) %}
      {%- set m = modules.re.match('^_([0-9]{4})_([0-9]{2})_(.+)$', col.name) %}
      {%- if m %}
        {%- set fy = m.group(1) ~ '-' ~ m.group(2) %}
        {%- set kind = kinds.get(m.group(3), 'UNRECOGNISED:' ~ col.name) %}
        {%- do selects.append(
            "select '" ~ release ~ "' as source_release, '" ~ fy ~ "' as fiscal_year, '" ~ kind ~ "' as amount_type, "
            ~ "count(nullif(trim(" ~ adapter.quote(col.name) ~ "), '')) as n_rows, "
            ~ "coalesce(sum(cast(nullif(trim(" ~ adapter.quote(col.name) ~ "), '') as decimal(18, 2))), 0) as total "
            ~ "from " ~ rel
        ) %}
      {%- endif %}
    {%- endfor %}
  {%- endfor %}
{%- endif %}

with raw_totals as (
    {%- if selects %}
    {{ selects | join('\n    union all\n    ') }}
    {%- else %}
    select null::varchar as source_release, null::varchar as fiscal_year, null::varchar as amount_type,
           0::bigint as n_rows, 0::decimal(18, 2) as total
    where false
    {%- endif %}
),

mart_totals as (
    select source_release, fiscal_year, amount_type, count(*) as n_rows, sum(amount) as total
    from {{ ref('fct_gf_revenue') }}
    group by all
),

mart_slices as (
    select distinct fiscal_year, amount_type from mart_totals
),

compared as (
    select
        coalesce(r.source_release, m.source_release) as source_release,
        coalesce(r.fiscal_year, m.fiscal_year) as fiscal_year,
        coalesce(r.amount_type, m.amount_type) as amount_type,
        r.n_rows as raw_rows,
        m.n_rows as mart_rows,
        r.total as raw_total,
        m.total as mart_total,
        case
            when r.amount_type like 'UNRECOGNISED:%' then 'unrecognised raw amount column'
            when r.source_release is null then 'mart slice has no raw column'
            when m.source_release is not null
                 and (r.total <> m.total or r.n_rows <> m.n_rows) then 'totals or row counts differ'
            when m.source_release is null
                 and r.n_rows > 0
                 and not exists (
                     select 1 from mart_slices as s
                     where s.fiscal_year = r.fiscal_year and s.amount_type = r.amount_type
                 ) then 'raw slice missing from mart'
        end as problem
    from raw_totals as r
    full outer join mart_totals as m
        on r.source_release = m.source_release
        and r.fiscal_year = m.fiscal_year
        and r.amount_type = m.amount_type
)

select * from compared where problem is not null
