//! What the exporter tests share: a running `datahub exporter` (its address read from its
//! startup line), an HTTP GET with deadlines, and reading samples out of an exposition.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Generous bound for the exporter to start and for one scrape on a noisy machine.
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// A running `datahub exporter`; killed (SIGKILL) when dropped if still running.
pub struct Exporter {
    pub child: Child,
    pub addr: SocketAddr,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Exporter {
    /// Starts `datahub exporter --listen 127.0.0.1:0 ARGS` and waits for the address it prints.
    pub fn start(args: &[&str]) -> Exporter {
        Exporter::start_cmd(Command::new(env!("CARGO_BIN_EXE_datahub")).args(args))
    }

    /// Starts `cmd exporter --listen 127.0.0.1:0` with `args` already on `cmd`.
    pub fn start_cmd(cmd: &mut Command) -> Exporter {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("stderr");
        let child = cmd
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn datahub exporter");
        let mut e = Exporter {
            child,
            addr: "127.0.0.1:1".parse().unwrap(),
            stderr,
            _dir: dir,
        };
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let log = e.stderr();
            // Only a whole line: the exporter's write may be read half done (a port cut short
            // would still parse).
            if let Some(rest) = log.split("serving http://").nth(1)
                && let Some((line, _)) = rest.split_once('\n')
            {
                let addr = line.split('/').next().unwrap();
                e.addr = addr
                    .parse()
                    .unwrap_or_else(|_| panic!("address in {log:?}"));
                assert_ne!(e.addr.port(), 0, "the real port is printed: {log}");
                return e;
            }
            if let Some(status) = e.child.try_wait().unwrap() {
                panic!("the exporter exited ({status}) before serving: {log}");
            }
            assert!(
                Instant::now() < deadline,
                "no startup line within {START_DEADLINE:?}: {log}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// `GET /metrics` in the text format 0.0.4 (status 200 asserted).
    pub fn scrape(&self) -> String {
        let (status, _, body) = get(self.addr, "/metrics", None);
        assert_eq!(
            status,
            200,
            "scrape: {body}\nexporter stderr: {}",
            self.stderr()
        );
        body
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `GET path` over a fresh connection (`Connection: close`), with `accept` as the Accept
/// header: (status, content type, body). Every read and write has a deadline; panics when
/// nothing answers.
pub fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> (u16, String, String) {
    try_get(addr, path, accept).unwrap_or_else(|| panic!("GET http://{addr}{path}: no answer"))
}

/// [`get`], `None` when the connection or the exchange fails (a server not started yet).
pub fn try_get(
    addr: SocketAddr,
    path: &str,
    accept: Option<&str>,
) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, START_DEADLINE).ok()?;
    s.set_read_timeout(Some(START_DEADLINE)).unwrap();
    s.set_write_timeout(Some(START_DEADLINE)).unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("status line: {head}"));
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Some((status, content_type, body))
}

/// The body of a `Transfer-Encoding: chunked` response (Prometheus's API answers so).
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|_| panic!("chunk size {size:?}"));
        if n == 0 || after.len() < n {
            return out;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
}

/// One sample line: metric name, labels as written, value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Every sample of an exposition (label values unescaped).
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("name value");
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), Vec::new()),
                Some((n, rest)) => (n.to_owned(), parse_labels(rest.trim_end_matches('}'))),
            };
            Sample {
                name,
                labels,
                value: value.parse().unwrap_or_else(|_| panic!("value in {l:?}")),
            }
        })
        .collect()
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if key.is_empty() {
            return out;
        }
        assert_eq!(chars.next(), Some('"'), "label {key} in {s:?}");
        let mut v = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => v.push('\n'),
                    Some(c) => v.push(c),
                    None => break,
                },
                '"' => break,
                c => v.push(c),
            }
        }
        out.push((key.trim_start_matches(',').to_owned(), v));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
}

/// The value of the one sample named `name` whose labels include every `(k, v)` of `labels`.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<f64> = samples(text)
        .into_iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .map(|s| s.value)
        .collect();
    assert!(found.len() <= 1, "{name} {labels:?} matches {found:?}");
    found.first().copied()
}

/// `name` (`promtool`, `prometheus`) when it runs from PATH; `None` with a note when it does
/// not, unless `REQUIRE_PROMETHEUS=1` (CI), which makes a missing one a failure.
pub fn tool(name: &str) -> Option<PathBuf> {
    let runs = Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let required = std::env::var("REQUIRE_PROMETHEUS").is_ok_and(|v| v == "1");
    match (runs, required) {
        (true, _) => Some(PathBuf::from(name)),
        (false, true) => {
            panic!("{name} not found and REQUIRE_PROMETHEUS=1: apt-get install prometheus")
        }
        (false, false) => {
            eprintln!("note: {name} not on PATH; skipping (REQUIRE_PROMETHEUS=1 makes this fail)");
            None
        }
    }
}

/// [`tool`]`("promtool")`.
pub fn promtool() -> Option<PathBuf> {
    tool("promtool")
}

/// Runs `promtool ARGS` with `stdin` as its standard input (if any), killed after
/// [`START_DEADLINE`]: (success, stdout + stderr).
pub fn run_promtool(promtool: &PathBuf, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("stdin"), dir.path().join("output"));
    std::fs::write(&input, stdin.unwrap_or_default()).unwrap();
    let out = std::fs::File::create(&output).unwrap();
    let mut child = Command::new(promtool)
        .args(args)
        .stdin(std::fs::File::open(&input).unwrap())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("start promtool");
    let status = crate::common::finish_child(&mut child, START_DEADLINE);
    let text = std::fs::read_to_string(&output).unwrap_or_default();
    (
        status.success(),
        format!("$ promtool {}\n{text}", args.join(" ")),
    )
}
