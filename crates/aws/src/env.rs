//! Configuration from environment variables, with errors that name the
//! variable. The SAM template sets exactly the variables each function reads
//! through these two functions (a test compares them).

/// A missing or unusable environment variable; the message names it, never
/// its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EnvError(pub String);

/// The value of `name`, which must be set and not empty.
pub fn required(name: &str) -> Result<String, EnvError> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v),
        Ok(_) => Err(EnvError(format!("environment variable {name} is empty"))),
        Err(_) => Err(EnvError(format!("environment variable {name} is not set"))),
    }
}

/// The value of `name` if it is set and not empty.
pub fn optional(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}
