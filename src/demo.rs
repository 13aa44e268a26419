//! `frontdesk demo`: a seeded organization so that a newcomer can try everything at once.
//! The demo org is created once per database and reused on later runs.

use crate::config::Secret;
use crate::model::{MembershipView, NewAgent, NewPool, NewRule};
use crate::store::{Actor, Store, StoreError};
use frontdesk_domain::{OrgId, Role};
use std::fmt::Write;

const DEMO_ORG_KEY: &str = "demo_org_id";

pub struct Demo {
    pub org_id: OrgId,
    pub widget_key: String,
    /// (user id, role, display name)
    pub users: Vec<(String, Role, String)>,
}

/// Creates the demo org unless this database already has it, and makes its widget key the one
/// `/demo` shows when the URL names none.
pub async fn seed(store: &Store, now: i64) -> Result<Demo, StoreError> {
    let candidate = OrgId::new().to_string();
    let recorded = store.server_secret(DEMO_ORG_KEY, &candidate, now).await?;
    let users = vec![
        ("demo-admin".to_owned(), Role::Admin, "Ada Admin".to_owned()),
        (
            "demo-agent-1".to_owned(),
            Role::Agent,
            "Sam Support".to_owned(),
        ),
        (
            "demo-agent-2".to_owned(),
            Role::Agent,
            "Sasha Sales".to_owned(),
        ),
    ];
    let org_id: OrgId = recorded
        .parse()
        .map_err(|e: frontdesk_domain::DomainError| StoreError::Corrupt(e.to_string()))?;
    if let Ok(_org) = store.org(org_id).await {
        let widget_key = store
            .widget_keys(org_id)
            .await?
            .into_iter()
            .find(|k| k.revoked_at_ms.is_none())
            .map(|k| k.key)
            .unwrap_or_default();
        crate::web::set_demo_widget_key(&widget_key);
        return Ok(Demo {
            org_id,
            widget_key,
            users,
        });
    }
    // First run: create the org under the recorded id.
    let created = store
        .create_org_with_id(
            org_id,
            "Demo Co",
            10,
            "demo-admin",
            "admin@demo.example",
            "Ada Admin",
            &crate::http::new_widget_key(),
            now,
        )
        .await?;
    let sales = store
        .create_pool(
            org_id,
            &NewPool {
                name: "Sales".into(),
                is_default: false,
            },
            Actor::System,
            now,
        )
        .await?;
    store
        .add_rule(
            org_id,
            sales.id,
            &NewRule {
                domain: "localhost".into(),
                path_prefix: "/sales".into(),
                priority: 10,
            },
            Actor::System,
            now,
        )
        .await?;
    let tiers = [
        ("demo-agent-1", "sam@demo.example", "Sam Support", 1, 2),
        ("demo-agent-2", "sasha@demo.example", "Sasha Sales", 2, 1),
    ];
    for (user, email, name, default_tier, sales_tier) in tiers {
        store
            .add_agent(
                org_id,
                &NewAgent {
                    user_id: user.into(),
                    email: email.into(),
                    display_name: name.into(),
                    role: Role::Agent,
                    pools: vec![
                        MembershipView {
                            pool_id: created.default_pool,
                            tier: default_tier,
                        },
                        MembershipView {
                            pool_id: sales.id,
                            tier: sales_tier,
                        },
                    ],
                },
                Actor::System,
                now,
            )
            .await?;
    }
    crate::web::set_demo_widget_key(&created.widget_key);
    Ok(Demo {
        org_id,
        widget_key: created.widget_key,
        users,
    })
}

/// What the demo prints: tokens, and how to use them.
pub fn banner(
    demo: &Demo,
    base: &str,
    secret: Option<&Secret>,
    issuer: &str,
    audience: &str,
    now_s: u64,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nfrontdesk demo is running at {base}\n");
    let _ = writeln!(out, "  organization  Demo Co ({})", demo.org_id);
    let _ = writeln!(out, "  widget key    {}", demo.widget_key);
    let _ = writeln!(
        out,
        "  pools         Default; Sales (pages on localhost under /sales)\n"
    );
    match secret {
        Some(secret) => {
            let _ = writeln!(out, "Agent tokens (valid 24 h):");
            let mut admin_token = String::new();
            let mut sign_in = String::new();
            for (user, role, name) in &demo.users {
                let t = crate::auth::mint_agent_token(
                    secret,
                    issuer,
                    audience,
                    user,
                    demo.org_id,
                    *role,
                    now_s,
                    86_400,
                );
                let _ = writeln!(out, "  {name:<12} {role:<6} {t}");
                let _ = writeln!(sign_in, "    {name:<12} {base}/agent/login#token={t}");
                if *role == Role::Admin {
                    admin_token = t;
                }
            }
            let _ = writeln!(out, "\nIn a browser:");
            let _ = writeln!(
                out,
                "  Visitor page   {base}/demo?key={}  (the Acme Shop with the widget)",
                demo.widget_key
            );
            let _ = writeln!(
                out,
                "  Agent console  {base}/agent; one-click sign-in for each user:"
            );
            out.push_str(&sign_in);
            let _ = writeln!(out, "\nTry the admin API:");
            let _ = writeln!(
                out,
                "  curl -s -H 'Authorization: Bearer {admin_token}' {base}/v1/pools"
            );
        }
        None => {
            let _ = writeln!(
                out,
                "Agent tokens come from your identity provider (a JWKS is configured)."
            );
            let _ = writeln!(
                out,
                "\nIn a browser: Visitor page {base}/demo?key={}  Agent console {base}/agent/login",
                demo.widget_key
            );
        }
    }
    let _ = writeln!(out, "\nStart a visitor session:");
    let _ = writeln!(
        out,
        "  curl -s -H 'Content-Type: application/json' -d '{{\"widget_key\":\"{}\",\"page_url\":\"http://localhost/sales/pricing\"}}' {base}/v1/visitor/sessions",
        demo.widget_key
    );
    let _ = writeln!(
        out,
        "\nAPI description: {base}/openapi.json   Health: {base}/healthz\n"
    );
    out
}
