//! Text the host puts in answers.

/// A caller's value as an error message quotes it: at most 64 characters,
/// so that a huge value is never echoed back whole.
pub fn cut(value: &str) -> String {
    if value.chars().count() <= 64 {
        value.to_string()
    } else {
        format!("{}...", value.chars().take(64).collect::<String>())
    }
}
