//! memhp-scenario: the real-kernel oracle scenario and transcript formats.
