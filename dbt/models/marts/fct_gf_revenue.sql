-- One row per (dept_code, prog_code, fund_code, account_code, fiscal_year, amount_type).
-- Reconciliation: each (fiscal_year, amount_type) slice is taken whole from the
-- newest release that reports it (FY2021-22 over FY2017-18); an older release's
-- rows for that slice are dropped, never mixed in.
select
    dept_code,
    dept_name,
    prog_code,
    prog_name,
    fund_code,
    fund_name,
    account_code,
    account_name,
    org_level_5_code,
    org_level_5_name,
    fiscal_year,
    amount_type,
    amount,
    source_release,
    {{ pudato_version_columns() }}
from {{ ref('int_gf_revenue_unioned') }}
where release_rank = 1
