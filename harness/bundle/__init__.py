"""Field bundles: what a device saw (its traffic, its telemetry, its build's identity), packed so
that the bench can replay it and say whether the bench reports the same (`hil capture`, `hil reproduce`)."""
