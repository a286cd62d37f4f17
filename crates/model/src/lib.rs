//! memhp-model: the pure, deterministic memory-hotplug state machine.
