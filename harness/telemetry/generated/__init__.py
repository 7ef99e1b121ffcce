"""GENERATED CODE: ``AzureIoTSecurity/`` is the output of ``flatc --python`` (flatc 2.0.8).

Do not edit it; regenerate it from the schema after changing ``schema/AzureIoTSecurity.fbs``::

    flatc --python -o harness/telemetry/generated harness/telemetry/schema/AzureIoTSecurity.fbs

``tests/unit/telemetry/test_generated.py`` fails when it is not current.

This file is the only hand-written one here. It names the generated modules (so that
``from harness.telemetry import generated as fbs; fbs.Message.Start(...)`` type-checks; add a line
when the schema gains a type), and, because flatc's Python readers import their siblings by the
absolute name ``AzureIoTSecurity.X``, registers the package and its modules under that name too.
"""

import sys

from . import AzureIoTSecurity
from .AzureIoTSecurity import (
    UUID,
    Baseline,
    BaselineCheck,
    BaselineCheckResult,
    BaselineCheckSeverity,
    Event,
    Heartbeat,
    IPv4Addresses,
    IPv6Addresses,
    Level,
    ListeningPorts,
    ListeningPortsV4,
    ListeningPortsV6,
    Log,
    Message,
    NetworkActivity,
    NetworkActivityCommon,
    NetworkActivityV4,
    NetworkActivityV6,
    Payload,
    Process,
    ProcessEventType,
    Protocol,
    Record,
    SystemInformation,
)

MODULES = (
    UUID, Baseline, BaselineCheck, BaselineCheckResult, BaselineCheckSeverity, Event, Heartbeat,
    IPv4Addresses, IPv6Addresses, Level, ListeningPorts, ListeningPortsV4, ListeningPortsV6, Log,
    Message, NetworkActivity, NetworkActivityCommon, NetworkActivityV4, NetworkActivityV6, Payload,
    Process, ProcessEventType, Protocol, Record, SystemInformation,
)

sys.modules.setdefault("AzureIoTSecurity", AzureIoTSecurity)
for _module in MODULES:
    sys.modules.setdefault(f"AzureIoTSecurity.{_module.__name__.rsplit('.', 1)[1]}", _module)
