-- FY2017-18 release -> shared vocabulary, normalised codes, one row per amount.
-- Drift handled here: department_name -> dept_name, program_code -> prog_code,
-- 1-digit dept / 3-digit program codes zero-padded, mixed-case names uppercased,
-- no org level 5 in this release.
with unpivoted as (
    {{ unpivot_fiscal_year_columns(source('raw', 'raw_gf_revenue_fy2017_18')) }}
)

select
    'fy2017-18'                                  as source_release,
    {{ normalise_code('dept_code', 2) }}         as dept_code,
    {{ normalise_name('department_name') }}      as dept_name,
    cast(null as varchar)                        as org_level_5_code,
    cast(null as varchar)                        as org_level_5_name,
    {{ normalise_code('program_code', 4) }}      as prog_code,
    {{ normalise_name('program_name') }}         as prog_name,
    {{ normalise_code('fund_code') }}            as fund_code,
    {{ normalise_name('fund_name') }}            as fund_name,
    {{ normalise_code('account_code') }}         as account_code,
    {{ normalise_name('account_name') }}         as account_name,
    fiscal_year,
    amount_type,
    amount,
    amount_column                                as source_column,
    {{ pudato_version_columns() }}
from unpivoted
