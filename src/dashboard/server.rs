//! Serving the dashboard: the embedded page, its JSON API and the graph, behind an access rule.
//!
//! Both ways of serving it listen on a loopback address, where every local user can connect
//! (`kubectl port-forward` too listens on the workstation's loopback), so both need a secret:
//! a token in the URL, exchanged on first load for an HttpOnly cookie (the page's scripts never
//! see it and the address bar drops it). `smm dashboard` makes a random one per run; the
//! operator keeps one in a Secret of its namespace, which whoever may read it can open the page
//! with. A request must also name a loopback host: a page whose own name was made to resolve to
//! 127.0.0.1 (DNS rebinding) would otherwise read the dashboard as its own origin.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::view::{Dashboard, DashboardError};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// Requests answered at once: a page makes two per poll.
const CONCURRENT_REQUESTS: usize = 4;
/// How long a request may take, waiting for its turn included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The host names a request may give: what a browser on the same machine calls loopback.
const LOOPBACK_NAMES: &[&str] = &["127.0.0.1", "localhost", "[::1]"];

/// Who may read the dashboard, and at which address the browser reaches it.
#[derive(Clone, Debug)]
pub enum Access {
    /// The browser connects to this server's own port (`smm dashboard`): the Host must name
    /// a loopback host and that port.
    Direct(Token),
    /// The browser connects through `kubectl port-forward`, whose local port only the user
    /// knows: the Host must name a loopback host, at any port.
    Forwarded(Token),
}

/// The secret that opens the dashboard and the cookie it travels in after the first load.
#[derive(Clone)]
pub struct Token {
    secret: String,
    /// The port this server listens on; the cookie is named after it, since cookies are shared
    /// by every port of a host and two dashboards must not overwrite each other's.
    port: u16,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot make a random token: {0}")]
    Random(#[source] getrandom::Error),
    #[error("a token must be at least {MIN_TOKEN_LEN} characters long")]
    TooShort,
}

/// The shortest secret accepted from elsewhere: 128 bits in hex.
const MIN_TOKEN_LEN: usize = 32;

impl Token {
    /// 32 random bytes from the operating system, hex encoded.
    pub fn generate(port: u16) -> Result<Self, TokenError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(TokenError::Random)?;
        Ok(Self {
            secret: hex::encode(bytes),
            port,
        })
    }

    /// A secret kept elsewhere (the operator's Secret), for a server on `port`.
    pub fn from_secret(secret: &str, port: u16) -> Result<Self, TokenError> {
        let secret = secret.trim();
        if secret.len() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort);
        }
        Ok(Self {
            secret: secret.to_owned(),
            port,
        })
    }

    /// The secret, for the URL that is printed.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    fn cookie(&self) -> String {
        format!("smm_dashboard_{}", self.port)
    }

    fn matches(&self, given: &str) -> bool {
        // Compared in constant time, so response timing does not reveal a prefix.
        given.len() == self.secret.len()
            && given
                .bytes()
                .zip(self.secret.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// Serves the dashboard on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    dashboard: Arc<Dashboard>,
    access: Access,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(dashboard, access))
        .with_graceful_shutdown(shutdown)
        .await
}

fn router(dashboard: Arc<Dashboard>, access: Access) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/assets/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route("/api/controlplanes", get(list))
        .route("/api/controlplanes/{name}", get(detail))
        .route("/api/controlplanes/{name}/graph.svg", get(graph))
        .route("/api/controlplanes/{name}/check", get(check))
        .with_state(dashboard)
        .layer(middleware::from_fn_with_state(
            Arc::new(Semaphore::new(CONCURRENT_REQUESTS)),
            limit,
        ))
        .layer(middleware::from_fn_with_state(Arc::new(access), guard))
        .layer(middleware::from_fn(security_headers))
}

