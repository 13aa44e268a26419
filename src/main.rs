use anyhow::Context;
use clap::Parser;
use frontdesk::config::{
    process_env, resolve_database_url, Cli, Command, Config, ConfigError, DEFAULT_DATABASE_URL,
    DEMO_DATABASE_URL,
};
use frontdesk::store::Store;
use frontdesk_domain::{OrgId, Role};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A configuration error is one line naming the variable; anything else has its chain.
            if let Some(c) = e.downcast_ref::<ConfigError>() {
                eprintln!("error: {c}");
                return ExitCode::from(2);
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let config = Config::resolve(&args, DEFAULT_DATABASE_URL, &process_env)?;
            frontdesk::telemetry::init(config.log_format);
            serve(config, false).await
        }
        Command::Demo(args) => {
            let config = Config::resolve(&args, DEMO_DATABASE_URL, &process_env)?;
            frontdesk::telemetry::init(config.log_format);
            serve(config, true).await
        }
        Command::Migrate(db) => {
            let url = resolve_database_url(&db, DEFAULT_DATABASE_URL)?;
            Store::connect(&url).await.context("migrating")?;
            println!("migrations applied");
            Ok(())
        }
        Command::CreateOrg(a) => {
            let url = resolve_database_url(&a.db, DEFAULT_DATABASE_URL)?;
            let store = Store::connect(&url).await.context("opening the database")?;
            let created = store
                .create_org(
                    &a.name,
                    a.seat_limit,
                    &a.admin_user_id,
                    &a.admin_email,
                    &a.admin_name,
                    &frontdesk::http::new_widget_key(),
                    frontdesk::now_ms(),
                )
                .await
                .context("creating the organization")?;
            println!("org_id       {}", created.org_id);
            println!("admin_id     {}", created.admin_id);
            println!("default_pool {}", created.default_pool);
            println!("widget_key   {}", created.widget_key);
            Ok(())
        }
        Command::Sanitize => sanitize(),
        Command::Token(a) => {
            let url = resolve_database_url(&a.db, DEFAULT_DATABASE_URL)?;
            let org_id: OrgId = a.org_id.parse().context("--org-id")?;
            let role = Role::parse(&a.role).context("--role")?;
            let secret = match frontdesk::config::read_secret(&process_env, "FRONTDESK_JWT_SECRET")?
            {
                Some(s) => s,
                None => {
                    let store = Store::connect(&url).await.context("opening the database")?;
                    frontdesk::local_secret(&store).await?
                }
            };
            let now_s = u64::try_from(frontdesk::now_ms() / 1000).unwrap_or_default();
            println!(
                "{}",
                frontdesk::auth::mint_agent_token(
                    &secret,
                    &a.jwt_issuer,
                    &a.jwt_audience,
                    &a.user_id,
                    org_id,
                    role,
                    now_s,
                    a.ttl,
                )
            );
            Ok(())
        }
    }
}

/// Reads at most the snapshot limit (plus one byte, to tell it was exceeded).
fn sanitize() -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let limit = frontdesk_cobrowse::MAX_SNAPSHOT_BYTES;
    let mut input = Vec::new();
    std::io::stdin()
        .take(u64::try_from(limit).unwrap_or(u64::MAX) + 1)
        .read_to_end(&mut input)
        .context("reading stdin")?;
    if input.len() > limit {
        anyhow::bail!(
            "input is larger than the {} MiB limit",
            limit / (1024 * 1024)
        );
    }
    let html = std::str::from_utf8(&input).context("input is not UTF-8")?;
    let policy = frontdesk_cobrowse::Policy::default();
    let clean =
        frontdesk_cobrowse::sanitize_document(&policy, html).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out = std::io::stdout().lock();
    out.write_all(clean.as_str().as_bytes())?;
    out.flush()?;
    Ok(())
}

async fn serve(config: Config, demo: bool) -> anyhow::Result<()> {
    let state = frontdesk::prepare(&config).await.context("starting")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (FRONTDESK_LISTEN)", config.listen))?;
    if demo {
        let demo = frontdesk::demo::seed(&state.store, frontdesk::now_ms())
            .await
            .context("seeding the demo organization")?;
        let secret = frontdesk::hs256_secret(&state.store, &config).await?;
        let base = config.base_url(listener.local_addr()?);
        let now_s = u64::try_from(frontdesk::now_ms() / 1000).unwrap_or_default();
        println!(
            "{}",
            frontdesk::demo::banner(
                &demo,
                &base,
                secret.as_ref(),
                &config.jwt.issuer,
                &config.jwt.audience,
                now_s
            )
        );
    }
    frontdesk::run(listener, state, frontdesk::shutdown_signal())
        .await
        .context("serving")?;
    Ok(())
}
