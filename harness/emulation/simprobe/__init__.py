"""The ``emu:`` pyOCD probe plugin: QEMU machines and chip models behind an emulated debug port.

Nothing is imported here: pyOCD loads :mod:`.plugin` while ``import pyocd`` is still running.
"""
