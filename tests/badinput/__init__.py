"""The bad-input suite: every input surface of `hil`, tried as a careless user and an attacker would.

Each surface is one table module in ``tables/`` (a list ``CASES`` of ``Case`` rows). Every case runs
the real CLI (``harness.cli.main``) in a forked child with an address-space limit and a hard
timeout, and fails on a traceback, a hang, memory beyond the limit, exit 0 (silent acceptance), an
exit code other than the row's, or a message that does not match the row's pattern.

    .venv/bin/python -m pytest tests/badinput        # as CI runs it; prints the counts at the end
    .venv/bin/python -m tests.badinput --summary     # the same cases without pytest, then the counts
"""
