//! The CLI's client commands (`apply`, `delete`, `get`): they talk to a running evmesh's admin
//! API the way kubectl talks to a cluster.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use evmesh_config::registry::{self, KindInfo};
use serde_json::Value;

/// Where the server is and how to authenticate.
pub(crate) struct Server {
    pub(crate) url: String,
    pub(crate) token: Option<String>,
    client: reqwest::Client,
}

impl Server {
    /// `token` wins; else `token_file`; else `DATA_DIR/admin-token` when it exists.
    pub(crate) fn new(
        url: String,
        token: Option<String>,
        token_file: Option<PathBuf>,
        data_dir: &Path,
    ) -> anyhow::Result<Server> {
        let token = match (token, token_file) {
            (Some(t), _) => Some(t),
            (None, Some(f)) => Some(
                std::fs::read_to_string(&f)
                    .with_context(|| format!("reading the token file {}", f.display()))?
                    .trim()
                    .to_string(),
            ),
            (None, None) => std::fs::read_to_string(data_dir.join("admin-token"))
                .ok()
                .map(|t| t.trim().to_string()),
        };
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()?;
        Ok(Server {
            url: url.trim_end_matches('/').to_string(),
            token,
            client,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.client.request(method, format!("{}{path}", self.url));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut r = self.request(method, path);
        if let Some(b) = body {
            r = r
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        let resp = r
            .send()
            .await
            .with_context(|| format!("connecting to {}", self.url))?;
        let code = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((code, value))
    }
}

fn collection_path(kind: &KindInfo, ns: Option<&str>) -> String {
    match ns {
        Some(ns) => format!(
            "/apis/{}/{}/namespaces/{ns}/{}",
            kind.group, kind.version, kind.plural
        ),
        None => format!("/apis/{}/{}/{}", kind.group, kind.version, kind.plural),
    }
}

fn server_error(code: u16, body: &Value) -> String {
    let reason = body["reason"].as_str().unwrap_or("Unknown");
    let message = body["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| body.to_string());
    let mut out = format!("Error from server ({reason}): {message}");
    if code == 401 {
        out = "error: You must be logged in to the server (Unauthorized)".to_string();
    }
    out
}

/// Documents of files, directories or `-` (standard input).
fn read_docs(files: &[PathBuf]) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for f in files {
        if f.as_os_str() == "-" {
            let text = evmesh_config::read_yaml(std::io::stdin().lock())
                .map_err(|e| anyhow::anyhow!("standard input {e}"))?;
            let docs = evmesh_config::load_str("<stdin>", &text).map_err(anyhow::Error::msg)?;
            out.extend(docs.into_iter().map(|d| d.value));
        } else {
            let (docs, errors) = evmesh_config::load_paths(std::slice::from_ref(f));
            if let Some(e) = errors.first() {
                bail!("{e}");
            }
            out.extend(docs.into_iter().map(|d| d.value));
        }
    }
    Ok(out)
}

fn kind_of_doc(doc: &Value) -> Option<&'static KindInfo> {
    registry::by_kind(doc["apiVersion"].as_str()?, doc["kind"].as_str()?)
}

fn label(kind: &KindInfo, name: &str) -> String {
    format!("{}.{}/{name}", kind.singular, kind.group)
}

/// `evmesh apply -f`: create each resource, or replace it when it exists.
pub(crate) async fn apply(
    server: &Server,
    files: &[PathBuf],
    namespace: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for mut doc in read_docs(files)? {
        let Some(kind) = kind_of_doc(&doc) else {
            eprintln!(
                "warning: {} {} is not served by evmesh; skipped",
                doc["apiVersion"].as_str().unwrap_or("?"),
                doc["kind"].as_str().unwrap_or("?")
            );
            continue;
        };
        let name = doc["metadata"]["name"].as_str().unwrap_or("").to_string();
        let ns = doc["metadata"]["namespace"]
            .as_str()
            .map(str::to_string)
            .or_else(|| namespace.map(str::to_string))
            .unwrap_or_else(|| "default".to_string());
        if let Some(m) = doc["metadata"].as_object_mut() {
            m.insert("namespace".into(), Value::String(ns.clone()));
        }
        let base = collection_path(kind, Some(&ns));
        let (code, current) = server
            .call(reqwest::Method::GET, &format!("{base}/{name}"), None)
            .await?;
        let (code, body, verb) = match code {
            404 => {
                let (c, b) = server
                    .call(reqwest::Method::POST, &base, Some(&doc))
                    .await?;
                (c, b, "created")
            }
            200 => {
                let (c, b) = server
                    .call(reqwest::Method::PUT, &format!("{base}/{name}"), Some(&doc))
                    .await?;
                let same =
                    b["metadata"]["resourceVersion"] == current["metadata"]["resourceVersion"];
                (c, b, if same { "unchanged" } else { "configured" })
            }
            _ => (code, current, ""),
        };
        if (200..300).contains(&code) {
            println!("{} {verb}", label(kind, &name));
        } else {
            eprintln!("{}", server_error(code, &body));
            failed = true;
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `evmesh delete -f FILE` or `evmesh delete KIND NAME`.
pub(crate) async fn delete(
    server: &Server,
    files: &[PathBuf],
    kind_and_name: &[String],
    namespace: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let mut targets = Vec::new();
    if files.is_empty() {
        let [kind, names @ ..] = kind_and_name else {
            bail!("give -f FILE, or KIND NAME...");
        };
        let kind = registry::by_cli_name(kind)
            .with_context(|| format!("the server doesn't have a resource type {kind:?}"))?;
        for n in names {
            targets.push((kind, namespace.unwrap_or("default").to_string(), n.clone()));
        }
    } else {
        for doc in read_docs(files)? {
            let Some(kind) = kind_of_doc(&doc) else {
                continue;
            };
            let ns = doc["metadata"]["namespace"]
                .as_str()
                .or(namespace)
                .unwrap_or("default")
                .to_string();
            let name = doc["metadata"]["name"].as_str().unwrap_or("").to_string();
            targets.push((kind, ns, name));
        }
    }
    let mut failed = false;
    for (kind, ns, name) in targets {
        let path = format!("{}/{name}", collection_path(kind, Some(&ns)));
        let (code, body) = server.call(reqwest::Method::DELETE, &path, None).await?;
        if (200..300).contains(&code) {
            println!("{} deleted", label(kind, &name));
        } else {
            eprintln!("{}", server_error(code, &body));
            failed = true;
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn ready(item: &Value) -> (String, String) {
    let cond = item["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
    match cond {
        Some(c) => (
            c["status"].as_str().unwrap_or("Unknown").to_string(),
            c["reason"].as_str().unwrap_or("").to_string(),
        ),
        None => ("Unknown".into(), String::new()),
    }
}

fn age(item: &Value) -> String {
    let Some(ts) = item["metadata"]["creationTimestamp"].as_str() else {
        return "<unknown>".into();
    };
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(ts) else {
        return "<unknown>".into();
    };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn print_table(kind: &KindInfo, items: &[Value], all_namespaces: bool) {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut header: Vec<&str> = Vec::new();
    if all_namespaces {
        header.push("NAMESPACE");
    }
    header.push("NAME");
    match kind.kind {
        "Broker" => header.extend(["URL", "AGE", "READY", "REASON"]),
        "Trigger" => header.extend(["BROKER", "SUBSCRIBER_URI", "AGE", "READY", "REASON"]),
        "PingSource" => header.extend(["SINK", "SCHEDULE", "AGE", "READY", "REASON"]),
        // Every other source kind (GitHubSource, ApiServerSource, ...).
        _ if kind.group == "sources.knative.dev" => {
            header.extend(["SINK", "AGE", "READY", "REASON"])
        }
        _ => header.extend(["URL", "AGE", "READY", "REASON"]),
    }
    for item in items {
        let mut row = Vec::new();
        if all_namespaces {
            row.push(
                item["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            );
        }
        row.push(item["metadata"]["name"].as_str().unwrap_or("").to_string());
        let (r, reason) = ready(item);
        match kind.kind {
            "Trigger" => {
                row.push(item["spec"]["broker"].as_str().unwrap_or("").to_string());
                row.push(
                    item["status"]["subscriberUri"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                );
            }
            _ if kind.group == "sources.knative.dev" => {
                let text = |v: &Value| v.as_str().unwrap_or("").to_string();
                row.push(text(&item["status"]["sinkUri"]));
                if kind.kind == "PingSource" {
                    row.push(text(&item["spec"]["schedule"]));
                }
            }
            _ => row.push(
                item["status"]["address"]["url"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            ),
        }
        row.push(age(item));
        row.push(r);
        row.push(reason);
        rows.push(row);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain(std::iter::once(header[i].len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let fmt = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("   ")
            .trim_end()
            .to_string()
    };
    println!("{}", fmt(header.iter().map(|h| h.to_string()).collect()));
    for r in rows {
        println!("{}", fmt(r));
    }
}

/// `evmesh get KIND [NAME] [-n NS | -A] [-o yaml|json]`.
pub(crate) async fn get(
    server: &Server,
    kind: &str,
    name: Option<&str>,
    namespace: Option<&str>,
    all_namespaces: bool,
    output: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let Some(kind) = registry::by_cli_name(kind) else {
        eprintln!("error: the server doesn't have a resource type {kind:?}");
        return Ok(ExitCode::FAILURE);
    };
    let ns = if all_namespaces {
        None
    } else {
        Some(namespace.unwrap_or("default"))
    };
    let path = match name {
        Some(n) => format!("{}/{n}", collection_path(kind, ns.or(Some("default")))),
        None => collection_path(kind, ns),
    };
    let (code, body) = server.call(reqwest::Method::GET, &path, None).await?;
    if code != 200 {
        eprintln!("{}", server_error(code, &body));
        return Ok(ExitCode::FAILURE);
    }
    match output {
        Some("json") => println!("{}", serde_json::to_string_pretty(&body)?),
        Some("yaml") => print!("{}", serde_saphyr::to_string(&body)?),
        Some(other) => bail!("unsupported output format {other:?} (yaml, json)"),
        None => {
            let items = match name {
                Some(_) => vec![body],
                None => body["items"].as_array().cloned().unwrap_or_default(),
            };
            if items.is_empty() {
                match ns {
                    Some(ns) => eprintln!("No resources found in {ns} namespace."),
                    None => eprintln!("No resources found"),
                }
            } else {
                print_table(kind, &items, all_namespaces);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A kubeconfig for `server`: cluster, user and context all named `evmesh`, the context
/// current. Values are JSON strings, which YAML reads as they are.
///
/// kubectl sends a kubeconfig user's token only over TLS, so the server URL carries the token
/// too (`{server}/_evmesh/kube/{token}`, a prefix evmesh serves the whole API under).
pub(crate) fn kubeconfig(server: &Server, namespace: Option<&str>) -> anyhow::Result<String> {
    let q = |s: &str| Value::String(s.to_string()).to_string();
    let url = match &server.token {
        Some(t)
            if !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)) =>
        {
            format!("{}/_evmesh/kube/{t}", server.url)
        }
        Some(_) => bail!(
            "the admin token holds characters that cannot go in a URL path; use a token of letters, digits and -._~ (the generated one is hex)"
        ),
        None => server.url.clone(),
    };
    let user = match &server.token {
        Some(t) => format!("    token: {}\n", q(t)),
        None => "    {}\n".to_string(),
    };
    let ns = namespace
        .map(|n| format!("    namespace: {}\n", q(n)))
        .unwrap_or_default();
    Ok(format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: evmesh\n  cluster:\n    server: {}\nusers:\n- name: evmesh\n  user:\n{user}contexts:\n- name: evmesh\n  context:\n    cluster: evmesh\n    user: evmesh\n{ns}current-context: evmesh\npreferences: {{}}\n",
        q(&url)
    ))
}
