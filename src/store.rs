//! The database: SQLite (embedded, the zero-configuration default) or PostgreSQL, through one
//! sqlx `Any` pool and portable SQL. Migrations live per dialect in `migrations/`. Every query that
//! touches tenant data takes the caller's `OrgId` and filters by it: there is no unscoped read of
//! org data here, so a handler cannot forget the scope.

use crate::model::*;
use frontdesk_domain::{
    AgentId, DomainError, OrgId, OrgSettings, OrgStatus, PoolId, PoolRule, Role, RuleId,
    VisitorSessionId, WidgetKeyId,
};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Row, Transaction};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

/// The columns `org_from_row` reads, for every query that loads an org.
macro_rules! org_columns {
    () => {
        "id, name, status, plan, seat_limit, ring_timeout_ms, cobrowse_enabled, recording_enabled, \
         retention_days, blocked_countries, queue_when_unavailable"
    };
}
pub(crate) use org_columns;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error(transparent)]
    Invalid(#[from] DomainError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

fn conflict(code: &'static str, message: impl Into<String>) -> StoreError {
    StoreError::Conflict {
        code,
        message: message.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// An org as the server needs it for authorization and routing.
#[derive(Debug, Clone)]
pub struct OrgRow {
    pub id: OrgId,
    pub name: String,
    pub status: OrgStatus,
    pub plan: String,
    pub seat_limit: u32,
    pub settings: OrgSettings,
}

/// An agent that is a live member of its org.
#[derive(Debug, Clone)]
pub struct AgentRow {
    pub id: AgentId,
    pub org_id: OrgId,
    pub user_id: String,
    pub role: Role,
}

/// The result of creating an org from the command line or the demo.
#[derive(Debug, Clone)]
pub struct CreatedOrg {
    pub org_id: OrgId,
    pub admin_id: AgentId,
    pub default_pool: PoolId,
    pub widget_key: String,
}

/// Who did something, for the audit log.
#[derive(Debug, Clone, Copy)]
pub enum Actor {
    Agent(AgentId),
    System,
}

impl Actor {
    fn as_string(self) -> String {
        match self {
            Actor::Agent(a) => a.to_string(),
            Actor::System => "system".to_owned(),
        }
    }
}

#[derive(Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    dialect: Dialect,
}

pub const MAX_POOLS_PER_ORG: i64 = 100;
pub const MAX_RULES_PER_ORG: i64 = 500;
pub const MAX_WIDGET_KEYS_PER_ORG: i64 = 50;

impl Store {
    /// Connects and applies the dialect's migrations. A `sqlite://` file is created if missing.
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let (dialect, url) = if url.starts_with("sqlite:") {
            let url = if url.contains('?') {
                url.to_owned()
            } else {
                format!("{url}?mode=rwc")
            };
            (Dialect::Sqlite, url)
        } else {
            (Dialect::Postgres, url.to_owned())
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if dialect == Dialect::Sqlite { 4 } else { 16 })
            .acquire_timeout(Duration::from_secs(5))
            .connect(&url)
            .await?;
        if dialect == Dialect::Sqlite {
            // One writer at a time, readers alongside; wait rather than fail under contention.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        let store = Store { pool, dialect };
        store.migrate().await?;
        Ok(store)
    }

    pub async fn migrate(&self) -> Result<()> {
        match self.dialect {
            Dialect::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Dialect::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// A server-wide secret: read it, or create it on first use. Safe when several nodes start at
    /// once: the first insert wins and everyone reads the winner.
    pub async fn server_secret(&self, name: &str, fresh: &str, now: i64) -> Result<String> {
        sqlx::query(
            "INSERT INTO server_secrets (name, value, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(fresh)
        .bind(now)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT value FROM server_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("value")?)
    }

    // ---- orgs ----------------------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    pub async fn create_org(
        &self,
        name: &str,
        seat_limit: u32,
        admin_user_id: &str,
        admin_email: &str,
        admin_name: &str,
        widget_key: &str,
        now: i64,
    ) -> Result<CreatedOrg> {
        self.create_org_with_id(
            OrgId::new(),
            name,
            seat_limit,
            admin_user_id,
            admin_email,
            admin_name,
            widget_key,
            now,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn create_org_with_id(
        &self,
        org_id: OrgId,
        name: &str,
        seat_limit: u32,
        admin_user_id: &str,
        admin_email: &str,
        admin_name: &str,
        widget_key: &str,
        now: i64,
    ) -> Result<CreatedOrg> {
        let name = frontdesk_domain::bounded_text("name", name, 200)?;
        let admin_user_id = frontdesk_domain::bounded_text("admin_user_id", admin_user_id, 200)?;
        let admin_email = frontdesk_domain::bounded_text("admin_email", admin_email, 320)?;
        let admin_name = frontdesk_domain::bounded_text("admin_name", admin_name, 200)?;
        if seat_limit > frontdesk_domain::SEAT_LIMIT_MAX {
            return Err(DomainError::OutOfRange {
                field: "seat_limit",
                min: 0,
                max: frontdesk_domain::SEAT_LIMIT_MAX.into(),
            }
            .into());
        }
        let (admin_id, pool_id, key_id) = (AgentId::new(), PoolId::new(), WidgetKeyId::new());
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO orgs (id, name, seat_limit, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(org_id.to_string())
        .bind(&name)
        .bind(i64::from(seat_limit))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO pools (id, org_id, name, is_default, created_at) VALUES ($1, $2, 'Default', TRUE, $3)",
        )
        .bind(pool_id.to_string())
        .bind(org_id.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO agents (id, org_id, user_id, email, display_name, role, created_at)
             VALUES ($1, $2, $3, $4, $5, 'admin', $6)",
        )
        .bind(admin_id.to_string())
        .bind(org_id.to_string())
        .bind(&admin_user_id)
        .bind(&admin_email)
        .bind(&admin_name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO pool_members (pool_id, agent_id, org_id, tier, created_at) VALUES ($1, $2, $3, 1, $4)",
        )
        .bind(pool_id.to_string())
        .bind(admin_id.to_string())
        .bind(org_id.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO widget_keys (id, org_id, key, label, created_at) VALUES ($1, $2, $3, 'default', $4)",
        )
        .bind(key_id.to_string())
        .bind(org_id.to_string())
        .bind(widget_key)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            org_id,
            Actor::System,
            "org.create",
            "org",
            &org_id.to_string(),
            serde_json::json!({ "seat_limit": seat_limit }),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(CreatedOrg {
            org_id,
            admin_id,
            default_pool: pool_id,
            widget_key: widget_key.to_owned(),
        })
    }

    pub async fn org(&self, org_id: OrgId) -> Result<OrgRow> {
        let row = sqlx::query(concat!(
            "SELECT ",
            org_columns!(),
            " FROM orgs WHERE id = $1"
        ))
        .bind(org_id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("org"))?;
        org_from_row(&row)
    }

    pub async fn org_view(&self, org_id: OrgId) -> Result<OrgView> {
        let org = self.org(org_id).await?;
        let seats_used = self.seats_used(&self.pool, org_id).await?;
        Ok(OrgView {
            id: org.id,
            name: org.name,
            status: org.status,
            plan: org.plan,
            seat_limit: org.seat_limit,
            seats_used,
            settings: settings_view(&org.settings),
        })
    }

    /// Sets the org's billing status directly. Billing's entitlement machine is the real writer;
    /// tests use this to stand in for it.
    pub async fn set_status_for_tests(&self, org_id: OrgId, status: OrgStatus) -> Result<()> {
        sqlx::query("UPDATE orgs SET status = $2 WHERE id = $1")
            .bind(org_id.to_string())
            .bind(status.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sets the seat limit (billing's seat changes). Agents above it stay; new ones are refused.
    pub async fn set_seat_limit(
        &self,
        org_id: OrgId,
        seat_limit: u32,
        actor: Actor,
        now: i64,
    ) -> Result<()> {
        if seat_limit > frontdesk_domain::SEAT_LIMIT_MAX {
            return Err(DomainError::OutOfRange {
                field: "seat_limit",
                min: 0,
                max: frontdesk_domain::SEAT_LIMIT_MAX.into(),
            }
            .into());
        }
        let mut tx = self.pool.begin().await?;
        lock_org(&mut tx, org_id, now).await?;
        sqlx::query("UPDATE orgs SET seat_limit = $2 WHERE id = $1")
            .bind(org_id.to_string())
            .bind(i64::from(seat_limit))
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            org_id,
            actor,
            "org.seat_limit.set",
            "org",
            &org_id.to_string(),
            serde_json::json!({ "seat_limit": seat_limit }),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn seats_used<'e, E>(&self, exec: E, org_id: OrgId) -> Result<u32>
    where
        E: sqlx::Executor<'e, Database = Any>,
    {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM agents WHERE org_id = $1 AND removed_at IS NULL",
        )
        .bind(org_id.to_string())
        .fetch_one(exec)
        .await?;
        Ok(u32::try_from(row.try_get::<i64, _>("n")?).unwrap_or(u32::MAX))
    }

    pub async fn update_settings(
        &self,
        org_id: OrgId,
        patch: &SettingsPatch,
        actor: Actor,
        now: i64,
    ) -> Result<SettingsView> {
        let mut tx = self.pool.begin().await?;
        lock_org(&mut tx, org_id, now).await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            org_columns!(),
            " FROM orgs WHERE id = $1"
        ))
        .bind(org_id.to_string())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("org"))?;
        let mut s = org_from_row(&row)?.settings;
        if let Some(v) = patch.ring_timeout_ms {
            s.ring_timeout_ms = v;
        }
        if let Some(v) = patch.cobrowse_enabled {
            s.cobrowse_enabled = v;
        }
        if let Some(v) = patch.recording_enabled {
            s.recording_enabled = v;
        }
        if let Some(v) = patch.retention_days {
            s.retention_days = v;
        }
        if let Some(v) = &patch.blocked_countries {
            if v.len() > OrgSettings::MAX_BLOCKED_COUNTRIES {
                return Err(DomainError::TooLong {
                    field: "blocked_countries",
                    max: OrgSettings::MAX_BLOCKED_COUNTRIES,
                }
                .into());
            }
            s.blocked_countries = v
                .iter()
                .map(|c| frontdesk_domain::CountryCode::parse(c))
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = patch.queue_when_unavailable {
            s.queue_when_unavailable = v;
        }
        s.validate()?;
        sqlx::query(
            "UPDATE orgs SET ring_timeout_ms = $2, cobrowse_enabled = $3, recording_enabled = $4,
                    retention_days = $5, blocked_countries = $6, queue_when_unavailable = $7,
                    updated_at = $8
             WHERE id = $1",
        )
        .bind(org_id.to_string())
        .bind(i64::from(s.ring_timeout_ms))
        .bind(s.cobrowse_enabled)
        .bind(s.recording_enabled)
        .bind(i64::from(s.retention_days))
        .bind(s.blocked_countries_csv())
        .bind(s.queue_when_unavailable)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let view = settings_view(&s);
        audit(
            &mut tx,
            org_id,
            actor,
            "org.settings.update",
            "org",
            &org_id.to_string(),
            serde_json::to_value(&view).unwrap_or_default(),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(view)
    }

    // ---- agents --------------------------------------------------------------------------

    /// The live (not removed) agent of `org_id` whose tokens carry `user_id` as `sub`.
    pub async fn agent_by_user(&self, org_id: OrgId, user_id: &str) -> Result<Option<AgentRow>> {
        let row = sqlx::query(
            "SELECT id, org_id, user_id, role FROM agents
             WHERE org_id = $1 AND user_id = $2 AND removed_at IS NULL",
        )
        .bind(org_id.to_string())
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(AgentRow {
                id: parse_id(&r, "id")?,
                org_id: parse_id(&r, "org_id")?,
                user_id: r.try_get("user_id")?,
                role: parse_enum(&r, "role", Role::parse)?,
            })
        })
        .transpose()
    }

    pub async fn agents(&self, org_id: OrgId) -> Result<Vec<AgentView>> {
        let rows = sqlx::query(
            "SELECT id, user_id, email, display_name, role, created_at FROM agents
             WHERE org_id = $1 AND removed_at IS NULL ORDER BY created_at, id",
        )
        .bind(org_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        let mut memberships = self.memberships(org_id).await?;
        rows.iter()
            .map(|r| {
                let id: AgentId = parse_id(r, "id")?;
                agent_view(r, memberships.remove(&id).unwrap_or_default())
            })
            .collect()
    }

    pub async fn agent(&self, org_id: OrgId, agent_id: AgentId) -> Result<AgentView> {
        let row = sqlx::query(
            "SELECT id, user_id, email, display_name, role, created_at FROM agents
             WHERE org_id = $1 AND id = $2 AND removed_at IS NULL",
        )
        .bind(org_id.to_string())
        .bind(agent_id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("agent"))?;
        let mut memberships = self.memberships(org_id).await?;
        agent_view(&row, memberships.remove(&agent_id).unwrap_or_default())
    }

    async fn memberships(&self, org_id: OrgId) -> Result<HashMap<AgentId, Vec<MembershipView>>> {
        let rows = sqlx::query(
            "SELECT m.agent_id, m.pool_id, m.tier FROM pool_members m
             JOIN pools p ON p.id = m.pool_id
             WHERE m.org_id = $1 AND p.removed_at IS NULL ORDER BY m.tier, m.created_at",
        )
        .bind(org_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        let mut out: HashMap<AgentId, Vec<MembershipView>> = HashMap::new();
        for r in rows {
            out.entry(parse_id(&r, "agent_id")?)
                .or_default()
                .push(MembershipView {
                    pool_id: parse_id(&r, "pool_id")?,
                    tier: parse_u32(&r, "tier")?,
                });
        }
        Ok(out)
    }

    /// Adds an agent. The seat limit is checked under the org's row lock, so two concurrent adds
    /// cannot both take the last seat. An org already over its limit keeps its agents but cannot
    /// add one.
    pub async fn add_agent(
        &self,
        org_id: OrgId,
        new: &NewAgent,
        actor: Actor,
        now: i64,
    ) -> Result<AgentView> {
        let user_id = frontdesk_domain::bounded_text("user_id", &new.user_id, 200)?;
        let email = validate_email(&new.email)?;
        let display_name = frontdesk_domain::bounded_text("display_name", &new.display_name, 200)?;
        validate_memberships(&new.pools)?;
        let mut tx = self.pool.begin().await?;
        let seat_limit = lock_org(&mut tx, org_id, now).await?;
        let used = self.seats_used(&mut *tx, org_id).await?;
        if used >= seat_limit {
            return Err(conflict(
                "seat_limit",
                format!(
                    "the org uses {used} of its {seat_limit} seats; remove an agent or raise the seat count first"
                ),
            ));
        }
        let exists = sqlx::query(
            "SELECT 1 AS one FROM agents WHERE org_id = $1 AND user_id = $2 AND removed_at IS NULL",
        )
        .bind(org_id.to_string())
        .bind(&user_id)
        .fetch_optional(&mut *tx)
        .await?;
        if exists.is_some() {
            return Err(conflict(
                "agent_exists",
                "an agent with this user_id already exists in the org",
            ));
        }
        let id = AgentId::new();
        sqlx::query(
            "INSERT INTO agents (id, org_id, user_id, email, display_name, role, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id.to_string())
        .bind(org_id.to_string())
        .bind(&user_id)
        .bind(&email)
        .bind(&display_name)
        .bind(new.role.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        replace_memberships(&mut tx, org_id, id, &new.pools, now).await?;
        crate::billing_store::queue_email(
            &mut tx,
            org_id,
            "agent_invite",
            &email,
            "You have been added as an agent on frontdesk",
            &format!(
                "Hello {display_name},\n\nYou can now take video calls from visitors as {}. \
                 Sign in to the agent console with your usual account.",
                new.role
            ),
            &format!("agent_invite:{id}"),
            now,
        )
        .await?;
        audit(
            &mut tx,
            org_id,
            actor,
            "agent.add",
            "agent",
            &id.to_string(),
            serde_json::json!({ "role": new.role, "pools": new.pools }),
            now,
        )
        .await?;
        tx.commit().await?;
        self.agent(org_id, id).await
    }

    pub async fn update_agent(
        &self,
        org_id: OrgId,
        agent_id: AgentId,
        patch: &AgentPatch,
        actor: Actor,
        now: i64,
    ) -> Result<AgentView> {
        let email = patch.email.as_deref().map(validate_email).transpose()?;
        let display_name = patch
            .display_name
            .as_deref()
            .map(|n| frontdesk_domain::bounded_text("display_name", n, 200))
            .transpose()?;
        let mut tx = self.pool.begin().await?;
        lock_org(&mut tx, org_id, now).await?;
        let current = live_agent_role(&mut tx, org_id, agent_id).await?;
        if current == Role::Admin && patch.role == Some(Role::Agent) {
            ensure_another_admin(&mut tx, org_id, agent_id).await?;
        }
        sqlx::query(
            "UPDATE agents SET email = COALESCE($3, email), display_name = COALESCE($4, display_name),
                    role = COALESCE($5, role)
             WHERE org_id = $1 AND id = $2 AND removed_at IS NULL",
        )
        .bind(org_id.to_string())
        .bind(agent_id.to_string())
        .bind(email)
        .bind(display_name)
        .bind(patch.role.map(Role::as_str))
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            org_id,
            actor,
            "agent.update",
            "agent",
            &agent_id.to_string(),
            serde_json::json!({ "role": patch.role, "email_changed": patch.email.is_some(),
                                "display_name_changed": patch.display_name.is_some() }),
            now,
        )
        .await?;
        tx.commit().await?;
        self.agent(org_id, agent_id).await
    }

    pub async fn set_agent_pools(
        &self,
        org_id: OrgId,
        agent_id: AgentId,
        pools: &[MembershipView],
        actor: Actor,
        now: i64,
    ) -> Result<AgentView> {
        validate_memberships(pools)?;
        let mut tx = self.pool.begin().await?;
        lock_org(&mut tx, org_id, now).await?;
        live_agent_role(&mut tx, org_id, agent_id).await?;
        replace_memberships(&mut tx, org_id, agent_id, pools, now).await?;
        audit(
            &mut tx,
            org_id,
            actor,
            "agent.pools.set",
            "agent",
            &agent_id.to_string(),
            serde_json::json!({ "pools": pools }),
            now,
        )
        .await?;
        tx.commit().await?;
        self.agent(org_id, agent_id).await
    }

    /// Soft-removes an agent: its row stays for the history of its calls; its memberships go.
    pub async fn remove_agent(
        &self,
        org_id: OrgId,
        agent_id: AgentId,
        actor: Actor,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        lock_org(&mut tx, org_id, now).await?;
        let role = live_agent_role(&mut tx, org_id, agent_id).await?;
        if role == Role::Admin {
            ensure_another_admin(&mut tx, org_id, agent_id).await?;
        }
        sqlx::query("UPDATE agents SET removed_at = $3 WHERE org_id = $1 AND id = $2")
            .bind(org_id.to_string())
            .bind(agent_id.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM pool_members WHERE org_id = $1 AND agent_id = $2")
            .bind(org_id.to_string())
            .bind(agent_id.to_string())
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            org_id,
            actor,
            "agent.remove",
            "agent",
            &agent_id.to_string(),
            serde_json::json!({}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- pools ---------------------------------------------------------------------------

    pub async fn pools(&self, org_id: OrgId) -> Result<Vec<PoolView>> {
        self.pools_where(org_id, None).await
    }

    pub async fn pool(&self, org_id: OrgId, pool_id: PoolId) -> Result<PoolView> {
        self.pools_where(org_id, Some(pool_id))
            .await?
            .pop()
            .ok_or(StoreError::NotFound("pool"))
    }

    async fn pools_where(&self, org_id: OrgId, only: Option<PoolId>) -> Result<Vec<PoolView>> {
        let rows = sqlx::query(
            "SELECT id, name, is_default, created_at FROM pools
             WHERE org_id = $1 AND removed_at IS NULL AND ($2 IS NULL OR id = $2)
             ORDER BY created_at, id",
        )
        .bind(org_id.to_string())
        .bind(only.map(|p| p.to_string()))
        .fetch_all(&self.pool)
        .await?;
        let mut rules: HashMap<PoolId, Vec<RuleView>> = HashMap::new();
        for r in self.rules(org_id).await? {
            rules.entry(r.pool_id).or_default().push(RuleView {
                id: r.id,
                domain: r.domain.as_str().to_owned(),
                path_prefix: r.path_prefix.as_str().to_owned(),
                priority: r.priority,
            });
        }
        let mut members: HashMap<PoolId, Vec<MemberView>> = HashMap::new();
        for (agent_id, ms) in self.memberships(org_id).await? {
            for m in ms {
                members.entry(m.pool_id).or_default().push(MemberView {
                    agent_id,
                    tier: m.tier,
                });
            }
        }
        rows.iter()
            .map(|r| {
                let id: PoolId = parse_id(r, "id")?;
                let mut m = members.remove(&id).unwrap_or_default();
                m.sort_by_key(|m| (m.tier, m.agent_id));
                Ok(PoolView {
                    id,
                    name: r.try_get("name")?,
                    is_default: get_bool(r, "is_default")?,
                    rules: rules.remove(&id).unwrap_or_default(),
                    members: m,
                    created_at_ms: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Every routing rule of the org's live pools.
    pub async fn rules(&self, org_id: OrgId) -> Result<Vec<PoolRule>> {
        let rows = sqlx::query(
            "SELECT r.id, r.pool_id, r.domain, r.path_prefix, r.priority FROM pool_rules r
             JOIN pools p ON p.id = r.pool_id
             WHERE r.org_id = $1 AND p.removed_at IS NULL ORDER BY r.created_at, r.id",
        )
        .bind(org_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PoolRule {
                    id: parse_id(r, "id")?,
                    pool_id: parse_id(r, "pool_id")?,
                    domain: frontdesk_domain::DomainPattern::parse(
                        &r.try_get::<String, _>("domain")?,
                    )
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    path_prefix: frontdesk_domain::PathPrefix::parse(
                        &r.try_get::<String, _>("path_prefix")?,
                    )
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    priority: i32::try_from(r.try_get::<i64, _>("priority")?)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                })
            })
            .collect()
    }

    pub async fn default_pool(&self, org_id: OrgId) -> Result<PoolId> {
        let row = sqlx::query(
            "SELECT id FROM pools WHERE org_id = $1 AND is_default = TRUE AND removed_at IS NULL",
        )
        .bind(org_id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::Corrupt(format!(
            "org {org_id} has no default pool"
        )))?;
        parse_id(&row, "id")
    }

    pub async fn create_pool(
        &self,
        org_id: OrgId,
        new: &NewPool,
        actor: Actor,
        now: i64,
    ) -> Result<PoolView> {
        let name = frontdesk_domain::bounded_text("name", &new.name, 100)?;
        let mut tx = self.pool.begin().await?;
        lock_org(&mut tx, org_id, now).await?;
        let n: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM pools WHERE org_id = $1 AND removed_at IS NULL")
                .bind(org_id.to_string())
                .fetch_one(&mut *tx)
                .await?
                .try_get("n")?;
        if n >= MAX_POOLS_PER_ORG {
            return Err(conflict(
                "pool_limit",
                format!("an org has at most {MAX_POOLS_PER_ORG} pools"),
            ));
        }
        ensure_pool_name_free(&mut tx, org_id, &name, None).await?;
        if new.is_default {
            clear_default(&mut tx, org_id).await?;
        }
        let id = PoolId::new();
        sqlx::query(
            "INSERT INTO pools (id, org_id, name, is_default, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id.to_string())
        .bind(org_id.to_string())
        .bind(&name)
        .bind(new.is_default)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            org_id,
            actor,
            "pool.create",
            "pool",
            &id.to_string(),
            serde_json::json!({ "name": name, "is_default": new.is_default }),
            now,
        )
        .await?;
        tx.commit().await?;
        self.pool(org_id, id).await
    }

    pub async fn update_pool(
        &self,
        org_id: OrgId,
        pool_id: PoolId,
        patch: &PoolPatch,
        actor: Actor,
        now: i64,
    ) -> Result<PoolView> {
        let name = patch
            .name
            .as_deref()
            .map(|n| frontdesk_domain::bounded_text("name", n, 100))
            .transpose()?;
        let mut tx = self.pool.begin().await?;
        lock_org(&mut tx, org_id, now).await?;
        let is_default = live_pool_is_default(&mut tx, org_id, pool_id).await?;
        if patch.is_default == Some(false) && is_default {
            return Err(conflict(
                "default_pool_required",
                "an org always has a default pool: make another pool the default instead",
            ));
        }
        if let Some(name) = &name {
            ensure_pool_name_free(&mut tx, org_id, name, Some(pool_id)).await?;
            sqlx::query("UPDATE pools SET name = $3 WHERE org_id = $1 AND id = $2")
                .bind(org_id.to_string())
                .bind(pool_id.to_string())
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        if patch.is_default == Some(true) && !is_default {
            clear_default(&mut tx, org_id).await?;
            sqlx::query("UPDATE pools SET is_default = TRUE WHERE org_id = $1 AND id = $2")
                .bind(org_id.to_string())
                .bind(pool_id.to_string())
                .execute(&mut *tx)
                .await?;
        }
        audit(
            &mut tx,
            org_id,
            actor,
            "pool.update",
            "pool",
            &pool_id.to_string(),
            serde_json::json!({ "name": name, "is_default": patch.is_default }),
            now,
        )
        .await?;
        tx.commit().await?;
        self.pool(org_id, pool_id).await
    }

    /// Soft-removes a pool (calls keep pointing at it); its rules and memberships go.
    pub async fn remove_pool(
        &self,
        org_id: OrgId,
        pool_id: PoolId,
        actor: Actor,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        lock_org(&mut tx, org_id, now).await?;
        if live_pool_is_default(&mut tx, org_id, pool_id).await? {
            return Err(conflict(
                "default_pool",
                "the default pool cannot be removed: make another pool the default first",
            ));
        }
        for sql in [
            "DELETE FROM pool_rules WHERE org_id = $1 AND pool_id = $2",
            "DELETE FROM pool_members WHERE org_id = $1 AND pool_id = $2",
        ] {
            sqlx::query(sql)
                .bind(org_id.to_string())
                .bind(pool_id.to_string())
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("UPDATE pools SET removed_at = $3 WHERE org_id = $1 AND id = $2")
            .bind(org_id.to_string())
            .bind(pool_id.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            org_id,
            actor,
            "pool.remove",
            "pool",
            &pool_id.to_string(),
            serde_json::json!({}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn add_rule(
        &self,
        org_id: OrgId,
        pool_id: PoolId,
        new: &NewRule,
        actor: Actor,
        now: i64,
    ) -> Result<RuleView> {
        let domain = frontdesk_domain::DomainPattern::parse(&new.domain)?;
        let path_prefix = frontdesk_domain::PathPrefix::parse(&new.path_prefix)?;
        let (lo, hi) = frontdesk_domain::PRIORITY;
        if !(lo..=hi).contains(&new.priority) {
            return Err(DomainError::OutOfRange {
                field: "priority",
                min: lo.into(),
                max: hi.into(),
            }
            .into());
        }
        let mut tx = self.pool.begin().await?;
        lock_org(&mut tx, org_id, now).await?;
        live_pool_is_default(&mut tx, org_id, pool_id).await?;
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM pool_rules WHERE org_id = $1")
            .bind(org_id.to_string())
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if n >= MAX_RULES_PER_ORG {
            return Err(conflict(
                "rule_limit",
                format!("an org has at most {MAX_RULES_PER_ORG} routing rules"),
            ));
        }
        let id = RuleId::new();
        sqlx::query(
            "INSERT INTO pool_rules (id, org_id, pool_id, domain, path_prefix, priority, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id.to_string())
        .bind(org_id.to_string())
        .bind(pool_id.to_string())
        .bind(domain.as_str())
        .bind(path_prefix.as_str())
        .bind(i64::from(new.priority))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            org_id,
            actor,
            "pool.rule.add",
            "pool",
            &pool_id.to_string(),
            serde_json::json!({ "rule_id": id, "domain": domain.as_str(),
                                "path_prefix": path_prefix.as_str(), "priority": new.priority }),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(RuleView {
            id,
            domain: domain.as_str().to_owned(),
            path_prefix: path_prefix.as_str().to_owned(),
            priority: new.priority,
        })
    }

    pub async fn remove_rule(
        &self,
        org_id: OrgId,
        pool_id: PoolId,
        rule_id: RuleId,
        actor: Actor,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let done =
            sqlx::query("DELETE FROM pool_rules WHERE org_id = $1 AND pool_id = $2 AND id = $3")
                .bind(org_id.to_string())
                .bind(pool_id.to_string())
                .bind(rule_id.to_string())
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("rule"));
        }
        audit(
            &mut tx,
            org_id,
            actor,
            "pool.rule.remove",
            "pool",
            &pool_id.to_string(),
            serde_json::json!({ "rule_id": rule_id }),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- widget keys and visitors ---------------------------------------------------------

    pub async fn widget_keys(&self, org_id: OrgId) -> Result<Vec<WidgetKeyView>> {
        let rows = sqlx::query(
            "SELECT id, key, label, created_at, revoked_at FROM widget_keys
             WHERE org_id = $1 ORDER BY created_at, id",
        )
        .bind(org_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(widget_key_view).collect()
    }

    pub async fn create_widget_key(
        &self,
        org_id: OrgId,
        label: &str,
        key: &str,
        actor: Actor,
        now: i64,
    ) -> Result<WidgetKeyView> {
        let label = frontdesk_domain::optional_text("label", label, 100)?;
        let label = label.as_str();
        let mut tx = self.pool.begin().await?;
        lock_org(&mut tx, org_id, now).await?;
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM widget_keys WHERE org_id = $1 AND revoked_at IS NULL",
        )
        .bind(org_id.to_string())
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        if n >= MAX_WIDGET_KEYS_PER_ORG {
            return Err(conflict(
                "widget_key_limit",
                format!("an org has at most {MAX_WIDGET_KEYS_PER_ORG} live widget keys"),
            ));
        }
        let id = WidgetKeyId::new();
        sqlx::query(
            "INSERT INTO widget_keys (id, org_id, key, label, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id.to_string())
        .bind(org_id.to_string())
        .bind(key)
        .bind(label)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            org_id,
            actor,
            "widget_key.create",
            "widget_key",
            &id.to_string(),
            serde_json::json!({ "label": label }),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(WidgetKeyView {
            id,
            key: key.to_owned(),
            label: label.to_owned(),
            created_at_ms: now,
            revoked_at_ms: None,
        })
    }

    pub async fn revoke_widget_key(
        &self,
        org_id: OrgId,
        key_id: WidgetKeyId,
        actor: Actor,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE widget_keys SET revoked_at = COALESCE(revoked_at, $3) WHERE org_id = $1 AND id = $2",
        )
        .bind(org_id.to_string())
        .bind(key_id.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("widget key"));
        }
        audit(
            &mut tx,
            org_id,
            actor,
            "widget_key.revoke",
            "widget_key",
            &key_id.to_string(),
            serde_json::json!({}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The org and key id of a live widget key.
    pub async fn widget_key_lookup(&self, key: &str) -> Result<Option<(OrgId, WidgetKeyId)>> {
        let row =
            sqlx::query("SELECT id, org_id FROM widget_keys WHERE key = $1 AND revoked_at IS NULL")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| Ok((parse_id(&r, "org_id")?, parse_id(&r, "id")?)))
            .transpose()
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn create_visitor_session(
        &self,
        id: VisitorSessionId,
        org_id: OrgId,
        key_id: WidgetKeyId,
        pool_id: PoolId,
        page_url: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO visitor_sessions (id, org_id, widget_key_id, pool_id, page_url, created_at, expires_at, last_seen_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $6)",
        )
        .bind(id.to_string())
        .bind(org_id.to_string())
        .bind(key_id.to_string())
        .bind(pool_id.to_string())
        .bind(page_url)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- audit and calls -----------------------------------------------------------------

    pub async fn audit_log(
        &self,
        org_id: OrgId,
        limit: u32,
        before_ms: Option<i64>,
    ) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT id, actor, action, target_type, target_id, details, at FROM audit_log
             WHERE org_id = $1 AND ($2 IS NULL OR at < $2) ORDER BY at DESC, id DESC LIMIT $3",
        )
        .bind(org_id.to_string())
        .bind(before_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let details: String = r.try_get("details")?;
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    target_type: r.try_get("target_type")?,
                    target_id: r.try_get("target_id")?,
                    details: serde_json::from_str(&details)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    at_ms: r.try_get("at")?,
                })
            })
            .collect()
    }

    /// What the hub needs about a live agent at login: name and pool memberships.
    pub async fn agent_for_hub(
        &self,
        org_id: OrgId,
        agent_id: AgentId,
    ) -> Result<(String, Vec<(PoolId, u32)>)> {
        let row = sqlx::query(
            "SELECT display_name FROM agents WHERE org_id = $1 AND id = $2 AND removed_at IS NULL",
        )
        .bind(org_id.to_string())
        .bind(agent_id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("agent"))?;
        let name: String = row.try_get("display_name")?;
        Ok((name, self.agent_pools(org_id, agent_id).await?))
    }

    pub async fn agent_pools(
        &self,
        org_id: OrgId,
        agent_id: AgentId,
    ) -> Result<Vec<(PoolId, u32)>> {
        let rows = sqlx::query(
            "SELECT m.pool_id, m.tier FROM pool_members m JOIN pools p ON p.id = m.pool_id
             WHERE m.org_id = $1 AND m.agent_id = $2 AND p.removed_at IS NULL",
        )
        .bind(org_id.to_string())
        .bind(agent_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((parse_id(r, "pool_id")?, parse_u32(r, "tier")?)))
            .collect()
    }

    /// Live agents who are members of the pool (before a removal changes their pools).
    pub async fn pool_member_ids(&self, org_id: OrgId, pool_id: PoolId) -> Result<Vec<AgentId>> {
        let rows =
            sqlx::query("SELECT agent_id FROM pool_members WHERE org_id = $1 AND pool_id = $2")
                .bind(org_id.to_string())
                .bind(pool_id.to_string())
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|r| parse_id(r, "agent_id")).collect()
    }

    /// A visitor session that has not expired: its org and pool.
    pub async fn visitor_session(
        &self,
        session: VisitorSessionId,
        now: i64,
    ) -> Result<Option<(OrgId, PoolId)>> {
        let row = sqlx::query(
            "SELECT org_id, pool_id FROM visitor_sessions WHERE id = $1 AND expires_at > $2",
        )
        .bind(session.to_string())
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((parse_id(&r, "org_id")?, parse_id(&r, "pool_id")?)))
            .transpose()
    }

    /// Writes what the hub asks to keep. Each record is one statement; order is the hub's.
    pub async fn apply_record(&self, r: &frontdesk_signaling::Record) -> Result<()> {
        use frontdesk_signaling::Record as R;
        let ms = |t: u64| i64::try_from(t).unwrap_or(i64::MAX);
        match r {
            R::CallRequested {
                call,
                org,
                pool,
                visitor,
                at,
            } => {
                sqlx::query(
                    "INSERT INTO calls (id, org_id, pool_id, visitor_session_id, state, requested_at)
                     VALUES ($1, $2, $3, $4, 'requested', $5)",
                )
                .bind(call.to_string())
                .bind(org.to_string())
                .bind(pool.to_string())
                .bind(visitor.to_string())
                .bind(ms(*at))
                .execute(&self.pool)
                .await?;
            }
            R::CallRinging { call, agent, at } => {
                sqlx::query(
                    "UPDATE calls SET state = 'ringing', agent_id = $2, rung_at = $3
                     WHERE id = $1 AND ended_at IS NULL",
                )
                .bind(call.to_string())
                .bind(agent.to_string())
                .bind(ms(*at))
                .execute(&self.pool)
                .await?;
            }
            R::CallConnected { call, agent, at } => {
                sqlx::query(
                    "UPDATE calls SET state = 'connected', agent_id = $2, answered_at = $3
                     WHERE id = $1 AND ended_at IS NULL",
                )
                .bind(call.to_string())
                .bind(agent.to_string())
                .bind(ms(*at))
                .execute(&self.pool)
                .await?;
            }
            R::CallState { call, state } => {
                sqlx::query("UPDATE calls SET state = $2 WHERE id = $1 AND ended_at IS NULL")
                    .bind(call.to_string())
                    .bind(state.as_str())
                    .execute(&self.pool)
                    .await?;
            }
            R::CallEnded { call, reason, at } => {
                sqlx::query(
                    "UPDATE calls SET state = 'ended', ended_at = $2, end_reason = $3
                     WHERE id = $1 AND ended_at IS NULL",
                )
                .bind(call.to_string())
                .bind(ms(*at))
                .bind(reason.as_str())
                .execute(&self.pool)
                .await?;
            }
            R::Presence {
                org,
                agent,
                presence,
                reason,
                at,
            } => {
                let reason = serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                sqlx::query(
                    "INSERT INTO presence_events (id, org_id, agent_id, presence, reason, at)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(uuid::Uuid::new_v4().to_string())
                .bind(org.to_string())
                .bind(agent.to_string())
                .bind(presence.as_str())
                .bind(reason)
                .bind(ms(*at))
                .execute(&self.pool)
                .await?;
            }
        }
        Ok(())
    }

    /// A call as stored, for tests and reports: (state, agent, end reason).
    pub async fn call_row(
        &self,
        org_id: OrgId,
        call: frontdesk_domain::CallId,
    ) -> Result<Option<(String, Option<String>, Option<String>)>> {
        let row = sqlx::query(
            "SELECT state, agent_id, end_reason FROM calls WHERE org_id = $1 AND id = $2",
        )
        .bind(org_id.to_string())
        .bind(call.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok((
                r.try_get("state")?,
                r.try_get("agent_id")?,
                r.try_get("end_reason")?,
            ))
        })
        .transpose()
    }

    /// Ends every call left open by a previous process, so a restart leaves none stuck.
    pub async fn end_open_calls(
        &self,
        reason: frontdesk_domain::EndReason,
        now: i64,
    ) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE calls SET state = 'ended', ended_at = $1, end_reason = $2 WHERE ended_at IS NULL",
        )
        .bind(now)
        .bind(reason.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

// ---- helpers inside a transaction --------------------------------------------------------

/// Takes the org's row lock (PostgreSQL row lock; SQLite's database write lock) for the rest of
/// the transaction, and returns its seat limit. Every write transaction that reads before it
/// writes starts here: checks see a stable org, and SQLite never has to upgrade a read
/// transaction to a write one (which fails with SQLITE_BUSY under concurrency).
pub(crate) async fn lock_org(
    tx: &mut Transaction<'_, Any>,
    org_id: OrgId,
    now: i64,
) -> Result<u32> {
    let done = sqlx::query("UPDATE orgs SET updated_at = $2 WHERE id = $1")
        .bind(org_id.to_string())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound("org"));
    }
    let row = sqlx::query("SELECT seat_limit FROM orgs WHERE id = $1")
        .bind(org_id.to_string())
        .fetch_one(&mut **tx)
        .await?;
    parse_u32(&row, "seat_limit")
}

async fn live_agent_role(
    tx: &mut Transaction<'_, Any>,
    org_id: OrgId,
    agent_id: AgentId,
) -> Result<Role> {
    let row =
        sqlx::query("SELECT role FROM agents WHERE org_id = $1 AND id = $2 AND removed_at IS NULL")
            .bind(org_id.to_string())
            .bind(agent_id.to_string())
            .fetch_optional(&mut **tx)
            .await?
            .ok_or(StoreError::NotFound("agent"))?;
    parse_enum(&row, "role", Role::parse)
}

async fn ensure_another_admin(
    tx: &mut Transaction<'_, Any>,
    org_id: OrgId,
    agent_id: AgentId,
) -> Result<()> {
    let n: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM agents
         WHERE org_id = $1 AND role = 'admin' AND removed_at IS NULL AND id <> $2",
    )
    .bind(org_id.to_string())
    .bind(agent_id.to_string())
    .fetch_one(&mut **tx)
    .await?
    .try_get("n")?;
    if n == 0 {
        Err(conflict(
            "last_admin",
            "an org keeps at least one admin: make another agent an admin first",
        ))
    } else {
        Ok(())
    }
}

async fn live_pool_is_default(
    tx: &mut Transaction<'_, Any>,
    org_id: OrgId,
    pool_id: PoolId,
) -> Result<bool> {
    let row = sqlx::query(
        "SELECT is_default FROM pools WHERE org_id = $1 AND id = $2 AND removed_at IS NULL",
    )
    .bind(org_id.to_string())
    .bind(pool_id.to_string())
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound("pool"))?;
    get_bool(&row, "is_default")
}

async fn ensure_pool_name_free(
    tx: &mut Transaction<'_, Any>,
    org_id: OrgId,
    name: &str,
    except: Option<PoolId>,
) -> Result<()> {
    let taken = sqlx::query(
        "SELECT id FROM pools WHERE org_id = $1 AND name = $2 AND removed_at IS NULL
           AND ($3 IS NULL OR id <> $3)",
    )
    .bind(org_id.to_string())
    .bind(name)
    .bind(except.map(|p| p.to_string()))
    .fetch_optional(&mut **tx)
    .await?;
    if taken.is_some() {
        Err(conflict(
            "pool_exists",
            "the org already has a pool with this name",
        ))
    } else {
        Ok(())
    }
}

async fn clear_default(tx: &mut Transaction<'_, Any>, org_id: OrgId) -> Result<()> {
    sqlx::query("UPDATE pools SET is_default = FALSE WHERE org_id = $1 AND is_default = TRUE")
        .bind(org_id.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Replaces an agent's memberships; every pool must be a live pool of the same org.
async fn replace_memberships(
    tx: &mut Transaction<'_, Any>,
    org_id: OrgId,
    agent_id: AgentId,
    pools: &[MembershipView],
    now: i64,
) -> Result<()> {
    for m in pools {
        live_pool_is_default(tx, org_id, m.pool_id).await?;
    }
    sqlx::query("DELETE FROM pool_members WHERE org_id = $1 AND agent_id = $2")
        .bind(org_id.to_string())
        .bind(agent_id.to_string())
        .execute(&mut **tx)
        .await?;
    for m in pools {
        sqlx::query(
            "INSERT INTO pool_members (pool_id, agent_id, org_id, tier, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(m.pool_id.to_string())
        .bind(agent_id.to_string())
        .bind(org_id.to_string())
        .bind(i64::from(m.tier))
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn audit(
    tx: &mut Transaction<'_, Any>,
    org_id: OrgId,
    actor: Actor,
    action: &str,
    target_type: &str,
    target_id: &str,
    details: serde_json::Value,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (id, org_id, actor, action, target_type, target_id, details, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(org_id.to_string())
    .bind(actor.as_string())
    .bind(action)
    .bind(target_type)
    .bind(target_id)
    .bind(details.to_string())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

// ---- validation and row decoding ---------------------------------------------------------

fn validate_email(email: &str) -> Result<String> {
    let e = frontdesk_domain::bounded_text("email", email, 320)?;
    let ok = e.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && domain.contains('.') && !domain.contains('@')
    }) && !e.contains(char::is_whitespace);
    if ok {
        Ok(e)
    } else {
        Err(DomainError::InvalidId {
            kind: "email",
            value: e.chars().take(64).collect(),
        }
        .into())
    }
}

fn validate_memberships(pools: &[MembershipView]) -> Result<()> {
    if pools.len() > MAX_POOLS_PER_ORG as usize {
        return Err(DomainError::TooLong {
            field: "pools",
            max: MAX_POOLS_PER_ORG as usize,
        }
        .into());
    }
    let mut seen = std::collections::HashSet::new();
    for m in pools {
        frontdesk_domain::validate_tier(m.tier)?;
        if !seen.insert(m.pool_id) {
            return Err(conflict("duplicate_pool", "a pool is listed twice"));
        }
    }
    Ok(())
}

pub(crate) fn parse_id<T: FromStr<Err = DomainError>>(row: &AnyRow, col: &str) -> Result<T> {
    let s: String = row.try_get(col)?;
    s.parse()
        .map_err(|e: DomainError| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn parse_enum<T>(
    row: &AnyRow,
    col: &str,
    parse: fn(&str) -> Result<T, DomainError>,
) -> Result<T> {
    let s: String = row.try_get(col)?;
    parse(&s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A boolean column: BOOLEAN in PostgreSQL, INTEGER 0/1 in SQLite.
fn get_bool(row: &AnyRow, col: &str) -> Result<bool> {
    match row.try_get::<bool, _>(col) {
        Ok(b) => Ok(b),
        Err(_) => Ok(row.try_get::<i64, _>(col)? != 0),
    }
}

fn parse_u32(row: &AnyRow, col: &str) -> Result<u32> {
    let v: i64 = row.try_get(col)?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{col} out of range: {v}")))
}

pub(crate) fn org_from_row(row: &AnyRow) -> Result<OrgRow> {
    let csv: String = row.try_get("blocked_countries")?;
    Ok(OrgRow {
        id: parse_id(row, "id")?,
        name: row.try_get("name")?,
        status: parse_enum(row, "status", OrgStatus::parse)?,
        plan: row.try_get("plan")?,
        seat_limit: parse_u32(row, "seat_limit")?,
        settings: OrgSettings {
            ring_timeout_ms: parse_u32(row, "ring_timeout_ms")?,
            cobrowse_enabled: get_bool(row, "cobrowse_enabled")?,
            recording_enabled: get_bool(row, "recording_enabled")?,
            retention_days: parse_u32(row, "retention_days")?,
            blocked_countries: OrgSettings::parse_blocked_countries(&csv)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            queue_when_unavailable: get_bool(row, "queue_when_unavailable")?,
        },
    })
}

fn settings_view(s: &OrgSettings) -> SettingsView {
    SettingsView {
        ring_timeout_ms: s.ring_timeout_ms,
        cobrowse_enabled: s.cobrowse_enabled,
        recording_enabled: s.recording_enabled,
        retention_days: s.retention_days,
        blocked_countries: s
            .blocked_countries
            .iter()
            .map(|c| c.as_str().to_owned())
            .collect(),
        queue_when_unavailable: s.queue_when_unavailable,
    }
}

fn agent_view(r: &AnyRow, pools: Vec<MembershipView>) -> Result<AgentView> {
    Ok(AgentView {
        id: parse_id(r, "id")?,
        user_id: r.try_get("user_id")?,
        email: r.try_get("email")?,
        display_name: r.try_get("display_name")?,
        role: parse_enum(r, "role", Role::parse)?,
        pools,
        created_at_ms: r.try_get("created_at")?,
    })
}

fn widget_key_view(r: &AnyRow) -> Result<WidgetKeyView> {
    Ok(WidgetKeyView {
        id: parse_id(r, "id")?,
        key: r.try_get("key")?,
        label: r.try_get("label")?,
        created_at_ms: r.try_get("created_at")?,
        revoked_at_ms: r.try_get("revoked_at")?,
    })
}
