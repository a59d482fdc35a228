//! switchyard backend (placeholder until implemented).
