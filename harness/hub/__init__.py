"""The IoT Hub stand-in above the broker: the lab CA (:mod:`harness.hub.ca`) and, on the run's
broker, the hub's and DPS's services."""
