from pudato.backoff import Backoff
from pudato.errors import BackendUnavailable
from pudato.protocol import ErrorInfo, Result


def test_delays_double_up_to_the_cap():
    backoff = Backoff(initial_s=0.1, max_s=0.5, timeout_s=60, jitter=(1.0, 1.0))
    delays = [backoff.next_delay() for _ in range(5)]
    assert delays == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert backoff.attempts == 5


def test_jitter_stays_within_its_bounds():
    backoff = Backoff(initial_s=1.0, max_s=1.0, timeout_s=60, jitter=(0.5, 1.5))
    delays = [backoff.next_delay() or 0.0 for _ in range(200)]
    assert min(delays) >= 0.5
    assert max(delays) <= 1.5


def test_a_spent_deadline_gives_no_delay_and_no_sleep():
    backoff = Backoff(initial_s=10.0, timeout_s=0)
    assert backoff.next_delay() is None
    assert backoff.wait() is False


def test_no_deadline_never_gives_up():
    backoff = Backoff(initial_s=0.0, timeout_s=None)
    assert all(backoff.next_delay() is not None for _ in range(100))


def test_error_info_keeps_a_pudato_errors_message_and_kind():
    error = ErrorInfo.of(BackendUnavailable("catalog down", attempts=3), with_details=True)
    assert error.type == "BackendUnavailable"
    assert error.message == "catalog down"
    assert error.kind == "transient"
    assert error.details == {"attempts": 3}


def test_error_info_of_a_foreign_error_names_its_type():
    error = ErrorInfo.of(KeyError("x"))
    assert error.type == "KeyError"
    assert error.kind == "error"


def test_a_failed_result_carries_its_error_and_ids():
    result = Result.failed(
        job_id="j", step_id="s", handler="table", action="load", error=ErrorInfo.of(ValueError("bad"))
    )
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.message == "bad"
    assert result.duration_ms == 0


def test_a_statement_that_lost_the_catalog_is_transient():
    import duckdb

    from pudato.backends.warehouse.sql import translate_error

    lost = translate_error(duckdb.IOException("server closed the connection unexpectedly"), "INSERT INTO t SELECT 1")
    assert isinstance(lost, BackendUnavailable)
    assert lost.kind == "transient"


def test_a_statement_that_is_wrong_is_not_transient():
    import duckdb

    from pudato.backends.warehouse.sql import translate_error

    wrong = translate_error(duckdb.CatalogException("Table with name t does not exist!"), "SELECT * FROM t")
    assert not isinstance(wrong, BackendUnavailable)
