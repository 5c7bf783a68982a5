-- Reconciliation rule: for each (fiscal_year, amount_type), every mart row must
-- come from the newest release that reports that slice in the unioned input,
-- and a slice must never mix releases.
with newest as (
    select fiscal_year, amount_type, max(source_release) as newest_release
    from {{ ref('int_gf_revenue_unioned') }}
    group by all
)

select f.fiscal_year, f.amount_type, f.source_release, n.newest_release, count(*) as n_rows
from {{ ref('fct_gf_revenue') }} as f
left join newest as n using (fiscal_year, amount_type)
where n.newest_release is null or f.source_release <> n.newest_release
group by all
