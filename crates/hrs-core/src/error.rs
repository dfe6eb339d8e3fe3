//! Errors as they are shown: a transport's errors say little on their own ("transport
//! error") and keep what happened in `source()`.

use std::error::Error as StdError;

/// Renders an error and its causes on one line, for logs and messages.
pub fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(error) = next {
        let text = error.to_string();
        // Wrappers often repeat their cause's message; say it once.
        if !parts.last().is_some_and(|last| last.ends_with(&text)) {
            parts.push(text);
        }
        next = error.source();
    }
    parts.join(": ")
}
