//! Organizations, their settings, and the closed sets of states the product moves through.

use crate::DomainError;

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident, $kind:literal { $($(#[$vdoc:meta])* $variant:ident => $s:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable wire and database spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }

            /// Parses the stable spelling; anything else is a typed error.
            pub fn parse(s: &str) -> Result<Self, DomainError> {
                match s {
                    $($s => Ok($name::$variant),)+
                    _ => Err(DomainError::UnknownVariant { kind: $kind, value: s.chars().take(64).collect() }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}

string_enum!(
    /// Billing-driven status of an organization. Only `Active` lets agents take calls.
    OrgStatus, "org status" {
        Active => "active",
        PastDue => "past_due",
        Paused => "paused",
        Cancelled => "cancelled",
    }
);

impl OrgStatus {
    /// Whether agents of an org in this status may be available and receive calls.
    pub fn may_take_calls(self) -> bool {
        matches!(self, OrgStatus::Active)
    }
}

string_enum!(
    /// What an agent may do inside its organization.
    Role, "role" {
        Admin => "admin",
        Agent => "agent",
    }
);

string_enum!(
    /// An agent's presence. Only the agent chooses `Available` or `Away`; the hub moves it to the others.
    Presence, "presence" {
        Offline => "offline",
        Available => "available",
        Away => "away",
        Ringing => "ringing",
        InCall => "in_call",
    }
);

string_enum!(
    /// Where a call is in its life.
    CallState, "call state" {
        Requested => "requested",
        Ringing => "ringing",
        Connected => "connected",
        Reconnecting => "reconnecting",
        Ended => "ended",
    }
);

string_enum!(
    /// Why a call ended. Every end has exactly one.
    EndReason, "end reason" {
        AgentEnded => "agent_ended",
        VisitorEnded => "visitor_ended",
        NoAnswer => "no_answer",
        NoAgents => "no_agents",
        AgentRemoved => "agent_removed",
        OrgBlocked => "org_blocked",
        ReconnectExpired => "reconnect_expired",
        MaxDuration => "max_duration",
        ServerRestart => "server_restart",
        ServerShutdown => "server_shutdown",
    }
);

/// ISO 3166-1 alpha-2 country code, upper case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let b = s.as_bytes();
        if b.len() == 2 && b.iter().all(u8::is_ascii_alphabetic) {
            Ok(CountryCode([
                b[0].to_ascii_uppercase(),
                b[1].to_ascii_uppercase(),
            ]))
        } else {
            Err(DomainError::InvalidCountry(s.chars().take(16).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("CountryCode holds two ASCII letters by construction")
    }
}

/// Per-organization settings. Changes apply from the next call, never to one in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgSettings {
    /// How long a ring waits for the agent before ring-no-answer. Default 15 s.
    pub ring_timeout_ms: u32,
    /// Whether the visitor's page is shared with the agent during a call. Default on.
    pub cobrowse_enabled: bool,
    /// Whether calls are recorded to private storage. Default off.
    pub recording_enabled: bool,
    /// How long recordings and call details are kept. Default 30 days.
    pub retention_days: u32,
    /// Visitors from these countries are not offered calls.
    pub blocked_countries: Vec<CountryCode>,
    /// When a pool has nobody available: queue the visitor (true, default) or answer at once
    /// that no one is available (false).
    pub queue_when_unavailable: bool,
}

impl OrgSettings {
    pub const RING_TIMEOUT_MS: (u32, u32) = (5_000, 120_000);
    pub const RETENTION_DAYS: (u32, u32) = (1, 3_650);
    pub const MAX_BLOCKED_COUNTRIES: usize = 250;

    /// Checks every bound. Called on every write, so a stored row is always valid.
    pub fn validate(&self) -> Result<(), DomainError> {
        in_range(
            "ring_timeout_ms",
            self.ring_timeout_ms,
            Self::RING_TIMEOUT_MS,
        )?;
        in_range("retention_days", self.retention_days, Self::RETENTION_DAYS)?;
        if self.blocked_countries.len() > Self::MAX_BLOCKED_COUNTRIES {
            return Err(DomainError::TooLong {
                field: "blocked_countries",
                max: Self::MAX_BLOCKED_COUNTRIES,
            });
        }
        Ok(())
    }

    /// The blocked countries as stored: sorted, unique, comma-separated.
    pub fn blocked_countries_csv(&self) -> String {
        let mut v: Vec<&str> = self
            .blocked_countries
            .iter()
            .map(CountryCode::as_str)
            .collect();
        v.sort_unstable();
        v.dedup();
        v.join(",")
    }

    pub fn parse_blocked_countries(csv: &str) -> Result<Vec<CountryCode>, DomainError> {
        csv.split(',')
            .filter(|s| !s.is_empty())
            .map(CountryCode::parse)
            .collect()
    }
}

impl Default for OrgSettings {
    fn default() -> Self {
        OrgSettings {
            ring_timeout_ms: 15_000,
            cobrowse_enabled: true,
            recording_enabled: false,
            retention_days: 30,
            blocked_countries: Vec::new(),
            queue_when_unavailable: true,
        }
    }
}

fn in_range(field: &'static str, v: u32, (min, max): (u32, u32)) -> Result<(), DomainError> {
    if (min..=max).contains(&v) {
        Ok(())
    } else {
        Err(DomainError::OutOfRange {
            field,
            min: min.into(),
            max: max.into(),
        })
    }
}

/// Bounds of a pool membership tier: tier 1 rings first.
pub const TIERS: (u32, u32) = (1, 10);

/// Checks a pool membership tier.
pub fn validate_tier(tier: u32) -> Result<(), DomainError> {
    in_range("tier", tier, TIERS)
}

/// Bounds of a seat limit.
pub const SEAT_LIMIT_MAX: u32 = 100_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_round_trips_through_its_spelling() {
        for s in OrgStatus::ALL {
            assert_eq!(OrgStatus::parse(s.as_str()), Ok(*s));
        }
        for r in EndReason::ALL {
            assert_eq!(EndReason::parse(r.as_str()), Ok(*r));
        }
        for p in Presence::ALL {
            assert_eq!(Presence::parse(p.as_str()), Ok(*p));
        }
        assert!(OrgStatus::parse("Active").is_err());
    }

    #[test]
    fn only_active_orgs_take_calls() {
        let taking: Vec<_> = OrgStatus::ALL
            .iter()
            .filter(|s| s.may_take_calls())
            .collect();
        assert_eq!(taking, [&OrgStatus::Active]);
    }

    #[test]
    fn default_settings_are_valid_and_match_the_design() {
        let s = OrgSettings::default();
        s.validate().unwrap();
        assert_eq!(s.ring_timeout_ms, 15_000);
        assert!(s.cobrowse_enabled);
        assert!(!s.recording_enabled);
    }

    #[test]
    fn settings_out_of_bounds_are_refused() {
        let s = OrgSettings {
            ring_timeout_ms: 100,
            ..OrgSettings::default()
        };
        assert!(matches!(
            s.validate(),
            Err(DomainError::OutOfRange {
                field: "ring_timeout_ms",
                ..
            })
        ));
    }

    #[test]
    fn blocked_countries_are_normalised() {
        let s = OrgSettings {
            blocked_countries: OrgSettings::parse_blocked_countries("us,DE,us").unwrap(),
            ..OrgSettings::default()
        };
        assert_eq!(s.blocked_countries_csv(), "DE,US");
        assert!(OrgSettings::parse_blocked_countries("USA").is_err());
    }
}
