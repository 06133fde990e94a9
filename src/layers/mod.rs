//! Layers with explicit forward and hand-written backward.
