//! switchyard core (placeholder until implemented).
