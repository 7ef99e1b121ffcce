"""GENERATED CODE: ``AzureIoTSecurity/`` is the output of ``flatc --python`` (flatc 2.0.8).

Do not edit it; regenerate it from the schema after changing ``schema/AzureIoTSecurity.fbs``::

    flatc --python -o harness/telemetry/generated harness/telemetry/schema/AzureIoTSecurity.fbs

``tests/unit/telemetry/test_generated.py`` fails when it is not current.

flatc's Python readers import their siblings by the absolute name ``AzureIoTSecurity.X``, so this
file (the only hand-written one here) registers the package and its modules under that name too.
"""

import importlib
import pkgutil
import sys

from . import AzureIoTSecurity

sys.modules.setdefault("AzureIoTSecurity", AzureIoTSecurity)
for _info in pkgutil.iter_modules(AzureIoTSecurity.__path__):
    _module = importlib.import_module(f"{AzureIoTSecurity.__name__}.{_info.name}")
    sys.modules.setdefault(f"AzureIoTSecurity.{_info.name}", _module)
