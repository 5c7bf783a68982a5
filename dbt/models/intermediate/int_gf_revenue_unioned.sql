-- Both releases stacked, plus the ranking the mart reconciles on.
-- release_rank = 1 marks the newest release that carries a given
-- (fiscal_year, amount_type); newer is decided by source_release, whose
-- 'fyYYYY-YY' format sorts chronologically.
with unioned as (
    select * exclude (_pudato_logic_version, _pudato_job_id) from {{ ref('stg_gf_revenue_fy2017_18') }}
    union all by name
    select * exclude (_pudato_logic_version, _pudato_job_id) from {{ ref('stg_gf_revenue_fy2021_22') }}
)

select
    *,
    dense_rank() over (
        partition by fiscal_year, amount_type
        order by source_release desc
    ) as release_rank,
    {{ pudato_version_columns() }}
from unioned