/// Answers at most [`CONCURRENT_REQUESTS`] requests at once, each within [`REQUEST_TIMEOUT`]
/// (waiting for its turn included): the operator serving the page shares its memory and its
/// runtime with the reconciler and its lease renewals, so a flood of requests must queue, and
/// a slow API server must not pile them up.
async fn limit(State(permits): State<Arc<Semaphore>>, request: Request, next: Next) -> Response {
    let answer = async {
        let _permit = permits.acquire().await;
        next.run(request).await
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the dashboard is busy or the API server is slow; the page retries\n",
        )
            .into_response(),
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn list(State(dashboard): State<Arc<Dashboard>>) -> Response {
    match dashboard.list().await {
        Ok(list) => Json(list).into_response(),
        Err(err) => error(err),
    }
}

async fn detail(State(dashboard): State<Arc<Dashboard>>, Path(name): Path<String>) -> Response {
    match dashboard.detail(&name).await {
        Ok(detail) => Json(&*detail).into_response(),
        Err(err) => error(err),
    }
}

async fn graph(State(dashboard): State<Arc<Dashboard>>, Path(name): Path<String>) -> Response {
    match dashboard.detail(&name).await {
        Ok(detail) => (
            [(header::CONTENT_TYPE, "image/svg+xml")],
            detail.graph_svg.clone(),
        )
            .into_response(),
        Err(err) => error(err),
    }
}

async fn check(State(dashboard): State<Arc<Dashboard>>, Path(name): Path<String>) -> Response {
    match dashboard.check(&name).await {
        Ok(report) => Json(&*report).into_response(),
        Err(err) => error(err),
    }
}

fn error(err: DashboardError) -> Response {
    let code = match err {
        DashboardError::NotFound(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_GATEWAY,
    };
    (code, Json(serde_json::json!({"error": err.to_string()}))).into_response()
}

/// Lets a request through when it names a loopback host and carries the token. A valid
/// `?token=` is swapped for the cookie and a redirect to the same path without it, so the token
/// leaves the address bar and the history.
///
/// The cookie is sent to every port of 127.0.0.1, since browsers scope cookies by host: a
/// service of another local user that the browser opens directly (SameSite=Strict still lets a
/// top-level navigation carry it) could read it. Accepted: it gives that user what the token
/// gives, this read-only view while it is served or port-forwarded, nothing more; keeping it out
/// of cookies would take a token in session storage sent by script, which means serving the page
/// itself to anyone and handing the token to scripts, and the operator's token can be rotated
/// (README).
async fn guard(State(access): State<Arc<Access>>, request: Request, next: Next) -> Response {
    let (token, port) = match &*access {
        Access::Direct(token) => (token, Some(token.port)),
        Access::Forwarded(token) => (token, None),
    };
    if !request_host(&request).is_some_and(|host| names_loopback(host, port)) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "open the dashboard at 127.0.0.1, localhost or [::1]\n",
        )
            .into_response();
    }
    if let Some(given) = request.uri().query().and_then(query_token) {
        if !token.matches(&given) {
            return unauthorized();
        }
        let cookie = format!(
            "{}={}; HttpOnly; SameSite=Strict; Path=/",
            token.cookie(),
            token.secret
        );
        let location = same_host_path(request.uri().path());
        return (
            StatusCode::SEE_OTHER,
            [(header::SET_COOKIE, cookie), (header::LOCATION, location)],
        )
            .into_response();
    }
    let presented =
        cookie_value(request.headers(), &token.cookie()).or_else(|| bearer(request.headers()));
    match presented {
        Some(given) if token.matches(&given) => next.run(request).await,
        _ => unauthorized(),
    }
}

/// The host the request is for: its Host header, or the authority of an HTTP/2 request.
fn request_host(request: &Request) -> Option<&str> {
    match request.headers().get(header::HOST) {
        Some(host) => host.to_str().ok(),
        None => request
            .uri()
            .authority()
            .map(|authority| authority.as_str()),
    }
}

