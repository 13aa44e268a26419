//! What the HTTP API reads and returns. These are the OpenAPI schemas; the store fills them.

use frontdesk_domain::{AgentId, OrgId, OrgStatus, PoolId, Role, RuleId, WidgetKeyId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrgView {
    pub id: OrgId,
    pub name: String,
    pub status: OrgStatus,
    pub plan: String,
    /// Agents the org may have; orgs already above it keep working but cannot add more.
    pub seat_limit: u32,
    pub seats_used: u32,
    pub settings: SettingsView,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SettingsView {
    pub ring_timeout_ms: u32,
    pub cobrowse_enabled: bool,
    pub recording_enabled: bool,
    pub retention_days: u32,
    pub blocked_countries: Vec<String>,
    pub queue_when_unavailable: bool,
}

/// Changes to org settings; absent fields are left as they are. Applies from the next call.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    /// 5,000 to 120,000.
    #[schema(minimum = 5000, maximum = 120000)]
    pub ring_timeout_ms: Option<u32>,
    pub cobrowse_enabled: Option<bool>,
    pub recording_enabled: Option<bool>,
    /// 1 to 3,650.
    #[schema(minimum = 1, maximum = 3650)]
    pub retention_days: Option<u32>,
    /// ISO 3166-1 alpha-2 codes; at most 250.
    #[schema(max_items = 250, pattern = "^[A-Za-z]{2}$")]
    pub blocked_countries: Option<Vec<String>>,
    pub queue_when_unavailable: Option<bool>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PoolView {
    pub id: PoolId,
    pub name: String,
    pub is_default: bool,
    pub rules: Vec<RuleView>,
    pub members: Vec<MemberView>,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RuleView {
    pub id: RuleId,
    pub domain: String,
    pub path_prefix: String,
    pub priority: i32,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemberView {
    pub agent_id: AgentId,
    pub tier: u32,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPool {
    /// 1 to 100 characters, unique among the org's pools.
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    pub name: String,
    /// Make this the org's default pool (the previous default stops being it).
    #[serde(default)]
    pub is_default: bool,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolPatch {
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    pub name: Option<String>,
    /// Only `true` is accepted: make another pool the default to move it.
    pub is_default: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRule {
    /// `example.com` or `*.example.com` (subdomains only).
    #[schema(
        min_length = 1,
        max_length = 253,
        pattern = r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
    )]
    pub domain: String,
    /// Matches on segment boundaries; default `/`.
    #[serde(default = "root_path")]
    #[schema(min_length = 1, max_length = 512, pattern = r"^/[^?#]*$")]
    pub path_prefix: String,
    /// Higher wins; -1,000 to 1,000; default 0.
    #[serde(default)]
    #[schema(minimum = -1000, maximum = 1000)]
    pub priority: i32,
}

fn root_path() -> String {
    "/".to_owned()
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AgentView {
    pub id: AgentId,
    /// The `sub` of the agent's tokens.
    pub user_id: String,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub pools: Vec<MembershipView>,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MembershipView {
    pub pool_id: PoolId,
    /// 1 (rings first) to 10.
    #[schema(minimum = 1, maximum = 10)]
    pub tier: u32,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAgent {
    /// The `sub` your identity provider puts in this agent's tokens.
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub user_id: String,
    #[schema(
        min_length = 3,
        max_length = 320,
        pattern = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
    )]
    pub email: String,
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub display_name: String,
    #[serde(default = "agent_role")]
    pub role: Role,
    #[serde(default)]
    pub pools: Vec<MembershipView>,
}

fn agent_role() -> Role {
    Role::Agent
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentPatch {
    #[schema(
        min_length = 3,
        max_length = 320,
        pattern = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
    )]
    pub email: Option<String>,
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub display_name: Option<String>,
    pub role: Option<Role>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentPools {
    /// The agent's complete set of memberships; replaces the previous one.
    pub pools: Vec<MembershipView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WidgetKeyView {
    pub id: WidgetKeyId,
    /// The public value for the widget's `data-key`.
    pub key: String,
    pub label: String,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWidgetKey {
    #[serde(default)]
    #[schema(max_length = 100)]
    pub label: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: String,
    /// The acting agent's id, or `system`.
    pub actor: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub details: serde_json::Value,
    pub at_ms: i64,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewVisitorSession {
    /// The org's public widget key.
    #[schema(min_length = 1, max_length = 100)]
    pub widget_key: String,
    /// The page the widget runs on (absolute http or https URL); it picks the pool.
    #[schema(
        min_length = 8,
        max_length = 2048,
        pattern = "^[Hh][Tt][Tt][Pp][Ss]?://"
    )]
    pub page_url: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VisitorSessionView {
    pub session_id: frontdesk_domain::VisitorSessionId,
    /// Server-signed; present it to rejoin (page reloads included) until it expires.
    pub visitor_token: String,
    pub expires_at_ms: i64,
    pub pool_id: PoolId,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NotificationView {
    pub id: String,
    /// `payment_failed`, `subscription_cancelled`, `pause_ending`, `agent_invite`.
    pub kind: String,
    pub to: String,
    pub subject: String,
    /// `pending`, `sending`, `sent` or `failed`.
    pub status: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub sent_at_ms: Option<i64>,
}
