//! Matching a visitor's page to a pool of its own organization.
//!
//! The rule: among the rules whose domain pattern matches the page's host and whose path prefix
//! matches its path, the highest `priority` wins; on a tie the longer path prefix wins, then the
//! exact domain over the wildcard, then the rule's id (so the choice is deterministic). No match
//! means the org's default pool. Rules are always those of the visitor's own org: the caller
//! loads them by org, and this function never sees another org's rules.

use crate::{DomainError, PoolId, RuleId};

/// A host name (`example.com`) or a wildcard over its subdomains (`*.example.com`, which matches
/// `a.example.com` and `a.b.example.com` but not `example.com` itself). Stored lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainPattern(String);

impl DomainPattern {
    pub const MAX_LEN: usize = 253;

    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let lower = s.trim().to_ascii_lowercase();
        let host = lower.strip_prefix("*.").unwrap_or(&lower);
        let valid = !host.is_empty()
            && lower.len() <= Self::MAX_LEN
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if valid {
            Ok(DomainPattern(lower))
        } else {
            Err(DomainError::InvalidDomainPattern(
                s.chars().take(64).collect(),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }

    /// Whether `host` (already lower case, as `url` gives it) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self.0.strip_prefix("*.") {
            Some(suffix) => host
                .strip_suffix(suffix)
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
            None => host == self.0,
        }
    }
}

/// A path prefix that matches on segment boundaries: `/support` matches `/support` and
/// `/support/billing` but not `/supportive`. `/` matches every path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPrefix(String);

impl PathPrefix {
    pub const MAX_LEN: usize = 512;

    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let valid = s.starts_with('/')
            && s.len() <= Self::MAX_LEN
            && !s.contains(['?', '#'])
            && !s.chars().any(char::is_control);
        if valid {
            Ok(PathPrefix(s.to_owned()))
        } else {
            Err(DomainError::InvalidPathPrefix(s.chars().take(64).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, path: &str) -> bool {
        let p = self.0.trim_end_matches('/');
        if p.is_empty() {
            return true;
        }
        match path.strip_prefix(p) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}

/// One routing rule of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRule {
    pub id: RuleId,
    pub pool_id: PoolId,
    pub domain: DomainPattern,
    pub path_prefix: PathPrefix,
    pub priority: i32,
}

/// Bounds of a rule priority.
pub const PRIORITY: (i32, i32) = (-1_000, 1_000);

/// The pool whose rule best matches `page`, or `None` (the caller then uses the default pool).
/// Pages that are not http(s) never match a rule.
pub fn match_pool(rules: &[PoolRule], page: &url::Url) -> Option<PoolId> {
    if !matches!(page.scheme(), "http" | "https") {
        return None;
    }
    let host = page.host_str()?;
    let path = page.path();
    rules
        .iter()
        .filter(|r| r.domain.matches(host) && r.path_prefix.matches(path))
        .max_by(|a, b| {
            (a.priority, a.path_prefix.0.len(), !a.domain.is_wildcard())
                .cmp(&(b.priority, b.path_prefix.0.len(), !b.domain.is_wildcard()))
                .then_with(|| b.id.cmp(&a.id))
        })
        .map(|r| r.pool_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pool: PoolId, domain: &str, path: &str, priority: i32) -> PoolRule {
        PoolRule {
            id: RuleId::new(),
            pool_id: pool,
            domain: DomainPattern::parse(domain).unwrap(),
            path_prefix: PathPrefix::parse(path).unwrap(),
            priority,
        }
    }

    fn page(s: &str) -> url::Url {
        url::Url::parse(s).unwrap()
    }

    #[test]
    fn wildcard_matches_subdomains_but_not_the_apex() {
        let p = DomainPattern::parse("*.Example.com").unwrap();
        assert!(p.matches("a.example.com"));
        assert!(p.matches("a.b.example.com"));
        assert!(!p.matches("example.com"));
        assert!(!p.matches("badexample.com"));
    }

    #[test]
    fn path_prefix_matches_on_segment_boundaries() {
        let p = PathPrefix::parse("/support").unwrap();
        assert!(p.matches("/support"));
        assert!(p.matches("/support/billing"));
        assert!(!p.matches("/supportive"));
        assert!(PathPrefix::parse("/").unwrap().matches("/anything"));
    }

    #[test]
    fn invalid_patterns_are_typed_errors() {
        assert!(DomainPattern::parse("").is_err());
        assert!(DomainPattern::parse("exa mple.com").is_err());
        assert!(DomainPattern::parse("*.").is_err());
        assert!(PathPrefix::parse("support").is_err());
        assert!(PathPrefix::parse("/a?b").is_err());
    }

    #[test]
    fn highest_priority_then_longest_prefix_wins() {
        let (a, b, c) = (PoolId::new(), PoolId::new(), PoolId::new());
        let rules = [
            rule(a, "shop.example.com", "/", 0),
            rule(b, "shop.example.com", "/checkout", 0),
            rule(c, "*.example.com", "/", 5),
        ];
        assert_eq!(
            match_pool(&rules, &page("https://shop.example.com/checkout/x")),
            Some(c)
        );
        let rules = &rules[..2];
        assert_eq!(
            match_pool(rules, &page("https://shop.example.com/checkout/x")),
            Some(b)
        );
        assert_eq!(
            match_pool(rules, &page("https://shop.example.com/cart")),
            Some(a)
        );
    }

    #[test]
    fn no_match_and_non_web_pages_fall_back_to_the_default() {
        let rules = [rule(PoolId::new(), "example.com", "/", 0)];
        assert_eq!(match_pool(&rules, &page("https://other.org/")), None);
        assert_eq!(match_pool(&rules, &page("file:///etc/passwd")), None);
    }
}
