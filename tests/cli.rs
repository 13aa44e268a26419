//! The binary as an operator runs it: zero configuration, the demo, one clear line for a bad
//! setting, and a clean exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_frontdesk");

fn frontdesk(dir: &std::path::Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("FRONTDESK_") {
            c.env_remove(k);
        }
    }
    c.env("RUST_LOG", "info");
    c
}

/// Lines of a child's stream, readable with a deadline.
fn lines(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_for(rx: &mpsc::Receiver<String>, what: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if what(&line) => return line,
            Ok(_) => {}
            Err(e) => panic!("the expected line never came: {e}"),
        }
    }
}

/// The address from the JSON log line `listening`.
fn listening_addr(stderr: &mpsc::Receiver<String>) -> String {
    let line = wait_for(stderr, |l| l.contains("\"listening\""));
    let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
    v["addr"].as_str().expect("addr field").to_owned()
}

/// A server child, killed if the test ends (a failed assertion included) before stopping it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// `frontdesk serve` on an ephemeral port with JSON logs on a piped stderr.
fn serve(dir: &std::path::Path) -> Running {
    Running(
        frontdesk(dir)
            .args(["serve", "--log-format", "json"])
            .env("FRONTDESK_LISTEN", "127.0.0.1:0")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

fn terminate(mut child: Running) -> std::process::ExitStatus {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "no exit within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut req = reqwest::Client::new().get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.expect("request");
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

#[test]
fn serve_runs_with_zero_configuration_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = serve(dir.path());
    let stderr = lines(child.stderr.take().unwrap());
    let addr = listening_addr(&stderr);
    assert_eq!(get(&format!("http://{addr}/healthz"), None).0, 200);
    assert_eq!(get(&format!("http://{addr}/readyz"), None).0, 200);
    assert!(
        dir.path().join("frontdesk.db").exists(),
        "embedded SQLite in ./frontdesk.db"
    );
    let status = terminate(child);
    assert!(status.success(), "exit status {status}");
}

#[test]
fn demo_prints_tokens_that_work_and_reuses_its_org() {
    let dir = tempfile::tempdir().unwrap();
    let mut org_ids = Vec::new();
    for _ in 0..2 {
        let mut child = Running(
            frontdesk(dir.path())
                .args(["demo", "--log-format", "json"])
                .env("FRONTDESK_LISTEN", "127.0.0.1:0")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let stderr = lines(child.stderr.take().unwrap());
        let stdout = lines(child.stdout.take().unwrap());
        let addr = listening_addr(&stderr);
        let org = wait_for(&stdout, |l| l.trim_start().starts_with("organization"));
        org_ids.push(org);
        let admin = wait_for(&stdout, |l| l.contains(" admin "));
        let token = admin.split_whitespace().last().unwrap().to_owned();
        let (status, body) = get(&format!("http://{addr}/v1/pools"), Some(&token));
        assert_eq!(status, 200, "{body}");
        let pools: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(pools.as_array().unwrap().len(), 2, "Default and Sales");
        let agent = wait_for(&stdout, |l| l.contains(" agent "));
        let token = agent.split_whitespace().last().unwrap();
        assert_eq!(get(&format!("http://{addr}/v1/me"), Some(token)).0, 200);
        assert_eq!(get(&format!("http://{addr}/v1/pools"), Some(token)).0, 403);
        assert!(terminate(child).success());
    }
    assert_eq!(org_ids[0], org_ids[1], "the second run reuses the demo org");
    assert!(dir.path().join("frontdesk-demo.db").exists());
}

#[test]
fn create_org_and_token_bootstrap_an_org_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = frontdesk(dir.path())
        .args([
            "create-org",
            "--name",
            "Acme",
            "--admin-user-id",
            "u-1",
            "--admin-email",
            "ops@acme.example",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let org_id = text
        .lines()
        .find_map(|l| l.strip_prefix("org_id"))
        .unwrap()
        .trim()
        .to_owned();
    let out = frontdesk(dir.path())
        .args([
            "token",
            "--org-id",
            &org_id,
            "--user-id",
            "u-1",
            "--role",
            "admin",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mut child = serve(dir.path());
    let stderr = lines(child.stderr.take().unwrap());
    let addr = listening_addr(&stderr);
    let (status, body) = get(&format!("http://{addr}/v1/org"), Some(&token));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"name\":\"Acme\""));
    assert!(terminate(child).success());
}

#[test]
fn sanitize_masks_and_strips_from_stdin_and_refuses_oversized_input() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let run = |input: &[u8]| {
        let mut child = frontdesk(dir.path())
            .arg("sanitize")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let data = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        let out = child.wait_with_output().unwrap();
        let _ = writer.join();
        out
    };
    let out = run(br#"<p>Hello</p><input type="password" value="hunter2-secret"><img src=x onerror="alert(1)"><script>evil()</script>"#);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = String::from_utf8(out.stdout).unwrap();
    assert!(html.contains("Hello"), "{html}");
    assert!(
        !html.contains("hunter2-secret") && !html.contains("onerror") && !html.contains("evil()"),
        "{html}"
    );
    let big = vec![b'a'; 5 * 1024 * 1024 + 1];
    let out = run(&big);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("larger than the 5 MiB limit"), "{err}");
}

#[test]
fn a_bad_setting_stops_the_start_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, "x".repeat(40)).unwrap();
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (
            vec![("FRONTDESK_LISTEN", "nowhere".into())],
            "FRONTDESK_LISTEN",
        ),
        (
            vec![("FRONTDESK_DATABASE_URL", "mysql://root:hunter2@db/x".into())],
            "FRONTDESK_DATABASE_URL",
        ),
        (
            vec![("FRONTDESK_JWT_SECRET", "too-short".into())],
            "FRONTDESK_JWT_SECRET",
        ),
        (
            vec![
                ("FRONTDESK_JWT_SECRET", "y".repeat(40)),
                (
                    "FRONTDESK_JWT_SECRET_FILE",
                    secret_file.display().to_string(),
                ),
            ],
            "FRONTDESK_JWT_SECRET",
        ),
        (
            vec![("FRONTDESK_LOG_FORMAT", "xml".into())],
            "FRONTDESK_LOG_FORMAT",
        ),
        (
            vec![("FRONTDESK_JWKS_FILE", "/nonexistent/jwks.json".into())],
            "FRONTDESK_JWKS_FILE",
        ),
        (
            vec![("FRONTDESK_JWKS_URL", "ftp://keys".into())],
            "FRONTDESK_JWKS_URL",
        ),
        (
            vec![("FRONTDESK_VISITOR_TOKEN_TTL", "forever".into())],
            "FRONTDESK_VISITOR_TOKEN_TTL",
        ),
    ];
    for (env, var) in cases {
        let mut cmd = frontdesk(dir.path());
        cmd.arg("serve");
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{var}: one line, got {stderr:?}");
        assert!(
            stderr.starts_with(&format!("error: invalid configuration: {var}:")),
            "{stderr}"
        );
        assert!(
            !stderr.contains("hunter2") && !stderr.contains("too-short"),
            "secrets stay out: {stderr}"
        );
    }
    assert!(!dir.path().join("frontdesk.db").exists(), "nothing started");
}
