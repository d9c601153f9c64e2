//! Everything served on the one port: the gRPC services (also as
//! gRPC-Web), health and reflection, WHEP and WHIP, and the HTTP pages.

use crate::config::Config;
use crate::control::audit::AuditApi;
use crate::control::avatars::AvatarApi;
use crate::control::outputs::OutputApi;
use crate::control::privacy::PrivacyApi;
use crate::control::ratelimit::RateLimits;
use crate::control::sessions::SessionApi;
use crate::control::{downloads, http, whep, whip};
use crate::ingest::moderation::Moderator;
use crate::ingest::text::TextIngest;
use crate::outputs::manager::{OutputLimits, OutputManager};
use crate::outputs::retry::Backoff;
use crate::session::SessionManager;
use crate::store::Store;
use huashen_protos::v1::audit_service_server::AuditServiceServer;
use huashen_protos::v1::avatar_service_server::AvatarServiceServer;
use huashen_protos::v1::output_service_server::OutputServiceServer;
use huashen_protos::v1::privacy_service_server::PrivacyServiceServer;
use huashen_protos::v1::recording_service_server::RecordingServiceServer;
use huashen_protos::v1::session_service_server::SessionServiceServer;
use std::sync::Arc;
use tonic_health::server::HealthReporter;

/// Largest gRPC message accepted (a 1 MiB upload chunk plus framing).
pub const MAX_MESSAGE_BYTES: usize = 2 * 1024 * 1024;

/// The router of every endpoint, and the health reporter (for shutdown).
pub(super) async fn router(
    config: &Config,
    store: &Store,
    sessions: &SessionManager,
) -> anyhow::Result<(axum::Router, HealthReporter)> {
    // One port allocator for viewers, publishers and WHIP egress.
    let rtc_settings = crate::rtc::RtcSettings::new(config.webrtc.clone());
    let limits = RateLimits::new(&config.rate_limits);
    let (grpc, health) = grpc(config, store, sessions, &rtc_settings, &limits).await?;
    let whep = whep::routes(whep::WhepState {
        sessions: sessions.clone(),
        store: store.clone(),
        settings: rtc_settings.clone(),
        limits: limits.clone(),
    });
    let whip = whip::routes(whip::WhipState {
        sessions: sessions.clone(),
        store: store.clone(),
        settings: rtc_settings,
        publishers: Default::default(),
        limits,
    });
    let router = http::routes(grpc, sessions.clone())
        .merge(whep)
        .merge(whip)
        .merge(downloads::routes(store.clone()));
    Ok((router, health))
}

/// The services' handlers that need settings.
struct Apis {
    avatar_api: AvatarApi,
    session_api: SessionApi,
    outputs: Arc<OutputApi>,
}

fn apis(
    config: &Config,
    store: &Store,
    sessions: &SessionManager,
    rtc: &Arc<crate::rtc::RtcSettings>,
    limits: &Arc<RateLimits>,
) -> Apis {
    let avatar_api = AvatarApi {
        store: store.clone(),
        sessions: sessions.clone(),
        max_image_bytes: config.limits.max_image_bytes,
        limits: limits.clone(),
    };
    let output_manager = OutputManager::new(
        store.clone(),
        OutputLimits {
            max_per_session: config.limits.max_outputs_per_session,
            keyframe_interval: config.limits.output_keyframe_interval,
            backoff: Backoff {
                attempts: config.limits.output_reconnect_attempts,
                first: config.limits.output_reconnect_delay,
                max: config.limits.output_reconnect_max_delay,
            },
        },
        rtc.clone(),
    );
    let session_api = SessionApi {
        store: store.clone(),
        sessions: sessions.clone(),
        outputs: output_manager.clone(),
        text: TextIngest {
            moderator: Arc::new(Moderator::new(&config.moderation)),
            store: store.clone(),
            max_bytes: config.limits.max_speak_bytes,
        },
        default_idle_timeout: config.sessions.idle_timeout,
        max_idle_timeout: config.sessions.max_idle_timeout,
        limits: limits.clone(),
    };
    let outputs = Arc::new(OutputApi {
        store: store.clone(),
        sessions: sessions.clone(),
        outputs: output_manager.clone(),
    });
    Apis {
        avatar_api,
        session_api,
        outputs,
    }
}

/// The gRPC services with health and reflection, also as gRPC-Web.
async fn grpc(
    config: &Config,
    store: &Store,
    sessions: &SessionManager,
    rtc: &Arc<crate::rtc::RtcSettings>,
    limits: &Arc<RateLimits>,
) -> anyhow::Result<(axum::Router, HealthReporter)> {
    let Apis {
        avatar_api,
        session_api,
        outputs,
    } = apis(config, store, sessions, rtc, limits);
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AvatarServiceServer<AvatarApi>>().await;
    health
        .set_serving::<SessionServiceServer<SessionApi>>()
        .await;
    health.set_serving::<AuditServiceServer<AuditApi>>().await;
    health
        .set_serving::<PrivacyServiceServer<PrivacyApi>>()
        .await;
    health.set_serving::<OutputServiceServer<OutputApi>>().await;
    health
        .set_serving::<RecordingServiceServer<OutputApi>>()
        .await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(huashen_protos::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // Browsers (gRPC-Web) send the whole image in one message, so the
    // avatar service takes any image the server accepts in one message.
    let max_image_bytes = config.limits.max_image_bytes;
    let avatar_message_bytes = MAX_MESSAGE_BYTES.max(usize::try_from(max_image_bytes)? + 64 * 1024);
    let router = tonic::service::Routes::new(
        AvatarServiceServer::new(avatar_api)
            .max_decoding_message_size(avatar_message_bytes)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
    .add_service(
        SessionServiceServer::new(session_api)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
    .add_service(AuditServiceServer::new(AuditApi {
        store: store.clone(),
    }))
    .add_service(PrivacyServiceServer::new(PrivacyApi {
        store: store.clone(),
        sessions: sessions.clone(),
    }))
    .add_service(OutputServiceServer::from_arc(outputs.clone()))
    .add_service(RecordingServiceServer::from_arc(outputs))
    .add_service(health_service)
    .add_service(reflection().build_v1()?)
    .add_service(reflection().build_v1alpha()?)
    .into_axum_router()
    // Browsers speak gRPC-Web over HTTP/1.1 to the same services.
    .route_layer(tonic_web::GrpcWebLayer::new())
    .route_layer(axum::middleware::from_fn(move |req, next| {
        crate::control::avatars::refuse_oversize_web_uploads(
            avatar_message_bytes,
            max_image_bytes,
            req,
            next,
        )
    }));
    Ok((router, health))
}
