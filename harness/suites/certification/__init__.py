"""The certification suite: one module per clause family of the security module's spec
(``shared/spec/security-module.md``), run by ``hil certify`` against a board and a build.

Every test names its clause (``@pytest.mark.clause``) and takes its expectations from the build's
manifest and the board's capabilities, never from constants; no clause depends on console lines
(a stock image prints none of the module's). Verdicts: passed, failed (the firmware),
infrastructure (the harness or the lab: exit 3), known defect (declared by the manifest), not
applicable (the board lacks a capability the clause needs).

- transport (spec 1): topic and property bag, QoS 1 and retain 0, NetX framing on the wire,
  identity (client id, user name, clean session) and module id and version;
- events (spec 2, 3.1): order, ids, time; SystemInformation; cadence; first collection;
- network activity (spec 3.2): TCP, UDP, ICMP records with bytes, aggregation, the flow cap;
- outages (spec 3.3): broker closes, link cut, frozen broker, outage past the pending time;
- the known defect (spec 3.4); security (a device cannot publish as or read another).
"""
