//! The GitHub REST calls that register, update and remove a GitHubSource's webhook (as Knative's
//! controller makes them through go-github).

use std::time::Duration;

use serde_json::{Value, json};
use url::Url;

/// What a webhook is registered with.
pub(crate) struct HookOptions {
    pub(crate) owner: String,
    /// Empty for an organization-wide webhook.
    pub(crate) repo: String,
    pub(crate) url: String,
    pub(crate) events: Vec<String>,
    pub(crate) secret: String,
}

/// A client of the GitHub REST API at one base URL.
pub(crate) struct GitHubApi {
    base: Url,
    client: reqwest::Client,
}

/// Most bytes of a GitHub error body kept in a status message.
const MAX_ERROR_BODY: usize = 512;

impl GitHubApi {
    /// A client of `base` (`https://api.github.com/` when `None`).
    pub(crate) fn new(base: Option<&str>) -> Result<GitHubApi, String> {
        let mut text = base.unwrap_or("https://api.github.com/").to_string();
        if !text.ends_with('/') {
            text.push('/');
        }
        let base = Url::parse(&text).map_err(|e| format!("githubAPIURL {text:?}: {e}"))?;
        evmesh_broker::tls::install_provider();
        let tls = evmesh_broker::tls::client_config(&[]).map_err(|e| e.to_string())?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("evmesh/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("GitHub API client: {e}"))?;
        Ok(GitHubApi { base, client })
    }

    fn hooks_url(&self, owner: &str, repo: &str) -> Result<Url, String> {
        let path = if repo.is_empty() {
            format!("orgs/{owner}/hooks")
        } else {
            format!("repos/{owner}/{repo}/hooks")
        };
        self.base.join(&path).map_err(|e| e.to_string())
    }

    fn hook_url(&self, owner: &str, repo: &str, id: &str) -> Result<Url, String> {
        let mut url = self.hooks_url(owner, repo)?;
        url.path_segments_mut()
            .map_err(|_| "githubAPIURL cannot be a base".to_string())?
            .push(id);
        Ok(url)
    }

    fn request(&self, method: reqwest::Method, url: Url, token: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, url)
            .bearer_auth(token)
            .header("accept", "application/vnd.github.v3+json")
    }

    fn hook_body(o: &HookOptions, with_name: bool) -> Value {
        let mut body = json!({
            "events": o.events,
            "active": true,
            "config": {"url": o.url, "content_type": "json", "secret": o.secret},
        });
        if with_name {
            body["name"] = json!("web");
        }
        body
    }

    /// `POST /repos/{owner}/{repo}/hooks` (or `/orgs/{owner}/hooks`): the new hook's id.
    pub(crate) async fn create_hook(&self, token: &str, o: &HookOptions) -> Result<String, String> {
        let url = self.hooks_url(&o.owner, &o.repo)?;
        let resp = self
            .request(reqwest::Method::POST, url, token)
            .header("content-type", "application/json")
            .body(Self::hook_body(o, true).to_string())
            .send()
            .await
            .map_err(|e| format!("failed to create the webhook: {e}"))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!(
                "failed to create the webhook: GitHub answered {status}: {}",
                cut(&body)
            ));
        }
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| format!("failed to create the webhook: unreadable answer: {e}"))?;
        match &v["id"] {
            Value::Number(n) => Ok(n.to_string()),
            Value::String(s) => Ok(s.clone()),
            _ => Err("failed to create the webhook: the answer has no id".into()),
        }
    }

    /// `PATCH .../hooks/{id}`: `Ok(false)` when the hook no longer exists.
    pub(crate) async fn edit_hook(
        &self,
        token: &str,
        o: &HookOptions,
        id: &str,
    ) -> Result<bool, String> {
        let url = self.hook_url(&o.owner, &o.repo, id)?;
        let resp = self
            .request(reqwest::Method::PATCH, url, token)
            .header("content-type", "application/json")
            .body(Self::hook_body(o, false).to_string())
            .send()
            .await
            .map_err(|e| format!("failed to update the webhook: {e}"))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(false);
        }
        if !status.is_success() {
            let body = resp.bytes().await.unwrap_or_default();
            return Err(format!(
                "failed to update the webhook: GitHub answered {status}: {}",
                cut(&body)
            ));
        }
        Ok(true)
    }

    /// `DELETE .../hooks/{id}`; a hook already gone is not an error.
    pub(crate) async fn delete_hook(
        &self,
        token: &str,
        owner: &str,
        repo: &str,
        id: &str,
    ) -> Result<(), String> {
        let url = self.hook_url(owner, repo, id)?;
        let resp = self
            .request(reqwest::Method::DELETE, url, token)
            .send()
            .await
            .map_err(|e| format!("failed to delete the webhook: {e}"))?;
        let status = resp.status();
        if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
            return Ok(());
        }
        let body = resp.bytes().await.unwrap_or_default();
        Err(format!(
            "failed to delete the webhook {id}: GitHub answered {status}: {}",
            cut(&body)
        ))
    }
}

fn cut(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_ERROR_BODY)]);
    text.into_owned()
}
