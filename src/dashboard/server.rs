//! Serving the dashboard: the embedded page, its JSON API and the graph, behind an access rule.
//!
//! `smm dashboard` serves on 127.0.0.1, where every local user can connect, so it needs a
//! secret: a random token in the URL it prints, exchanged on first load for an HttpOnly cookie
//! (the page's scripts never see it and the address bar drops it). The operator serves on the
//! pod's loopback address, reachable only through `kubectl port-forward`, so whoever reaches
//! it was already allowed to port-forward into the operator's namespace.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use super::view::{Dashboard, DashboardError};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// Who may read the dashboard.
#[derive(Clone, Debug)]
pub enum Access {
    /// Anyone who can connect: for a loopback address inside the operator's pod.
    Loopback,
    /// Only requests carrying the token (in the URL once, then in the cookie).
    Token(Token),
}

/// A random secret and the cookie it travels in after the first load.
#[derive(Clone)]
pub struct Token {
    secret: String,
    /// Per port: cookies are shared by every port of a host, and two dashboards must not
    /// overwrite each other's.
    cookie: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("cookie", &self.cookie)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot make a random token: {0}")]
pub struct TokenError(#[source] getrandom::Error);

impl Token {
    /// 32 random bytes from the operating system, hex encoded.
    pub fn generate(port: u16) -> Result<Self, TokenError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(TokenError)?;
        Ok(Self {
            secret: hex::encode(bytes),
            cookie: format!("smm_dashboard_{port}"),
        })
    }

    /// The secret, for the URL that is printed.
    pub fn secret(&self) -> &str {
        &self.secret
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
        .with_state(dashboard)
        .layer(middleware::from_fn_with_state(Arc::new(access), guard))
        .layer(middleware::from_fn(security_headers))
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
        Ok(detail) => Json(detail).into_response(),
        Err(err) => error(err),
    }
}

async fn graph(State(dashboard): State<Arc<Dashboard>>, Path(name): Path<String>) -> Response {
    match dashboard.detail(&name).await {
        Ok(detail) => ([(header::CONTENT_TYPE, "image/svg+xml")], detail.graph_svg).into_response(),
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

/// Lets a request through when the access rule allows it. A valid `?token=` is swapped for the
/// cookie and a redirect to the same path without it, so the token leaves the address bar and
/// the history.
async fn guard(State(access): State<Arc<Access>>, request: Request, next: Next) -> Response {
    let Access::Token(token) = &*access else {
        return next.run(request).await;
    };
    if let Some(given) = request.uri().query().and_then(query_token) {
        if !token.matches(&given) {
            return unauthorized();
        }
        let cookie = format!(
            "{}={}; HttpOnly; SameSite=Strict; Path=/",
            token.cookie, token.secret
        );
        let location = request.uri().path().to_owned();
        return (
            StatusCode::SEE_OTHER,
            [(header::SET_COOKIE, cookie), (header::LOCATION, location)],
        )
            .into_response();
    }
    let presented =
        cookie_value(request.headers(), &token.cookie).or_else(|| bearer(request.headers()));
    match presented {
        Some(given) if token.matches(&given) => next.run(request).await,
        _ => unauthorized(),
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        "missing or wrong token: open the URL that `smm dashboard` printed\n",
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
}
