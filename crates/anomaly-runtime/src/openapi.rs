//! What the services' OpenAPI documents share: the optional bearer authentication and the JSON
//! form in which each document is served at `GET /openapi.json` and kept under `openapi/`.

use axum::Router;
use axum::http::header;
use axum::routing::get;
use utoipa::Modify;
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

/// Declares the `bearer` security scheme (`<service>.auth`); operations opt in with
/// `security((), ("bearer" = []))`, since authentication is optional.
#[derive(Debug, Clone, Copy)]
pub struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApi) {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
    }
}

/// `doc` as kept in `openapi/`: the API's version (the paths' `v1`, not the crate's
/// placeholder version), pretty JSON, a final newline.
pub fn openapi_json(mut doc: OpenApi) -> String {
    doc.info.version = "1".to_owned();
    let mut text = doc
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

/// `GET /openapi.json`, answered with `document()`. Generating takes microseconds and the
/// route is rarely hit, so no copy is kept.
pub fn route(document: fn() -> String) -> Router {
    Router::new().route(
        "/openapi.json",
        get(move || async move { ([(header::CONTENT_TYPE, "application/json")], document()) }),
    )
}
