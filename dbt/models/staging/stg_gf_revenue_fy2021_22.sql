-- FY2021-22 release -> shared vocabulary, normalised codes, one row per amount.
-- This release already uses dept_name / prog_code and 2-/4-digit codes; it adds
-- Org Level 5 Code/Name, which we keep (NULL for FY2017-18 rows).
with unpivoted as (
    {{ unpivot_fiscal_year_columns(source('raw', 'raw_gf_revenue_fy2021_22')) }}
)

select
    'fy2021-22'                                  as source_release,
    {{ normalise_code('dept_code', 2) }}         as dept_code,
    {{ normalise_name('dept_name') }}            as dept_name,
    {{ normalise_code('org_level_5_code') }}     as org_level_5_code,
    {{ normalise_name('org_level_5_name') }}     as org_level_5_name,
    {{ normalise_code('prog_code', 4) }}         as prog_code,
    {{ normalise_name('prog_name') }}            as prog_name,
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
