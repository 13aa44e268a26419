//! A real server on 127.0.0.1:0 for black-box tests, on SQLite (default) or PostgreSQL (when
//! `FRONTDESK_TEST_POSTGRES_URL` points at a server: every test gets a database of its own).
#![allow(dead_code)]

pub mod ws;

use frontdesk::config::{Config, JwksSource, JwtConfig, LogFormat, Secret};
use frontdesk::http::AppState;
use frontdesk::store::CreatedOrg;
use frontdesk_domain::{OrgId, Role};
use std::path::PathBuf;
use std::time::Duration;

pub const SECRET: &[u8] = b"test-secret-0123456789-abcdefghijklmnop";
pub const ISSUER: &str = "https://auth.test/auth/v1";
pub const AUDIENCE: &str = "authenticated";

pub struct TestServer {
    pub base: String,
    pub database_url: String,
    pub state: AppState,
    pub http: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

#[derive(Default)]
pub struct Options {
    pub jwks_file: Option<PathBuf>,
    pub jwks_refresh_min_interval: Duration,
    pub no_hs_secret: bool,
    pub visitor_reconnect: Option<Duration>,
    /// Reuse a database (to restart a server on it).
    pub database_url: Option<String>,
    pub webhook_secrets: Vec<Vec<u8>>,
    pub smtp_url: Option<String>,
    /// Base URL of a fake Stripe API.
    pub stripe_base: Option<String>,
    /// TURN URLs and shared secret handed to browsers.
    pub turn_urls: Vec<String>,
    pub turn_secret: Option<String>,
}

/// A database URL of its own for one test.
pub async fn test_database_url(dir: &std::path::Path) -> String {
    match std::env::var("FRONTDESK_TEST_POSTGRES_URL") {
        Ok(base) if !base.is_empty() => {
            use sqlx::Connection;
            let name = format!("fd_test_{}", uuid::Uuid::new_v4().simple());
            let mut conn = sqlx::PgConnection::connect(&base)
                .await
                .expect("FRONTDESK_TEST_POSTGRES_URL must point at a running PostgreSQL");
            sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
                .await
                .expect("create the test database");
            let mut url = url::Url::parse(&base).expect("FRONTDESK_TEST_POSTGRES_URL is a URL");
            url.set_path(&name);
            url.to_string()
        }
        _ => format!("sqlite://{}", dir.join("test.db").display()),
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let database_url = match opts.database_url {
            Some(u) => u,
            None => test_database_url(dir.path()).await,
        };
        let config = Config {
            listen: "127.0.0.1:0".parse().expect("loopback address"),
            database_url,
            log_format: LogFormat::Human,
            jwt: JwtConfig {
                secret: (!opts.no_hs_secret).then(|| Secret::new(SECRET.to_vec())),
                jwks: opts.jwks_file.map(JwksSource::File),
                issuer: ISSUER.into(),
                audience: AUDIENCE.into(),
                jwks_refresh_min_interval: opts.jwks_refresh_min_interval,
            },
            visitor_token_ttl: Duration::from_secs(3600),
            public_url: None,
            visitor_reconnect: opts.visitor_reconnect.unwrap_or(Duration::from_secs(60)),
            stripe: opts
                .stripe_base
                .clone()
                .map(|base| frontdesk::config::StripeConfig {
                    api_base: base,
                    api_key: Secret::new(b"sk_test_frontdesk".to_vec()),
                    seat_price: "price_seat".into(),
                }),
            plan_max_seats: 50,
            media: frontdesk::config::MediaConfig {
                udp: "127.0.0.1:0".parse().expect("loopback address"),
                // Two workers, so calls land on either and the routing by call is exercised.
                workers: 2,
                public_ips: Vec::new(),
                turn_urls: opts.turn_urls.clone(),
                turn_secret: opts
                    .turn_secret
                    .clone()
                    .map(|s| Secret::new(s.into_bytes())),
                turn_ttl: Duration::from_secs(3600),
                max_watchers: frontdesk::media::DEFAULT_MAX_WATCHERS,
            },
            drain: Duration::from_secs(5),
            billing: frontdesk::billing::BillingConfig {
                webhook_secrets: opts.webhook_secrets.clone(),
                grace_s: 0,
                smtp_url: opts.smtp_url.clone().map(|u| Secret::new(u.into_bytes())),
                smtp_from: "frontdesk <noreply@frontdesk.test>".into(),
            },
        };
        let state = frontdesk::prepare(&config).await.expect("server prepares");
        let database_url = config.database_url.clone();
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .expect("bind 127.0.0.1:0");
        let base = format!("http://{}", listener.local_addr().expect("bound address"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(frontdesk::run(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        TestServer {
            base,
            database_url,
            state,
            http: reqwest::Client::new(),
            shutdown: Some(tx),
            task: Some(task),
            _dir: dir,
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("server task").expect("server stops cleanly");
        }
    }

    /// Stops the server the hard way, as a crash would: nothing is drained or closed.
    pub fn abort(mut self) -> String {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        self.shutdown.take();
        std::mem::forget(self._dir);
        self.database_url.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A new org with its default pool, admin (`<name>-admin`) and widget key.
    pub async fn org(&self, name: &str, seats: u32) -> TestOrg {
        let admin_user = format!("{name}-admin");
        let created = self
            .state
            .store
            .create_org(
                name,
                seats,
                &admin_user,
                &format!("{name}@example.com"),
                "Admin",
                &frontdesk::http::new_widget_key(),
                frontdesk::now_ms(),
            )
            .await
            .expect("create org");
        TestOrg {
            admin_token: hs256(&admin_user, created.org_id, Role::Admin),
            created,
        }
    }

    /// An org (see [`TestServer::org`]) with one agent, `user`, in its default pool; returns
    /// the org and the agent's token.
    pub async fn org_with_agent(&self, name: &str, user: &str, display: &str) -> (TestOrg, String) {
        let org = self.org(name, 5).await;
        let (st, body) = self
            .send(
                reqwest::Method::POST,
                "/v1/agents",
                &org.admin_token,
                Some(serde_json::json!({
                    "user_id": user, "email": format!("{user}@example.com"), "display_name": display,
                    "pools": [{"pool_id": org.created.default_pool.to_string(), "tier": 1}]})),
            )
            .await;
        assert_eq!(st, 201, "{body}");
        let token = hs256(user, org.id(), Role::Agent);
        (org, token)
    }

    /// The text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let r = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics");
        r.text().await.expect("metrics body")
    }

    /// One unlabelled value from `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let body = self.metrics().await;
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
            .parse()
            .expect("a number")
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, serde_json::Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        split(r).await
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        split(req.send().await.expect("request")).await
    }
}

pub async fn split(r: reqwest::Response) -> (u16, serde_json::Value) {
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    let json = if text.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("body is not JSON: {text}"))
    };
    (status, json)
}

pub struct TestOrg {
    pub created: CreatedOrg,
    pub admin_token: String,
}

impl TestOrg {
    pub fn id(&self) -> OrgId {
        self.created.org_id
    }
}

pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A valid HS256 agent token signed with the test secret.
pub fn hs256(sub: &str, org: OrgId, role: Role) -> String {
    frontdesk::auth::mint_agent_token(
        &Secret::new(SECRET.to_vec()),
        ISSUER,
        AUDIENCE,
        sub,
        org,
        role,
        now_s(),
        3600,
    )
}
