"""Sign-in throttling (OWASP authentication guidance): growing delays per user name
and address, never a lockout, and one attempt per pair at a time."""

from __future__ import annotations

import pytest

from fhirserver.auth.throttle import FREE_FAILURES, MAX_DELAY, delay


@pytest.mark.parametrize(("failures", "seconds"), [
    (0, 0), (1, 0), (FREE_FAILURES - 1, 0),  # a few typos cost nothing
    (FREE_FAILURES, 1), (FREE_FAILURES + 1, 2), (FREE_FAILURES + 5, 32),
    (FREE_FAILURES + 20, MAX_DELAY),  # capped: never a lockout
])
def test_delay_grows_and_is_capped(failures: int, seconds: int) -> None:
    assert delay(failures) == seconds
