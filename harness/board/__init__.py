"""Boards brought up: one path for real and emulated boards.

- :mod:`harness.board.board`: :class:`Board` (flash, provision, reset, power_cycle, wait_booted,
  health, address, telemetry) and its bring-up state machine (:class:`BoardState`);
- :mod:`harness.board.parts`: the protocols a board is composed of (probe, console, power, address);
- :mod:`harness.board.kinds`: the registry of board kinds (``pyocd`` here, ``qemu`` from the
  emulation package), loaded through the ``hil.board_kinds`` entry points;
- :mod:`harness.board.recovery`: the recovery ladder; :mod:`harness.board.health`: health checks.

The run that boards share (networks, broker, collector) is :class:`harness.session.RunSession`.
"""
