//! The vocabulary of frontdesk: identifiers, organizations and their settings, agents, pools and
//! their routing rules, presence, calls and their end reasons. No IO lives here: every type is a
//! plain value, every parser returns a typed [`DomainError`] instead of panicking, and every other
//! crate of the workspace speaks these types.
//!
//! ```
//! use frontdesk_domain::{PoolRule, PoolId, RuleId, DomainPattern, PathPrefix, match_pool};
//!
//! let support = PoolId::new();
//! let rules = [PoolRule {
//!     id: RuleId::new(),
//!     pool_id: support,
//!     domain: DomainPattern::parse("*.example.com").unwrap(),
//!     path_prefix: PathPrefix::parse("/support").unwrap(),
//!     priority: 10,
//! }];
//! let page = url::Url::parse("https://help.example.com/support/billing").unwrap();
//! assert_eq!(match_pool(&rules, &page), Some(support));
//! ```

mod ids;
mod org;
mod routing;

pub use ids::*;
pub use org::*;
pub use routing::*;

/// Everything that can be wrong with a value handed to the domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DomainError {
    #[error("invalid {kind}: {value:?}")]
    InvalidId { kind: &'static str, value: String },
    #[error("unknown {kind} {value:?}")]
    UnknownVariant { kind: &'static str, value: String },
    #[error("{field} must be between {min} and {max}")]
    OutOfRange {
        field: &'static str,
        min: i64,
        max: i64,
    },
    #[error("invalid domain pattern {0:?}: use a host name such as example.com or *.example.com")]
    InvalidDomainPattern(String),
    #[error("invalid path prefix {0:?}: it must start with '/' and hold no '?' or '#'")]
    InvalidPathPrefix(String),
    #[error("invalid country code {0:?}: use ISO 3166-1 alpha-2, such as DE")]
    InvalidCountry(String),
    #[error("{field} is too long (at most {max} characters)")]
    TooLong { field: &'static str, max: usize },
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
    #[error("{field} must not contain control characters")]
    ControlCharacters { field: &'static str },
}

/// An amount of money in the currency's minor unit (cents for USD), never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money {
    pub minor: i64,
    pub currency: Currency,
}

/// ISO 4217 currency code, upper case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let b = s.as_bytes();
        if b.len() == 3 && b.iter().all(u8::is_ascii_alphabetic) {
            Ok(Currency([
                b[0].to_ascii_uppercase(),
                b[1].to_ascii_uppercase(),
                b[2].to_ascii_uppercase(),
            ]))
        } else {
            Err(DomainError::UnknownVariant {
                kind: "currency",
                value: s.to_owned(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("Currency holds three ASCII letters by construction")
    }
}

/// Checks a human-entered text field: trimmed, non-empty, bounded in characters.
pub fn bounded_text(field: &'static str, value: &str, max: usize) -> Result<String, DomainError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(DomainError::Empty { field });
    }
    if v.chars().count() > max {
        return Err(DomainError::TooLong { field, max });
    }
    if v.chars().any(char::is_control) {
        return Err(DomainError::ControlCharacters { field });
    }
    Ok(v.to_owned())
}

/// Like [`bounded_text`], but an empty value is allowed.
pub fn optional_text(field: &'static str, value: &str, max: usize) -> Result<String, DomainError> {
    if value.trim().is_empty() {
        return Ok(String::new());
    }
    bounded_text(field, value, max)
}
