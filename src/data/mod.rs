//! Synthetic sequence tasks and character-level text data.
