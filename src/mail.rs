//! Mail parsing.
