//! Typed identifiers: an `OrgId` can never be passed where an `AgentId` is expected.

use crate::DomainError;
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, format = Uuid))]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh random identifier.
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self, DomainError> {
                Uuid::parse_str(s).map(Self).map_err(|_| DomainError::InvalidId {
                    kind: $kind,
                    value: s.chars().take(64).collect(),
                })
            }
        }
    };
}

id_type!(/// An organization (a tenant).
    OrgId, "org id");
id_type!(/// An agent of one organization.
    AgentId, "agent id");
id_type!(/// A routing pool of one organization.
    PoolId, "pool id");
id_type!(/// A routing rule of one pool.
    RuleId, "rule id");
id_type!(/// A call between a visitor and an agent.
    CallId, "call id");
id_type!(/// A visitor's session, created from a widget key.
    VisitorSessionId, "visitor session id");
id_type!(/// A widget key (its id, not its public value).
    WidgetKeyId, "widget key id");
