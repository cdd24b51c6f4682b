//! Configuration from environment variables, with errors that name the
//! variable. The SAM template sets exactly the variables each function reads
//! through these two functions (a test compares them).

/// A missing or unusable environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvError(pub String);

impl std::fmt::Display for EnvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EnvError {}

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
