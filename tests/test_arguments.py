"""Argument checks shared by every env and command: huge integers are refused by name."""

from __future__ import annotations

import pytest

from llmsched_env import arguments


@pytest.mark.parametrize(
    ("check", "value", "shown"),
    [
        # float() overflowed: an OverflowError naming nothing.
        (lambda v: arguments.real("Env", "sla", v, positive=True), 10**400, "401 digits"),
        # Python refuses to print an int of more than 4,300 digits, so building the message
        # raised an error of its own.
        (lambda v: arguments.integer("Env", "n_gpus", v, maximum=1024), 10**5000, "5001 digits"),
    ],
    ids=["real", "integer"],
)
def test_a_huge_integer_is_refused_naming_the_argument(check, value, shown):
    with pytest.raises(
        ValueError, match=rf"^Env: \w+ must be .*, got an integer of about {shown}$"
    ):
        check(value)
