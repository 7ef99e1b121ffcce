"""The ``emu:`` pyOCD probe plugin: QEMU machines and chip models behind an emulated debug port.

pyOCD loads :mod:`.plugin` through its ``pyocd.probe`` entry point while ``import pyocd`` is still
running. If this package is imported first, pyOCD must finish importing before :mod:`.plugin` is
executed, or the entry point finds a half-made module (a circular import): hence the import here.
"""

import pyocd  # noqa: F401 - see above
