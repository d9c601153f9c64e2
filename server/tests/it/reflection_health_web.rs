//! Reflection (what grpcurl uses), the health service, gRPC-Web from a
//! browser-style HTTP/1.1 request, and the plain HTTP health route.

use crate::common::*;
use huashen_protos::v1;
use prost::Message;
use std::io::{Read, Write};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse,
};

#[tokio::test]
async fn reflection_lists_services_and_describes_them() {
    let server = TestServer::start().await;
    let mut r = ServerReflectionClient::new(server.channel().await);
    let ask = |m: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    };
    let reqs = vec![
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol(
            "huashen.v1.SessionService".into(),
        )),
    ];
    let mut stream = r
        .server_reflection_info(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    let list = stream.message().await.unwrap().unwrap();
    let names: Vec<String> = match list.message_response.unwrap() {
        MessageResponse::ListServicesResponse(l) => l.service.into_iter().map(|s| s.name).collect(),
        o => panic!("{o:?}"),
    };
    for want in [
        "huashen.v1.AvatarService",
        "huashen.v1.SessionService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    let file = stream.message().await.unwrap().unwrap();
    match file.message_response.unwrap() {
        MessageResponse::FileDescriptorResponse(f) => {
            let fd =
                prost_types::FileDescriptorProto::decode(&f.file_descriptor_proto[0][..]).unwrap();
            assert_eq!(fd.package(), "huashen.v1");
            assert!(fd.service.iter().any(|s| s.name() == "SessionService"));
        }
        o => panic!("{o:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn health_reports_serving() {
    let server = TestServer::start().await;
    let mut h = HealthClient::new(server.channel().await);
    for svc in ["", "huashen.v1.AvatarService", "huashen.v1.SessionService"] {
        let r = h
            .check(HealthCheckRequest {
                service: svc.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{svc}");
    }
    server.stop().await;
}

/// One HTTP/1.1 request over a fresh connection; returns (status line,
/// headers, body).
fn http1(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> (String, String, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = vec![];
    s.read_to_end(&mut out).unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let headers = String::from_utf8_lossy(&out[..split]).to_string();
    let mut rest = out[split + 4..].to_vec();
    if headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        rest = dechunk(&rest);
    }
    let status = headers.lines().next().unwrap().to_owned();
    (status, headers, rest)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
        b = &b[nl + 2 + n + 2..];
    }
}

#[tokio::test]
async fn grpc_web_over_http1_reaches_the_same_api() {
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Web").await;
    let addr = server.addr;
    let key = server.dev_key.clone();
    let (status, headers, body) = tokio::task::spawn_blocking(move || {
        let msg = v1::ListAvatarsRequest::default().encode_to_vec();
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        framed.extend_from_slice(&msg);
        let head = format!(
            "POST /huashen.v1.AvatarService/ListAvatars HTTP/1.1\r\nHost: {addr}\r\n\
             content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\n\
             authorization: Bearer {key}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            framed.len()
        );
        http1(addr, &head, &framed)
    })
    .await
    .unwrap();
    assert!(status.contains("200"), "{status}\n{headers}");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("application/grpc-web"),
        "{headers}"
    );
    // First frame: the message; then a trailer frame (flag 0x80).
    assert_eq!(body[0], 0);
    let n = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
    let resp = v1::ListAvatarsResponse::decode(&body[5..5 + n]).unwrap();
    assert_eq!(resp.avatars[0].avatar_id, avatar.avatar_id);
    assert_eq!(body[5 + n], 0x80);
    let trailers = String::from_utf8_lossy(&body[5 + n + 5..]);
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    server.stop().await;
}

#[tokio::test]
async fn http_healthz() {
    let server = TestServer::start().await;
    let addr = server.addr;
    let (status, _, body) = tokio::task::spawn_blocking(move || {
        http1(
            addr,
            &format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nconnection: close\r\n\r\n"),
            b"",
        )
    })
    .await
    .unwrap();
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, b"ok\n");
    server.stop().await;
}
