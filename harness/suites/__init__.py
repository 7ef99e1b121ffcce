"""Test suites shipped with the harness (run by ``hil`` commands through pytest)."""
