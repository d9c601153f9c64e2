//! Plain HTTP routes beside gRPC on the same port.

use axum::Router;
use axum::routing::get;

/// Adds the HTTP routes to the gRPC router.
pub fn routes(grpc: Router) -> Router {
    grpc.route("/healthz", get(|| async { "ok\n" }))
}
