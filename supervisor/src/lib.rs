//! switchyard supervisor (placeholder until implemented).