/// Whether `host` names a loopback host and, when `port` is known, that port.
fn names_loopback(host: &str, port: Option<u16>) -> bool {
    let (name, given_port) = match host.rsplit_once(':') {
        // `[::1]` alone: the colons are the address's.
        _ if host.ends_with(']') => (host, None),
        Some((name, given)) => match given.parse::<u16>() {
            Ok(given) => (name, Some(given)),
            Err(_) => return false,
        },
        None => (host, None),
    };
    let loopback = LOOPBACK_NAMES
        .iter()
        .any(|known| known.eq_ignore_ascii_case(name));
    loopback && port.is_none_or(|port| given_port == Some(port))
}

/// The path to send the browser back to, with one leading slash: `//evil.example` (or
/// `/\evil.example`, which browsers read alike) would name another host.
fn same_host_path(path: &str) -> String {
    format!("/{}", path.trim_start_matches(['/', '\\']))
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        "missing or wrong token: open the URL that `smm dashboard` printed, or the operator's \
         with the token of its Secret (see the README)\n",
    )
        .into_response()
}

fn query_token(query: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .map(str::to_owned)
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then(|| value.to_owned())
        })
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_owned)
}

/// Headers for every answer: only our own scripts and styles run (no inline script, so an
/// injected string cannot execute), nothing is cached or framed, no referrer leaves.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> Token {
        Token::generate(8123).unwrap()
    }

    #[test]
    fn tokens_are_random_and_compared_exactly() {
        let a = token();
        let b = token();
        assert_eq!(a.secret().len(), 64);
        assert_ne!(a.secret(), b.secret());
        assert!(a.matches(a.secret()));
        assert!(!a.matches(b.secret()));
        assert!(!a.matches(&a.secret()[..63]));
        assert!(!a.matches(""));
    }

    #[test]
    fn the_token_is_found_in_query_cookie_and_header() {
        assert_eq!(query_token("a=1&token=abc").as_deref(), Some("abc"));
        assert_eq!(query_token("tokens=abc"), None);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("smm_dashboard_1=x; smm_dashboard_8123=abc"),
        );
        assert_eq!(
            cookie_value(&headers, "smm_dashboard_8123").as_deref(),
            Some("abc")
        );
        assert_eq!(cookie_value(&headers, "smm_dashboard_2"), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&headers).as_deref(), Some("abc"));
    }

    #[test]
    fn only_loopback_hosts_are_served() {
        for host in [
            "127.0.0.1:8123",
            "localhost:8123",
            "LocalHost:8123",
            "[::1]:8123",
        ] {
            assert!(names_loopback(host, Some(8123)), "{host}");
            assert!(names_loopback(host, None), "{host}");
        }
        assert!(names_loopback("[::1]", None));
        assert!(names_loopback("localhost:9999", None));
        for host in [
            "localhost:9999",
            "localhost",
            "rebind.attacker.example:8123",
            "127.0.0.1.nip.io:8123",
            "localhost.:8123",
            "[::2]:8123",
            "127.0.0.1:x",
        ] {
            assert!(!names_loopback(host, Some(8123)), "{host}");
        }
        assert!(!names_loopback("rebind.attacker.example:8081", None));
    }

    #[test]
    fn the_redirect_stays_on_this_host() {
        assert_eq!(same_host_path("/"), "/");
        assert_eq!(same_host_path("/api/controlplanes"), "/api/controlplanes");
        assert_eq!(same_host_path("//evil.example"), "/evil.example");
        assert_eq!(same_host_path("/\\evil.example"), "/evil.example");
    }

    #[test]
    fn a_kept_token_must_be_long_enough() {
        assert!(matches!(
            Token::from_secret("short", 1),
            Err(TokenError::TooShort)
        ));
        let kept = Token::from_secret(&format!("{}\n", "a".repeat(64)), 8081).unwrap();
        assert!(kept.matches(&"a".repeat(64)));
        assert_eq!(kept.cookie(), "smm_dashboard_8081");
    }
}
